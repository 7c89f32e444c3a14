"""Segmenting a cine's reference frame from Slicer on real MRML (slicer-core): the frame written to the work
folder, ``fsdiffreg segment`` run by the real worker, the labels back as a segmentation (RV, Myo, LV) on the
frame's grid, ready to track; Cancel and bad input leave the scene as it was."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import torch
import vtk
from vtk.util import numpy_support

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "FSDiffReg"))
from FSDiffRegLib import events  # noqa: E402
from FSDiffRegLib.pipeline import segment
from FSDiffRegLib.resources import SEGMENTATION_WEIGHTS  # noqa: E402
from FSDiffRegLib.training import segment_train  # noqa: E402
from FSDiffRegMRML.cine_inputs import InputError, checkCine, cineFrame, segmentValues  # noqa: E402
from FSDiffRegMRML.process import RegisterOptions, Worker  # noqa: E402
from FSDiffRegMRML.segment_job import (  # noqa: E402
    SegmentationError,
    SegmentationJob,
    SegmentationProcess,
    segmentCommand,
)
from test_slicer_cine import load_multivolume, new_scene  # noqa: E402
from test_slicer_outputs import load_volume, voxels  # noqa: E402
from test_slicer_process import PATIENCE, drain, printing, scene_state, stand_in_worker  # noqa: E402

PATIENT = "patient091"  # a validation heart: ED frame 1, ES frame 9
COLORS = {"RV": (0.25, 0.45, 0.9), "Myo": (0.35, 0.75, 0.35), "LV": (0.9, 0.3, 0.25)}  # as the tracked labels


@pytest.fixture(scope="module")
def segmentation_weights(tmp_path_factory) -> str:
    """The bundled segmentation weights, or (until they are bundled) an untrained network exported as they are."""
    if SEGMENTATION_WEIGHTS.is_file():
        return str(SEGMENTATION_WEIGHTS)
    folder = tmp_path_factory.mktemp("segment_weights")
    torch.manual_seed(0)
    checkpoint = folder / "untrained_checkpoint.pt"
    torch.save({"network": segment.NETWORK, "state_dict": segment.build_network().state_dict(), "epoch": 0},
               checkpoint)
    segment_train.export(checkpoint, folder / "untrained.pt")
    return str(folder / "untrained.pt")


def acdc_cine(scene, data_dir: Path):
    """ACDC patient 091's ED and ES frames as a two-frame volume sequence in ``scene`` (time index in ms)."""
    patient = data_dir / "training" / PATIENT
    scratch = slicer.vtkMRMLScene()
    cine = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    cine.SetIndexName("time")
    cine.SetIndexUnit("ms")
    for index, frame in enumerate((1, 9)):
        cine.SetDataNodeAtValue(load_volume(scratch, patient / f"{PATIENT}_frame{frame:02d}.nii.gz"), str(40 * index))
    return cine


def matrix(m) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def finished(job) -> None:
    deadline = time.monotonic() + 10 * PATIENCE
    while not job.finished:
        assert time.monotonic() < deadline, "the segmentation never finished"
        job.poll()
        time.sleep(0.05)


def acdc_multivolume(scene, data_dir: Path, folder: Path):
    """The same two frames as a multivolume, as MultiVolumeImporter imports a 4D NIfTI of them."""
    patient = data_dir / "training" / PATIENT
    frames = [sitk.ReadImage(str(patient / f"{PATIENT}_frame{frame:02d}.nii.gz")) for frame in (1, 9)]
    sitk.WriteImage(sitk.JoinSeries(frames, 0.0, 0.04), str(folder / "cine.nii.gz"))
    cine = load_multivolume(scene, folder / "cine.nii.gz")
    cine.SetName("cine")
    return cine


@pytest.fixture(scope="module", params=["sequence", "multivolume"])
def segmented(request, data_dir, segmentation_weights, tmp_path_factory):
    """The reference frame (2, ES) of the ACDC cine (a volume sequence or a multivolume) segmented by the real
    worker: scene, cine, segmentation, job, logics."""
    scene, logics = new_scene()
    if request.param == "sequence":
        cine = acdc_cine(scene, data_dir)
    else:
        cine = acdc_multivolume(scene, data_dir, tmp_path_factory.mktemp("multivolume"))
    worker = Worker(sys.executable)
    try:
        job = SegmentationJob(cine, 2, RegisterOptions(device="cpu"), worker, segmentation_weights)
        finished(job)
        return scene, cine, job.outputs(), job, logics
    finally:
        worker.stop()


