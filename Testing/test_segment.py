"""Automatic RV, Myo and LV labels (issue 25): ``fsdiffreg segment`` and ``track --labels auto`` on the bundled
sample (ACDC patient 091, a validation heart the model never trained on), their refusals, and the plain-torch
U-Net against MONAI's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import ROOT, SAMPLE
from FSDiffRegLib.commands.cli import main
from FSDiffRegLib.labels import VALUES
from FSDiffRegLib.model.weights import sha256
from FSDiffRegLib.pipeline import segment
from FSDiffRegLib.resources import SEGMENTATION_WEIGHTS, WEIGHTS

ED = SAMPLE / "acdc091_ED.nii.gz"
ED_LABELS = SAMPLE / "acdc091_ED_labels.nii.gz"
DICE_FLOOR = {"RV": 0.89, "Myo": 0.72, "LV": 0.93}  # 091 ED: v2 gives 0.913, 0.741, 0.945; v1 gave 0.907, 0.684, 0.925


@pytest.fixture(scope="module")
def segmenter() -> tuple[torch.nn.Module, dict]:
    if not SEGMENTATION_WEIGHTS.is_file():
        pytest.skip(f"bundled segmentation weights missing: {SEGMENTATION_WEIGHTS}")
    return segment.load_segmenter(None, "cpu")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


def write(folder: Path, name: str, image: sitk.Image) -> Path:
    sitk.WriteImage(image, str(folder / name))
    return folder / name


def test_the_plain_unet_is_monai_unet():
    monai = pytest.importorskip("monai.networks.nets", reason="MONAI (the test extra) compares the two U-Nets")
    theirs = monai.UNet(spatial_dims=2, in_channels=1, out_channels=segment.CLASSES, **segment.NETWORK)
    ours = segment.build_network()
    torch.manual_seed(0)
    x = torch.randn(2, 1, 64, 80)
    theirs.train()(x)  # batch-norm running statistics away from their start
    ours.load_state_dict(theirs.state_dict())  # strict: the same keys and shapes
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), theirs.eval()(x), atol=1e-5)


def test_probabilities_do_not_depend_on_quarter_turns_of_the_slice():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, segment.CLASSES, 5, padding=2).eval()  # not rotation-equivariant
    slices = np.random.default_rng(0).random((2, 32, 32), dtype=np.float32)
    direct = segment.predict_probabilities(model, slices, torch.device("cpu"))
    turned = segment.predict_probabilities(model, np.ascontiguousarray(np.rot90(slices, 1, (1, 2))),
                                           torch.device("cpu"))
    assert np.allclose(np.rot90(direct, 1, (2, 3)), turned, atol=1e-6)
    assert np.allclose(direct.sum(axis=1), 1.0, atol=1e-5)


def test_segment_labels_the_sample_on_its_own_grid(tmp_path, capsys, segmenter):
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(ED), "--out", str(out), "--device", "cpu"]) == 0
    assert "LV" in capsys.readouterr().out
    labels, image, truth = sitk.ReadImage(str(out)), sitk.ReadImage(str(ED)), sitk.ReadImage(str(ED_LABELS))
    assert labels.GetSize() == image.GetSize() and labels.GetSpacing() == image.GetSpacing()
    assert np.allclose(labels.GetOrigin(), image.GetOrigin()) and np.allclose(labels.GetDirection(),
                                                                              image.GetDirection())
    predicted, manual = sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(truth)
    assert set(np.unique(predicted)) == {0, 1, 2, 3}
    scores = {name: dice(predicted == value, manual == value) for name, value in VALUES.items()}
    assert all(scores[name] >= floor for name, floor in DICE_FLOOR.items()), scores
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz"]  # no temporary file left


def test_segment_image_reports_progress_per_slice(segmenter):
    model, about = segmenter
    assert about == {"name": SEGMENTATION_WEIGHTS.name, "sha256": sha256(SEGMENTATION_WEIGHTS)}
    seen = []
    labels = segment.segment_image(sitk.ReadImage(str(ED)), model, "cpu",
                                   lambda event: seen.append((event.step, event.total)))
    slices = sitk.ReadImage(str(ED)).GetSize()[2]
    assert seen == [(k, slices) for k in range(1, slices + 1)] and labels.GetPixelID() == sitk.sitkUInt8


def bad_inputs(folder: Path) -> list[tuple[str, list[str], str]]:
    """(name, arguments after ``segment``, words of the one error line)."""
    image = sitk.ReadImage(str(ED))
    thin = sitk.Image(image)
    thin.SetSpacing((1.5, 1.5, 0.5))
    small = sitk.Image(image)
    small.SetSpacing((0.3, 0.3, 10.0))
    tiny = sitk.Image(image)
    tiny.SetSpacing((1e-4, 1e-4, 10.0))
    existing = folder / "existing.nii.gz"
    existing.write_bytes(b"the user's file")
    copy = shutil.copy(ED, folder / "copy.nii.gz")
    corrupt = shutil.copy(SEGMENTATION_WEIGHTS, folder / "corrupt.pt")
    Path(f"{corrupt}.sha256").write_text("0" * 64 + "  corrupt.pt\n")
    out = str(folder / "out.nii.gz")
    return [
        ("2D", [str(write(folder, "2d.nii.gz", image[:, :, 3])), "--out", out], "must be 3D"),
        ("4D", [str(write(folder, "4d.nii.gz", sitk.JoinSeries([image, image]))), "--out", out], "must be 3D"),
        ("few slices", [str(write(folder, "four.nii.gz", image[:, :, :4])), "--out", out], "4 slices"),
        ("thin slices", [str(write(folder, "thin.nii.gz", thin)), "--out", out], "thinner than its pixels"),
        ("small field", [str(write(folder, "small.nii.gz", small)), "--out", out], "in plane"),
        ("spacing", [str(write(folder, "tiny.nii.gz", tiny)), "--out", out], "voxel spacing"),
        ("missing", [str(folder / "none.nii.gz"), "--out", out], "not found"),
        ("exists", [str(ED), "--out", str(existing)], "give --overwrite"),
        ("itself", [str(copy), "--out", str(copy), "--overwrite"], "the image itself"),
        ("not NIfTI", [str(ED), "--out", str(folder / "labels.nrrd")], "must be NIfTI"),
        ("no folder", [str(ED), "--out", str(folder / "no" / "labels.nii.gz")], "does not exist"),
        ("no heart", [str(write(folder, "noise.nii.gz", sitk.AdditiveGaussianNoise(image * 0 + 100, 1.0))),
                      "--out", out], "found no"),
        ("corrupt weights", [str(ED), "--out", out, "--weights", str(corrupt)], "corrupt"),
        ("registration weights", [str(ED), "--out", out, "--weights", str(WEIGHTS / "fsdiffreg_acdc_cpu.pt")],
         "not a segmentation model"),
    ]


def test_bad_inputs_are_refused_with_one_line_and_nothing_written(tmp_path, capsys, segmenter):
    cases = bad_inputs(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    for name, args, words in cases:
        assert main(["segment", *args, "--device", "cpu"]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("fsdiffreg: error:") and words in err[-1], (name, err[-1])
        assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before, name  # nothing written or changed


def test_overwrite_replaces_only_when_asked(tmp_path, segmenter):
    out = tmp_path / "labels.nii.gz"
    out.write_bytes(b"old")
    assert main(["segment", str(ED), "--out", str(out), "--device", "cpu", "--overwrite"]) == 0
    assert sitk.ReadImage(str(out)).GetSize() == sitk.ReadImage(str(ED)).GetSize()


def test_track_with_auto_labels_writes_and_records_them(tmp_path, untrained_weights, segmenter):
    cine = tmp_path / "cine"
    cine.mkdir()
    for name, frame in (("frame1", "acdc091_ED"), ("frame2", "acdc091_ES")):
        shutil.copy(SAMPLE / f"{frame}.nii.gz", cine / f"{name}.nii.gz")
    out = tmp_path / "tracked"
    args = ["track", str(cine), "--labels", "auto", "--out-dir", str(out), "--weights", str(untrained_weights),
            "--refine", "0", "--device", "cpu"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == {"source": "auto", "file": "reference_labels_auto.nii.gz",
                                 "weights": SEGMENTATION_WEIGHTS.name,
                                 "weights_sha256": sha256(SEGMENTATION_WEIGHTS)}
    assert metrics["inputs"]["labels"] == "auto"
    auto = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "reference_labels_auto.nii.gz")))
    expected = segment.segment_image(sitk.ReadImage(str(ED)), segmenter[0], "cpu")
    assert np.array_equal(auto, sitk.GetArrayFromImage(expected))
    assert np.array_equal(auto, sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labels_01.nii.gz"))))
    assert main(args) == 0  # a second run replaces the set, the automatic labels with it
    assert (out / "reference_labels_auto.nii.gz").is_file()


def test_segment_runs_without_monai(tmp_path, segmenter):
    """MONAI trains the model only: the command runs in a Python where importing it fails (as in Slicer)."""
    out = tmp_path / "labels.nii.gz"
    child = ("import sys; sys.modules['monai'] = None\n"
             "from FSDiffRegLib.commands.cli import main\n"
             f"sys.exit(main(['segment', {str(ED)!r}, '--out', {str(out)!r}, '--device', 'cpu']))")
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert out.is_file()


def test_no_bundled_model_is_one_line(tmp_path, capsys, monkeypatch):
    """Until a model is bundled, ``segment`` without --weights says so and how to go on, and writes nothing."""
    monkeypatch.setattr(segment, "segmentation_weights_path",
                        lambda weights: tmp_path / "missing.pt" if weights is None else Path(weights))
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(ED), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no segmentation model is bundled" in err[-1] and "--weights" in err[-1]
    assert not out.exists()


def test_train_segmenter_exports_through_the_command_line(tmp_path, capsys):
    """``fsdiffreg train-segmenter --export``: OUT's best.pt as bundled float16 weights with their checksum."""
    torch.manual_seed(0)
    (tmp_path / "run").mkdir()
    torch.save({"network": segment.NETWORK, "state_dict": segment.build_network().state_dict(), "epoch": 3,
                "dice": {"RV": 0.5}, "dice_mean": 0.5}, tmp_path / "run" / "best.pt")
    out = tmp_path / "seg.pt"
    assert main(["train-segmenter", "--out", str(tmp_path / "run"), "--export", str(out)]) == 0
    assert capsys.readouterr().out.strip() == sha256(out)
    model, info = segment.load_segmenter(str(out), "cpu")
    assert info["sha256"] == sha256(out)
    assert torch.load(out, weights_only=True)["info"]["epoch"] == 3


