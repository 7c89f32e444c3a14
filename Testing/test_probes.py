"""Probes of ``register`` and ``track`` as a hurried user or a failing machine meets them (issue 20, "Output
that lies"): real processes on real files, writes cut by ``ulimit -f``, a full tmpfs and a read-only bind mount
(``unshare -m``, skipped with the reason where the machine does not allow it).

Every refusal is one line ``fsdiffreg: error: ...`` with exit status 2, and the out-dir is left as it was:
a previous set byte for byte, no staging folder, lock or partial file beside it.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT
from FSDiffRegLib import __version__
from FSDiffRegLib.imaging.imageio import MAX_LABELS, PLAUSIBLE_SPACING_MM
from FSDiffRegLib.pipeline.function import MIN_STRUCTURE_VOXELS
from FSDiffRegLib.resources import sample_pair

SAMPLE = sample_pair()
FIXED, MOVING = SAMPLE["fixed"], SAMPLE["moving"]
ED_LABELS = SAMPLE["fixed_labels"]
FAST = ["--refine", "0", "--device", "cpu"]


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "FSDiffRegLib.commands.cli", *map(str, args)]


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, cwd=ROOT)


def in_shell(script: str) -> subprocess.CompletedProcess:
    """A bash script (``ulimit``, mounts) that ends by running the command line."""
    if shutil.which("bash") is None:
        pytest.skip("no bash here to set a file-size limit with ulimit")
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT)


def in_mount_namespace(script: str) -> subprocess.CompletedProcess:
    """A bash script in a mount namespace of its own (root only): mounts made there vanish with it."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("a tmpfs or read-only bind mount needs root (unshare -m), and this runs as another user")
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("unshare -m is not allowed here: no way to mount a small tmpfs or a read-only bind")
    return subprocess.run(["unshare", "-m", "bash", "-c", script], capture_output=True, text=True, cwd=ROOT)


def refused(result: subprocess.CompletedProcess, *words: str) -> str:
    """The run ended with exit 2 and one error line holding ``words`` (no traceback, no ITK or errno noise)."""
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and errors[0].startswith("fsdiffreg: error: "), result.stderr
    assert all(word in errors[0] for word in words), errors[0]
    assert "NWAD" not in result.stderr and "Errno" not in result.stderr, result.stderr
    return errors[0]


def previous_set(out: Path) -> dict[str, bytes]:
    """A previous run's set in ``out`` (what a run may replace); its bytes by name."""
    out.mkdir(parents=True)
    (out / "displacement.nii.gz").write_bytes(b"the previous field")
    (out / "volumes.csv").write_text("frame,LV_ml\n1,100.000\n")
    (out / "metrics.json").write_text(json.dumps({"fsdiffreg": __version__}))
    return snapshot(out)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def kept(out: Path, before: dict[str, bytes]) -> None:
    """``out`` holds its previous set byte for byte, and nothing was left beside it."""
    assert snapshot(out) == before
    assert [p.name for p in out.parent.iterdir()] == [out.name]


@pytest.fixture(scope="module")
def cine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's ED and ES as a frames folder: frame1 (ED), frame2 (ES)."""
    folder = tmp_path_factory.mktemp("cine") / "frames"
    folder.mkdir()
    shutil.copy(FIXED, folder / "frame1.nii.gz")
    shutil.copy(MOVING, folder / "frame2.nii.gz")
    return folder


