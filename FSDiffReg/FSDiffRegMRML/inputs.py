"""Checking the user's input nodes and writing them to files for the registration process.

Nothing here changes an input node or adds anything to the user's scene.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import vtk

from FSDiffRegLib.errors import InputError  # inputs the run cannot use; the message says what to change


def _geometry(volume) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def sameGeometry(a, b, tolerance: float = 1e-3) -> bool:
    """Same voxel grid: dimensions and IJK-to-RAS (within ``tolerance``)."""
    return (a.GetImageData().GetDimensions() == b.GetImageData().GetDimensions()
            and np.allclose(_geometry(a), _geometry(b), atol=tolerance))


def checkVolume(volume, role: str) -> None:
    """A scalar 3D volume: present, with voxels holding values, one value per voxel, at least 2 voxels
    along each axis."""
    if volume is None:
        raise InputError(f"Select a {role} volume.")
    image = volume.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"The {role} volume '{volume.GetName()}' has no voxels.")
    scalars = image.GetPointData().GetScalars()
    if scalars is None or scalars.GetNumberOfTuples() != image.GetNumberOfPoints():
        raise InputError(f"The {role} volume '{volume.GetName()}' has no voxel values (an empty image grid): "
                         "select a volume loaded from an image.")
    components = image.GetNumberOfScalarComponents()
    if components != 1:
        raise InputError(f"The {role} volume '{volume.GetName()}' has {components} values per voxel "
                         "(a 4D, vector or colour volume): select a 3D scalar volume, e.g. one time frame.")
    dims = image.GetDimensions()
    if min(dims) < 2:
        raise InputError(f"The {role} volume '{volume.GetName()}' is 2D ({dims[0]} x {dims[1]} x {dims[2]} "
                         "voxels): select a 3D volume with at least 2 slices.")


def checkPlace(node, role: str, scene) -> None:
    """In ``scene`` (the fixed volume's, where the outputs go), and under no transform."""
    if node.GetScene() is None:
        raise InputError(f"The {role} '{node.GetName()}' is in no scene: add it to the scene, or load it in Slicer.")
    if node.GetScene() is not scene:
        raise InputError(f"The {role} '{node.GetName()}' is in another scene than the fixed volume.")
    if node.GetParentTransformNode() is not None:
        raise InputError(f"The {role} '{node.GetName()}' is under a transform: harden or remove "
                         "the transform first (Data module).")


def checkInputs(fixed, moving, labels=None) -> None:
    """Raise InputError naming the first problem with the inputs; return quietly when usable."""
    checkVolume(fixed, "fixed")
    checkVolume(moving, "moving")
    if fixed is moving:
        raise InputError(f"The fixed and moving volumes are the same node ('{fixed.GetName()}'): "
                         "select two different volumes.")
    if labels is fixed or labels is moving:
        raise InputError("The labels to propagate must be a segmentation or label map, not an input volume.")
    for role, node in (("fixed volume", fixed), ("moving volume", moving), ("labels", labels)):
        if node is not None:
            checkPlace(node, role, fixed.GetScene())
    if labels is None:
        return
    if labels.IsA("vtkMRMLSegmentationNode"):
        if labels.GetSegmentation().GetNumberOfSegments() == 0:
            raise InputError(f"The segmentation '{labels.GetName()}' has no segments.")
        return
    if not labels.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError("The labels to propagate must be a segmentation or a label map volume.")
    checkVolume(labels, "moving label map")
    if not sameGeometry(labels, moving):
        raise InputError(f"The label map '{labels.GetName()}' is not on the moving volume's voxel grid: "
                         "use a segmentation instead, or resample the label map to the moving volume.")


def writeVolume(volume, path: Path) -> Path:
    """Write a volume node with Slicer's own volume writer (LPS on disk, geometry kept exactly)."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)
    if not storage.WriteData(volume):
        raise OSError(f"cannot write '{volume.GetName()}' to {path}")
    return path


def segmentIds(segmentation) -> list[str]:
    """The segment IDs of a segmentation, in order; segment i is written as label i + 1."""
    segments = segmentation.GetSegmentation()
    return [segments.GetNthSegmentID(i) for i in range(segments.GetNumberOfSegments())]


def labelmapOnGrid(segmentation, reference):
    """A new label map (in no scene) of the segments on ``reference``'s voxel grid, segment i as label i + 1.

    Slicer's ``ExportSegmentsToLabelmapNode`` would add a colour table to the user's scene
    (5.10 and later) and may add a representation to the segmentation, so the segments are
    merged from a copy of the segmentation instead.
    """
    copy = slicer.vtkMRMLSegmentationNode()
    copy.GetSegmentation().DeepCopy(segmentation.GetSegmentation())
    binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if not copy.GetSegmentation().CreateRepresentation(binary):
        raise InputError(f"The segmentation '{segmentation.GetName()}' cannot be made into a label map.")
    ids = vtk.vtkStringArray()
    for segmentId in segmentIds(segmentation):
        ids.InsertNextValue(segmentId)
    merged = slicer.vtkOrientedImageData()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    wholeGrid = slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
    logic.GenerateMergedLabelmapInReferenceGeometry(copy, reference, ids, wholeGrid, merged)
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    if not logic.CopyOrientedImageDataToVolumeNode(merged, labelmap):
        raise OSError(f"cannot export the segmentation '{segmentation.GetName()}' to a label map")
    return labelmap


def writeLabels(labels, moving, path: Path) -> Path:
    """Write a label map, or a segmentation as a label map on the moving volume's grid."""
    if labels.IsA("vtkMRMLSegmentationNode"):
        labels = labelmapOnGrid(labels, moving)
    return writeVolume(labels, path)


def writeInputs(folder: Path, fixed, moving, labels=None) -> tuple[Path, Path, Path | None]:
    """Write the inputs into ``folder`` as NRRD files; returns (fixed, moving, labels or None)."""
    fixedPath = writeVolume(fixed, folder / "fixed.nrrd")
    movingPath = writeVolume(moving, folder / "moving.nrrd")
    labelsPath = writeLabels(labels, moving, folder / "moving_labels.nrrd") if labels is not None else None
    return fixedPath, movingPath, labelsPath
