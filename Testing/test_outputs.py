"""The out-dir: refused before any computation when unusable, never written over an input or a
user's file, and left holding exactly one run's complete set (or nothing new)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT, SAMPLE
from FSDiffRegLib import __version__
from FSDiffRegLib.commands.cli import main
from FSDiffRegLib.commands.register_files import write_outputs
from FSDiffRegLib.outputs import folder as outputs
from FSDiffRegLib.outputs.folder import OutputError, output_folder
from FSDiffRegLib.pipeline.register import Registration

FIXED, MOVING = SAMPLE / "acdc091_ED.nii.gz", SAMPLE / "acdc091_ES.nii.gz"
LABELS = SAMPLE / "acdc091_ES_labels.nii.gz"
SET = {"displacement.nii.gz", "warped.nii.gz", "jacobian.nii.gz", "metrics.json"}


@pytest.fixture
def fast(untrained_weights) -> list[str]:
    """Options of a quick run: untrained weights, no refinement, CPU."""
    return ["--weights", str(untrained_weights), "--refine", "0", "--device", "cpu"]


def register(fixed: Path, moving: Path, out: str | Path, *extra: str) -> list[str]:
    return ["register", str(fixed), str(moving), "--out-dir", str(out), *extra]


def refused(capsys, args: list[str], words: str) -> None:
    """The run exits 2 with one line naming the problem, before reading any image."""
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fsdiffreg: error:") and words in err[0], err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_an_input_inside_the_out_dir_is_never_written_over(tmp_path, capsys, fast):
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(FIXED, folder / "fixed.nii.gz")
    shutil.copy(MOVING, folder / "warped.nii.gz")  # named like an output
    before = snapshot(folder)
    refused(capsys, register(folder / "fixed.nii.gz", folder / "warped.nii.gz", folder, *fast), "inside the output")
    assert snapshot(folder) == before


def test_a_previous_runs_output_is_not_an_input_of_the_next_run_into_the_same_folder(tmp_path, capsys, fast):
    out = tmp_path / "out"
    assert main(register(FIXED, MOVING, out, *fast)) == 0
    capsys.readouterr()
    before = snapshot(out)
    refused(capsys, register(FIXED, out / "warped.nii.gz", out, *fast), "inside the output")
    assert snapshot(out) == before


def test_an_empty_out_dir_is_refused(tmp_path, capsys, monkeypatch, fast):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics.json").write_text("my own metrics\n")
    refused(capsys, register(FIXED, MOVING, "", *fast), "output folder")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert (tmp_path / "metrics.json").read_text() == "my own metrics\n"


def test_an_out_dir_that_is_a_file_is_refused(tmp_path, capsys, fast):
    out = tmp_path / "out"
    out.write_text("a file")
    refused(capsys, register(FIXED, MOVING, out, *fast), "is a file")
    assert out.read_text() == "a file"


def test_user_files_in_the_out_dir_are_refused_and_kept(tmp_path, capsys, fast):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "warped.nii.gz").write_text("also mine")
    refused(capsys, register(FIXED, MOVING, out, *fast), "notes.txt")
    assert snapshot(out) == {"notes.txt": b"mine", "warped.nii.gz": b"also mine"}


def test_output_names_without_an_fsdiffreg_metrics_file_are_not_taken_for_a_previous_run(tmp_path, capsys, fast):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"accuracy": 0.9}')
    refused(capsys, register(FIXED, MOVING, out, *fast), "metrics.json")
    assert snapshot(out) == {"metrics.json": b'{"accuracy": 0.9}'}


def test_a_folder_named_like_an_output_is_refused_before_the_run(tmp_path, capsys, fast):
    out = tmp_path / "out"
    (out / "jacobian.nii.gz").mkdir(parents=True)
    refused(capsys, register(FIXED, MOVING, out, *fast), "jacobian.nii.gz")
    assert [p.name for p in out.iterdir()] == ["jacobian.nii.gz"] and (out / "jacobian.nii.gz").is_dir()


def test_a_rerun_replaces_the_whole_set(tmp_path, fast):
    out = tmp_path / "out"
    assert main(register(FIXED, MOVING, out, "--moving-labels", str(LABELS), *fast)) == 0
    assert {p.name for p in out.iterdir()} == SET | {"warped_labels.nii.gz"}
    assert main(register(MOVING, FIXED, out, *fast)) == 0  # no labels this time, images swapped
    assert {p.name for p in out.iterdir()} == SET
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inputs"]["fixed"]["path"] == str(MOVING.resolve())
    assert metrics["inputs"]["moving"]["path"] == str(FIXED.resolve())
    assert "moving_labels" not in metrics["inputs"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging, lock or old set left beside it


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "FSDiffRegLib.commands.cli", *args]


def in_read_only_place(args: list[str], read_only: Path, writable: Path | None = None) -> subprocess.CompletedProcess:
    """The command line in a child that finds ``read_only`` read-only (``writable`` inside it still writable).

    An ordinary user gets a chmod; root, who writes anywhere, a read-only bind mount in a
    mount namespace of the child's own (``unshare -m``), the real read-only file system.
    """
    if not hasattr(os, "geteuid"):
        pytest.skip("read-only places are made with POSIX permissions or mounts")
    if os.geteuid() != 0:
        read_only.chmod(0o555)
        try:
            return subprocess.run(cli(*args), capture_output=True, text=True, cwd=ROOT)
        finally:
            read_only.chmod(0o755)
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("running as root without unshare -m: no way to make a read-only place")
    mounts = [f"mount --bind {shlex.quote(str(read_only))} {shlex.quote(str(read_only))}",
              f"mount -o remount,bind,ro {shlex.quote(str(read_only))}"]
    if writable is not None:
        mounts += [f"mount --bind {shlex.quote(str(writable))} {shlex.quote(str(writable))}",
                   f"mount -o remount,bind,rw {shlex.quote(str(writable))}"]
    script = " && ".join([*mounts, "exec " + shlex.join(cli(*args))])
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT)


def test_an_out_dir_in_a_read_only_place_is_refused_before_the_run(tmp_path, fast):
    place = tmp_path / "read-only"
    place.mkdir()
    run = in_read_only_place(register(FIXED, MOVING, place / "out", *fast), place)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("fsdiffreg: error: cannot write"), run.stderr
    assert list(place.iterdir()) == []


def test_a_writable_out_dir_inside_a_read_only_parent_works(tmp_path, fast):
    place = tmp_path / "read-only"
    out = place / "out"
    out.mkdir(parents=True)
    run = in_read_only_place(register(FIXED, MOVING, out, *fast), place, out)
    assert run.returncode == 0, run.stderr
    assert {p.name for p in out.iterdir()} == SET
    assert [p.name for p in place.iterdir()] == ["out"]
    run = in_read_only_place(register(MOVING, FIXED, out, *fast), place, out)  # a rerun replaces it in place
    assert run.returncode == 0, run.stderr
    assert {p.name for p in out.iterdir()} == SET
    assert json.loads((out / "metrics.json").read_text())["inputs"]["fixed"]["path"] == str(MOVING.resolve())


def interruptible() -> None:
    """Ctrl-C's default disposition in the child, as a terminal gives it: a shell's background job (CI run with
    ``&`` or nohup) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_long_run(out: Path, weights: Path) -> subprocess.Popen:
    """A register with a long refinement, returned once it is refining."""
    child = subprocess.Popen(cli(*register(FIXED, MOVING, out, "--weights", str(weights), "--refine", "3000",
                                           "--device", "cpu")),
                             stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=interruptible)
    for line in child.stderr:
        if line.startswith("fsdiffreg: refining"):
            return child
    child.wait()
    pytest.fail(f"the run ended before refining (exit {child.returncode})")