def written_like(path: Path, reference: Path, array: np.ndarray) -> Path:
    """``array`` (z, y, x) on ``reference``'s grid, written to ``path``."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(sitk.ReadImage(str(reference)))
    sitk.WriteImage(image, str(path))
    return path


# --- writes that fail: the previous set is kept, one line names the file and the cause ---

def test_register_over_the_file_size_limit_keeps_the_previous_set(tmp_path):
    """ITK writes 1000 KiB of the 2.8 MB field and says nothing; the run must not commit it."""
    out = tmp_path / "out"
    before = previous_set(out)
    result = in_shell("ulimit -f 1000; exec " + shlex.join(command("register", FIXED, MOVING, "--out-dir", out,
                                                                    *FAST)))
    line = refused(result, "displacement.nii.gz", "file-size limit", str(out))
    assert "\n" not in line
    kept(out, before)


def test_track_over_the_file_size_limit_keeps_the_previous_set(tmp_path, cine):
    out = tmp_path / "out"
    before = previous_set(out)
    result = in_shell("ulimit -f 1000; exec " + shlex.join(command("track", cine, "--labels", ED_LABELS,
                                                                    "--out-dir", out, *FAST)))
    refused(result, "cannot write field_0", "file-size limit")
    kept(out, before)


def test_a_json_file_cut_by_the_file_size_limit_is_a_write_error_naming_it(tmp_path):
    """Python's own writes (metrics.json, volumes.csv, the figures) fail with an errno but no file name."""
    path = tmp_path / "metrics.json"
    code = ("import sys; from pathlib import Path; from FSDiffRegLib.outputs.folder import WriteError, write_json\n"
            "try:\n"
            f"    write_json(Path({str(path)!r}), {{'values': list(range(100000))}})\n"
            "except WriteError as err:\n"
            "    sys.exit(str(err))\n")
    result = in_shell("ulimit -f 4; exec " + shlex.join([sys.executable, "-c", code]))
    assert result.returncode == 1
    assert result.stderr.strip() == ("cannot write metrics.json: it reached the file-size limit of 4096 bytes "
                                     "(ulimit -f) before it was whole"), result.stderr


def test_a_full_disk_keeps_the_previous_set(tmp_path):
    """The out-dir on a 2 MiB tmpfs holding a previous set: the 2.8 MB field cannot be written."""
    place = tmp_path / "disk"
    place.mkdir()
    out = place / "out"
    q = {name: shlex.quote(str(path)) for name, path in (("place", place), ("out", out))}
    result = in_mount_namespace(
        f"mount -t tmpfs -o size=2m tmpfs {q['place']} && mkdir {q['out']} && "
        f"printf x > {q['out']}/displacement.nii.gz && printf '{{\"fsdiffreg\": \"0\"}}' > {q['out']}/metrics.json"
        f" && {shlex.join(command('register', FIXED, MOVING, '--out-dir', out, *FAST))}; status=$?; "
        f"ls -A {q['place']} {q['out']}; cat {q['out']}/displacement.nii.gz; exit $status")
    refused(result, "displacement.nii.gz", "disk is full", str(out))
    assert result.stdout.split() == [f"{place}:", "out", f"{out}:", "displacement.nii.gz", "metrics.json", "x"], \
        result.stdout


def test_a_read_only_out_dir_is_refused_before_the_run_and_kept(tmp_path):
    out = tmp_path / "out"
    before = previous_set(out)
    quoted = shlex.quote(str(out))
    result = in_mount_namespace(f"mount --bind {quoted} {quoted} && mount -o remount,bind,ro {quoted} && exec "
                                + shlex.join(command("register", FIXED, MOVING, "--out-dir", out, *FAST)))
    refused(result, "read-only", str(out))
    assert "registering" not in result.stderr  # refused before any computation
    kept(out, before)


