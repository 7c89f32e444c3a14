"""The module's logic end to end on real MRML: a real ACDC validation pair (and an oblique copy)
loaded with Slicer's volume reader, registered through the CLI process, outputs as new nodes;
and every bad input refused with a clear message, changing nothing."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk

from FSDiffRegLib.resources import BUNDLED_WEIGHTS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "FSDiffReg"))
from FSDiffRegMRML.display import JACOBIAN_COLORS  # noqa: E402
from FSDiffRegMRML.inputs import InputError  # noqa: E402
from FSDiffRegMRML.job import RegistrationJob  # noqa: E402
from FSDiffRegMRML.process import RegisterOptions  # noqa: E402
from FSDiffRegMRML.registration_outputs import summary  # noqa: E402
from test_slicer_outputs import ijk_to_ras, load_volume, new_scene, resampled_through, rotated, rotation, voxels


@pytest.fixture(scope="module")
def weights(request) -> Path:
    """The bundled weights; throwaway untrained ones while they do not exist yet."""
    return BUNDLED_WEIGHTS if BUNDLED_WEIGHTS.is_file() else request.getfixturevalue("untrained_weights")


def snapshot(node) -> dict:
    state = {"name": node.GetName(), "mtime": node.GetMTime(), "parent": node.GetTransformNodeID(),
             "displays": node.GetNumberOfDisplayNodes()}
    if node.IsA("vtkMRMLVolumeNode"):
        state.update(ijk=ijk_to_ras(node), voxels=voxels(node).copy(), image_mtime=node.GetImageData().GetMTime())
    else:
        state["segments"] = node.GetSegmentation().GetNumberOfSegments()
    return state


def assert_unchanged(node, state: dict) -> None:
    now = snapshot(node)
    for key, value in state.items():
        np.testing.assert_array_equal(now[key], value, err_msg=key)


def oblique_copies(pair, folder: Path) -> tuple[Path, Path, Path]:
    """The pair's fixed, moving and moving labels with the same oblique grid (rotated 30 degrees)."""
    r = rotation(30.0, axis=(0.2, 1.0, 0.5))
    fixed = sitk.ReadImage(str(pair.fixed))
    centre = np.array(fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()]))
    paths = []
    for name, path in (("fixed", pair.fixed), ("moving", pair.moving), ("labels", pair.moving_labels)):
        paths.append(folder / f"oblique_{name}.nrrd")
        sitk.WriteImage(rotated(sitk.ReadImage(str(path)), r, centre), str(paths[-1]))
    return tuple(paths)


@pytest.fixture(scope="module", params=["axis-aligned", "oblique"])
def run(request, validation_pair, weights, tmp_path_factory):
    """One registration through the logic: axis-aligned with a segmentation that has no display node
    (the registration must not add one); oblique with a label map and two refinement steps."""
    scene, logics = new_scene()
    if request.param == "axis-aligned":
        paths = (validation_pair.fixed, validation_pair.moving, validation_pair.moving_labels)
    else:
        paths = oblique_copies(validation_pair, tmp_path_factory.mktemp("oblique"))
    fixed = load_volume(scene, paths[0])
    moving = load_volume(scene, paths[1])
    labels = load_volume(scene, paths[2], "vtkMRMLLabelMapVolumeNode")
    if request.param == "axis-aligned":
        labelmap, labels = labels, scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, labels, "")
        scene.RemoveNode(labels.GetDisplayNode())
    inputs = {node.GetID(): snapshot(node) for node in (fixed, moving, labels)}
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    refine = 0 if request.param == "axis-aligned" else 2
    options = RegisterOptions(device="cpu", weights=str(weights), refineSteps=refine, smoothness=5.0)
    job = RegistrationJob(fixed, moving, labels, options)
    lines: list[str] = []
    outputs = job.wait(onLines=lines.extend)
    return {"name": request.param, "scene": scene, "logics": logics, "fixed": fixed, "moving": moving,
            "labels": labels, "inputs": inputs, "before": before, "job": job, "lines": lines, "outputs": outputs,
            "refine": refine}


