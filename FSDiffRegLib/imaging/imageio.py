"""Reading and checking the images a user gives, and writing the images of a set.

What can be registered faithfully: a 3D scalar image of at least MIN_VOXELS voxels along each
axis, finite, not constant, on perpendicular axes (a sheared grid, which NIfTI cannot store and
ITK reads coerced, is refused), with a voxel spacing of cardiac MRI (PLAUSIBLE_SPACING_MM along
every axis: a spacing outside it is a header in other units or a placeholder). A label image
holds whole numbers from 0 (background) to MAX_LABEL_VALUE, at most MAX_LABELS of them above 0
(more is an intensity image), on its image's grid.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import nibabel
import numpy as np
import SimpleITK as sitk

from ..errors import InputError, WriteError
from ..files import write_failure

sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ACDC's sform notes are harmless noise


MIN_VOXELS = 4  # ITK's recursive Gaussian (the heart locator's smoothing) needs 4 voxels along each axis
POSITION = "0020|0032"  # DICOM Image Position (Patient)
GRID_TOLERANCE = 1e-3  # spacing, origin (mm) and direction cosines of two grids that are the same
PLAUSIBLE_SPACING_MM = (0.2, 30.0)  # voxel spacing of cardiac MRI, any axis (ACDC, Sunnybrook: 0.70 to 10 mm)
SHEAR_TOLERANCE = 1e-3  # largest deviation of an image's direction (unit axes) from an orthonormal matrix
MAX_LABELS = 64  # most values above 0 in a label image (ACDC: 3; an MR image's intensities: about 200)
MAX_LABEL_VALUE = 2**31 - 1  # largest label value (int32, as Slicer's label maps; exact through ITK's doubles)


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
    if io == "NiftiImageIO":
        check_nifti(path, role)
    try:
        image = sitk.ReadImage(str(path), imageIO=io)
    except RuntimeError:
        raise InputError(f"{role} image {path} is incomplete or damaged: {io} cannot read its voxels") from None
    if io == "GDCMImageIO" and image.GetSize()[-1] == 1:
        raise InputError(f"{role} image {path} is one DICOM slice: give the folder holding its whole series")
    return image


def check_nifti(path: Path, role: str) -> None:
    """Read a NIfTI file's voxels raw (nibabel): ITK zero-fills missing data and reads NaN or infinity as 0,
    and coerces a sheared sform to perpendicular axes (or, without a qform, fails)."""
    try:
        nifti = cast(nibabel.Nifti1Image, nibabel.load(str(path)))  # a .nii(.gz) file: NIfTI-1 or -2
        voxels = np.asanyarray(nifti.dataobj)
    except Exception as err:  # nibabel, gzip and zlib raise many types for a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{role} image {path} is incomplete or damaged: {reason}") from None
    bad = voxels.size - int(np.count_nonzero(np.isfinite(voxels)))
    if bad:
        raise InputError(f"{role} image {path} contains NaN or infinite values ({bad} voxels)")
    if nifti.header["sform_code"] > 0:
        axes = nifti.header.get_sform()[:3, :3]
        norms = np.linalg.norm(axes, axis=0)
        if not np.all(norms > 0) or sheared(axes / norms):
            raise InputError(f"{role} image {path} has a sheared sform (its axes are not perpendicular), which ITK "
                             "reads on another grid: resample it onto perpendicular axes first")


def sheared(direction: np.ndarray) -> bool:
    """Whether a 3 x 3 matrix of axes is not orthonormal within SHEAR_TOLERANCE."""
    return bool(np.abs(direction.T @ direction - np.eye(3)).max() > SHEAR_TOLERANCE)


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
    check_axes(image, role)
    array = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{role} image contains NaN or infinite values")
    if float(array.max()) == float(array.min()):
        raise InputError(f"{role} image is empty: every voxel is {float(array.min())}")


def check_axes(image: sitk.Image, role: str) -> None:
    """A 3D image's spacing within PLAUSIBLE_SPACING_MM and its axes perpendicular, else InputError."""
    spacing = image.GetSpacing()
    low, high = PLAUSIBLE_SPACING_MM
    if not all(low <= s <= high for s in spacing):
        raise InputError(f"{role} image has a voxel spacing of {format_numbers(spacing)} mm, outside the "
                         f"{low:g} to {high:g} mm of cardiac MRI: is its header in other units?")
    if sheared(np.array(image.GetDirection()).reshape(3, 3)):
        raise InputError(f"{role} image's axes are not perpendicular (direction {format_numbers(image.GetDirection())}"
                         "): a sheared grid cannot be registered faithfully; resample it onto perpendicular axes")


