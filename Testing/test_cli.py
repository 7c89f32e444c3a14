"""``fsdiffreg register`` end to end on a real ACDC validation pair, and every bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import SAMPLE
from FSDiffRegLib import __version__
from FSDiffRegLib.commands.cli import main
from FSDiffRegLib.defaults import DEFAULT_STEPS, NETWORK_PASSES, REFINE_SMOOTHNESS, REFINE_WINDOW
from FSDiffRegLib.imaging.metrics import heart_labels_dice, jacobian_determinant
from FSDiffRegLib.model.network import native_bf16

FIXED, MOVING = SAMPLE / "acdc091_ED.nii.gz", SAMPLE / "acdc091_ES.nii.gz"


@pytest.fixture(scope="module")
def registered(tmp_path_factory, validation_pair, bundled_weights):
    out = tmp_path_factory.mktemp("cli") / "out"
    code = main(["register", str(validation_pair.fixed), str(validation_pair.moving), "--out-dir", str(out),
                 "--moving-labels", str(validation_pair.moving_labels), "--device", "cpu"])
    assert code == 0
    return out


def test_outputs_are_written(registered):
    names = {p.name for p in registered.iterdir()}
    assert names == {"displacement.nii.gz", "warped.nii.gz", "jacobian.nii.gz", "warped_labels.nii.gz",
                     "metrics.json"}
    metrics = json.loads((registered / "metrics.json").read_text())
    assert metrics["device"] == "cpu" and metrics["weights"] == "fsdiffreg_acdc_weaksup_v2.pt"
    assert len(metrics["weights_sha256"]) == 64 and metrics["seconds"] > 0
    assert metrics["precision"] == ("bfloat16" if native_bf16() else "float32")
    assert metrics["ncc_after"] > metrics["ncc_before"]


def test_metrics_name_the_inputs_options_and_version(registered, validation_pair):
    metrics = json.loads((registered / "metrics.json").read_text())
    assert metrics["fsdiffreg"] == __version__
    for role, path in (("fixed", validation_pair.fixed), ("moving", validation_pair.moving),
                       ("moving_labels", validation_pair.moving_labels)):
        data = path.read_bytes()
        assert metrics["inputs"][role] == {"path": str(path.resolve()), "bytes": len(data),
                                           "sha256": hashlib.sha256(data).hexdigest()}
    assert metrics["refine"] == {"steps": DEFAULT_STEPS, "smoothness": REFINE_SMOOTHNESS, "window": REFINE_WINDOW,
                                 "diffeomorphic": True, "gaussian": True, "heart": DEFAULT_STEPS > 0,
                                 "passes": NETWORK_PASSES}
    assert metrics["unfold"]["rounds"] >= 0 and metrics["folding_percent"] == 0  # delivered without a fold


def test_displacement_reproduces_the_warped_image(registered, validation_pair):
    fixed, moving = sitk.ReadImage(str(validation_pair.fixed)), sitk.ReadImage(str(validation_pair.moving))
    field = sitk.ReadImage(str(registered / "displacement.nii.gz"))
    assert field.GetPixelID() == sitk.sitkVectorFloat64
    assert field.GetSize() == fixed.GetSize() and np.allclose(field.GetDirection(), fixed.GetDirection())
    assert np.abs(sitk.GetArrayFromImage(field)).max() > 1.0  # it really moves something (mm)
    again = sitk.Resample(moving, fixed, sitk.DisplacementFieldTransform(field), sitk.sitkLinear, 0.0,
                          moving.GetPixelID())
    warped = sitk.ReadImage(str(registered / "warped.nii.gz"))
    assert np.allclose(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(warped), atol=1e-3)
    jac = sitk.ReadImage(str(registered / "jacobian.nii.gz"))
    expected = jacobian_determinant(sitk.ReadImage(str(registered / "displacement.nii.gz")))
    assert np.allclose(sitk.GetArrayFromImage(jac), sitk.GetArrayFromImage(expected))


def test_registration_improves_label_overlap(registered, validation_pair):
    fixed_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(validation_pair.fixed_labels)))
    before = heart_labels_dice(sitk.GetArrayFromImage(sitk.ReadImage(str(validation_pair.moving_labels))), fixed_labels)
    after = heart_labels_dice(sitk.GetArrayFromImage(sitk.ReadImage(str(registered / "warped_labels.nii.gz"))),
                              fixed_labels)
    assert after["mean"] > before["mean"] + 0.03


def write(tmp_path, name: str, image: sitk.Image):
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


def bad_inputs(tmp_path):
    """(name, fixed, moving, extra args, expected words in the message)."""
    moving = sitk.ReadImage(str(MOVING))
    array = sitk.GetArrayFromImage(moving).astype(np.float32)
    nan = array.copy()
    nan[2, 50, 50] = np.nan
    nan_image = sitk.GetImageFromArray(nan)
    nan_image.CopyInformation(moving)
    far = sitk.Image(moving)
    far.SetOrigin([o + 5000.0 for o in moving.GetOrigin()])
    (tmp_path / "garbage.nii.gz").write_bytes(b"\x1f\x8bnot really gzip")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 64)
    return [
        ("2D", write(tmp_path, "2d.nii.gz", moving[:, :, 3]), MOVING, [], "must be 3D"),
        ("4D", FIXED, write(tmp_path, "4d.nii.gz", sitk.JoinSeries([moving, moving])), [], "must be 3D"),
        ("empty", FIXED, write(tmp_path, "empty.nii.gz", moving * 0), [], "empty"),
        ("NaN", write(tmp_path, "nan.mha", nan_image), MOVING, [], "NaN"),
        ("unreadable", tmp_path / "garbage.nii.gz", MOVING, [], "fixed image"),
        ("missing", tmp_path / "nothing.nii.gz", MOVING, [], "not found"),
        ("apart", FIXED, write(tmp_path, "far.nii.gz", far), [], "do not overlap"),
        ("no weights", FIXED, MOVING, ["--weights", str(tmp_path / "none.pt")], "weights file not found"),
        ("corrupt weights", FIXED, MOVING, ["--weights", str(corrupt)], "cannot load weights"),
    ]


def test_every_bad_input_fails_cleanly(tmp_path, capsys, untrained_weights):
    for name, fixed, moving, extra, words in bad_inputs(tmp_path):
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        weights = [] if "--weights" in extra else ["--weights", str(untrained_weights)]
        code = main(["register", str(fixed), str(moving), "--out-dir", str(out), *weights, *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, name
        assert words in err[-1] and err[-1].startswith("fsdiffreg: error:"), (name, err)
        assert not out.exists(), name


def test_a_previous_set_is_kept_when_a_run_fails(tmp_path, capsys, untrained_weights):
    out = tmp_path / "out"
    fast = ["--weights", str(untrained_weights), "--refine", "0", "--device", "cpu"]
    assert main(["register", str(FIXED), str(MOVING), "--out-dir", str(out), *fast]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["register", str(tmp_path / "x.nii.gz"), str(MOVING), "--out-dir", str(out), *fast]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


BAD_NUMBERS = [
    ("register", "--smoothness", "-5", "at least 0"),
    ("register", "--smoothness", "nan", "finite"),
    ("register", "--smoothness", "inf", "finite"),
    ("register", "--refine", "100000", "at most 5000"),
    ("register", "--refine", "-1", "at least 0"),
    ("register", "--refine", "1.5", "whole number"),
    ("evaluate", "--limit", "0", "at least 1"),
    ("evaluate", "--smoothness", "-inf", "finite"),
    ("benchmark", "--limit", "-3", "at least 1"),
    ("benchmark", "--refine", "ten", "whole number"),
    ("train", "--max-minutes", "nan", "finite"),
    ("train", "--train-limit", "0", "at least 1"),
    ("train", "--inverse-consistency", "-1", "at least 0"),
    ("train", "--inverse-consistency", "inf", "finite"),
    ("track", "--frame-times-ms", "0,40,30", "each later than the one before"),
    ("track", "--frame-times-ms", "0,nan", "finite"),
    ("track", "--frame-times-ms", "4o", "expected a number"),
]


@pytest.mark.parametrize("command, option, value, words", BAD_NUMBERS)
def test_bad_numbers_are_refused_with_one_line_when_parsed(tmp_path, capsys, command, option, value, words):
    out = tmp_path / "out"
    args = {"register": ["register", str(FIXED), str(MOVING), "--out-dir", str(out)],
            "evaluate": ["evaluate", "--data", str(tmp_path)], "benchmark": ["benchmark", "--data", str(tmp_path)],
            "train": ["train", "--data", str(tmp_path), "--out", str(out)],
            "track": ["track", str(tmp_path), "--labels", str(FIXED), "--out-dir", str(out)]}[command]
    with pytest.raises(SystemExit) as stop:
        main([*args, f"{option}={value}"])  # "=": argparse takes "-inf" for an option otherwise
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fsdiffreg {command}: error: argument {option}: "), err
    assert words in err[0] and value in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_one_line_error(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "FSDiffRegLib.commands.cli", "register", str(FIXED), str(MOVING),
                          "--out-dir", str(out), "--device", "cuda"], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip() == "fsdiffreg: error: --device cuda was asked for, but CUDA is not available " \
                                 "on this machine"
    assert not out.exists()


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_the_command_line_starts_without_torch():
    code = ("import sys; from FSDiffRegLib.commands.cli import build_parser; build_parser().format_help(); "
            "print(sorted({'torch', 'SimpleITK', 'numpy', 'matplotlib'} & set(sys.modules)))")
    run = run_python(code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_devices_prints_one_json_line():
    run = subprocess.run([sys.executable, "-m", "FSDiffRegLib.commands.cli", "devices"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report == {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                      "devices": ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"],
                      "cuda_names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}


def test_devices_without_torch_is_a_one_line_error():
    run = run_python("import sys; sys.modules['torch'] = None; from FSDiffRegLib.commands.cli import main; "
                     "sys.exit(main(['devices']))")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("fsdiffreg: error: torch cannot be imported: ")


def test_demo_writes_its_figure_without_warnings(tmp_path):
    """The figure's text panel fits (the inputs' paths and the refinement options stay in metrics.json)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["demo", "--out-dir", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    assert (tmp_path / "demo" / "figure.png").stat().st_size > 10_000
