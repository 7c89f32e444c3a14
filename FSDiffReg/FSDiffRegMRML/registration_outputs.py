"""The library's output files turned into new MRML nodes on the fixed volume's grid.

``displacement.nii.gz`` is an ITK displacement field: LPS millimetres on the fixed grid,
mapping each fixed point x to the moving point x + u(x). Slicer's own transform reader
turns it into a grid transform in RAS, as the resampling (fixed -> moving) "FromParent"
transform: a moving volume placed under the node lines up with the fixed volume. Read
this way the node is exactly what Slicer gives back when the saved scene is reloaded
(cubic interpolation between voxel centres, where ITK interpolates linearly; at the
voxel centres, where the warped volume was sampled, both give the field itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slicer
import vtk

from .display import showJacobian
from .inputs import sameGeometry, segmentIds

Node = Any  # an MRML node: slicer's Python wrapping has no type information


@dataclass
class RegistrationOutputs:
    """The new nodes of one registration (MRML nodes: ``Node``), and its metrics."""

    transform: Node
    warped: Node
    jacobian: Node
    warpedLabels: Node | None
    metrics: dict


def readTransform(path: Path):
    """A new grid transform node holding the displacement field ``path``, read by Slicer's transform reader."""
    transform = slicer.vtkMRMLGridTransformNode()
    storage = slicer.vtkMRMLTransformStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(transform):
        raise OSError(f"cannot read the registration output {path.name}")
    return transform


def readVolume(path: Path, node, reference, what: str = "registration output",
               grid: str = "the fixed volume's grid"):
    """Read ``path`` into ``node`` with Slicer's volume reader and give it ``reference``'s grid exactly.

    Read as a single file: otherwise the reader takes files named alike (``labels_02.nii.gz``, ...) with a
    single-slice file as one volume. The files lie on the reference grid already; NIfTI stores it in single
    precision, so the reference node's IJK-to-RAS is copied after checking that it agrees. ``what`` and
    ``grid`` name the file and the grid in the errors.
    """
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetSingleFile(1)
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise OSError(f"cannot read the {what} {path.name}")
    if not sameGeometry(node, reference):
        raise OSError(f"the {what} {path.name} is not on {grid}")
    node.CopyOrientation(reference)
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
    transform = readTransform(outDir / "displacement.nii.gz")
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