def check_labels(labels: sitk.Image, image: sitk.Image, role: str) -> sitk.Image:
    """The labels of ``image`` as an integer image, or InputError where they are not a label image (module
    docstring); whole numbers stored as floats become the smallest unsigned integer type holding them.
    ``register`` and ``track`` both check their labels here."""
    if labels.GetDimension() != 3 or labels.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{role} labels must be a 3D scalar image, got {labels.GetDimension()}D with "
                         f"{labels.GetNumberOfComponentsPerPixel()} components per voxel")
    array = sitk.GetArrayViewFromImage(labels)
    fractional = array[np.mod(array, 1) != 0] if array.dtype.kind == "f" else array[:0]
    if fractional.size:
        raise InputError(f"{role} labels hold values that are not integers (e.g. {float(fractional[0]):g}): "
                         "a label image holds whole numbers")
    values = np.unique(array)
    lowest, highest = int(values[0]), int(values[-1])
    if lowest < 0 or highest > MAX_LABEL_VALUE:
        raise InputError(f"{role} labels hold {lowest if lowest < 0 else highest}: a label image holds whole "
                         f"numbers from 0 (background) to {MAX_LABEL_VALUE}")
    if np.count_nonzero(values) > MAX_LABELS:
        raise InputError(f"{role} labels hold {np.count_nonzero(values)} different values above 0, more than the "
                         f"{MAX_LABELS} of a label image: is it an intensity image?")
    difference = grid_difference(labels, image)
    if difference:
        raise InputError(f"{role} labels are not on the {role} image's grid: {difference}")
    if array.dtype.kind != "f":
        return labels
    return sitk.Cast(labels, sitk.sitkUInt8 if highest <= 255 else sitk.sitkUInt16 if highest <= 65535
                     else sitk.sitkUInt32)


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


def write_image(image: sitk.Image, path: Path, use_compression: bool = False, compression_level: int = -1) -> None:
    """Write ``image`` to the NIfTI file ``path`` and read it back whole with nibabel (ITK reads a cut file
    without complaint): where the file does not hold the image, WriteError names it and the cause."""
    try:
        with native_stderr_silenced():  # the NIfTI library prints "** ERROR: NWAD ..." where a write fails
            sitk.WriteImage(image, str(path), use_compression, compression_level)
    except RuntimeError:
        raise WriteError(path, write_failure(path)) from None
    if not holds(path, image):
        raise WriteError(path, write_failure(path))


def holds(path: Path, image: sitk.Image) -> bool:
    """Whether the NIfTI file ``path`` reads back whole as ``image``'s voxels."""
    try:
        stored = np.asanyarray(cast(nibabel.Nifti1Image, nibabel.load(str(path))).dataobj)
    except Exception:  # nibabel, gzip and zlib raise many types for a cut file
        return False
    expected = sitk.GetArrayViewFromImage(image)  # (..., z, y, x[, component])
    dimension, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    vector = (components,) if components > 1 else ()
    if stored.size != expected.size:
        return False
    stored = stored.reshape(tuple(image.GetSize()) + vector)  # NIfTI: (x, y, z, ...[, 1][, component])
    axes = tuple(range(dimension))[::-1] + ((dimension,) if vector else ())
    return bool(np.array_equal(stored.transpose(axes), expected))


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """What C code prints on the standard error (file descriptor 2) goes to the null device meanwhile."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no standard error to silence
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
