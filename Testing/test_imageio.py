"""Reading the user's images: every bad file refused with one clear line, DICOM series folders read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from FSDiffRegLib.errors import InputError
from FSDiffRegLib.imaging.imageio import check_image, check_labels, read_image
from FSDiffRegLib.resources import sample_pair

SAMPLE = sample_pair()


@pytest.fixture(scope="module")
def fixed() -> sitk.Image:
    return sitk.ReadImage(str(SAMPLE["fixed"]))


def refused(path: Path | sitk.Image, match: str) -> str:
    """The one-line InputError that reading ``path`` gives (it must match ``match``)."""
    with pytest.raises(InputError, match=match) as caught:
        read_image(path, "fixed")
    message = str(caught.value)
    assert "\n" not in message and "Unable to determine ImageIO" not in message
    return message


@pytest.mark.parametrize("suffix", ["nii.gz", "nii", "mha", "nrrd"])
def test_a_truncated_file_is_refused(fixed, tmp_path, suffix):
    whole = tmp_path / f"whole.{suffix}"
    sitk.WriteImage(fixed, str(whole))
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    message = refused(cut, "incomplete or damaged")
    assert "No such file" not in message  # what ITK's MetaImage reader said for a cut .mha


@pytest.mark.parametrize("suffix", ["nii.gz", "nii", "mha", "nrrd"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_voxels_are_refused_in_every_format(fixed, tmp_path, suffix, value):
    array = sitk.GetArrayFromImage(fixed)
    array[3, 100, 90] = value
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(fixed)
    path = tmp_path / f"bad.{suffix}"
    sitk.WriteImage(image, str(path))
    refused(path, "NaN or infinite")


def test_an_image_thinner_than_four_voxels_is_refused(fixed, tmp_path):
    sitk.WriteImage(fixed[:, :, :3], str(tmp_path / "three.nii.gz"))
    message = refused(tmp_path / "three.nii.gz", "at least 4 voxels along each axis")
    assert "(180, 224, 3)" in message
    check_image(fixed[:, :, :4], "fixed")  # four are enough


def test_empty_garbage_and_folder_inputs_name_their_problem(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    refused(tmp_path / "empty.nii.gz", "is empty")
    (tmp_path / "notes.nii.gz").write_bytes(b"not an image at all\n" * 50)
    refused(tmp_path / "notes.nii.gz", "not in an image format SimpleITK reads")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "readme.txt").write_text("no images here")
    refused(tmp_path / "folder", "no DICOM series")
    refused(tmp_path / "nowhere.nii.gz", "not found")


def write_series(image: sitk.Image, folder: Path, series: str, first: int = 0) -> None:
    """``image`` as a DICOM MR series, one file per slice, as a scanner would give it."""
    folder.mkdir(exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    d = image.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in [("0008|0060", "MR"), ("0020|000d", "1.2.826.0.1.3680043.8.498.1"),
                           ("0020|000e", series), ("0020|0037", orientation),
                           ("0020|0032", "\\".join(f"{v:.6f}" for v in position)),
                           ("0020|0013", str(first + k + 1)), ("0018|0050", str(image.GetSpacing()[2])),
                           ("0008|0018", f"{series}.{first + k + 1}")]:
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series}_{first + k:03d}.dcm"))
        writer.Execute(piece)


SERIES = "1.2.826.0.1.3680043.8.498.2"


def test_a_dicom_series_folder_is_read_as_the_volume(fixed, tmp_path):
    oblique = sitk.Image(fixed)
    oblique.SetDirection(sitk.VersorTransform((1, 2, 3), 0.3).GetMatrix())
    oblique.SetOrigin((-90.0, 12.5, 40.0))
    write_series(oblique, tmp_path / "series", SERIES)
    volume = read_image(tmp_path / "series", "fixed")
    assert volume.GetSize() == fixed.GetSize()
    assert np.array_equal(sitk.GetArrayViewFromImage(volume), sitk.GetArrayViewFromImage(fixed).astype(np.int16))
    assert np.allclose(volume.GetSpacing(), fixed.GetSpacing(), atol=1e-4)
    assert np.allclose(volume.GetDirection(), oblique.GetDirection(), atol=1e-5)
    assert np.allclose(volume.GetOrigin(), oblique.GetOrigin(), atol=1e-4)


def test_a_single_dicom_slice_asks_for_its_folder(fixed, tmp_path):
    write_series(fixed, tmp_path / "series", SERIES)
    refused(tmp_path / "series" / f"{SERIES}_003.dcm", "one DICOM slice")


def test_a_folder_with_two_series_is_refused(fixed, tmp_path):
    write_series(fixed, tmp_path / "two", SERIES)
    write_series(fixed, tmp_path / "two", SERIES + ".1")
    refused(tmp_path / "two", "holds 2 DICOM series")


def test_a_series_with_repeated_or_missing_slices_is_refused(fixed, tmp_path):
    write_series(fixed, tmp_path / "cine", SERIES)
    write_series(fixed, tmp_path / "cine", SERIES, first=100)  # a second cardiac phase in the same series
    refused(tmp_path / "cine", "repeated or missing slices")
    write_series(fixed, tmp_path / "gap", SERIES)
    (tmp_path / "gap" / f"{SERIES}_004.dcm").unlink()
    refused(tmp_path / "gap", "repeated or missing slices")


def test_labels_must_hold_integer_values(fixed):
    labels = sitk.ReadImage(str(SAMPLE["fixed_labels"]))
    check_labels(sitk.Cast(labels, sitk.sitkFloat32), fixed, "fixed")  # whole numbers stored as float: fine
    halves = sitk.Cast(labels, sitk.sitkFloat32) * 0.5
    with pytest.raises(InputError, match=r"fixed labels hold values that are not integers \(e\.g\. 0\.5\)"):
        check_labels(halves, fixed, "fixed")
