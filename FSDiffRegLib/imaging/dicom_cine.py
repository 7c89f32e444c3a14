"""A short-axis cine read straight from a DICOM folder: one series holding every slice and phase, or each
slice its own series (as UK Biobank exports it), in the folder or in its subfolders.

Every image is placed by its tags: Image Orientation (Patient) 0020|0037 (one for the whole cine), Image
Position (Patient) 0020|0032 along the slice normal (the slice), Trigger Time 0018|1060 (the phase,
ordered by time within each slice). Every slice must hold the same number of phases, and a phase's
trigger times must agree across slices to within half the frame interval; the frame times are each
phase's mean trigger time. Anything else is refused in one line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .imageio import check_image

TRIGGER_TIME = "0018|1060"
POSITION = "0020|0032"
ORIENTATION = "0020|0037"
POSITION_TOLERANCE_MM = 0.1  # two images at the same slice position
ORIENTATION_TOLERANCE = 1e-3  # direction cosines of one orientation


def dicom_series(folder: Path) -> Iterator[tuple[Path, str]]:
    """(folder, series UID) of every DICOM series in ``folder`` and its subfolders."""
    for root, dirs, _ in os.walk(folder):
        dirs.sort()
        for series in sitk.ImageSeriesReader.GetGDCMSeriesIDs(root):
            yield Path(root), series


def is_dicom_folder(folder: Path) -> bool:
    return next(dicom_series(folder), None) is not None


def numbers(reader: sitk.ImageFileReader, tag: str, count: int, file: str) -> np.ndarray:
    """The ``count`` numbers of a backslash-separated DICOM tag, or InputError naming the file and tag."""
    name = {TRIGGER_TIME: "Trigger Time", POSITION: "Image Position (Patient)",
            ORIENTATION: "Image Orientation (Patient)"}[tag]
    try:
        values = np.array([float(v) for v in reader.GetMetaData(tag).split("\\")])
    except (RuntimeError, ValueError):
        values = np.array([])
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise InputError(f"cine DICOM file {file} has no valid {name} ({tag.replace('|', ',')}): a cine is placed "
                         "by it")
    return values


def read_tags(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(file, orientation, position, trigger time) of every image of every series under ``folder``."""
    images = []
    reader = sitk.ImageFileReader()
    for root, series in dicom_series(folder):
        for file in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(root), series):
            reader.SetFileName(file)
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                raise InputError(f"cine DICOM file {file} cannot be read") from None
            images.append((file, numbers(reader, ORIENTATION, 6, file), numbers(reader, POSITION, 3, file),
                           float(numbers(reader, TRIGGER_TIME, 1, file)[0])))
    return images


def slices_and_phases(folder: Path) -> tuple[list[list[str]], list[float], list[float]]:
    """The files of each phase (slices ordered along the normal), each phase's time in ms and each slice's
    place along the normal in mm."""
    images = read_tags(folder)
    orientation = images[0][1]
    for file, other, _, _ in images:
        if np.abs(other - orientation).max() > ORIENTATION_TOLERANCE:
            raise InputError(f"cine DICOM folder {folder} mixes image orientations ({file} differs from "
                             f"{images[0][0]}): give one short-axis stack")
    normal = np.cross(orientation[:3], orientation[3:])
    slices: list[tuple[float, list[tuple[float, str]]]] = []
    for file, _, position, time in sorted(images, key=lambda image: float(image[2] @ normal)):
        place = float(position @ normal)
        if not slices or place - slices[-1][0] > POSITION_TOLERANCE_MM:
            slices.append((place, []))
        slices[-1][1].append((time, file))
    counts = [len(phases) for _, phases in slices]
    if len(set(counts)) > 1:
        place, phases = next((p, s) for p, s in slices if len(s) != max(counts))
        raise InputError(f"cine DICOM folder {folder}: the slice at {place:.1f} mm has {len(phases)} phases, "
                         f"another {max(counts)}: a phase is missing or a series mixed in")
    times = np.array([[time for time, _ in sorted(phases)] for _, phases in slices])  # (slices, phases)
    if np.any(np.diff(times, axis=1) <= 0):
        raise InputError(f"cine DICOM folder {folder}: a slice holds two images at one trigger time")
    interval = float(np.median(np.diff(times.mean(axis=0)))) if times.shape[1] > 1 else 0.0
    spread = float((times.max(axis=0) - times.min(axis=0)).max())
    if spread > interval / 2:
        raise InputError(f"cine DICOM folder {folder}: one phase's trigger times differ by {spread:.0f} ms across "
                         f"slices, more than half the frame interval ({interval:.0f} ms)")
    files = [[sorted(phases)[k][1] for _, phases in slices] for k in range(times.shape[1])]
    return files, [round(float(t), 3) for t in times.mean(axis=0)], [place for place, _ in slices]


def read_dicom_cine(folder: Path) -> tuple[list[sitk.Image], list[float]]:
    """The frames (3D, on one grid) and frame times (ms) of the cine in a DICOM folder."""
    files, times, places = slices_and_phases(folder)
    gaps = np.diff(places)
    if len(gaps) and np.ptp(gaps) > POSITION_TOLERANCE_MM:
        raise InputError(f"cine DICOM folder {folder}: slices are not evenly spaced ({gaps.min():.1f} to "
                         f"{gaps.max():.1f} mm apart): a slice is missing")
    frames: list[sitk.Image] = []
    for phase in files:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(phase)
        frame = reader.Execute()
        check_image(frame, f"cine {folder} frame {len(frames) + 1}")
        if frames:
            frame.CopyInformation(frames[0])  # the same positions: one grid exactly
        frames.append(frame)
    return frames, times