def test_the_segment_command_runs_on_the_chosen_device_with_the_segmentation_weights():
    options = RegisterOptions(device="cuda", weights="/w/registration.pt")
    assert segmentCommand(Path("f.nrrd"), Path("l.nii.gz"), options) == [
        "segment", "f.nrrd", "--out", "l.nii.gz", "--device", "cuda"]
    assert segmentCommand(Path("f"), Path("l"), RegisterOptions(), "/w/seg.pt")[-2:] == ["--weights", "/w/seg.pt"]


def test_progress_moves_slice_by_slice(tmp_path):
    said = [events.stage("reading", "reading image"), events.stage("loading", "loading segmentation weights on cpu"),
            events.progress("segmenting", 5, 10, "segmenting: 5 of 10 slices done"),
            events.progress("segmenting", 10, 10, "segmenting: 10 of 10 slices done")]
    assert [SegmentationProcess.stageProgress(event) for event in said] == [5, 10, 52, 95]
    process = SegmentationProcess(stand_in_worker(tmp_path, printing(said)).run(["segment"]))
    assert drain(process) == [events.human(event) for event in said]
    assert process.progress == 95 and process.succeeded


def test_the_reference_frame_arrives_as_rv_myo_lv_segments_on_its_grid(segmented, data_dir):
    scene, cine, segmentation, job, _ = segmented
    assert segmentation.GetScene() is scene and segmentation.GetName() == "cine frame 2 segmentation"
    segments = segmentation.GetSegmentation()
    names = [segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())]
    assert names == ["RV", "Myo", "LV"]
    assert [segments.GetNthSegmentID(i) for i in range(3)] == names
    for name in names:
        assert segments.GetSegment(name).GetColor() == pytest.approx(COLORS[name])
    assert list(segmentValues(segmentation).values()) == [1, 2, 3]  # what Track writes for them
    assert segmentation.GetDisplayNode() is not None  # shown, editable in Segment Editor
    frame, frameMatrix, segmentMatrix = cineFrame(cine, 1), vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    frame.GetIJKToRASMatrix(frameMatrix)
    binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    assert segments.GetSourceRepresentationName() == binary  # what Segment Editor edits
    for name in names:  # each segment's voxels on the frame's grid, inside it
        voxelsOfSegment = segments.GetSegment(name).GetRepresentation(binary)
        voxelsOfSegment.GetImageToWorldMatrix(segmentMatrix)
        assert np.allclose(matrix(segmentMatrix), matrix(frameMatrix), atol=1e-6)
        low, high = np.array(voxelsOfSegment.GetExtent()).reshape(3, 2).T
        assert (low >= 0).all() and (high < frame.GetImageData().GetDimensions()).all()
    assert not job.workDir.exists()  # the work folder is gone
    checkCine(cine, 2, segmentation)  # Track takes it as the cine's labels


def test_the_frame_is_segmented_as_the_command_line_segments_it(segmented, data_dir, segmentation_weights, tmp_path):
    """The segmentation holds the labels ``fsdiffreg segment`` gives for the frame file, value for value."""
    scene, cine, segmentation, _, _ = segmented
    from FSDiffRegLib.commands.cli import main
    from FSDiffRegMRML.cine_inputs import labelmapWithValues

    out = tmp_path / "labels.nii.gz"
    frame = data_dir / "training" / PATIENT / f"{PATIENT}_frame09.nii.gz"
    assert main(["segment", str(frame), "--out", str(out), "--device", "cpu", "--weights", segmentation_weights]) == 0
    expected = voxels(load_volume(slicer.vtkMRMLScene(), out, "vtkMRMLLabelMapVolumeNode"))
    got = voxels(labelmapWithValues(segmentation, cineFrame(cine, 1), segmentValues(segmentation)))
    assert set(np.unique(got)) == {0, 1, 2, 3}
    assert np.array_equal(got, expected)


