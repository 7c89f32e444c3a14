"""Reading a cine (a 4D image file or a folder of 3D frames) and checking what goes with it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import cast

import nibabel
import SimpleITK as sitk

from ..defaults import PLAUSIBLE_INTERVAL_MS
from ..errors import InputError
from .dicom_cine import is_dicom_folder, read_dicom_cine
from .imageio import check_image, check_labels, grid_difference, read_file

MS_PER_TIME_UNIT = {"sec": 1000.0, "msec": 1.0, "usec": 0.001}  # nibabel's names of NIfTI's time units
LABEL_FILE = re.compile(r"(^|[-_.])(gt|labels?|seg|segmentation|mask)(\.[a-z0-9]+)+$", re.IGNORECASE)  # ACDC: _gt
ONE_FRAME = "cine {} has one frame: tracking needs at least 2"


@dataclass
class Cine:
    """The frames of one cardiac cycle and, where the file gives them, their times."""

    frames: list[sitk.Image]  # 3D frames on one grid
    times_ms: list[float] | None  # time of each frame when the file gives a plausible frame interval


def read_cine(path: str | Path) -> Cine:
    """Read a 4D image file (x, y, z, t), a folder of 3D frame files or a DICOM cine folder
    (FSDiffRegLib.imaging.dicom_cine), or raise InputError naming the problem."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"cine not found: {path}")
    if path.is_dir() and is_dicom_folder(path):
        cine = Cine(*read_dicom_cine(path))
    else:
        cine = read_frames_folder(path) if path.is_dir() else read_cine_file(path)
    if len(cine.frames) < 2:
        raise InputError(ONE_FRAME.format(path))
    return cine


def read_cine_file(path: Path) -> Cine:
    """The frames of a 4D image file, each with the 3D part of its geometry."""
    image = read_file(path, "cine")  # empty, unknown format, damaged or (NIfTI) non-finite voxels
    header = nifti_header(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"cine {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel: "
                         "give a scalar image")
    if image.GetDimension() == 3 and header is not None and header["dim"][0] == 4:
        raise InputError(ONE_FRAME.format(path))  # ITK reads a NIfTI of one time point as a 3D image
    if image.GetDimension() == 3:
        raise InputError(f"cine {path} is a 3D image, not a cine: give a 4D image (x, y, z, t) or a folder of "
                         "3D frames")
    if image.GetDimension() != 4:
        raise InputError(f"cine {path} is a {image.GetDimension()}D image of size {image.GetSize()}: give a 4D "
                         "image (x, y, z, t) or a folder of 3D frames")
    frames = [extract_frame(image, t, path) for t in range(image.GetSize()[3])]
    for number, frame in enumerate(frames, 1):
        check_image(frame, f"cine {path} frame {number}")
    return Cine(frames, None if header is None else frame_times_ms(header, len(frames)))


def nifti_header(path: Path) -> nibabel.Nifti1Header | None:
    """A NIfTI file's header (nibabel reads it without the voxels); None for other formats."""
    if sitk.ImageFileReader.GetImageIOFromFileName(str(path)) != "NiftiImageIO":
        return None
    return cast(nibabel.Nifti1Image, nibabel.load(str(path))).header


def extract_frame(image: sitk.Image, t: int, path: Path) -> sitk.Image:
    """Time point ``t`` of a 4D image as a 3D image, its direction the 4D direction's spatial 3 x 3 block."""
    size = image.GetSize()
    try:
        return sitk.Extract(image, size[:3] + (0,), (0, 0, 0, t), sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)
    except RuntimeError:
        raise InputError(f"cine {path} has a 4D direction whose spatial part is singular: its x, y, z axes mix "
                         "with time") from None


def frame_times_ms(header: nibabel.Nifti1Header, count: int) -> list[float] | None:
    """Frame times from a NIfTI header's time unit, frame interval (pixdim[4]) and toffset; None if implausible."""
    scale = MS_PER_TIME_UNIT.get(header.get_xyzt_units()[1])
    if scale is None:
        return None
    interval = float(header["pixdim"][4]) * scale
    if not PLAUSIBLE_INTERVAL_MS[0] <= interval <= PLAUSIBLE_INTERVAL_MS[1]:
        return None
    start = float(header["toffset"]) * scale
    return [round(start + i * interval, 3) for i in range(count)]  # header floats are float32: microseconds


def read_frames_folder(folder: Path) -> Cine:
    """The 3D image files of a folder (hidden files, subfolders left out) in natural order of names, on one grid.

    A folder holding label files (named like ``LABEL_FILE``: ACDC's ``frame01_gt.nii.gz``) is refused: they
    are not frames, and the labels go with ``--labels``."""
    files = sorted((f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")),
                   key=natural_key)
    if not files:
        raise InputError(f"cine folder {folder} holds no frame files: give a 4D image or a folder of 3D frames")
    labels = [f.name for f in files if LABEL_FILE.search(f.name)]
    if labels:
        shown = ", ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
        raise InputError(f"cine folder {folder} holds label files ({shown}): a frames folder holds only the cine's "
                         "frames; move the labels out and give the reference frame's with --labels")
    frames: list[sitk.Image] = []
    for file in files:
        frame = read_file(file, "cine frame")
        check_image(frame, f"cine frame {file}")
        difference = grid_difference(frame, frames[0]) if frames else None
        if difference:
            raise InputError(f"cine frame {file} is not on the grid of {files[0].name}: {difference}")
        if frames:
            frame.CopyInformation(frames[0])  # equal within tolerance: one grid exactly
        frames.append(frame)
    return Cine(frames, None)


def natural_key(path: Path) -> list[str | int]:
    """Sort key reading the runs of digits in a name as numbers: frame2 before frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def with_times(cine: Cine, times_ms: tuple[float, ...]) -> Cine:
    """``cine`` with the given frame times, or InputError when there are not as many as frames."""
    if len(times_ms) != len(cine.frames):
        raise InputError(f"{len(times_ms)} frame times given for a cine of {len(cine.frames)} frames")
    return Cine(cine.frames, [float(t) for t in times_ms])


def reference_index(cine: Cine, frame: int) -> int:
    """The 0-based index of 1-based frame number ``frame``, or InputError if the cine has no such frame."""
    count = len(cine.frames)
    if isinstance(frame, bool) or not isinstance(frame, Integral) or not 1 <= frame <= count:
        raise InputError(f"reference frame {frame} is out of range: the cine has {count} frames (1 to {count})")
    return int(frame) - 1


def check_cine_labels(labels: sitk.Image, cine: Cine) -> sitk.Image:
    """The reference frame's labels as an integer image (``imageio.check_labels``: on the frames' grid)."""
    return check_labels(labels, cine.frames[0], "ED")


def join_frames(images: list[sitk.Image], times_ms: list[float] | None) -> sitk.Image:
    """One 4D image of 3D frames on one grid; 4th origin and spacing in seconds when times are known, else 0 and 1."""
    if times_ms and len(times_ms) > 1:
        interval_s = (times_ms[-1] - times_ms[0]) / (len(times_ms) - 1) / 1000.0
        return sitk.JoinSeries(images, times_ms[0] / 1000.0, interval_s)
    return sitk.JoinSeries(images)
