"""``fsdiffreg track`` on real ACDC frames: outputs, labels carried the right way, batching, bad input."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from FSDiffRegLib.commands.cli import main
from FSDiffRegLib.defaults import TRACK_REFINE, RefineOptions
from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.imaging.cine import Cine, read_cine
from FSDiffRegLib.imaging.field import apply_field
from FSDiffRegLib.imaging.metrics import heart_labels_dice
from FSDiffRegLib.imaging.preprocess import canonical, network_grid, resample_to
from FSDiffRegLib.model.network import use_bf16
from FSDiffRegLib.model.predict import predict
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.outputs.folder import OUTPUT_NAME, foreign
from FSDiffRegLib.pipeline.function import structure_volumes
from FSDiffRegLib.pipeline.refine import refine_flow
from FSDiffRegLib.pipeline.track import (
    HEART_BOX_MARGIN_MM,
    TAPER_MM,
    frames_on_grid,
    heart_box,
    labelled_heart_centre,
    predict_flows,
    taper,
    track_frames,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ACDC"
pytestmark = pytest.mark.skipif(not (DATA / "training" / "patient091").is_dir(),
                                reason=f"ACDC data not found at {DATA} (tests read patient 091 from ../shared/data)")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pair() -> acdc.AcdcPair:
    return acdc.load_pair(DATA / "training" / "patient091")


@pytest.fixture(scope="module")
def cine_folder(pair: acdc.AcdcPair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The patient's ED and ES frames as a 2-frame cine folder (frame1 = ED, frame2 = ES)."""
    folder = tmp_path_factory.mktemp("cine")
    sitk.WriteImage(sitk.ReadImage(str(pair.fixed)), str(folder / "frame1.nii.gz"))
    sitk.WriteImage(sitk.ReadImage(str(pair.moving)), str(folder / "frame2.nii.gz"))
    return folder


@pytest.fixture(scope="module")
def tracked(pair: acdc.AcdcPair, cine_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["track", str(cine_folder), "--labels", str(pair.fixed_labels), "--out-dir", str(out),
                 "--refine", "3", "--device", "cpu"]) == 0
    return out


def test_outputs_are_whole_and_agree(tracked: Path):
    names = sorted(p.name for p in tracked.iterdir())
    assert names == ["field_01.nii.gz", "field_02.nii.gz", "function.json", "function.png", "labels.nii.gz",
                     "labels_01.nii.gz", "labels_02.nii.gz", "metrics.json", "strain.csv", "strain_bullseye.png",
                     "volumes.csv"]
    function = json.loads((tracked / "function.json").read_text())
    rows = list(csv.DictReader((tracked / "volumes.csv").open()))
    assert [r["frame"] for r in rows] == ["1", "2"]
    assert function["ED_frame"] == 1 and function["ES_frame"] == 2
    lv = function["LV"]
    assert lv["EDV_ml"] == pytest.approx(float(rows[0]["LV_ml"]), abs=0.01)
    assert lv["ESV_ml"] == pytest.approx(float(rows[1]["LV_ml"]), abs=0.01)
    assert 20 < lv["EF_percent"] < 80  # the carried blood pool contracts
    rv = function["RV"]  # corrected for the base's descent (descent.py): below the carried labels' RV
    carried_rv = structure_volumes(sitk.ReadImage(str(tracked / "labels_02.nii.gz")))["RV"]
    assert rv["base_descent_mm"] > 5 and rv["ESV_ml"] < carried_rv - 5
    assert rv["ESV_ml"] == pytest.approx(float(rows[1]["RV_ml"]), abs=0.01)
    assert function["strain"]["circumferential_percent"][1] < 0 < function["strain"]["radial_percent"][1]
    segments = function["strain"]["segments"]
    assert [s["segment"] for s in segments] == list(range(1, 17))
    assert sum(s["peak_circumferential_percent"] is not None for s in segments) >= 12
    strain_rows = list(csv.DictReader((tracked / "strain.csv").open()))
    assert len(strain_rows) == 2 * 17 and strain_rows[17]["segment"] == "global"
    assert float(strain_rows[17]["circumferential_percent"]) == function["strain"]["circumferential_percent"][1]
    assert isinstance(function["quality"], list)
    metrics = json.loads((tracked / "metrics.json").read_text())
    assert metrics["refine"] == asdict(replace(TRACK_REFINE, steps=3))  # track's own refinement defaults
    assert metrics["reference_frame"] == 1 and metrics["frames"] == 2
    assert metrics["network_grid"][2] == 32 and all(n % 8 == 0 and n < 128 for n in metrics["network_grid"][:2])