def test_train_segmenter_options_reach_the_library(tmp_path, monkeypatch):
    """The command's options become one frozen SegmentTraining; the defaults are the library's."""
    from FSDiffRegLib.defaults import SEGMENT_TRAINING, SegmentTraining
    from FSDiffRegLib.training import segment_train

    seen = []
    monkeypatch.setattr(segment_train, "train_segmenter", lambda data, out, options, log: seen.append(options) or 0.5)
    assert main(["train-segmenter", "--out", str(tmp_path), "--channels", "8,16", "--ema", "0.99"]) == 0
    assert main(["train-segmenter", "--out", str(tmp_path)]) == 0
    assert seen == [SegmentTraining(channels=(8, 16), ema=0.99), SEGMENT_TRAINING]
    with pytest.raises(SystemExit) as exit_:
        main(["train-segmenter", "--out", str(tmp_path), "--channels", "8,0"])
    assert exit_.value.code == 2


def test_train_segmenter_trains_resumes_and_reports_each_epoch(tmp_path, monkeypatch):
    """The library's training on the sample's two frames (a tiny U-Net, one epoch, then a second resumed from
    last.pt): best.pt, last.pt, log.csv and one progress event an epoch."""
    pytest.importorskip("monai", reason="the segmentation training needs MONAI (pip install '.[train]')")
    from FSDiffRegLib.defaults import SegmentTraining
    from FSDiffRegLib.training import segment_train

    frames = {"train": [("091", "ED", ED, ED_LABELS), ("091", "ES", SAMPLE / "acdc091_ES.nii.gz",
                                                           SAMPLE / "acdc091_ES_labels.nii.gz")],
              "validation": [("091", "ED", ED, ED_LABELS)]}
    monkeypatch.setattr(segment_train, "frames", lambda data, which: frames[which])
    reported = []
    options = SegmentTraining(epochs=2, batch=4, crop=32, channels=(4, 8, 16, 32, 64), threads=1)
    run = tmp_path / "run"
    best = segment_train.train_segmenter(tmp_path, run, replace(options, epochs=1), reported.append)
    assert 0.0 <= best <= 1.0 and {"cache.npz", "best.pt", "last.pt", "log.csv"} <= {p.name for p in run.iterdir()}
    segment_train.train_segmenter(tmp_path, run, options, reported.append)
    progress = [(e.step, e.total) for e in reported if e.type == "progress"]
    assert progress == [(1, 1), (2, 2)]
    assert len((run / "log.csv").read_text().splitlines()) == 3  # the header and one row an epoch