def test_ctrl_c_ends_a_run_with_one_line_and_leaves_nothing(tmp_path, untrained_weights):
    out = tmp_path / "out"
    child = start_long_run(out, untrained_weights)
    child.send_signal(signal.SIGINT)
    rest = child.stderr.read()
    assert child.wait(timeout=60) == 130
    assert rest.splitlines()[-1] == "fsdiffreg: interrupted" and "Traceback" not in rest, rest
    assert list(tmp_path.iterdir()) == []


def test_a_second_run_into_an_out_dir_being_written_is_refused(tmp_path, capsys, untrained_weights, fast):
    out = tmp_path / "out"
    child = start_long_run(out, untrained_weights)
    try:
        refused(capsys, register(FIXED, MOVING, out, *fast), "another fsdiffreg run")
    finally:
        child.kill()
        child.wait()


def test_what_a_killed_run_left_is_removed_by_the_next_run(tmp_path, untrained_weights, fast):
    out = tmp_path / "out"
    child = start_long_run(out, untrained_weights)
    child.kill()  # SIGKILL: no clean-up
    child.wait()
    left = {p.name for p in tmp_path.iterdir()}
    assert any(".fsdiffreg-stage-" in name for name in left), left
    (tmp_path / ".out.fsdiffreg-old-0123abcd").mkdir()  # a set moved aside by a run killed mid-swap
    (tmp_path / ".out.fsdiffreg-old-0123abcd" / "warped.nii.gz").write_text("old")
    (tmp_path / ".out-mine").mkdir()  # not ours
    (tmp_path / ".out.fsdiffreg-stage-mine").mkdir()  # not a name we make
    assert main(register(FIXED, MOVING, out, *fast)) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"out", ".out-mine", ".out.fsdiffreg-stage-mine"}
    assert {p.name for p in out.iterdir()} == SET


def small_result(field_value: float = 0.5, metric: float = 0.1) -> Registration:
    """A registration of an 8^3 image with a constant displacement."""
    image = sitk.Image([8, 8, 8], sitk.sitkFloat32) + 1.0
    field = sitk.Image([8, 8, 8], sitk.sitkVectorFloat64, 3) + field_value
    jacobian = sitk.Image([8, 8, 8], sitk.sitkFloat32) + 1.0
    return Registration(field, image, jacobian, image, {"folding_percent": 0.0, "sd_jacobian": metric})