def test_every_file_of_the_set_is_one_a_new_run_replaces(tracked: Path):
    """A second ``track`` into the same out-dir is not refused for files the first one wrote (strain.csv and the
    bullseye were once missing from the names of a set)."""
    assert [p.name for p in tracked.iterdir() if not OUTPUT_NAME.fullmatch(p.name)] == []
    assert foreign(tracked, tracked.name) is None


def test_the_region_holds_the_heart_with_its_margin(pair: acdc.AcdcPair):
    """The registered box: every labelled voxel HEART_BOX_MARGIN_MM inside it (where the grid allows), sides that
    the network takes, far smaller than the whole grid; the field's weight is 1 on the heart, 0 at the box's
    sides inside the grid and unchanged at the grid's own sides."""
    labels = sitk.ReadImage(str(pair.fixed_labels))
    whole = network_grid(canonical(sitk.ReadImage(str(pair.fixed))), labelled_heart_centre(labels),
                         load_model(None)[0].cfg)
    region = heart_box(labels, whole, 8)
    inside = np.argwhere(sitk.GetArrayFromImage(resample_to(labels, whole, 0, nearest=True)) > 0)
    size, spacing = whole.GetSize()[::-1], whole.GetSpacing()[::-1]
    for axis, r in enumerate(region):
        assert (r.stop - r.start) % 8 == 0
        margin = HEART_BOX_MARGIN_MM / spacing[axis]
        assert r.start == 0 or inside[:, axis].min() - r.start >= margin
        assert r.stop == size[axis] or r.stop - inside[:, axis].max() - 1 >= margin
    assert np.prod([r.stop - r.start for r in region]) < 0.7 * np.prod(size)
    weights = taper(region, whole)[0, 0]
    local = inside - [r.start for r in region]
    assert torch.all(weights[tuple(local.T)] == 1)
    band = round(TAPER_MM / spacing[1])
    assert region[1].start > 0 and torch.all(weights[:, 0] == 0) and torch.all(weights[:, band, band:-band] > 0)
    assert region[0] == slice(0, size[0]) and torch.all(weights[[0, -1]][:, band:-band, band:-band] == 1)


def test_the_field_fades_to_zero_beyond_the_region(pair: acdc.AcdcPair, tracked: Path):
    field = sitk.GetArrayFromImage(sitk.ReadImage(str(tracked / "field_02.nii.gz")))  # (z, y, x, 3)
    moving = np.linalg.norm(field, axis=-1).max(axis=0) > 0  # in-plane footprint of the field
    first, last = np.argwhere(moving).min(axis=0), np.argwhere(moving).max(axis=0)
    extent_mm = (last - first + 1) * np.array(sitk.ReadImage(str(pair.fixed)).GetSpacing()[1::-1])
    assert np.all(extent_mm < 0.8 * 128 * 1.5)  # a box around the heart (96 voxels here), not the 192 mm grid
    heart = sitk.GetArrayFromImage(sitk.ReadImage(str(pair.fixed_labels))) > 0
    assert np.linalg.norm(field[heart], axis=-1).mean() > 1.0  # the heart itself moves


