"""Reading and checking the images a user gives."""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
import SimpleITK as sitk

from .errors import InputError

sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ACDC's sform notes are harmless noise


MIN_VOXELS = 4  # ITK's recursive Gaussian (the heart locator's smoothing) needs 4 voxels along each axis
POSITION = "0020|0032"  # DICOM Image Position (Patient)
GRID_TOLERANCE = 1e-3  # spacing, origin (mm) and direction cosines of two grids that are the same


def read_image(path: str | Path, role: str) -> sitk.Image:
    """Read a 3D scalar image file, or the DICOM series in a folder, or raise InputError naming the problem."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{role} image not found: {path}")
    image = read_dicom_series(path, role) if path.is_dir() else read_file(path, role)
    check_image(image, role)
    return image


def read_file(path: Path, role: str) -> sitk.Image:
    """One image file in a format SimpleITK reads, complete and, for NIfTI, with finite voxels."""
    if path.stat().st_size == 0:
        raise InputError(f"{role} image file is empty (0 bytes): {path}")
    io = sitk.ImageFileReader.GetImageIOFromFileName(str(path))
    if not io:
        raise InputError(f"{role} image {path} is not in an image format SimpleITK reads (NIfTI, NRRD, MetaImage, "
                         "DICOM, ...)")
    try:
        image = sitk.ReadImage(str(path), imageIO=io)
    except RuntimeError:
        raise InputError(f"{role} image {path} is incomplete or damaged: {io} cannot read its voxels") from None
    if io == "NiftiImageIO":
        check_nifti_voxels(path, role)
    if io == "GDCMImageIO" and image.GetSize()[-1] == 1:
        raise InputError(f"{role} image {path} is one DICOM slice: give the folder holding its whole series")
    return image


def check_nifti_voxels(path: Path, role: str) -> None:
    """Read a NIfTI file's voxels raw (nibabel): ITK zero-fills missing data and reads NaN or infinity as 0."""
    try:
        voxels = np.asanyarray(nibabel.load(str(path)).dataobj)
    except Exception as err:  # nibabel, gzip and zlib raise many types for a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{role} image {path} is incomplete or damaged: {reason}") from None
    bad = voxels.size - int(np.count_nonzero(np.isfinite(voxels)))
    if bad:
        raise InputError(f"{role} image {path} contains NaN or infinite values ({bad} voxels)")


def read_dicom_series(folder: Path, role: str) -> sitk.Image:
    """The one DICOM series in ``folder`` as a volume; a folder with several series is refused."""
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{role} image {folder} is a folder with no DICOM series in it")
    if len(series) > 1:
        raise InputError(f"{role} image folder {folder} holds {len(series)} DICOM series: give a folder holding "
                         "one series")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError:
        raise InputError(f"{role} DICOM series in {folder} is incomplete or damaged: it cannot be read") from None
    check_slice_positions(reader, image, f"{role} DICOM series in {folder}")
    return image


def check_slice_positions(reader: sitk.ImageSeriesReader, image: sitk.Image, what: str) -> None:
    """One volume's slices are evenly spaced along its normal: no repeated (cine phases) or missing slices."""
    count = len(reader.GetFileNames())
    if count < 2 or not all(reader.HasMetaDataKey(i, POSITION) for i in range(count)):
        return
    positions = np.array([[float(v) for v in reader.GetMetaData(i, POSITION).split("\\")] for i in range(count)])
    steps = np.diff(positions @ np.array(image.GetDirection()).reshape(3, 3)[:, 2])
    if abs(steps[0]) < 1e-3 or np.abs(steps - steps[0]).max() > 0.01 * abs(steps[0]):
        raise InputError(f"{what} has repeated or missing slices (a cine series holds several phases: give one "
                         "volume per folder)")


def check_image(image: sitk.Image, role: str) -> None:
    """Require a finite, scalar 3D image of at least 4 voxels along each axis, with some contrast."""
    size = image.GetSize()
    if image.GetDimension() != 3:
        raise InputError(f"{role} image must be 3D, got {image.GetDimension()}D of size {size}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{role} image must have one component per voxel")
    if min(size) < MIN_VOXELS:
        raise InputError(f"{role} image must have at least {MIN_VOXELS} voxels along each axis, got size {size}")
    array = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{role} image contains NaN or infinite values")
    if float(array.max()) == float(array.min()):
        raise InputError(f"{role} image is empty: every voxel is {float(array.min())}")


def check_labels(labels: sitk.Image, image: sitk.Image, role: str) -> None:
    """Labels must be a 3D scalar image of integer values on the same grid as their image."""
    if labels.GetDimension() != 3 or labels.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{role} labels must be a 3D scalar image, got {labels.GetDimension()}D with "
                         f"{labels.GetNumberOfComponentsPerPixel()} components per voxel")
    array = sitk.GetArrayViewFromImage(labels)
    fractional = array[np.mod(array, 1) != 0] if array.dtype.kind == "f" else array[:0]
    if fractional.size:
        raise InputError(f"{role} labels hold values that are not integers (e.g. {float(fractional[0]):g}): "
                         "a label image holds whole numbers")
    difference = grid_difference(labels, image)
    if difference:
        raise InputError(f"{role} labels are not on the {role} image's grid: {difference}")


def grid_difference(image: sitk.Image, grid: sitk.Image) -> str | None:
    """What differs between two 3D images' grids ("size ... vs ..."; spacing, origin, direction within tolerance)."""
    if image.GetSize() != grid.GetSize():
        return f"size {image.GetSize()} vs {grid.GetSize()}"
    differences = [
        f"{name} {format_numbers(mine)} vs {format_numbers(theirs)}"
        for name, mine, theirs in (
            ("spacing", image.GetSpacing(), grid.GetSpacing()),
            ("origin", image.GetOrigin(), grid.GetOrigin()),
            ("direction", image.GetDirection(), grid.GetDirection()),
        )
        if not np.allclose(mine, theirs, rtol=0, atol=GRID_TOLERANCE)
    ]
    return "; ".join(differences) or None


def format_numbers(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