def test_cancel_leaves_nothing(data_dir, segmentation_weights):
    scene, _ = new_scene()
    cine = acdc_cine(scene, data_dir)
    before = scene_state(scene)
    worker = Worker(sys.executable)
    try:
        job = SegmentationJob(cine, 1, RegisterOptions(device="cpu"), worker, segmentation_weights)
        assert job.workDir.is_dir()
        job.poll()
        job.cancel()
        assert worker.pid is None and not job.workDir.exists()
        with pytest.raises(SegmentationError, match="^segmentation cancelled$"):
            job.outputs()
    finally:
        worker.stop()
    assert scene_state(scene) == before


def test_an_image_the_command_refuses_is_one_line_and_nothing_is_added(tmp_path, segmentation_weights):
    """A frame of 4 slices: ``fsdiffreg segment``'s own refusal reaches the user, in one line."""
    scene, _ = new_scene()
    cine = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "thin cine")
    scratch = slicer.vtkMRMLScene()
    for index in range(2):
        frame = scratch.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        frame.SetSpacing(1.5, 1.5, 8.0)
        frame.SetAndObserveImageData(image(64, 64, 4))
        cine.SetDataNodeAtValue(frame, str(index))
    before = scene_state(scene)
    worker = Worker(sys.executable)
    try:
        job = SegmentationJob(cine, 1, RegisterOptions(device="cpu"), worker, segmentation_weights)
        finished(job)
        with pytest.raises(SegmentationError) as error:
            job.outputs()
    finally:
        worker.stop()
    message = str(error.value)
    assert "\n" not in message
    assert message.endswith("has 4 slices along its third axis: a short-axis stack of the heart has at least 5")
    assert scene_state(scene) == before and not job.workDir.exists()


def image(*dimensions: int):
    data = vtk.vtkImageData()
    data.SetDimensions(*dimensions)
    data.AllocateScalars(vtk.VTK_SHORT, 1)
    values = numpy_support.vtk_to_numpy(data.GetPointData().GetScalars())
    values[:] = np.arange(values.size) % 200  # not a constant image: the command's stack check decides
    return data


@pytest.mark.parametrize(("reference", "message"), [
    (3, "Reference frame 3 is out of range: the cine 'cine' has frames 1 to 2."),
    (0, "Reference frame 0 is out of range: the cine 'cine' has frames 1 to 2."),
])
def test_bad_reference_frame_is_one_line_and_starts_nothing(reference, message, tmp_path, monkeypatch):
    scene, _ = new_scene()
    cine = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    scratch = slicer.vtkMRMLScene()
    for index in range(2):
        frame = scratch.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        frame.SetAndObserveImageData(image(8, 8, 6))
        cine.SetDataNodeAtValue(frame, str(index))
    before = scene_state(scene)
    monkeypatch.setattr("FSDiffRegMRML.job.new_work_folder", lambda: pytest.fail("a work folder was made"))
    worker = Worker(str(tmp_path / "no-python"))  # never started
    with pytest.raises(InputError) as error:
        SegmentationJob(cine, reference, RegisterOptions(), worker)
    assert str(error.value) == message and worker.pid is None
    assert scene_state(scene) == before
    with pytest.raises(InputError, match="^Select a cine"):
        SegmentationJob(None, 1, RegisterOptions(), worker)


def test_register_takes_the_segmentation_as_the_moving_labels(segmented, data_dir, tmp_path):
    """The segmented frame (ES) as the moving volume of Register, its segmentation as the moving labels: accepted,
    and written as RV 1, Myo 2, LV 3 on the moving grid."""
    from FSDiffRegMRML.inputs import checkInputs, writeInputs

    scene, _, segmentation, _, _ = segmented
    patient = data_dir / "training" / PATIENT
    fixed = load_volume(scene, patient / f"{PATIENT}_frame01.nii.gz")
    moving = load_volume(scene, patient / f"{PATIENT}_frame09.nii.gz")
    checkInputs(fixed, moving, segmentation)
    _, _, labels = writeInputs(tmp_path, fixed, moving, segmentation)
    written = voxels(load_volume(slicer.vtkMRMLScene(), labels, "vtkMRMLLabelMapVolumeNode"))
    assert written.shape == voxels(moving).shape and set(np.unique(written)) == {0, 1, 2, 3}