def test_a_set_is_stamped_with_the_version_and_written_as_strict_json(tmp_path):
    out = write_outputs(small_result(), tmp_path / "out")
    assert json.loads((out / "metrics.json").read_text()) == {"fsdiffreg": __version__, "folding_percent": 0.0,
                                                              "sd_jacobian": 0.1}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_field_is_never_written(tmp_path, value):
    with pytest.raises(ValueError, match="NaN or infinite values in displacement.nii.gz"):
        write_outputs(small_result(field_value=value), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_the_displacement_is_a_nifti_displacement_field_in_ras_read_back_in_lps(tmp_path):
    """Intent 1006 (displacement vector), as Slicer writes and expects; NIfTI stores it in RAS, and ITK 5.4
    (SimpleITK 2.4+, Slicer) reads it back in LPS, ITK's own convention."""
    result = small_result()
    lps = np.random.default_rng(0).normal(size=(8, 8, 8, 3))
    field = sitk.GetImageFromArray(lps, isVector=True)
    field.SetOrigin((-3.0, 4.0, 5.5))
    result.field = field
    out = write_outputs(result, tmp_path / "out")
    assert {p.name for p in out.iterdir()} == SET
    stored = nibabel.load(str(out / "displacement.nii.gz"))
    assert stored.header.get_intent()[0] == "displacement vector"
    on_disk = np.asarray(stored.dataobj)[:, :, :, 0, :].transpose(2, 1, 0, 3)  # (x, y, z, t, c) -> (z, y, x, c)
    np.testing.assert_array_equal(on_disk, lps * [-1.0, -1.0, 1.0])
    read = sitk.ReadImage(str(out / "displacement.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), lps)
    assert read.GetOrigin() == field.GetOrigin() and read.GetPixelID() == sitk.sitkVectorFloat64


def test_a_non_finite_metric_is_never_written(tmp_path):
    with pytest.raises(ValueError, match="non-finite values for sd_jacobian"):
        write_outputs(small_result(metric=float("nan")), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_swap_keeps_the_previous_set(tmp_path, monkeypatch):
    out = write_outputs(small_result(), tmp_path / "out")
    before = snapshot(out)
    rename = os.rename

    def failing(source, target):
        if ".fsdiffreg-stage-" in str(source):
            raise OSError(28, "No space left on device")
        rename(source, target)

    monkeypatch.setattr(outputs.os, "rename", failing)
    with pytest.raises(OSError):
        write_outputs(small_result(field_value=2.0), out)
    assert snapshot(out) == before and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_file_that_arrives_during_the_run_is_kept_and_nothing_is_written(tmp_path):
    out = write_outputs(small_result(), tmp_path / "out")
    before = snapshot(out)
    with pytest.raises(OutputError, match="changed during the run"):
        with output_folder(out) as staging:
            (out / "notes.txt").write_text("mine")
            outputs.write_metrics(staging, {"ncc_after": 0.9})
    assert snapshot(out) == {**before, "notes.txt": b"mine"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_current_folder_is_filled_in_place_not_renamed_away(tmp_path, monkeypatch):
    out = write_outputs(small_result(), tmp_path / "out")
    inode = out.stat().st_ino
    monkeypatch.chdir(out)
    write_outputs(small_result(field_value=2.0), ".")
    assert out.stat().st_ino == inode and os.path.samefile(os.getcwd(), out)
    assert {p.name for p in out.iterdir()} == SET
    field = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "displacement.nii.gz")))
    assert np.all(field == 2.0)


def test_clear_left_removes_what_stopped_runs_left_but_not_a_live_runs_nor_a_users(tmp_path: Path) -> None:
    """``batch --dask`` after its workers were stopped: the cases' locks and staging folders go, a case whose lock a
    live run holds keeps them, and nothing else in the folder is touched."""
    for name in (".a.fsdiffreg-stage-0123abcd", ".a.fsdiffreg-old-89abcdef", ".b.fsdiffreg-stage-0123abcd", "a",
                 ".a.fsdiffreg-stage-mine", ".c.fsdiffreg-notes"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "displacement.nii.gz").write_bytes(b"partial")
    (tmp_path / ".a.fsdiffreg-lock").write_text("")
    (tmp_path / "a" / ".a.fsdiffreg-stage-fedcba98").mkdir()  # a set filled in place
    with outputs.locked(tmp_path / ".b.fsdiffreg-lock", tmp_path / "b"):  # a live run writes b
        outputs.clear_left(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            ".a.fsdiffreg-stage-mine", ".b.fsdiffreg-lock", ".b.fsdiffreg-stage-0123abcd", ".c.fsdiffreg-notes", "a"]
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["displacement.nii.gz"]