def test_reference_field_is_zero_and_labels_follow_the_fields(pair: acdc.AcdcPair, tracked: Path):
    ed_labels = sitk.ReadImage(str(pair.fixed_labels))
    labels = sitk.ReadImage(str(tracked / "labels.nii.gz"))
    assert labels.GetDimension() == 4 and labels.GetSize()[3] == 2
    frames = [labels[:, :, :, t] for t in range(2)]
    assert np.array_equal(sitk.GetArrayFromImage(frames[0]), sitk.GetArrayFromImage(ed_labels))
    assert not np.any(sitk.GetArrayFromImage(sitk.ReadImage(str(tracked / "field_01.nii.gz"))))
    field = sitk.ReadImage(str(tracked / "field_02.nii.gz"))
    through = apply_field(ed_labels, field, nearest=True)
    assert np.array_equal(sitk.GetArrayFromImage(through), sitk.GetArrayFromImage(frames[1]))
    for k, frame in enumerate(frames, 1):  # each frame's labels also as a 3D file, on the frame's grid
        alone = sitk.ReadImage(str(tracked / f"labels_{k:02d}.nii.gz"))
        assert alone.GetDimension() == 3 and alone.GetPixelID() == ed_labels.GetPixelID()
        assert np.array_equal(sitk.GetArrayFromImage(alone), sitk.GetArrayFromImage(frame))
        np.testing.assert_allclose(alone.GetOrigin(), ed_labels.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(alone.GetDirection(), ed_labels.GetDirection(), atol=1e-6)


def test_labels_land_on_the_es_frame(pair: acdc.AcdcPair, tracked: Path):
    """The propagated ED labels match the manual ES labels far better than the ED labels unmoved."""
    es = sitk.GetArrayFromImage(sitk.ReadImage(str(pair.moving_labels)))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tracked / "labels.nii.gz")))  # (t, z, y, x)
    before = heart_labels_dice(labels[0], es)["mean"]
    after = heart_labels_dice(labels[1], es)["mean"]
    assert after > before + 0.05, (before, after)


def test_a_known_shift_is_recovered_with_its_sign(pair: acdc.AcdcPair):
    """Frame 2 is frame 1 moved by +6 mm along x (LPS): the field maps frame-2 points back by -6 mm."""
    ed = sitk.ReadImage(str(pair.fixed))
    shift = sitk.TranslationTransform(3, (-6.0, 0.0, 0.0))  # resampling at x - 6 moves the content by +6 mm
    moved = sitk.Resample(ed, ed, shift, sitk.sitkLinear, 0.0)
    model, _ = load_model(None, CPU)
    tracking = track_frames(Cine([ed, moved], None), sitk.ReadImage(str(pair.fixed_labels)), 0, model, CPU,
                            RefineOptions(steps=30))
    heart = sitk.GetArrayFromImage(tracking.labels[1]) > 0
    u = sitk.GetArrayFromImage(tracking.fields[1])[heart]
    assert u[:, 0].mean() == pytest.approx(-6.0, abs=1.5)
    assert np.abs(u[:, 1:].mean(axis=0)).max() < 1.5


@pytest.mark.parametrize("bf16, tolerance", [
    (False, 2e-3),
    pytest.param(True, 0.05, marks=pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                                                       reason="this CPU has no oneDNN bfloat16 convolution")),
])
def test_batched_frames_match_one_at_a_time(pair: acdc.AcdcPair, monkeypatch: pytest.MonkeyPatch, bf16: bool,
                                            tolerance: float):
    """Network batches and the all-frame refinement give each frame the flow it gets alone (to ``tolerance``
    network voxels: convolution algorithms differ with the batch size, more so in bfloat16)."""
    from FSDiffRegLib.pipeline import track

    model, _ = load_model(None, CPU)
    use_bf16(model, bf16)
    ed, es = sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving))
    grid = track.network_grid(track.canonical(ed), labelled_heart_centre(sitk.ReadImage(str(pair.fixed_labels))),
                              model.cfg)
    moving = frames_on_grid([ed], grid)
    fixed = frames_on_grid([es, ed, es], grid)
    network = RefineOptions(steps=0)
    monkeypatch.setitem(track.NETWORK_BATCH, "cpu", 4)
    together = predict_flows(model, moving, fixed, network, lambda m: None)
    monkeypatch.setitem(track.NETWORK_BATCH, "cpu", 1)
    alone = torch.cat([predict_flows(model, moving, fixed[i:i + 1], network, lambda m: None) for i in range(3)])
    assert torch.allclose(together, alone, atol=tolerance)
    score, flow = predict(model, moving.expand(3, -1, -1, -1, -1), fixed)
    refine = RefineOptions(steps=6)
    both = refine_flow(flow, moving.expand(3, -1, -1, -1, -1), fixed, score, model.cfg, refine)
    each = [refine_flow(flow[i:i + 1], moving, fixed[i:i + 1], score[i:i + 1], model.cfg, refine) for i in range(3)]
    assert torch.allclose(both, torch.cat(each), atol=1e-5)
    assert not torch.allclose(both[0], flow[0], atol=0.1)  # the refinement did move the flow


