"""The library's output files turned into new MRML nodes on the fixed volume's grid.

``displacement.nii.gz`` is an ITK displacement field: LPS millimetres on the fixed grid,
mapping each fixed point x to the moving point x + u(x). Slicer works in RAS, so the x
and y of its origin, directions and vectors change sign; as a resampling (fixed -> moving)
transform it is Slicer's "FromParent" direction: a moving volume placed under the
transform node lines up with the fixed volume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from .display import showJacobian
from .inputs import sameGeometry, segmentIds

LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


@dataclass
class RegistrationOutputs:
    """The new nodes of one registration, and its metrics."""

    transform: object
    warped: object
    jacobian: object
    warpedLabels: object | None
    metrics: dict


def gridTransformFromField(field: sitk.Image) -> vtk.vtkAbstractTransform:
    """An ITK displacement field (LPS) as a Slicer oriented grid transform (RAS), interpolated linearly like ITK."""
    vectors = sitk.GetArrayFromImage(field).reshape(-1, 3) * LPS_TO_RAS
    grid = vtk.vtkImageData()
    grid.SetDimensions(field.GetSize())
    grid.SetSpacing(field.GetSpacing())
    grid.SetOrigin(np.array(field.GetOrigin()) * LPS_TO_RAS)
    grid.GetPointData().SetScalars(numpy_support.numpy_to_vtk(vectors, deep=True, array_type=vtk.VTK_DOUBLE))
    direction = LPS_TO_RAS[:, None] * np.array(field.GetDirection()).reshape(3, 3)
    matrix = vtk.vtkMatrix4x4()
    for row in range(3):
        for column in range(3):
            matrix.SetElement(row, column, direction[row, column])
    transform = slicer.vtkOrientedGridTransform()
    transform.SetDisplacementGridData(grid)
    transform.SetGridDirectionMatrix(matrix)
    transform.SetInterpolationModeToLinear()
    return transform


def readVolume(path: Path, node, fixed):
    """Read ``path`` into ``node`` with Slicer's volume reader and give it the fixed grid exactly.

    The files lie on the fixed grid already; NIfTI stores it in single precision, so the
    fixed node's IJK-to-RAS is copied after checking that it agrees.
    """
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise OSError(f"cannot read the registration output {path.name}")
    if not sameGeometry(node, fixed):
        raise OSError(f"the registration output {path.name} is not on the fixed volume's grid")
    node.CopyOrientation(fixed)
    return node


def warpedSegmentation(labelmap, source):
    """A new segmentation with ``source``'s segments (names, colours) filled from a warped label map."""
    segmentation = slicer.vtkMRMLSegmentationNode()
    ids = vtk.vtkStringArray()
    for segmentId in segmentIds(source):
        segment = slicer.vtkSegment()
        segment.DeepCopyMetadata(source.GetSegmentation().GetSegment(segmentId))
        segmentation.GetSegmentation().AddSegment(segment, segmentId)
        ids.InsertNextValue(segmentId)
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation, ids):
        raise OSError("cannot fill the warped segmentation from the warped label map")
    return segmentation


def readOutputs(outDir: Path, fixed, labels=None) -> RegistrationOutputs:
    """New nodes (in no scene yet) from the files in ``outDir``."""
    transform = slicer.vtkMRMLGridTransformNode()
    transform.SetAndObserveTransformFromParent(
        gridTransformFromField(sitk.ReadImage(str(outDir / "displacement.nii.gz"))))
    metrics = json.loads((outDir / "metrics.json").read_text())
    transform.SetAttribute("FSDiffReg.metrics", json.dumps(metrics))
    warped = readVolume(outDir / "warped.nii.gz", slicer.vtkMRMLScalarVolumeNode(), fixed)
    jacobian = readVolume(outDir / "jacobian.nii.gz", slicer.vtkMRMLScalarVolumeNode(), fixed)
    warpedLabels = None
    if labels is not None:
        labelmap = readVolume(outDir / "warped_labels.nii.gz", slicer.vtkMRMLLabelMapVolumeNode(), fixed)
        warpedLabels = labelmap if labels.IsA("vtkMRMLLabelMapVolumeNode") else warpedSegmentation(labelmap, labels)
    return RegistrationOutputs(transform, warped, jacobian, warpedLabels, metrics)


def addToScene(outputs: RegistrationOutputs, fixed, moving, labels=None) -> None:
    """Name the new nodes after the inputs, add them to the fixed volume's scene and set their display."""
    scene = fixed.GetScene()
    pair = f"{moving.GetName()} to {fixed.GetName()}"
    named = [(outputs.transform, f"{pair} FSDiffReg transform"), (outputs.warped, f"{moving.GetName()} warped"),
             (outputs.jacobian, f"{pair} Jacobian")]
    if outputs.warpedLabels is not None:
        named.append((outputs.warpedLabels, f"{labels.GetName()} warped"))
    for node, name in named:
        node.SetName(scene.GenerateUniqueName(name))
        scene.AddNode(node)
        node.CreateDefaultDisplayNodes()
    showJacobian(outputs.jacobian)
    if outputs.warpedLabels is None:
        return
    if outputs.warpedLabels.IsA("vtkMRMLSegmentationNode"):
        outputs.warpedLabels.SetReferenceImageGeometryParameterFromVolumeNode(fixed)
    elif labels.GetDisplayNode() is not None:
        outputs.warpedLabels.GetDisplayNode().SetAndObserveColorNodeID(labels.GetDisplayNode().GetColorNodeID())


def loadOutputs(outDir: Path, fixed, moving, labels=None) -> RegistrationOutputs:
    """The outputs as new nodes, added to the scene only once every file was read."""
    outputs = readOutputs(outDir, fixed, labels)
    addToScene(outputs, fixed, moving, labels)
    return outputs


def summary(metrics: dict) -> str:
    """The one-line result shown to the user."""
    return (f"Folding {metrics['folding_percent']:.3f} %, SD|J| {metrics['sd_jacobian']:.3f}, "
            f"{metrics['seconds']:.1f} s on {metrics['device']}")
