"""Checking a cine (a volume sequence), its reference frame and labels, and writing them to files for
``fsdiffreg track``.

Slicer loads a 4D NIfTI or a DICOM cine as a sequence node of scalar volumes, one per frame.
The labels belong to the reference frame (ED): a label map on the frames' voxel grid, kept as it
is, or a segmentation, written as a label map on that grid with ACDC's values. A segment named
after a structure (RV, Myo, LV or a usual synonym, any case) gets that structure's value (1, 2,
3); where no segment is named so, segment i gets i + 1, as Register writes segmentations (what a
segmentation converted from an ACDC label map holds, whatever names the colour table gave it);
other segments beside named ones get 4, 5, ... in order, so that no unknown segment is ever
counted as a ventricle. Nothing here changes an input node or adds anything to the user's scene.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vtk.util import numpy_support

from FSDiffRegLib.defaults import PLAUSIBLE_INTERVAL_MS

from .inputs import InputError, checkPlace, checkVolume, labelmapOnGrid, sameGeometry, segmentIds, writeVolume

#: ACDC's label values (as FSDiffRegLib.function.STRUCTURES, which loads SimpleITK: not imported here).
STRUCTURES = {1: "RV", 2: "Myo", 3: "LV"}
#: Milliseconds per unit of a sequence's time index (Slicer reads a 4D NIfTI's or a DICOM cine's times so).
MS_PER_INDEX_UNIT = {"s": 1000.0, "ms": 1.0}
#: Colours of the structures where the labels give none (label maps): RV blue, Myo green, LV red.
STRUCTURE_COLORS = {1: (0.25, 0.45, 0.9), 2: (0.35, 0.75, 0.35), 3: (0.9, 0.3, 0.25)}
#: Segment names (lower case, words split by single spaces) taken for each structure.
SYNONYMS = {
    1: {"rv", "right ventricle", "right ventricular cavity", "rv cavity", "rv blood pool",
        "right ventricle blood pool", "right ventricular blood pool"},
    2: {"myo", "myocardium", "lv myocardium", "left ventricular myocardium", "left ventricle myocardium",
        "lv myo", "lv wall", "myocardial wall"},
    3: {"lv", "left ventricle", "left ventricular cavity", "lv cavity", "lv blood pool", "left ventricle blood pool",
        "left ventricular blood pool", "lv endocardium"},
}


@dataclass
class Structure:
    """A label value's name and colour (None: Slicer's default) in the outputs."""

    name: str
    color: tuple[float, float, float] | None


@dataclass
class CineFiles:
    """What ``fsdiffreg track`` reads: a folder of frames and the labels; and what their values stand for."""

    frames: Path
    labels: Path
    structures: dict[int, Structure]
    timesMs: list[float] | None  # of the frames, where the sequence gives plausible ones


def frameTimesMs(cine) -> list[float] | None:
    """The frames' times in ms from the sequence's time index (in s or ms), or None where it gives none or only
    a placeholder (frames 1 s apart, as a NIfTI without a real frame interval)."""
    scale = MS_PER_INDEX_UNIT.get(cine.GetIndexUnit())
    if cine.GetIndexName() != "time" or scale is None:
        return None
    try:
        times = [float(cine.GetNthIndexValue(i)) * scale for i in range(cine.GetNumberOfDataNodes())]
    except ValueError:
        return None
    low, high = PLAUSIBLE_INTERVAL_MS
    intervals = np.diff(times)
    return times if len(intervals) and all(low <= d <= high for d in intervals) else None


def cineFrames(cine) -> list:
    """The frame volumes of a sequence node, in order."""
    return [cine.GetNthDataNode(i) for i in range(cine.GetNumberOfDataNodes())]


def structureOf(segmentName: str) -> int | None:
    """The ACDC value a segment name stands for (``"LV blood pool"`` -> 3), or None."""
    words = " ".join(re.split(r"[\s_-]+", segmentName.strip().lower()))
    return next((value for value, names in SYNONYMS.items() if words in names), None)


def segmentValues(segmentation) -> dict[str, int]:
    """Segment ID -> label value (see the module's docstring); InputError if two segments name one structure."""
    ids = segmentIds(segmentation)
    names = {i: segmentation.GetSegmentation().GetSegment(i).GetName() for i in ids}
    named = {i: structureOf(names[i]) for i in ids}
    if not any(named.values()):
        return {segmentId: index + 1 for index, segmentId in enumerate(ids)}
    for value in STRUCTURES:
        same = [names[i] for i in ids if named[i] == value]
        if len(same) > 1:
            raise InputError(f"The segments '{same[0]}' and '{same[1]}' of '{segmentation.GetName()}' both name "
                             f"the {STRUCTURES[value]}: rename or remove one.")
    others = iter(range(max(STRUCTURES) + 1, max(STRUCTURES) + 1 + len(ids)))
    return {segmentId: named[segmentId] or next(others) for segmentId in ids}


def checkCine(cine, referenceFrame: int, labels) -> None:
    """Raise InputError naming the first problem with a cine, its reference frame (1-based) and labels."""
    if cine is None:
        raise InputError("Select a cine: a volume sequence (load a 4D NIfTI or a DICOM cine as a sequence).")
    if not cine.IsA("vtkMRMLSequenceNode"):
        raise InputError(f"'{cine.GetName()}' is not a volume sequence: load the cine as a sequence "
                         "(a 4D NIfTI or a DICOM cine), one volume per frame.")
    if cine.GetScene() is None:
        raise InputError(f"The cine '{cine.GetName()}' is in no scene: add it to the scene, or load it in Slicer.")
    frames = cineFrames(cine)
    if len(frames) < 2:
        raise InputError(f"The cine '{cine.GetName()}' has {len(frames)} frame(s): tracking needs at least 2.")
    kinds = {frame.GetClassName() for frame in frames if not frame.IsA("vtkMRMLScalarVolumeNode")
             or frame.IsA("vtkMRMLLabelMapVolumeNode")}
    if kinds:
        raise InputError(f"The sequence '{cine.GetName()}' holds {', '.join(sorted(kinds))} items, "
                         "not scalar volumes: select the sequence of the cine's images.")
    for number, frame in enumerate(frames, 1):
        checkVolume(frame, f"cine frame {number}")
        if not sameGeometry(frame, frames[0]):
            raise InputError(f"Frame {number} of the cine '{cine.GetName()}' is not on frame 1's voxel grid: "
                             "every frame must share one grid.")
    if not 1 <= referenceFrame <= len(frames):
        raise InputError(f"Reference frame {referenceFrame} is out of range: the cine '{cine.GetName()}' has "
                         f"frames 1 to {len(frames)}.")
    checkLabels(labels, cine)


def checkLabels(labels, cine) -> None:
    """The reference frame's labels: a segmentation with segments, or a label map on the frames' grid."""
    if labels is None:
        raise InputError("Select the labels of the reference frame (ED): a segmentation or a label map.")
    if not (labels.IsA("vtkMRMLSegmentationNode") or labels.IsA("vtkMRMLLabelMapVolumeNode")):
        raise InputError("The labels to track must be a segmentation or a label map volume.")
    checkPlace(labels, "labels", cine.GetScene())
    if labels.IsA("vtkMRMLSegmentationNode"):
        if labels.GetSegmentation().GetNumberOfSegments() == 0:
            raise InputError(f"The segmentation '{labels.GetName()}' has no segments.")
        segmentValues(labels)
        return
    checkVolume(labels, "label map")
    if not sameGeometry(labels, cineFrames(cine)[0]):
        raise InputError(f"The label map '{labels.GetName()}' is not on the cine's voxel grid: use a segmentation "
                         "instead, or resample the label map to the cine's frames.")
    if not voxels(labels).any():
        raise InputError(f"The label map '{labels.GetName()}' is empty (no voxel above 0).")


def voxels(volume) -> np.ndarray:
    """A volume's voxel values as a flat array (a view: writing it writes the volume)."""
    return numpy_support.vtk_to_numpy(volume.GetImageData().GetPointData().GetScalars())


def labelmapWithValues(segmentation, reference, values: dict[str, int]):
    """A new label map (in no scene) of the segments on ``reference``'s grid, each segment as ``values`` says."""
    labelmap = labelmapOnGrid(segmentation, reference)  # segment i as i + 1
    merged = voxels(labelmap)
    lookup = np.array([0, *(values[segmentId] for segmentId in segmentIds(segmentation))], dtype=merged.dtype)
    merged[:] = lookup[merged]
    labelmap.GetImageData().Modified()
    if not merged.any():
        raise InputError(f"The segmentation '{segmentation.GetName()}' has no voxel inside the cine's frames.")
    return labelmap


def structures(labels) -> dict[int, Structure]:
    """Label value -> name and colour in the outputs: RV, Myo, LV for 1, 2, 3; else the segment's name, or label<v>."""
    if labels.IsA("vtkMRMLSegmentationNode"):
        found = {}
        for segmentId, value in segmentValues(labels).items():
            segment = labels.GetSegmentation().GetSegment(segmentId)
            found[value] = Structure(STRUCTURES.get(value, segment.GetName()), tuple(segment.GetColor()))
        return dict(sorted(found.items()))
    values = sorted(int(v) for v in np.unique(voxels(labels)) if v > 0)
    return {v: Structure(STRUCTURES.get(v, f"label{v}"), STRUCTURE_COLORS.get(v)) for v in values}


def frameFileName(number: int, frames: int) -> str:
    """``frame_01.nrrd``: 1-based, zero-padded to the width of the frame count, at least 2 digits."""
    return f"frame_{number:0{max(2, len(str(frames)))}d}.nrrd"


def writeCineInputs(folder: Path, cine, referenceFrame: int, labels) -> CineFiles:
    """Write each frame into ``folder``/frames and the labels (as a label map on the frames' grid) beside it."""
    frames = cineFrames(cine)
    framesFolder = folder / "frames"
    framesFolder.mkdir()
    for number, frame in enumerate(frames, 1):
        writeVolume(frame, framesFolder / frameFileName(number, len(frames)))
    labelmap = labels
    if labels.IsA("vtkMRMLSegmentationNode"):
        labelmap = labelmapWithValues(labels, frames[referenceFrame - 1], segmentValues(labels))
    return CineFiles(framesFolder, writeVolume(labelmap, folder / "labels.nrrd"), structures(labels),
                     frameTimesMs(cine))
