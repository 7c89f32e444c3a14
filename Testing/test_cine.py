"""Reading a cine: 4D files and frame folders, their frame times, and every bad input refused in one line."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from FSDiffRegLib.errors import InputError
from FSDiffRegLib.imaging.cine import Cine, check_cine_labels, join_frames, read_cine, reference_index
from FSDiffRegLib.imaging.imageio import MIN_VOXELS

SUNNYBROOK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sunnybrook-cine" / "SCD0000101"
SIZE = (9, 8, 5)
DIRECTION = tuple(sitk.VersorTransform((0.3, -0.5, 0.8), 0.7).GetMatrix())  # oblique, as a short-axis stack


def frame(value: float, size: tuple[int, ...] = SIZE, spacing=(1.4, 1.4, 8.0)) -> sitk.Image:
    """A small oblique float frame whose voxels tell which frame it is (``value`` at voxel 0, a ramp elsewhere)."""
    array = np.arange(np.prod(size), dtype=np.float32).reshape(size[::-1]) + 100 * value
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((12.5, -40.0, 7.25))
    image.SetDirection(DIRECTION)
    return image


def same_frame(a: sitk.Image, b: sitk.Image) -> bool:
    """Voxel for voxel and in geometry, exactly."""
    return (np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
            and a.GetPixelID() == b.GetPixelID() and a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing()
            and a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection())


def write_nifti(array: np.ndarray, path: Path, units: str | None = None, interval: float = 1.0,
                toffset: float = 0.0) -> Path:
    """``array`` (x, y, z, t, ...) as NIfTI written by nibabel, with the time unit, pixdim[4] and toffset given."""
    image = nibabel.Nifti1Image(array, np.diag([1.5, 1.5, 8.0, 1.0]))
    if units:
        image.header.set_xyzt_units("mm", units)
    image.header["pixdim"][4] = interval
    image.header["toffset"] = toffset
    nibabel.save(image, str(path))
    return path


def ramp(*shape: int) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def tree(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def sunnybrook() -> Cine:
    if not (SUNNYBROOK / "SCD0000101_4d.nii.gz").is_file():
        pytest.skip(f"Sunnybrook cine not found at {SUNNYBROOK}: these tests need ../shared/data/sunnybrook-cine")
    return read_cine(SUNNYBROOK / "SCD0000101_4d.nii.gz")


def test_sunnybrook_cine_has_20_frames_and_its_frame_8_is_the_3d_frame_file(sunnybrook):
    assert len(sunnybrook.frames) == 20
    assert all(f.GetDimension() == 3 and f.GetSize() == (256, 256, 12) for f in sunnybrook.frames)
    frame08 = sitk.ReadImage(str(SUNNYBROOK / "SCD0000101_frame08.nii.gz"))
    assert same_frame(sunnybrook.frames[reference_index(sunnybrook, 8)], frame08)
    assert not same_frame(sunnybrook.frames[reference_index(sunnybrook, 9)], frame08)


def test_sunnybrook_placeholder_interval_gives_no_frame_times(sunnybrook):
    header = nibabel.load(str(SUNNYBROOK / "SCD0000101_4d.nii.gz")).header
    assert header.get_xyzt_units() == ("mm", "sec") and float(header["pixdim"][4]) == 1.0  # 1 s: not an interval
    assert sunnybrook.times_ms is None


def test_frame_folder_is_read_in_natural_order_of_names(tmp_path):
    numbers = list(range(1, 13))
    random.Random(3).shuffle(numbers)
    for n in numbers:  # written in shuffled order; lexical order would put frame_10 before frame_2
        sitk.WriteImage(frame(n), str(tmp_path / f"frame_{n}.nrrd"))
    (tmp_path / ".DS_Store").write_bytes(b"\0" * 10)
    (tmp_path / "subfolder").mkdir()
    cine = read_cine(tmp_path)
    assert [float(sitk.GetArrayViewFromImage(f)[0, 0, 0]) for f in cine.frames] == [100.0 * n for n in range(1, 13)]
    assert cine.times_ms is None
    assert all(np.array_equal(sitk.GetArrayViewFromImage(f), sitk.GetArrayFromImage(frame(n)))
               for n, f in enumerate(cine.frames, 1))


def test_frames_equal_within_tolerance_are_put_on_one_grid(tmp_path):
    nudged = frame(2)
    nudged.SetOrigin(np.add(nudged.GetOrigin(), 1e-5).tolist())
    sitk.WriteImage(frame(1), str(tmp_path / "frame1.mha"))
    sitk.WriteImage(nudged, str(tmp_path / "frame2.mha"))
    cine = read_cine(tmp_path)
    assert cine.frames[1].GetOrigin() == cine.frames[0].GetOrigin()


@pytest.mark.parametrize("suffix", ["nii.gz", "mha", "nrrd"])
def test_4d_files_split_into_frames_with_their_3d_geometry(tmp_path, suffix):
    frames = [frame(n) for n in range(3)]
    path = tmp_path / f"cine.{suffix}"
    sitk.WriteImage(sitk.JoinSeries(frames), str(path))
    cine = read_cine(path)
    assert len(cine.frames) == 3
    for mine, given in zip(cine.frames, frames):
        assert np.array_equal(sitk.GetArrayViewFromImage(mine), sitk.GetArrayViewFromImage(given))
        assert np.allclose(mine.GetDirection(), DIRECTION, atol=1e-6)  # NIfTI stores float32
        assert np.allclose(mine.GetOrigin() + mine.GetSpacing(), given.GetOrigin() + given.GetSpacing(), atol=1e-5)


@pytest.mark.parametrize(("units", "interval", "toffset", "times"), [
    ("sec", 0.04, 0.0, [0.0, 40.0, 80.0]),
    ("msec", 33.5, 10.0, [10.0, 43.5, 77.0]),
    ("sec", 1.0, 0.0, None),  # Sunnybrook's placeholder
    ("msec", 2.0, 0.0, None),  # too short to be a frame interval
    (None, 40.0, 0.0, None),  # no time unit
])
def test_frame_times_from_a_nifti_header(tmp_path, units, interval, toffset, times):
    path = write_nifti(ramp(6, 6, 5, 3), tmp_path / "cine.nii.gz", units, interval, toffset)
    assert read_cine(path).times_ms == times


def bad_inputs() -> dict[str, tuple[Callable[[Path], Path], str]]:
    """Name -> (writes the bad input under a folder and returns its path, what the error must say)."""

    def folder_of(*images: sitk.Image, names=None) -> Callable[[Path], Path]:
        def make(tmp: Path) -> Path:
            (tmp / "frames").mkdir()
            for i, image in enumerate(images):
                sitk.WriteImage(image, str(tmp / "frames" / (names[i] if names else f"frame_{i + 1}.nii.gz")))
            return tmp / "frames"
        return make

    def file_of(image: sitk.Image, name: str) -> Callable[[Path], Path]:
        def make(tmp: Path) -> Path:
            sitk.WriteImage(image, str(tmp / name))
            return tmp / name
        return make

    def truncated(name: str) -> Callable[[Path], Path]:
        def make(tmp: Path) -> Path:
            whole = file_of(sitk.JoinSeries([frame(1), frame(2)]), name)(tmp)
            data = whole.read_bytes()
            whole.write_bytes(data[: len(data) // 2])
            return whole
        return make

    def with_nan(name: str) -> Callable[[Path], Path]:
        nan = frame(2)
        nan[3, 4, 2] = float("nan")
        return file_of(sitk.JoinSeries([frame(1), nan]), name)

    def empty_file(tmp: Path) -> Path:
        (tmp / "empty.nii.gz").write_bytes(b"")
        return tmp / "empty.nii.gz"

    def empty_folder(tmp: Path) -> Path:
        (tmp / "frames").mkdir()
        (tmp / "frames" / ".hidden.nii.gz").write_bytes(b"")
        return tmp / "frames"

    singular = sitk.JoinSeries([frame(1), frame(2)])
    singular.SetDirection(np.eye(4)[[0, 1, 3, 2]].ravel().tolist())  # z and t swapped: no 3D direction
    vector = sitk.Image([6, 6, 5, 2], sitk.sitkVectorFloat32, 3)
    notes = folder_of(frame(1), frame(2))
    return {
        "missing file": (lambda tmp: tmp / "nowhere.nii.gz", "cine not found"),
        "3D file": (file_of(frame(1), "frame.nii.gz"), "is a 3D image, not a cine: give a 4D image"),
        "one-frame NIfTI": (lambda tmp: write_nifti(ramp(6, 6, 5, 1), tmp / "one.nii.gz"), "has one frame"),
        "one-frame MHA": (file_of(sitk.JoinSeries([frame(1)]), "one.mha"), "has one frame"),
        "one-frame folder": (folder_of(frame(1)), "has one frame"),
        "5D NIfTI": (lambda tmp: write_nifti(ramp(6, 6, 5, 3, 2), tmp / "five.nii.gz"), r"is a 5D image"),
        "2D NIfTI": (lambda tmp: write_nifti(ramp(6, 6), tmp / "two.nii.gz"), r"is a 2D image"),
        "vector image": (file_of(vector, "vector.mha"), "3 components per voxel"),
        "singular direction": (file_of(singular, "singular.mha"), "spatial part is singular"),
        "thin frames": (file_of(sitk.JoinSeries([frame(1, (9, 8, MIN_VOXELS - 1))] * 2), "thin.nrrd"),
                        f"frame 1 image must have at least {MIN_VOXELS} voxels"),
        "blank frame": (file_of(sitk.JoinSeries([frame(1), frame(0) * 0]), "blank.mha"), "frame 2 image is empty"),
        "truncated nii.gz": (truncated("cut.nii.gz"), "incomplete or damaged"),
        "truncated nii": (truncated("cut.nii"), "incomplete or damaged"),
        "truncated mha": (truncated("cut.mha"), "incomplete or damaged"),
        "truncated nrrd": (truncated("cut.nrrd"), "incomplete or damaged"),
        "NaN in 4D NIfTI": (with_nan("nan.nii.gz"), "NaN or infinite"),
        "NaN in 4D NRRD": (with_nan("nan.nrrd"), "frame 2 image contains NaN or infinite"),
        "empty file": (empty_file, "is empty"),
        "empty folder": (empty_folder, "holds no frame files"),
        "frame sizes differ": (folder_of(frame(1), frame(2, (9, 8, 6))), r"size \(9, 8, 6\) vs \(9, 8, 5\)"),
        "frame spacings differ": (folder_of(frame(1), frame(2, spacing=(1.4, 1.4, 9.0))), "spacing .* vs"),
        "4D frame in a folder": (folder_of(frame(1), sitk.JoinSeries([frame(2)] * 2)), "image must be 3D, got 4D"),
        "text in a folder": (lambda tmp: [notes(tmp), (tmp / "frames" / "notes.txt").write_text("hi")][0],
                             "not in an image format"),
    }


BAD = bad_inputs()


@pytest.mark.parametrize("name", list(BAD))
def test_bad_cine_is_refused_in_one_line_naming_it_and_writes_nothing(tmp_path, name):
    make, match = BAD[name]
    path = make(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(InputError, match=match) as caught:
        read_cine(path)
    message = str(caught.value)
    assert "\n" not in message
    assert path.name in message
    assert tree(tmp_path) == before


@pytest.mark.parametrize("number", [0, -1, 4, 2.5, 2.0, True, "2"])
def test_a_reference_frame_out_of_range_is_refused(number):
    cine = Cine([frame(n) for n in range(3)], None)
    with pytest.raises(InputError, match=r"^reference frame .* is out of range: the cine has 3 frames \(1 to 3\)$"):
        reference_index(cine, number)


def test_reference_frames_are_numbered_from_1():
    cine = Cine([frame(n) for n in range(3)], None)
    assert [reference_index(cine, n) for n in (1, 2, 3)] == [0, 1, 2]
    assert reference_index(cine, np.int64(3)) == 2


def labels_on(image: sitk.Image) -> sitk.Image:
    labels = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(image)
    labels[4, 4, 2] = 3
    return labels


def test_labels_on_the_frame_grid_are_accepted():
    cine = Cine([frame(1), frame(2)], None)
    check_cine_labels(labels_on(cine.frames[0]), cine)
    nudged = labels_on(cine.frames[0])
    nudged.SetOrigin(np.add(nudged.GetOrigin(), 1e-4).tolist())  # within imageio's tolerance
    check_cine_labels(nudged, cine)


def shifted(labels: sitk.Image) -> sitk.Image:
    labels.SetOrigin(np.add(labels.GetOrigin(), (2.0, 0.0, 0.0)).tolist())
    return labels


def respaced(labels: sitk.Image) -> sitk.Image:
    labels.SetSpacing((1.4, 1.4, 10.0))
    return labels


def turned(labels: sitk.Image) -> sitk.Image:
    labels.SetDirection(np.eye(3).ravel().tolist())
    return labels


@pytest.mark.parametrize(("make", "match"), [
    (lambda f: labels_on(frame(1, (9, 8, 6))), r"size \(9, 8, 6\) vs \(9, 8, 5\)"),
    (lambda f: shifted(labels_on(f)), r"origin \(14\.5, .* vs \(12\.5, "),
    (lambda f: respaced(labels_on(f)), r"spacing \(1\.4, 1\.4, 10\) vs \(1\.4, 1\.4, 8\)"),
    (lambda f: turned(labels_on(f)), r"direction \(1, 0, 0, "),
    (lambda f: sitk.JoinSeries([labels_on(f)] * 2), "must be a 3D scalar image, got 4D"),
    (lambda f: f * 0.5, r"not integers \(e\.g\. 75\.5\)"),
])
def test_labels_off_the_frame_grid_are_refused_naming_what_differs(make, match):
    cine = Cine([frame(1.5), frame(2)], None)
    with pytest.raises(InputError, match=match) as caught:
        check_cine_labels(make(cine.frames[0]), cine)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("ED labels")


@pytest.mark.parametrize("times", [[20.0, 60.0, 100.0], None])
def test_joined_frames_round_trip_through_nifti_as_3d_files_do(tmp_path, times):
    frames = [sitk.Cast(labels_on(frame(n)) * (n + 1), sitk.sitkUInt8) for n in range(3)]
    joined = join_frames(frames, times)
    assert joined.GetSpacing()[3] == (0.04 if times else 1.0) and joined.GetOrigin()[3] == (0.02 if times else 0.0)
    sitk.WriteImage(joined, str(tmp_path / "labels.nii.gz"))
    assert nibabel.load(str(tmp_path / "labels.nii.gz")).header.get_xyzt_units() == ("mm", "sec")
    cine = read_cine(tmp_path / "labels.nii.gz")
    assert cine.times_ms == times
    for n, (mine, given) in enumerate(zip(cine.frames, frames)):
        sitk.WriteImage(given, str(tmp_path / f"frame{n}.nii.gz"))  # NIfTI stores geometry as float32
        assert same_frame(mine, sitk.ReadImage(str(tmp_path / f"frame{n}.nii.gz")))
        assert np.allclose(mine.GetDirection(), given.GetDirection(), rtol=0, atol=1e-6)