def test_logic_fills_new_output_nodes(run):
    scene, out = run["scene"], run["outputs"]
    new = [out.transform, out.warped, out.jacobian, out.warpedLabels]
    assert all(node.GetScene() is scene for node in new)
    assert len({node.GetID() for node in new} | set(run["inputs"])) == 7
    assert out.transform.IsA("vtkMRMLGridTransformNode")
    assert out.transform.GetTransformFromParent().IsA("vtkOrientedGridTransform")
    assert out.warped.IsA("vtkMRMLScalarVolumeNode") and out.jacobian.IsA("vtkMRMLScalarVolumeNode")
    assert out.warpedLabels.GetClassName() == run["labels"].GetClassName()
    assert out.warped.GetName() == f"{run['moving'].GetName()} warped"
    assert set(out.metrics) >= {"folding_percent", "sd_jacobian", "ncc_before", "ncc_after", "seconds", "device",
                                "weights", "weights_sha256"}
    assert out.metrics["device"] == "cpu" and out.metrics["refine"]["steps"] == run["refine"]
    assert summary(out.metrics).startswith("Folding ") and " s on cpu" in summary(out.metrics)
    assert "fsdiffreg: registering" in run["lines"] and run["job"].progress == 90
    assert not run["job"].workDir.exists()


def test_only_the_outputs_join_the_scene(run):
    """New nodes: the outputs, their display nodes and the Jacobian colour table; nothing made on the
    way (e.g. the colour table Slicer's segmentation export adds) is left behind."""
    scene, out = run["scene"], run["outputs"]
    outputs = [out.transform, out.warped, out.jacobian, out.warpedLabels]
    expected = {node.GetID() for node in outputs}
    expected |= {node.GetNthDisplayNodeID(i) for node in outputs for i in range(node.GetNumberOfDisplayNodes())}
    expected.add(scene.GetFirstNodeByName(JACOBIAN_COLORS).GetID())
    now = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    assert now - run["before"] == expected


def test_output_volumes_keep_the_fixed_ijk_to_ras(run):
    fixed = run["fixed"]
    for volume in (run["outputs"].warped, run["outputs"].jacobian):
        assert volume.GetImageData().GetDimensions() == fixed.GetImageData().GetDimensions()
        np.testing.assert_array_equal(ijk_to_ras(volume), ijk_to_ras(fixed))
    grid = run["outputs"].transform.GetTransformFromParent().GetDisplacementGrid()
    assert grid.GetDimensions() == fixed.GetImageData().GetDimensions()


def test_input_nodes_are_unchanged(run):
    for node_id, state in run["inputs"].items():
        assert_unchanged(run["scene"].GetNodeByID(node_id), state)


def test_moving_through_the_transform_node_reproduces_warped(run):
    resampled = resampled_through(run["outputs"].transform, run["moving"], run["fixed"])
    warped = voxels(run["outputs"].warped)
    assert np.abs(resampled - warped).max() < 1e-4 * np.abs(warped).max()  # measured 0.0018 of 255


def test_warped_labels_stay_labels_of_the_input(run):
    out = run["outputs"].warpedLabels
    if out.IsA("vtkMRMLSegmentationNode"):
        assert out.GetSegmentation().GetNumberOfSegments() == run["labels"].GetSegmentation().GetNumberOfSegments()
    else:
        assert set(np.unique(voxels(out))) <= set(np.unique(voxels(run["labels"])))
        np.testing.assert_array_equal(ijk_to_ras(out), ijk_to_ras(run["fixed"]))


