"""Checking a cine, its reference frame and labels, and writing them to files for ``fsdiffreg track``.

A cine reaches Slicer (5.8 to 5.12) as one of:
- a volume sequence (vtkMRMLSequenceNode of scalar volumes, one per frame): a ``.seq.nrrd`` (index
  "time" in s or ms), or a DICOM cine loaded by MultiVolumeImporterPlugin as a volume sequence (its
  default: empty index name and unit, values 0 to N-1, the frame times in the sequence node's
  attribute ``MultiVolume.FrameLabels``, in ``MultiVolume.FrameIdentifyingDICOMTagUnits``);
- a multivolume (MultiVolumeImporter's vtkMRMLMultiVolumeNode, a scalar volume whose voxels hold one
  value per frame, with the attribute ``MultiVolume.NumberOfFrames``): a 4D NIfTI imported in the
  MultiVolumeImporter module (frame labels in seconds, empty tag name and unit), a DICOM cine loaded
  as a multivolume, or a multivolume NRRD.
Slicer reads no 4D NIfTI as a sequence (its sequence reader takes only NRRD).

The labels belong to the reference frame (ED): a label map on the frames' voxel grid, kept as it
is, or a segmentation, written as a label map on that grid with ACDC's values. A segment named
after a structure (RV, Myo, LV or a usual synonym, any case) gets that structure's value (1, 2,
3); where no segment is named so, segment i gets i + 1, as Register writes segmentations (what a
segmentation converted from an ACDC label map holds, whatever names the colour table gave it);
other segments beside named ones get 4, 5, ... in order, so that no unknown segment is ever
counted as a ventricle. Nothing here changes an input node or adds anything to the user's scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from FSDiffRegLib.defaults import PLAUSIBLE_INTERVAL_MS
from FSDiffRegLib.labels import COLORS, STRUCTURES, structure_name, structure_of

from .inputs import InputError, checkPlace, checkVolume, labelmapOnGrid, sameGeometry, segmentIds, writeVolume

#: Milliseconds per unit of a sequence's time index (a ``.seq.nrrd``'s).
MS_PER_INDEX_UNIT = {"s": 1000.0, "ms": 1.0}
#: The attribute every multivolume has (MultiVolumeImporter sets it on each path, the multivolume NRRD reader too).
MULTIVOLUME_ATTRIBUTE = "MultiVolume.NumberOfFrames"
#: Milliseconds per unit of ``MultiVolume.FrameLabels`` (MultiVolumeImporter's units of the frame-identifying
#: DICOM tag; empty for a 4D NIfTI, whose labels it writes in seconds).
MS_PER_LABEL_UNIT = {"ms": 1.0, "sec": 1000.0, "": 1000.0}
#: Frame-identifying DICOM tags whose frame labels are times (MultiVolumeImporterPlugin; "Time" is its
#: TemporalPosition x RepetitionTime, "" a 4D NIfTI); others (EchoTime, FlipAngle, b-values) are not.
TIME_TAGS = {"TriggerTime", "AcquisitionTime", "SeriesTime", "ContentTime", "DeltaStartTime", "Time", ""}
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


def isMultiVolume(node) -> bool:
    """A multivolume (MultiVolumeImporter's vtkMRMLMultiVolumeNode, a vtkMRMLScalarVolumeNode subclass): a scalar
    volume with the attribute ``MultiVolume.NumberOfFrames``, which every MultiVolumeImporter path sets."""
    return (node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
            and node.GetAttribute(MULTIVOLUME_ATTRIBUTE) is not None)


def frameCount(cine) -> int:
    """The number of frames of a volume sequence or a multivolume (its voxels' values)."""
    if not isMultiVolume(cine):
        return cine.GetNumberOfDataNodes()
    image = cine.GetImageData()
    return image.GetNumberOfScalarComponents() if image is not None and image.GetPointData().GetScalars() else 0


def cineFrame(cine, index: int):
    """Frame ``index`` (0-based): the sequence's item, or a new scalar volume (in no scene) of a multivolume's
    values of that frame, on its grid."""
    if not isMultiVolume(cine):
        return cine.GetNthDataNode(index)
    extract = vtk.vtkImageExtractComponents()
    extract.SetInputData(cine.GetImageData())
    extract.SetComponents(index)
    extract.Update()
    frame = slicer.vtkMRMLScalarVolumeNode()
    frame.SetName(f"{cine.GetName()} frame {index + 1}")
    frame.CopyOrientation(cine)
    frame.SetAndObserveImageData(extract.GetOutput())
    return frame


def cineFrames(cine) -> list:
    """The frame volumes of a volume sequence or a multivolume, in order."""
    return [cineFrame(cine, i) for i in range(frameCount(cine))]


def indexTimesMs(sequence) -> list[float] | None:
    """The frames' times in ms from a sequence's time index (in s or ms)."""
    scale = MS_PER_INDEX_UNIT.get(sequence.GetIndexUnit())
    if sequence.GetIndexName() != "time" or scale is None:
        return None
    try:
        return [float(sequence.GetNthIndexValue(i)) * scale for i in range(sequence.GetNumberOfDataNodes())]
    except ValueError:
        return None


def labelTimesMs(cine) -> list[float] | None:
    """The frames' times in ms from MultiVolumeImporter's attributes (of a multivolume, or of the sequence
    node of a DICOM cine loaded as a sequence): ``MultiVolume.FrameLabels`` of a time tag, in its units."""
    labels = cine.GetAttribute("MultiVolume.FrameLabels")
    tag = cine.GetAttribute("MultiVolume.FrameIdentifyingDICOMTagName") or ""
    scale = MS_PER_LABEL_UNIT.get(cine.GetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits") or "")
    if labels is None or tag not in TIME_TAGS or scale is None:
        return None
    try:
        times = [float(label) * scale for label in labels.split(",")]
    except ValueError:
        return None
    return times if len(times) == frameCount(cine) else None


def frameTimesMs(cine) -> list[float] | None:
    """The frames' times in ms, where the loader put them: a sequence's time index, else MultiVolumeImporter's
    frame labels; None where there are none or only a placeholder (frames 1 s apart, as a NIfTI without a real
    frame interval)."""
    times = indexTimesMs(cine) if cine.IsA("vtkMRMLSequenceNode") else None
    if times is None:
        times = labelTimesMs(cine)
    if times is None:
        return None
    low, high = PLAUSIBLE_INTERVAL_MS
    intervals = np.diff(times)
    return times if len(intervals) and all(low <= d <= high for d in intervals) else None


def segmentValues(segmentation) -> dict[str, int]:
    """Segment ID -> label value (see the module's docstring); InputError if two segments name one structure."""
    ids = segmentIds(segmentation)
    names = {i: segmentation.GetSegmentation().GetSegment(i).GetName() for i in ids}
    named = {i: structure_of(names[i]) for i in ids}
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
    checkCineFrame(cine, referenceFrame)
    checkLabels(labels, cine)


def checkCineFrame(cine, referenceFrame: int) -> None:
    """Raise InputError naming the first problem with a cine and its reference frame (1-based)."""
    if cine is None:
        raise InputError("Select a cine: a volume sequence or a multivolume (a DICOM cine, a .seq.nrrd, or a 4D "
                         "NIfTI imported in the MultiVolumeImporter module).")
    if cine.GetScene() is None:
        raise InputError(f"The cine '{cine.GetName()}' is in no scene: add it to the scene, or load it in Slicer.")
    if isMultiVolume(cine):
        checkMultiVolume(cine)
    elif cine.IsA("vtkMRMLSequenceNode"):
        checkSequence(cine)
    else:
        raise InputError(f"'{cine.GetName()}' is neither a volume sequence nor a multivolume: load the cine as a "
                         "sequence or a multivolume (a DICOM cine, a .seq.nrrd, or a 4D NIfTI imported in the "
                         "MultiVolumeImporter module).")
    frames = frameCount(cine)
    if not 1 <= referenceFrame <= frames:
        raise InputError(f"Reference frame {referenceFrame} is out of range: the cine '{cine.GetName()}' has "
                         f"frames 1 to {frames}.")


def checkFrameCount(cine) -> None:
    if frameCount(cine) < 2:
        raise InputError(f"The cine '{cine.GetName()}' has {frameCount(cine)} frame(s): tracking needs at least 2.")


def checkSequence(cine) -> None:
    """Every item a scalar volume, all on one grid."""
    checkFrameCount(cine)
    frames = cineFrames(cine)
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


def checkMultiVolume(cine) -> None:
    """One value per frame in each voxel, as many frames as it says, on a grid a frame can use; no transform
    (its frames are written as they are)."""
    said = cine.GetAttribute(MULTIVOLUME_ATTRIBUTE)
    if str(frameCount(cine)) != said.strip():
        raise InputError(f"The multivolume '{cine.GetName()}' says it has {said} frames but holds "
                         f"{frameCount(cine)}: load the cine again.")
    checkFrameCount(cine)
    checkVolume(cineFrame(cine, 0), "cine frame 1")
    if cine.GetParentTransformNode() is not None:
        raise InputError(f"The cine '{cine.GetName()}' is under a transform: harden or remove the transform "
                         "first (Data module).")


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
    if not sameGeometry(labels, cineFrame(cine, 0)):
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
    return {v: Structure(structure_name(v), COLORS.get(v)) for v in values}


def frameFileName(number: int, frames: int) -> str:
    """``frame_01.nrrd``: 1-based, zero-padded to the width of the frame count, at least 2 digits."""
    return f"frame_{number:0{max(2, len(str(frames)))}d}.nrrd"


def writeCineInputs(folder: Path, cine, referenceFrame: int, labels) -> CineFiles:
    """Write each frame into ``folder``/frames (one at a time) and the labels (as a label map on the frames'
    grid) beside it."""
    frames = frameCount(cine)
    framesFolder = folder / "frames"
    framesFolder.mkdir()
    for number in range(1, frames + 1):
        writeVolume(cineFrame(cine, number - 1), framesFolder / frameFileName(number, frames))
    labelmap = labels
    if labels.IsA("vtkMRMLSegmentationNode"):
        labelmap = labelmapWithValues(labels, cineFrame(cine, referenceFrame - 1), segmentValues(labels))
    return CineFiles(framesFolder, writeVolume(labelmap, folder / "labels.nrrd"), structures(labels),
                     frameTimesMs(cine))