def test_an_out_dir_that_is_a_bind_mount_is_filled_in_place(tmp_path):
    """A mount point cannot be renamed away: a bind mount of the same file system (which os.path.ismount misses)
    ended the run after all its computing with 'Device or resource busy'."""
    out = tmp_path / "out"
    previous_set(out)
    quoted = shlex.quote(str(out))
    result = in_mount_namespace(f"mount --bind {quoted} {quoted} && "
                                + shlex.join(command("register", FIXED, MOVING, "--out-dir", out, *FAST))
                                + f" && ls -A {quoted}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-4:] == ["displacement.nii.gz", "jacobian.nii.gz", "metrics.json", "warped.nii.gz"]


# --- labels: integer-valued, few values; one check for register and track ---

def test_an_intensity_image_as_moving_labels_is_refused(tmp_path):
    out = tmp_path / "out"
    result = run("register", FIXED, MOVING, "--moving-labels", MOVING, "--out-dir", out, *FAST)
    refused(result, "moving labels", f"more than the {MAX_LABELS}", "intensity image")
    assert not out.exists()


def test_an_int16_intensity_image_as_track_labels_is_refused(tmp_path, cine):
    labels = written_like(tmp_path / "es_int16.nii.gz", MOVING,
                          sitk.GetArrayFromImage(sitk.ReadImage(str(MOVING))).astype(np.int16))
    out = tmp_path / "out"
    refused(run("track", cine, "--labels", labels, "--out-dir", out, *FAST), "ED labels", "intensity image")
    assert not out.exists()


@pytest.mark.parametrize("value, words", [(2**63 + 5, "9223372036854775813"), (-1, "-1")])
def test_label_values_beyond_a_label_image_are_refused(tmp_path, cine, value, words):
    """uint64 labels at or above 2**63 came out as label-9223372036854775808 on one frame and ...803 on another."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(ED_LABELS))).astype(np.uint64 if value > 0 else np.int32)
    array[array == 3] = value
    labels = written_like(tmp_path / "labels.nrrd", ED_LABELS, array)
    out = tmp_path / "out"
    refused(run("track", cine, "--labels", labels, "--out-dir", out, *FAST), "ED labels", words,
            "from 0 (background)")
    assert not out.exists()


def test_whole_numbers_stored_as_float_are_labels_in_track_as_in_register(tmp_path, cine):
    labels = written_like(tmp_path / "float_labels.nii.gz", ED_LABELS,
                          sitk.GetArrayFromImage(sitk.ReadImage(str(ED_LABELS))).astype(np.float32))
    out = tmp_path / "out"
    result = run("track", cine, "--labels", labels, "--out-dir", out, *FAST)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((out / "volumes.csv").open()))
    assert list(rows[0]) == ["frame", "RV_ml", "Myo_ml", "LV_ml"]
    carried = sitk.ReadImage(str(out / "labels.nii.gz"))
    assert carried.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(carried)[0], sitk.GetArrayFromImage(sitk.ReadImage(str(ED_LABELS))))


# --- geometry that cannot be registered faithfully ---

def sheared_nifti(path: Path) -> Path:
    """The fixed image with an sform whose first two axes meet at 63 degrees (nibabel writes what ITK cannot)."""
    image = nibabel.load(str(FIXED))
    affine = image.affine.copy()
    affine[0, 1] += 0.5
    sheared = nibabel.Nifti1Image(np.asanyarray(image.dataobj), affine)
    sheared.header.set_sform(affine, 1)
    nibabel.save(sheared, str(path))
    return path


def sheared_metaimage(path: Path) -> Path:
    image = sitk.ReadImage(str(FIXED))
    image.SetDirection((1, 0.3, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(path))
    return path


def spaced(path: Path, reference: Path, spacing_z: float) -> Path:
    image = sitk.ReadImage(str(reference))
    image.SetSpacing((*image.GetSpacing()[:2], spacing_z))
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("case, words", [
    ("sheared nifti", "sheared sform"),
    ("sheared metaimage", "axes are not perpendicular"),
    ("1000 mm slices", f"outside the {PLAUSIBLE_SPACING_MM[0]:g} to {PLAUSIBLE_SPACING_MM[1]:g} mm"),
    ("spacing in metres", "voxel spacing of (0.00156"),
])
def test_geometry_that_cannot_be_registered_faithfully_is_refused(tmp_path, case, words):
    """A sheared grid gave outputs on another grid; 1000 mm slices an identity field, with exit 0."""
    fixed, moving = {
        "sheared nifti": lambda: (sheared_nifti(tmp_path / "fixed.nii.gz"), MOVING),
        "sheared metaimage": lambda: (sheared_metaimage(tmp_path / "fixed.mha"), MOVING),
        "1000 mm slices": lambda: (spaced(tmp_path / "ed.nii.gz", FIXED, 1000.0),
                                   spaced(tmp_path / "es.nii.gz", MOVING, 1000.0)),
        "spacing in metres": lambda: (metres(tmp_path / "ed.nii.gz", FIXED), metres(tmp_path / "es.nii.gz", MOVING)),
    }[case]()
    out = tmp_path / "out"
    refused(run("register", fixed, moving, "--out-dir", out, *FAST), "fixed image", words)
    assert not out.exists()


def metres(path: Path, reference: Path) -> Path:
    image = sitk.ReadImage(str(reference))
    image.SetSpacing([s / 1000.0 for s in image.GetSpacing()])
    sitk.WriteImage(image, str(path))
    return path


def test_a_cine_of_sheared_frames_is_refused(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    sheared_metaimage(folder / "frame1.mha")
    image = sitk.ReadImage(str(MOVING))
    image.SetDirection((1, 0.3, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(folder / "frame2.mha"))
    out = tmp_path / "out"
    refused(run("track", folder, "--labels", ED_LABELS, "--out-dir", out, *FAST), "frame1.mha",
            "axes are not perpendicular")
    assert not out.exists()


# --- cines ---

def test_a_label_file_in_a_frames_folder_is_refused_not_taken_for_a_frame(tmp_path):
    """ACDC keeps frameNN_gt.nii.gz beside frameNN.nii.gz; it was read as a third frame."""
    folder = tmp_path / "frames"
    folder.mkdir()
    shutil.copy(FIXED, folder / "patient091_frame01.nii.gz")
    shutil.copy(MOVING, folder / "patient091_frame02.nii.gz")
    shutil.copy(ED_LABELS, folder / "patient091_frame01_gt.nii.gz")
    out = tmp_path / "out"
    refused(run("track", folder, "--labels", ED_LABELS, "--out-dir", out, *FAST),
            "holds label files (patient091_frame01_gt.nii.gz)", "--labels")
    assert not out.exists()


def test_a_structure_of_a_few_voxels_is_refused_not_given_an_ef(tmp_path, cine):
    """Two voxels of LV gave LV EF 100 %."""
    array = np.zeros_like(sitk.GetArrayFromImage(sitk.ReadImage(str(ED_LABELS))))
    array[4, 110, 90:92] = 3  # far fewer than MIN_STRUCTURE_VOXELS
    labels = written_like(tmp_path / "two.nii.gz", ED_LABELS, array)
    out = tmp_path / "out"
    refused(run("track", cine, "--labels", labels, "--out-dir", out, *FAST),
            "LV (label 3) has 2 voxels", f"at least {MIN_STRUCTURE_VOXELS}")
    assert not out.exists()


@pytest.mark.parametrize("form", ["spaced", "joined"])
def test_negative_frame_times_are_accepted(tmp_path, cine, form):
    """Times from any origin (here the R wave 10 ms after the first frame), increasing."""
    times = ["--frame-times-ms", "-10,20"] if form == "spaced" else ["--frame-times-ms=-10,20"]
    out = tmp_path / "out"
    result = run("track", cine, "--labels", ED_LABELS, "--out-dir", out, *times, *FAST)
    assert result.returncode == 0, result.stderr
    assert [row["time_ms"] for row in csv.DictReader((out / "volumes.csv").open())] == ["-10.000", "20.000"]
    labels = sitk.ReadImage(str(out / "labels.nii.gz"))
    assert labels.GetOrigin()[3] == pytest.approx(-0.010) and labels.GetSpacing()[3] == pytest.approx(0.030)


def test_frame_times_that_do_not_increase_are_still_refused_with_a_minus(tmp_path, cine):
    out = tmp_path / "out"
    result = run("track", cine, "--labels", ED_LABELS, "--out-dir", out, "--frame-times-ms", "-10,-20", *FAST)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "argument --frame-times-ms: must be finite times in ms, each later than the one before, got -10,-20" \
        in result.stderr
    assert not out.exists()


# --- what else a hurried user does ---

def test_the_same_file_as_fixed_and_moving_is_refused(tmp_path):
    """It gave a field that made NCC worse (1.000 -> 0.999), with exit 0."""
    out = tmp_path / "out"
    refused(run("register", FIXED, FIXED, "--out-dir", out, *FAST), "the same file")
    assert not out.exists()