# --- bad inputs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad(validation_pair):
    """Real volumes plus the kinds of wrong input a user can pick."""
    scene, logics = new_scene()
    fixed = load_volume(scene, validation_pair.fixed)
    moving = load_volume(scene, validation_pair.moving)
    labels = load_volume(scene, validation_pair.moving_labels, "vtkMRMLLabelMapVolumeNode")

    def derived(name: str, image, cls: str = "vtkMRMLScalarVolumeNode"):
        node = scene.AddNewNodeByClass(cls, name)
        node.CopyOrientation(fixed)
        node.SetAndObserveImageData(image)
        return node

    one_slice = vtk.vtkExtractVOI()
    one_slice.SetInputData(fixed.GetImageData())
    dims = fixed.GetImageData().GetDimensions()
    one_slice.SetVOI(0, dims[0] - 1, 0, dims[1] - 1, 3, 3)
    one_slice.Update()
    frames = vtk.vtkImageAppendComponents()
    frames.AddInputData(fixed.GetImageData())
    frames.AddInputData(moving.GetImageData())
    frames.Update()
    cropped = vtk.vtkExtractVOI()
    cropped.SetInputData(labels.GetImageData())
    cropped.SetVOI(0, dims[0] - 11, 0, dims[1] - 1, 0, dims[2] - 1)
    cropped.Update()
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "no voxels")
    grid_only = vtk.vtkImageData()  # dimensions, no voxel values
    grid_only.SetDimensions(dims)
    loose = slicer.vtkMRMLScalarVolumeNode()  # read, never added to a scene
    loose.SetName("loose")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(validation_pair.moving))
    assert storage.ReadData(loose)
    other_scene, other_logics = new_scene()
    elsewhere = load_volume(other_scene, validation_pair.moving)
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shifted = load_volume(scene, validation_pair.moving)
    shifted_labels = load_volume(scene, validation_pair.moving_labels, "vtkMRMLLabelMapVolumeNode")
    shifted_segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labels, shifted_segmentation, "")
    for node in (shifted, shifted_labels, shifted_segmentation):
        node.SetAndObserveTransformNodeID(shift.GetID())
    loose_segmentation = slicer.vtkMRMLSegmentationNode()  # segments, but in no scene
    loose_segmentation.GetSegmentation().DeepCopy(shifted_segmentation.GetSegmentation())
    nodes = {"fixed": fixed, "moving": moving, "labels": labels, "empty": empty, "shifted": shifted,
             "shifted labels": shifted_labels, "shifted segmentation": shifted_segmentation,
             "2D": derived("one slice", one_slice.GetOutput()),
             "4D": derived("two frames", frames.GetOutput()),
             "cropped labels": derived("cropped labels", cropped.GetOutput(), "vtkMRMLLabelMapVolumeNode"),
             "empty segmentation": scene.AddNewNodeByClass("vtkMRMLSegmentationNode"),
             "no scalars": derived("no voxel values", grid_only),
             "no scalars labels": derived("no label values", grid_only, "vtkMRMLLabelMapVolumeNode"),
             "loose": loose, "loose segmentation": loose_segmentation, "elsewhere": elsewhere}
    return scene, (logics, other_scene, other_logics), nodes


BAD_INPUTS = [
    (None, "moving", None, "Select a fixed volume"),
    ("fixed", None, None, "Select a moving volume"),
    ("fixed", "fixed", None, "same node"),
    ("2D", "moving", None, "is 2D"),
    ("fixed", "2D", None, "is 2D"),
    ("4D", "moving", None, "2 values per voxel"),
    ("fixed", "4D", None, "2 values per voxel"),
    ("empty", "moving", None, "has no voxels"),
    ("fixed", "shifted", None, "moving volume .* is under a transform"),
    ("fixed", "moving", "shifted labels", "labels .* is under a transform"),
    ("fixed", "moving", "shifted segmentation", "labels .* is under a transform"),
    ("fixed", "moving", "fixed", "not an input volume"),
    ("fixed", "moving", "cropped labels", "not on the moving volume's voxel grid"),
    ("fixed", "moving", "empty segmentation", "has no segments"),
    ("no scalars", "moving", None, "fixed volume 'no voxel values' has no voxel values"),
    ("fixed", "no scalars", None, "moving volume 'no voxel values' has no voxel values"),
    ("fixed", "moving", "no scalars labels", "label map volume 'no label values' has no voxel values"),
    ("loose", "moving", None, "fixed volume 'loose' is in no scene"),
    ("fixed", "loose", None, "moving volume 'loose' is in no scene"),
    ("fixed", "moving", "loose segmentation", "labels .* is in no scene"),
    ("fixed", "elsewhere", None, "moving volume .* is in another scene than the fixed volume"),
]


@pytest.mark.parametrize("fixed, moving, labels, message", BAD_INPUTS)
def test_bad_inputs_give_a_clear_message_and_change_nothing(bad, fixed, moving, labels, message):
    scene, _, nodes = bad
    before = [(scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetMTime()) for i in range(scene.GetNumberOfNodes())]
    dirs = set(Path(tempfile.gettempdir()).glob("FSDiffReg-*"))
    with pytest.raises(InputError, match=message) as error:
        RegistrationJob(*(nodes.get(name) for name in (fixed, moving, labels)), RegisterOptions(device="cpu"))
    assert "\n" not in str(error.value)
    after = [(scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetMTime()) for i in range(scene.GetNumberOfNodes())]
    assert after == before
    assert set(Path(tempfile.gettempdir()).glob("FSDiffReg-*")) == dirs