@pytest.mark.parametrize("case, message", [
    ("3d", "is a 3D image, not a cine"),
    ("one frame", "has one frame"),
    ("reference", "reference frame 3 is out of range"),
    ("labels", "labels"),
    ("empty", "labels image is empty"),
    ("scattered", "no voxel within the 192 x 192 x 101 mm box around their centre: is it one heart?"),
    ("times", "3 frame times given for a cine of 2 frames"),
])
def test_bad_input_writes_nothing(case: str, message: str, pair: acdc.AcdcPair, cine_folder: Path,
                                  tmp_path: Path, capsys: pytest.CaptureFixture):
    cine, labels, extra = str(cine_folder), str(pair.fixed_labels), []
    if case == "3d":
        cine = str(pair.fixed)
    elif case == "one frame":
        (tmp_path / "one").mkdir()
        sitk.WriteImage(sitk.ReadImage(str(pair.fixed)), str(tmp_path / "one" / "frame1.nii.gz"))
        cine = str(tmp_path / "one")
    elif case == "reference":
        extra = ["--reference-frame", "3"]
    elif case == "times":
        extra = ["--frame-times-ms", "0,40,80"]
    else:
        bad = sitk.ReadImage(str(pair.fixed_labels))
        bad = bad[:-2, :, :] if case == "labels" else bad * 0
        if case == "scattered":  # two voxels 300 mm apart: the grid around their centre holds neither
            bad[0, 0, 0] = bad[bad.GetWidth() - 1, bad.GetHeight() - 1, bad.GetDepth() - 1] = 3
        labels = str(tmp_path / "bad_labels.nii.gz")
        sitk.WriteImage(bad, labels)
    out = tmp_path / "out"
    code = main(["track", cine, "--labels", labels, "--out-dir", str(out), "--refine", "0", *extra])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith("fsdiffreg: error: ") and message in errors[0], errors
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("one")) == \
        (["bad_labels.nii.gz"] if case in ("labels", "empty", "scattered") else [])


def test_given_frame_times_reach_the_outputs(pair: acdc.AcdcPair, cine_folder: Path, tmp_path: Path):
    """A folder of frames has no times; ``--frame-times-ms`` gives them (as Slicer passes a sequence's)."""
    out = tmp_path / "out"
    assert main(["track", str(cine_folder), "--labels", str(pair.fixed_labels), "--out-dir", str(out),
                 "--refine", "0", "--frame-times-ms", "12.5,362.5"]) == 0
    rows = list(csv.DictReader((out / "volumes.csv").open()))
    assert [float(r["time_ms"]) for r in rows] == [12.5, 362.5]
    labels = sitk.ReadImage(str(out / "labels.nii.gz"))
    assert labels.GetSpacing()[3] == pytest.approx(0.35) and labels.GetOrigin()[3] == pytest.approx(0.0125)


def test_a_4d_file_reads_as_the_same_cine(cine_folder: Path, tmp_path: Path):
    from FSDiffRegLib.imaging.cine import join_frames

    frames = read_cine(cine_folder).frames
    sitk.WriteImage(join_frames(frames, None), str(tmp_path / "cine.nii.gz"))
    again = read_cine(tmp_path / "cine.nii.gz").frames
    assert all(np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)) for a, b in zip(frames, again))
