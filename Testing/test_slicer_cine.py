"""Tracking a cine from Slicer on real MRML (slicer-core): a volume sequence with a time index and
its browser, a multivolume as MultiVolumeImporter imports a 4D NIfTI, or a DICOM cine as
MultiVolumeImporterPlugin loads it as a sequence (with its browser); the ED labels as a label map
or a segmentation, ``fsdiffreg track`` in a child process (a stand-in with the CLI's arguments,
log lines and output folder: slicer_cine_child.py), and its outputs as sequences, tables and plots
browsed by the cine's own sequence browser (a new one for a multivolume); cancel, a failing child
and bad inputs leave the scene as it was."""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "FSDiffReg"))
import slicer_cine_child as child  # noqa: E402
from FSDiffRegLib import events  # noqa: E402
from FSDiffRegLib.defaults import PLAUSIBLE_INTERVAL_MS  # noqa: E402
from FSDiffRegLib.labels import structure_of  # noqa: E402
from FSDiffRegMRML.cine_inputs import (  # noqa: E402
    InputError,
    checkCine,
    cineFrame,
    cineFrames,
    frameCount,
    frameTimesMs,
    segmentValues,
    writeCineInputs,
)
from FSDiffRegMRML.cine_job import TrackingError, TrackingJob  # noqa: E402
from FSDiffRegMRML.cine_outputs import (  # noqa: E402
    CineOutputs,
    addCineToScene,
    cineSummary,
    functionRows,
    newSequence,
    readLabelFrame,
    segmentTable,
)
from FSDiffRegMRML.process import RegisterOptions, TrackingProcess, Worker, trackCommand  # noqa: E402
from slicer_releases import release_sequence_reading, vtk_log
from test_slicer_outputs import ijk_to_ras, load_volume, rotation, voxels
from test_slicer_process import drain, live_members, printing, scene_state, stand_in_worker, survivors

FRAMES = 5
FRAME_MS = 40.0  # the frame interval of the cines written with times
SIZE = (20, 18, 6)  # x, y, z voxels
SPACING = (1.5, 1.4, 8.0)
#: Boxes (i, j, k ranges) of each ACDC label in the ED labels: RV, Myo ring around the LV.
BOXES = {1: (slice(2, 7), slice(4, 14), slice(1, 5)), 2: (slice(9, 17), slice(5, 13), slice(1, 5)),
         3: (slice(11, 15), slice(7, 11), slice(1, 5))}
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def ed_labels_array() -> np.ndarray:
    """ACDC-valued labels (array z, y, x)."""
    labels = np.zeros(SIZE[::-1], np.uint8)
    for value, (i, j, k) in BOXES.items():
        labels[k, j, i] = value
    return labels


def write_cine(folder: Path, count: int = FRAMES, interval_s: float = 1.0) -> tuple[Path, Path]:
    """A 4D NIfTI of ``count`` frames (each frame's mean tells it apart) ``interval_s`` apart (1 s: the placeholder
    of a file without frame times) and its ED labels, on an oblique grid."""
    direction = rotation(20.0).ravel().tolist()
    base = np.random.default_rng(0).uniform(0, 100, SIZE[::-1]).astype(np.float32)
    frames = []
    for k in range(1, count + 1):
        frame = sitk.GetImageFromArray(base + 1000.0 * k)
        frame.SetSpacing(SPACING)
        frame.SetOrigin((-12.0, 30.5, 7.0))
        frame.SetDirection(direction)
        frames.append(frame)
    labels = sitk.GetImageFromArray(ed_labels_array())
    labels.CopyInformation(frames[0])
    paths = folder / "cine.nii.gz", folder / "ed_labels.nii.gz"
    sitk.WriteImage(sitk.JoinSeries(frames, 0.0, interval_s), str(paths[0]))
    sitk.WriteImage(labels, str(paths[1]))
    return paths


def new_scene():
    """A scene with the module logics Slicer always has, the sequences logic among them."""
    scene = slicer.vtkMRMLScene()
    logics = {"colors": slicer.vtkMRMLColorLogic(), "segmentations": slicer.vtkSlicerSegmentationsModuleLogic(),
              "sequences": slicer.vtkSlicerSequencesLogic()}
    for logic in logics.values():
        logic.SetMRMLScene(scene)
    return scene, logics


def load_cine(scene, logics, path: Path):
    """As Slicer 5.8 to 5.12 load a cine saved as a volume sequence (``.seq.nrrd``): read by the releases'
    sequence reader (NRRD only), with a browser of it. No release reads a 4D NIfTI as a sequence, so the
    4D NIfTI test files are first written as ``.seq.nrrd`` as Slicer writes one (slicer-core reading the
    NIfTI only to convert it)."""
    with tempfile.TemporaryDirectory() as folder:
        converted = Path(folder) / (path.name.split(".")[0] + ".seq.nrrd")
        source = slicer.vtkMRMLSequenceNode()
        reader = slicer.vtkMRMLVolumeSequenceStorageNode()
        reader.SetFileName(str(path))
        assert reader.ReadData(source)
        writer = slicer.vtkMRMLVolumeSequenceStorageNode()
        writer.SetFileName(str(converted))
        assert writer.WriteData(source)
        sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
        sequence.SetAndObserveStorageNodeID(storage.GetID())
        storage.SetFileName(str(converted))
        with release_sequence_reading():
            assert storage.ReadData(sequence)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    logics["sequences"].UpdateProxyNodesFromSequences(browser)
    return sequence


def load_multivolume(scene, path: Path):
    """As the MultiVolumeImporter module imports a 4D NIfTI (``read4DNIfTI`` at fedorov/MultiVolumeImporter
    c8a37eb, the commit Slicer 5.8.1, 5.10.0 and 5.12.3 build): vtkNIFTIImageReader with the time as the
    voxels' components, IJK-to-RAS from the qform and the spacing, frame labels in seconds (initial value 0,
    step 1), empty tag name and units. slicer-core has no vtkMRMLMultiVolumeNode: a node of its base class,
    vtkMRMLScalarVolumeNode, with the same image and attributes stands for it."""
    reader = vtk.vtkNIFTIImageReader()
    reader.SetFileName(str(path))
    reader.SetTimeAsVector(True)
    reader.Update()
    header = reader.GetNIFTIHeader()
    timeSpacing, units = reader.GetTimeSpacing(), header.GetXYZTUnits()
    if units & header.UnitsMSec == header.UnitsMSec:
        timeSpacing /= 1000.0
    if units & header.UnitsUSec == header.UnitsUSec:
        timeSpacing /= 1000.0 * 1000.0
    spaceScaling = 1000.0 if units & header.UnitsMeter == header.UnitsMeter else 1.0
    spaceScaling /= 1000.0 if units & header.UnitsMicron == header.UnitsMicron else 1.0
    spacing = [e * spaceScaling for e in reader.GetOutputDataObject(0).GetSpacing()]
    frames = reader.GetTimeDimension()
    change = vtk.vtkImageChangeInformation()
    change.SetInputConnection(reader.GetOutputPort())
    change.SetOutputSpacing(1, 1, 1)
    change.SetOutputOrigin(0, 0, 0)
    change.Update()
    scale, ijkToRas = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    for axis in range(3):
        scale.SetElement(axis, axis, spacing[axis])
    ijkToRas.DeepCopy(reader.GetQFormMatrix())
    vtk.vtkMatrix4x4.Multiply4x4(ijkToRas, scale, ijkToRas)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{frames} frames NIfTI MultiVolume")
    node.SetIJKToRASMatrix(ijkToRas)
    node.SetAndObserveImageData(change.GetOutputDataObject(0))
    for name, value in (("FrameLabels", ",".join(str(timeSpacing * i) for i in range(frames))),
                        ("NumberOfFrames", str(frames)), ("FrameIdentifyingDICOMTagName", ""),
                        ("FrameIdentifyingDICOMTagUnits", "")):
        node.SetAttribute(f"MultiVolume.{name}", value)
    return node


def load_dicom_cine(scene, logics, path: Path, folder: Path, times_ms: list[float]):
    """As MultiVolumeImporterPlugin (c8a37eb) loads a DICOM cine as a volume sequence, its default: each frame a
    scalar volume (read here from a NRRD file per frame), at index values "0" to "N-1" of an empty index name
    and unit; the multivolume's attributes on the sequence node (TriggerTime in ms); a browser of it with
    SaveChanges and OverwriteProxyName on."""
    four_d = sitk.ReadImage(str(path))
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    sequence.SetIndexName("")
    sequence.SetIndexUnit("")
    for name, value in (("FrameLabels", ",".join(str(t) for t in times_ms)),
                        ("FrameIdentifyingDICOMTagName", "TriggerTime"), ("NumberOfFrames", str(len(times_ms))),
                        ("FrameIdentifyingDICOMTagUnits", "ms")):
        sequence.SetAttribute(f"MultiVolume.{name}", value)
    scratch = slicer.vtkMRMLScene()
    for k in range(four_d.GetSize()[3]):
        sitk.WriteImage(four_d[:, :, :, k], str(folder / f"dicom_frame_{k}.nrrd"))
        sequence.SetDataNodeAtValue(load_volume(scratch, folder / f"dicom_frame_{k}.nrrd"), str(k))
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.SetSaveChanges(sequence, True)
    browser.SetOverwriteProxyName(sequence, True)
    logics["sequences"].UpdateProxyNodesFromSequences(browser)
    return sequence


def segmentation_of(scene, labelmap, names: list[str] | None = None):
    """A segmentation imported from ``labelmap`` (a segment per value, in value order), renamed as ``names``."""
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "ED segmentation")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation, "")
    for index, name in enumerate(names or []):
        segmentation.GetSegmentation().GetNthSegment(index).SetName(name)
    return segmentation


def launcher(folder: Path) -> str:
    """A PythonSlicer-like launcher: checks it is asked for ``-m FSDiffRegLib.commands.worker``, then runs the stand-in
    worker in a child Python of its own (two processes, as PythonSlicer and the real Python)."""
    path = folder / "PythonLauncher"
    path.write_text('#!/bin/sh\n[ "$*" = "-m FSDiffRegLib.commands.worker" ] '
                    '|| { echo "bad arguments: $*" >&2; exit 3; }\n'
                    f'"{sys.executable}" "{child.__file__}"\nexit $?\n')
    path.chmod(0o755)
    return str(path)


def label_counts(array: np.ndarray) -> dict[str, int]:
    return {str(int(v)): int((array == v).sum()) for v in np.unique(array) if v > 0}


# --- the command line and its progress --------------------------------------------------------


def test_track_command_carries_the_model_and_tracks_with_its_own_refinement():
    """Device and weights come from the panel; register's refinement steps (60) would triple the time."""
    options = RegisterOptions(device="cuda", weights="/w/model.pt", refineSteps=25, smoothness=2.5)
    args = trackCommand(Path("frames"), Path("labels.nrrd"), Path("out"), 19, options)
    assert args[:2] == ["track", "frames"]
    assert dict(zip(args[2::2], args[3::2])) == {
        "--labels": "labels.nrrd", "--out-dir": "out", "--reference-frame": "19", "--device": "cuda",
        "--weights": "/w/model.pt"}
    plain = trackCommand(Path("f"), Path("l"), Path("o"), 1, RegisterOptions())
    assert "--weights" not in plain and plain[-2:] == ["--device", "auto"]


def test_frame_times_come_from_a_time_index_in_seconds_or_milliseconds():
    scene, _ = new_scene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")

    def sequence(name: str, unit: str, values: list[str]):
        node = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
        node.SetIndexName(name)
        node.SetIndexUnit(unit)
        for value in values:
            node.SetDataNodeAtValue(volume, value)
        return node

    assert frameTimesMs(sequence("time", "ms", ["0", "33.5", "67"])) == [0.0, 33.5, 67.0]
    assert frameTimesMs(sequence("time", "s", ["0.5", "0.55"])) == pytest.approx([500.0, 550.0])
    assert frameTimesMs(sequence("time", "s", ["0", "1", "2"])) is None  # a NIfTI's placeholder interval
    assert frameTimesMs(sequence("frame", "", ["0", "1"])) is None
    assert frameTimesMs(sequence("time", "ms", ["0", "late"])) is None


def with_frame_labels(node, labels: str, tag: str, unit: str, frames: int):
    """``node`` with the attributes MultiVolumeImporter(Plugin) sets (on a multivolume, or on the sequence node of a
    DICOM cine loaded as a sequence)."""
    for name, value in (("FrameLabels", labels), ("FrameIdentifyingDICOMTagName", tag),
                        ("FrameIdentifyingDICOMTagUnits", unit), ("NumberOfFrames", str(frames))):
        node.SetAttribute(f"MultiVolume.{name}", value)
    return node


@pytest.mark.parametrize(("labels", "tag", "unit", "times"), [
    ("0.0,33.5,67.0", "TriggerTime", "ms", [0.0, 33.5, 67.0]),  # a DICOM cine
    ("0.0,40.0,80.0", "AcquisitionTime", "ms", [0.0, 40.0, 80.0]),
    ("0.0,0.04,0.08", "DeltaStartTime", "sec", [0.0, 40.0, 80.0]),
    ("0.0,0.04,0.08", "", "", [0.0, 40.0, 80.0]),  # a 4D NIfTI imported in MultiVolumeImporter: seconds
    ("0.0,1.0,2.0", "", "", None),  # a NIfTI's placeholder interval
    ("10.0,20.0,30.0", "EchoTime", "ms", None),  # frames of another kind
    ("1,2,3", "TemporalPositionIdentifier", "count", None),
    ("0.0,40.0", "TriggerTime", "ms", None),  # not a label per frame
])
def test_frame_times_come_from_multivolume_frame_labels(labels, tag, unit, times):
    """On a multivolume, and on a DICOM cine loaded as a sequence (empty index name and unit, values 0..N-1)."""
    scene, _ = new_scene()
    multivolume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    image = vtk.vtkImageData()
    image.SetDimensions(2, 2, 2)
    image.AllocateScalars(vtk.VTK_FLOAT, 3)
    multivolume.SetAndObserveImageData(image)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    sequence.SetIndexName("")
    sequence.SetIndexUnit("")
    for index in range(3):
        sequence.SetDataNodeAtValue(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode"), str(index))
    for cine in (multivolume, sequence):
        assert frameTimesMs(with_frame_labels(cine, labels, tag, unit, 3)) == (pytest.approx(times) if times else None)


def test_track_command_passes_the_frame_times():
    args = trackCommand(Path("f"), Path("l"), Path("o"), 1, RegisterOptions(), [0.0, 33.5])
    assert args[-2:] == ["--frame-times-ms", "0.0,33.5"]


def test_progress_moves_frame_by_frame(tmp_path):
    said = [events.stage("reading", "reading cine"), events.stage("loading", "loading weights on cpu"),
            events.progress("network", 2, 4, "network: 2 of 4 frames registered"),
            events.progress("network", 4, 4, "network: 4 of 4 frames registered"),
            events.progress("refining", 30, 60, "refining: 30 of 60 steps done (50 % of the work)", 0.5),
            events.progress("refining", 60, 60, "refining: 60 of 60 steps done (100 % of the work)"),
            events.progress("writing", 1, 4, "writing: 1 of 4 frames written"),
            events.progress("writing", 4, 4, "writing: 4 of 4 frames written")]
    assert [TrackingProcess.stageProgress(event) for event in said] == [5, 10, 30, 50, 68, 85, 87, 95]
    process = TrackingProcess(stand_in_worker(tmp_path, printing(said)).run(["track"]))
    assert drain(process) == [events.human(event) for event in said]
    assert process.progress == 95 and process.succeeded


def test_failure_and_crash_are_one_line_about_tracking(tmp_path):
    refusal = printing([events.error("reference frame 30 is out of range")], "return 2")
    error = TrackingProcess(stand_in_worker(tmp_path, refusal).run(["track"]))
    drain(error)
    assert error.failure() == "reference frame 30 is out of range"
    crash = TrackingProcess(stand_in_worker(tmp_path, printing([], "raise MemoryError")).run(["track"]))
    drain(crash)
    assert crash.failure() == "tracking failed (exit code 1): MemoryError"


# --- which label value each segment gets ------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("RV", 1), ("Right ventricle", 1), ("rv_blood_pool", 1), ("Myo", 2), ("myocardium", 2), ("LV Myocardium", 2),
    ("LV", 3), ("lv", 3), ("LV blood pool", 3), ("Left-Ventricle", 3), ("Segment_1", None), ("scar", None)])
def test_segment_names_of_the_structures(name, value):
    assert structure_of(name) == value


def segmentation_named(names: list[str]):
    """A segmentation (in no scene) with empty segments of these names."""
    new_scene()  # registers the segmentation converters, as Slicer does at start-up
    segmentation = slicer.vtkMRMLSegmentationNode()
    segmentation.SetName("ED")
    for name in names:
        segment = slicer.vtkSegment()
        segment.SetName(name)
        segmentation.GetSegmentation().AddSegment(segment, name.replace(" ", "_") + "_id")
    return segmentation


@pytest.mark.parametrize(("names", "values"), [
    (["LV blood pool", "Myocardium", "Right ventricle"], [3, 2, 1]),  # names win over the order
    (["Segment_1", "Segment_2", "Segment_3"], [1, 2, 3]),  # none named: the order, as Register writes them
    (["tissue", "bone"], [1, 2]),  # Slicer's default label colour names
    (["LV", "scar", "Myo", "fat"], [3, 4, 2, 5]),  # unknown beside named ones: never a ventricle
])
def test_segment_values(names, values):
    segmentation = segmentation_named(names)
    assert list(segmentValues(segmentation).values()) == values


def test_two_segments_naming_one_structure_is_an_error():
    with pytest.raises(InputError, match="'LV' and 'left ventricle' of 'ED' both name the LV") as error:
        segmentValues(segmentation_named(["LV", "Myo", "left ventricle"]))
    assert "\n" not in str(error.value)


# --- reading the outputs as the Slicer releases read them -------------------------------------


def test_the_releases_read_a_volume_sequence_from_nrrd_only(tmp_path):
    """The stand-in of the releases' sequence reader (Testing/slicer_releases.py) refuses the 4D NIfTI that
    slicer-core 5.13 reads, and reads the NRRD sequence Slicer writes."""
    scene, logics = new_scene()
    cine = load_cine(scene, logics, write_cine(tmp_path, count=3)[0])
    writer = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    writer.SetFileName(str(tmp_path / "cine.seq.nrrd"))
    assert writer.WriteData(cine)
    with release_sequence_reading():
        for name, read in (("cine.nii.gz", False), ("cine.seq.nrrd", True)):
            sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
            storage = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
            storage.SetFileName(str(tmp_path / name))
            assert bool(storage.ReadData(sequence)) == read, name
    assert sequence.GetNumberOfDataNodes() == 3


def test_a_single_slice_label_file_is_read_alone_not_with_the_files_named_alike(tmp_path):
    """Slicer's volume reader takes a single-slice file with the files named alike as one volume, unless told
    it is a single file."""
    frame = sitk.Image(SIZE[0], SIZE[1], 1, sitk.sitkFloat32)
    frame.SetSpacing(SPACING)
    for k in (1, 2, 3):
        labels = sitk.GetImageFromArray(np.full((1, SIZE[1], SIZE[0]), k, np.uint8))
        labels.CopyInformation(frame)
        sitk.WriteImage(labels, str(tmp_path / f"labels_{k:02d}.nii.gz"))
    sitk.WriteImage(frame, str(tmp_path / "frame.nii.gz"))
    scene, _ = new_scene()
    labelmap = readLabelFrame(tmp_path / "labels_02.nii.gz", load_volume(scene, tmp_path / "frame.nii.gz"))
    assert labelmap.IsA("vtkMRMLLabelMapVolumeNode") and labelmap.GetImageData().GetDimensions() == (*SIZE[:2], 1)
    assert np.all(voxels(labelmap) == 2)


# --- a tracking that succeeds -----------------------------------------------------------------

CASES = {  # labels as the user picks them, reference frame, time column in volumes.csv, how the cine arrives
    "label map": ("label map", 3, False, "sequence"),
    "segmentation named out of order": ("named", 1, True, "sequence"),
    "segmentation from a label map": ("unnamed", FRAMES, False, "sequence"),
    "multivolume of a 4D NIfTI": ("label map", 2, True, "multivolume"),
    "DICOM cine loaded as a sequence": ("named", 4, True, "dicom"),
}


def browsers(scene) -> list:
    return [scene.GetNthNodeByClass(i, "vtkMRMLSequenceBrowserNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode"))]


def cine_proxies(scene, cine) -> list:
    """The proxy nodes of ``cine`` (a sequence; a multivolume has none) in every browser of the scene."""
    if not cine.IsA("vtkMRMLSequenceNode"):
        return []
    return [b.GetProxyNode(cine) for b in browsers(scene) if b.IsSynchronizedSequenceNode(cine, True)]


@pytest.fixture(scope="module", params=list(CASES))
def run(request, tmp_path_factory):
    kind, reference, times, arrives = CASES[request.param]
    folder = tmp_path_factory.mktemp("cine")
    cinePath, labelsPath = write_cine(folder, interval_s=FRAME_MS / 1000 if times and arrives != "dicom" else 1.0)
    scene, logics = new_scene()
    if arrives == "multivolume":
        cine = load_multivolume(scene, cinePath)
    elif arrives == "dicom":
        cine = load_dicom_cine(scene, logics, cinePath, folder, [FRAME_MS * k for k in range(FRAMES)])
    else:
        cine = load_cine(scene, logics, cinePath)
    cineBrowsers = browsers(scene)
    labelmap = load_volume(scene, labelsPath, "vtkMRMLLabelMapVolumeNode")
    labels = labelmap
    if kind == "unnamed":
        labels = segmentation_of(scene, labelmap)
    elif kind == "named":  # values 1, 2, 3 hold LV, Myo, RV: segments in that order, named
        swapped = ed_labels_array()
        swapped[swapped == 1], swapped[swapped == 3] = 9, 1
        swapped[swapped == 9] = 3
        image = sitk.GetImageFromArray(swapped)
        image.CopyInformation(sitk.ReadImage(str(labelsPath)))
        sitk.WriteImage(image, str(folder / "swapped.nii.gz"))
        swappedNode = load_volume(scene, folder / "swapped.nii.gz", "vtkMRMLLabelMapVolumeNode")
        labels = segmentation_of(scene, swappedNode, ["LV blood pool", "myocardium", "Right Ventricle"])
    before = scene_state(scene)
    record = folder / "record.json"
    with pytest.MonkeyPatch.context() as patch, release_sequence_reading():
        patch.setenv("FAKE_TRACK_RECORD", str(record))
        job = TrackingJob(cine, reference, labels, logics["sequences"],
                          RegisterOptions(device="cpu", refineSteps=4), Worker(launcher(folder)))
        lines: list[str] = []
        outputs = job.wait(onLines=lines.extend)
    after = scene_state(scene)
    return {"name": request.param, "after": after, "scene": scene, "logics": logics, "cine": cine, "labels": labels,
            "reference": reference, "times": times, "job": job, "lines": lines, "outputs": outputs,
            "before": before, "record": json.loads(record.read_text()), "cinePath": cinePath,
            "arrives": arrives, "browsers": cineBrowsers}


def test_the_child_gets_every_frame_and_the_labels_with_acdc_values(run):
    record = run["record"]
    assert record["frames"] == [f"frame_{k:02d}.nrrd" for k in range(1, FRAMES + 1)]
    assert record["reference"] == run["reference"]
    assert record["arguments"][record["arguments"].index("--reference-frame") + 1] == str(run["reference"])
    assert ("--frame-times-ms" in record["arguments"]) == run["times"]  # a 1 s interval is a placeholder
    cine = sitk.ReadImage(str(run["cinePath"]))
    for k, (size, origin, spacing, direction) in enumerate(record["geometry"]):
        frame = cine[:, :, :, k]
        assert tuple(size) == frame.GetSize()
        np.testing.assert_allclose(origin, frame.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(spacing, frame.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(direction, frame.GetDirection(), atol=1e-5)
        assert record["means"][k] == pytest.approx(float(sitk.GetArrayViewFromImage(frame).mean()), rel=1e-6)
    for labels, frame in zip(record["labels_geometry"], record["geometry"][0]):  # a multivolume's grid: its qform
        np.testing.assert_allclose(labels, frame, atol=1e-4)
    # the RV, Myo and LV boxes differ in size: their counts tell which value each structure got
    assert record["labels_counts"] == label_counts(ed_labels_array())
    assert "fsdiffreg: network: 5 of 5 frames registered" in run["lines"] and run["job"].progress == 95


def expected_index(run) -> tuple[str, str, list[str]]:
    """The outputs' index: a sequence's own; a multivolume's frame times in ms (or frame numbers)."""
    cine = run["cine"]
    if run["arrives"] != "multivolume":
        return cine.GetIndexName(), cine.GetIndexUnit(), [cine.GetNthIndexValue(i) for i in range(FRAMES)]
    if run["times"]:
        return "time", "ms", [f"{FRAME_MS * k:g}" for k in range(FRAMES)]
    return "frame", "", [str(k) for k in range(1, FRAMES + 1)]


def test_outputs_are_new_nodes_of_the_right_kinds(run):
    out, cine = run["outputs"], run["cine"]
    indexName, indexUnit, indexValues = expected_index(run)
    for sequence, kind in ((out.transforms, "vtkMRMLGridTransformNode"),
                           (out.segmentations, "vtkMRMLSegmentationNode")):
        assert sequence.IsA("vtkMRMLSequenceNode") and sequence.GetScene() is run["scene"]
        assert sequence.GetNumberOfDataNodes() == FRAMES
        assert {sequence.GetNthDataNode(i).GetClassName() for i in range(FRAMES)} == {kind}
        assert [sequence.GetNthIndexValue(i) for i in range(FRAMES)] == indexValues
        assert (sequence.GetIndexName(), sequence.GetIndexUnit()) == (indexName, indexUnit)
        assert sequence.GetNthDataNode(FRAMES - 1).GetName().endswith(f"frame {FRAMES}")
    for i in range(FRAMES):
        segments = out.segmentations.GetNthDataNode(i).GetSegmentation()
        names = [segments.GetNthSegment(s).GetName() for s in range(segments.GetNumberOfSegments())]
        assert names == ["RV", "Myo", "LV"]
    assert out.table.IsA("vtkMRMLTableNode") and out.table.GetNumberOfRows() == FRAMES
    assert out.functionTable.IsA("vtkMRMLTableNode")
    assert out.chart.IsA("vtkMRMLPlotChartNode") and all(s.IsA("vtkMRMLPlotSeriesNode") for s in out.series)
    master = out.transforms if run["arrives"] == "multivolume" else cine
    assert out.browser.IsA("vtkMRMLSequenceBrowserNode") and out.browser.GetMasterSequenceNode() is master
    assert out.browser.IsSynchronizedSequenceNode(out.transforms.GetID(), True)
    assert out.browser.IsSynchronizedSequenceNode(out.segmentations.GetID())
    assert out.browser.GetNumberOfSynchronizedSequenceNodes() == (1 if run["arrives"] == "multivolume" else 2)
    assert cineSummary(out.function, out.metrics) == (f"ED frame {run['reference']}, ES frame {FRAMES - 1}, "
                                                      "LV EF 58.5 %, RV EF 58.5 %; 5 frames in 1.2 s on cpu")
    assert not run["job"].workDir.exists()


def centroid_ras(segmentation, segmentId: str) -> np.ndarray:
    """The centre (RAS) of a segment's voxels."""
    image = slicer.vtkOrientedImageData()
    assert segmentation.GetBinaryLabelmapRepresentation(segmentId, image)
    extent = image.GetExtent()
    dims = [extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3)]
    array = voxels_of(image).reshape(dims[::-1])
    k, j, i = np.nonzero(array)
    ijk = np.c_[i + extent[0], j + extent[2], k + extent[4], np.ones(len(i))]
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    return (ijk @ m.T)[:, :3].mean(axis=0)


def voxels_of(image) -> np.ndarray:
    from vtk.util import numpy_support

    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())


def test_the_browser_steps_through_frames_and_the_proxies_follow(run):
    """The cine's proxy (a sequence's) shows the browsed frame; a multivolume has none: its frame N is cineFrame."""
    out, cine, reference = run["outputs"], run["cine"], run["reference"]
    browser = out.browser
    volume = browser.GetProxyNode(cine) if cine.IsA("vtkMRMLSequenceNode") else None
    transform, segmentation = browser.GetProxyNode(out.transforms), browser.GetProxyNode(out.segmentations)
    assert (volume is None) == (run["arrives"] == "multivolume") and transform.IsA("vtkMRMLGridTransformNode")
    assert segmentation.IsA("vtkMRMLSegmentationNode") and segmentation.GetDisplayNode() is not None
    frame = ijk_to_ras(cineFrame(cine, 0))
    centre = (frame @ np.r_[(np.array(SIZE) - 1) / 2.0, 1.0])[:3]
    step = frame[:3, 0]  # one voxel along i, RAS
    lvAtReference = None
    for item in [reference - 1, *range(FRAMES)]:
        browser.SetSelectedItemNumber(item)
        number = item + 1
        base = voxels(cineFrame(cine, 0)).mean() - 1000.0
        shown = cineFrame(cine, item) if volume is None else volume
        assert voxels(shown).mean() == pytest.approx(1000.0 * number + base, rel=1e-6)
        moved = np.array(transform.GetTransformFromParent().TransformPoint(centre)) - centre
        np.testing.assert_allclose(moved, np.array([number - reference, 0.0, 0.0]) * LPS_TO_RAS, atol=1e-4)
        lv = centroid_ras(segmentation, "LV")
        if lvAtReference is None:
            lvAtReference = lv
        np.testing.assert_allclose(lv - lvAtReference, (number - reference) * step, atol=1e-3)


def column(table, name: str) -> list:
    array = table.GetTable().GetColumnByName(name)
    assert array is not None, name
    return [array.GetValue(i) for i in range(array.GetNumberOfTuples())]


def test_table_holds_the_volumes_and_strain_of_every_frame(run):
    table, reference = run["outputs"].table, run["reference"]
    names = [table.GetTable().GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    time = ["time_ms"] if run["times"] else []
    assert names == ["frame", *time, "RV_ml", "Myo_ml", "LV_ml", "radial_strain_percent",
                     "circumferential_strain_percent"]
    assert column(table, "frame") == list(range(1, FRAMES + 1))
    if run["times"]:
        assert column(table, "time_ms") == pytest.approx([FRAME_MS * k for k in range(FRAMES)])
    for k in range(1, FRAMES + 1):
        for name, value in child.expected_volumes(k, [1, 2, 3]).items():
            assert column(table, name)[k - 1] == pytest.approx(value, abs=1e-9)
        radial, circumferential = child.expected_strain(k, reference)
        assert column(table, "radial_strain_percent")[k - 1] == radial
        assert column(table, "circumferential_strain_percent")[k - 1] == circumferential
    assert table.GetColumnUnitLabel("LV_ml") == "ml" and table.GetColumnUnitLabel("radial_strain_percent") == "%"
    assert json.loads(table.GetAttribute("FSDiffReg.function")) == run["outputs"].function
    assert json.loads(table.GetAttribute("FSDiffReg.metrics"))["seconds"] == 1.25


def test_function_table_lists_every_value(run):
    table = run["outputs"].functionTable
    rows = list(zip(column(table, "quantity"), column(table, "value"), column(table, "unit")))
    assert rows == [(q, pytest.approx(v), u) for q, v, u in functionRows(run["outputs"].function)]
    assert ("LV EF", 58.5, "%") in rows and ("ED frame", float(run["reference"]), "") in rows
    assert ("Myo mass", 94.5, "g") in rows and ("RV ESV", 41.0, "ml") in rows
    assert ("strain peak radial", 2.0 * max(run["reference"] - 1, FRAMES - run["reference"]), "%") in rows


def test_segment_table_has_a_row_per_aha_segment(run):
    out = run["outputs"]
    table = out.segmentTable
    assert table.IsA("vtkMRMLTableNode") and table.GetScene() is run["scene"]
    assert table.GetName().endswith("strain per AHA segment") and table.GetNumberOfRows() == 16
    assert column(table, "segment") == list(range(1, 17))
    assert column(table, "name")[0] == "segment 1"
    assert column(table, "peak_circumferential_percent")[:15] == [-float(k) for k in range(1, 16)]
    assert column(table, "peak_radial_percent")[:15] == [2.0 * k for k in range(1, 16)]
    assert all(math.isnan(column(table, key)[15]) for key in ("peak_circumferential_percent", "peak_radial_percent"))
    assert table.GetColumnUnitLabel("peak_radial_percent") == "%"
    assert segmentTable({"frames": 2}) is None and segmentTable({"strain": {"radial_percent": [0.0]}}) is None


def cell_centres(model, segment: int) -> np.ndarray:
    """RAS centres of the cells of ``segment`` in a bullseye model."""
    polyData = model.GetPolyData()
    numbers = polyData.GetCellData().GetArray("segment")
    centres = []
    for c in range(polyData.GetNumberOfCells()):
        if numbers.GetValue(c) == segment:
            ids = polyData.GetCell(c).GetPointIds()
            centres.append(np.mean([polyData.GetPoint(ids.GetId(i)) for i in range(ids.GetNumberOfIds())], 0))
    return np.array(centres)


def test_bullseyes_show_the_peak_strain_of_each_segment(run):
    """Two models (circumferential, radial) above the heart: a cell scalar per segment with a value, shown through
    a colour table over the PNG's limits; segment 1 at the top, 2 counter-clockwise of it (the viewer's left in
    the anterior view: +R); segment 16 (no value) has no cells."""
    out, scene = run["outputs"], run["scene"]
    assert [m.GetName() for m in out.bullseyes] == [f"{run['cine'].GetName()} peak circumferential strain bullseye",
                                                   f"{run['cine'].GetName()} peak radial strain bullseye"]
    bounds = [0.0] * 6
    run["labels"].GetRASBounds(bounds)
    for model, (key, limits, value) in zip(out.bullseyes, (("peak_circumferential_percent", (-30.0, 0.0), -1.0),
                                                             ("peak_radial_percent", (0.0, 100.0), 2.0))):
        assert model.GetScene() is scene
        polyData = model.GetPolyData()
        values, numbers = (polyData.GetCellData().GetArray(n) for n in (key, "segment"))
        cells = [(numbers.GetValue(c), values.GetValue(c)) for c in range(polyData.GetNumberOfCells())]
        assert {n for n, _ in cells} == set(range(1, 16))
        assert all(v == value * n for n, v in cells)
        display = model.GetDisplayNode()
        assert display.GetActiveScalarName() == key and display.GetScalarVisibility()
        assert display.GetActiveAttributeLocation() == vtk.vtkAssignAttribute.CELL_DATA
        assert tuple(display.GetScalarRange()) == limits
        assert display.GetColorNode().IsA("vtkMRMLColorTableNode")
        centre = np.mean([cell_centres(model, k).mean(0) for k in (1, 4)], 0)  # segment 4 faces segment 1
        top, second = cell_centres(model, 1).mean(0) - centre, cell_centres(model, 2).mean(0) - centre
        assert top[2] > 20 and abs(top[0]) < 1e-6 and second[0] > 20 and second[2] > 0
        assert polyData.GetBounds()[4] > bounds[5]  # above the heart
    assert out.bullseyes[0].GetPolyData().GetBounds()[0] > out.bullseyes[1].GetPolyData().GetBounds()[1]


def test_summary_names_the_quality_notes():
    function = {"frames": 3, "ED_frame": 1, "ES_frame": 3, "LV": {"EF_percent": 95.0},
                "quality": [{"check": "ef_range", "message": "LV EF 95.0 % is outside 5-90 %"},
                            {"check": "es_at_end", "message": "ES (frame 3) is the last frame"}]}
    assert cineSummary(function, {"seconds": 2.0, "device": "cpu"}) == (
        "ED frame 1, ES frame 3, LV EF 95.0 %; 3 frames in 2.0 s on cpu; check: LV EF 95.0 % is outside 5-90 %; "
        "ES (frame 3) is the last frame")


def test_plot_series_draw_table_columns(run):
    out = run["outputs"]
    assert out.chart.GetNumberOfPlotSeriesNodes() == len(out.series) == 5
    x = "time_ms" if run["times"] else "frame"  # the frames' time where the sequence gives it
    assert out.chart.GetXAxisTitle() == ("time (ms)" if run["times"] else "frame")
    curves = {}
    for i in range(out.chart.GetNumberOfPlotSeriesNodes()):
        series = out.chart.GetNthPlotSeriesNode(i)
        assert series.GetTableNode() is out.table and series.GetXColumnName() == x
        assert out.table.GetTable().GetColumnByName(series.GetYColumnName()) is not None
        curves[series.GetName()] = series.GetYColumnName()
    assert curves == {"RV volume": "RV_ml", "Myo volume": "Myo_ml", "LV volume": "LV_ml",
                      "radial strain": "radial_strain_percent",
                      "circumferential strain": "circumferential_strain_percent"}


def test_only_the_outputs_and_their_proxies_join_the_scene(run):
    """New nodes: the outputs, and the proxy nodes of the new sequences with their display and storage nodes
    (nothing made on the way, e.g. while exporting or importing segments, is left behind); a browser only for
    a multivolume, which has none."""
    scene, out = run["scene"], run["outputs"]
    outputs = [out.transforms, out.segmentations, out.table, out.functionTable, out.segmentTable, out.chart,
               *out.series, *out.bullseyes, *(m.GetDisplayNode() for m in out.bullseyes),
               out.bullseyes[0].GetDisplayNode().GetColorNode()]
    proxies = [out.browser.GetProxyNode(s) for s in (out.transforms, out.segmentations)]
    newBrowser = [out.browser] if run["arrives"] == "multivolume" else []
    expected = {node.GetID() for node in outputs + proxies + newBrowser}
    for proxy in proxies:
        expected |= {proxy.GetNthDisplayNodeID(i) for i in range(proxy.GetNumberOfDisplayNodes())}
        expected |= {proxy.GetNthStorageNodeID(i) for i in range(proxy.GetNumberOfStorageNodes())}
    now = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    assert now - {node_id for node_id, *_ in run["before"]} == expected
    assert out.segmentations.GetName() == f"{run['labels'].GetName()} tracked"
    cineName = run["cine"].GetName()
    assert out.transforms.GetName() == f"{cineName} FSDiffReg transforms"
    assert out.browser.GetName() == (f"{cineName} FSDiffReg" if newBrowser else "cine browser")


def test_outputs_join_the_cines_own_browser(run):
    """The cine's browser (a sequence's) browses the outputs too, its settings for the cine kept: no second
    browser, no second proxy of the cine. A multivolume (no sequence, no browser) gets one browser."""
    scene, cine, out = run["scene"], run["cine"], run["outputs"]
    if run["arrives"] == "multivolume":
        assert run["browsers"] == [] and browsers(scene) == [out.browser] and cine_proxies(scene, cine) == []
        return
    assert browsers(scene) == run["browsers"] == [out.browser] and len(cine_proxies(scene, cine)) == 1
    dicom = run["arrives"] == "dicom"  # MultiVolumeImporterPlugin turns both on; a new browser has both off
    assert (out.browser.GetSaveChanges(cine), out.browser.GetOverwriteProxyName(cine)) == (dicom, dicom)


def test_a_sequence_without_a_browser_gets_one_with_the_outputs(tmp_path):
    """Only where the cine has no browser is one made: the cine its master, the outputs synchronized."""
    scene, logics = new_scene()
    cine = load_cine(scene, logics, write_cine(tmp_path)[0])
    for browser in browsers(scene):
        scene.RemoveNode(browser.GetProxyNode(cine))
        scene.RemoveNode(browser)
    outputs = CineOutputs(newSequence(cine, (slicer.vtkMRMLGridTransformNode() for _ in range(FRAMES)), "transform"),
                          newSequence(cine, (slicer.vtkMRMLSegmentationNode() for _ in range(FRAMES)), "labels"),
                          slicer.vtkMRMLTableNode(), slicer.vtkMRMLTableNode(), slicer.vtkMRMLPlotChartNode(), [],
                          None, {}, {})
    addCineToScene(outputs, cine, scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "ED"), logics["sequences"])
    assert browsers(scene) == [outputs.browser] and outputs.browser.GetMasterSequenceNode() is cine
    assert len(cine_proxies(scene, cine)) == 1 and outputs.browser.GetName() == "cine FSDiffReg"
    assert outputs.browser.IsSynchronizedSequenceNode(outputs.segmentations)


def test_inputs_stay_as_they_were(run):
    """Every node there before the run keeps its modification time and display nodes, but for the cine's browser,
    which gains the new sequences, and its proxy of the cine (and its display), which it fills again (as
    on every step)."""
    scene = run["scene"]
    now = {node_id: state for node_id, *state in run["after"]}
    proxies = cine_proxies(scene, run["cine"])
    browsing = run["browsers"] + proxies + [p.GetNthDisplayNode(i) for p in proxies
                                            for i in range(p.GetNumberOfDisplayNodes())]
    for node_id, *state in run["before"]:
        if scene.GetNodeByID(node_id) not in browsing:
            assert now[node_id] == state, scene.GetNodeByID(node_id).GetClassName()


# --- a tracking that fails, or is cancelled ---------------------------------------------------


@pytest.fixture
def cine_scene(tmp_path):
    scene, logics = new_scene()
    cinePath, labelsPath = write_cine(tmp_path)
    cine = load_cine(scene, logics, cinePath)
    labels = segmentation_of(scene, load_volume(scene, labelsPath, "vtkMRMLLabelMapVolumeNode"), ["RV", "Myo", "LV"])
    return scene, logics, cine, labels


@pytest.mark.parametrize(("mode", "error", "message"), [
    ("error", TrackingError, "^labels must be integer-valued, got float$"),
    ("crash", TrackingError, r"^tracking failed \(exit code 1\): MemoryError$"),
    ("missing-field", OSError, "field_05.nii.gz"),
    ("wrong-grid", OSError, "^the tracking output labels_01.nii.gz is not on the cine's voxel grid$"),
])
def test_a_failing_child_adds_nothing(cine_scene, tmp_path, monkeypatch, mode, error, message):
    scene, logics, cine, labels = cine_scene
    before = scene_state(scene)
    monkeypatch.setenv("FAKE_TRACK", mode)
    job = TrackingJob(cine, 2, labels, logics["sequences"], RegisterOptions(device="cpu", refineSteps=0),
                      Worker(launcher(tmp_path)))
    with pytest.raises(error, match=message), release_sequence_reading():
        job.wait()
    assert scene_state(scene) == before and not job.workDir.exists()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc to see the process tree")
def test_cancel_stops_launcher_and_child_and_adds_nothing(cine_scene, tmp_path, monkeypatch):
    scene, logics, cine, labels = cine_scene
    before = scene_state(scene)
    monkeypatch.setenv("FAKE_TRACK", "hang")
    job = TrackingJob(cine, 1, labels, logics["sequences"], RegisterOptions(device="cpu"), Worker(launcher(tmp_path)))
    lines, deadline = [], time.monotonic() + 60
    while not lines:
        assert time.monotonic() < deadline and not job.finished, "the stand-in never spoke"
        lines += job.poll()
        time.sleep(0.01)
    assert lines == ["fsdiffreg: reading cine"] and job.progress == 5
    group = job.worker.pid
    assert len(live_members(group)) == 2
    job.cancel()
    assert survivors(group) == []
    with pytest.raises(TrackingError, match="^tracking cancelled$"):
        job.outputs()
    assert scene_state(scene) == before and not job.workDir.exists()


# --- bad inputs ---------------------------------------------------------------------------------


def volume_like(frame, spacing=None):
    """A new volume (in no scene) with ``frame``'s voxels, on its grid or with another spacing."""
    volume = slicer.vtkMRMLScalarVolumeNode()
    volume.CopyOrientation(frame)
    image = vtk.vtkImageData()
    image.DeepCopy(frame.GetImageData())
    volume.SetAndObserveImageData(image)
    if spacing:
        volume.SetSpacing(spacing)
    return volume


def sequence_of(scene, name: str, items: list):
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    for index, item in enumerate(items):
        sequence.SetDataNodeAtValue(item, str(index))
    return sequence


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    cinePath, labelsPath = write_cine(folder)
    scene, logics = new_scene()
    cine = load_cine(scene, logics, cinePath)
    frame = cineFrames(cine)[0]
    labelmap = load_volume(scene, labelsPath, "vtkMRMLLabelMapVolumeNode")
    crop = vtk.vtkExtractVOI()
    crop.SetInputData(labelmap.GetImageData())
    crop.SetVOI(0, SIZE[0] - 3, 0, SIZE[1] - 1, 0, SIZE[2] - 1)
    crop.Update()
    cropped = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "cropped")
    cropped.CopyOrientation(labelmap)
    cropped.SetAndObserveImageData(crop.GetOutput())
    empty = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "zeros")
    empty.CopyOrientation(labelmap)
    zeros = vtk.vtkImageData()
    zeros.DeepCopy(labelmap.GetImageData())
    zeros.GetPointData().GetScalars().Fill(0)
    empty.SetAndObserveImageData(zeros)
    far = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "far away")
    far.CopyOrientation(labelmap)
    far.SetOrigin(1000.0, 1000.0, 1000.0)
    far.SetAndObserveImageData(labelmap.GetImageData())
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shifted = segmentation_of(scene, labelmap, ["RV", "Myo", "LV"])
    shifted.SetAndObserveTransformNodeID(shift.GetID())
    other_scene, other_logics = new_scene()
    elsewhere = load_volume(other_scene, labelsPath, "vtkMRMLLabelMapVolumeNode")
    multivolumes = {name: load_multivolume(scene, cinePath) for name in ("miscounted", "moved")}
    for name, node in multivolumes.items():
        node.SetName(name)
    multivolumes["miscounted"].SetAttribute("MultiVolume.NumberOfFrames", "7")
    multivolumes["moved"].SetAndObserveTransformNodeID(shift.GetID())
    single = volume_like(frame)
    single.SetAttribute("MultiVolume.NumberOfFrames", "1")
    scene.AddNode(single).SetName("one frame")
    transform = slicer.vtkMRMLLinearTransformNode()
    nodes = {
        "cine": cine, "labels": labelmap, "segmentation": segmentation_of(scene, labelmap, ["RV", "Myo", "LV"]),
        "volume": load_volume(scene, labelsPath), "one frame": sequence_of(scene, "one frame", [volume_like(frame)]),
        "empty sequence": sequence_of(scene, "no frames", []),
        "transforms": sequence_of(scene, "transforms", [transform, transform]),
        "label maps": sequence_of(scene, "label maps", [labelmap, labelmap]),
        "two grids": sequence_of(scene, "two grids", [volume_like(frame), volume_like(frame, (1.0, 1.0, 5.0))]),
        "cropped": cropped, "zeros": empty, "empty segmentation": scene.AddNewNodeByClass("vtkMRMLSegmentationNode"),
        "two LVs": segmentation_of(scene, labelmap, ["LV", "Myo", "lv blood pool"]),
        "outside": segmentation_of(scene, far, ["RV", "Myo", "LV"]), "shifted": shifted, "elsewhere": elsewhere,
        "multivolume": load_multivolume(scene, cinePath), "miscounted multivolume": multivolumes["miscounted"],
        "moved multivolume": multivolumes["moved"], "one-frame multivolume": single,
    }
    return scene, (logics, other_scene, other_logics), nodes


BAD_INPUTS = [
    (None, 1, "labels", "^Select a cine: a volume sequence"),
    ("volume", 1, "labels", "' is neither a volume sequence nor a multivolume: load the cine as a sequence"),
    ("miscounted multivolume", 1, "labels", "^The multivolume 'miscounted' says it has 7 frames but holds 5"),
    ("one-frame multivolume", 1, "labels", "^The cine 'one frame' has 1 frame\\(s\\): tracking needs at least 2.$"),
    ("moved multivolume", 1, "labels", "^The cine 'moved' is under a transform"),
    ("multivolume", FRAMES + 1, "labels", "^Reference frame 6 is out of range: the cine '5 frames NIfTI MultiVolume'"),
    ("multivolume", 1, "cropped", "^The label map 'cropped' is not on the cine's voxel grid"),
    ("one frame", 1, "labels", "^The cine 'one frame' has 1 frame\\(s\\): tracking needs at least 2.$"),
    ("empty sequence", 1, "labels", "has 0 frame"),
    ("transforms", 1, "labels", "holds vtkMRMLLinearTransformNode items, not scalar volumes"),
    ("label maps", 1, "labels", "holds vtkMRMLLabelMapVolumeNode items"),
    ("two grids", 1, "labels", "^Frame 2 of the cine 'two grids' is not on frame 1's voxel grid"),
    ("cine", 0, "labels", "^Reference frame 0 is out of range: the cine 'cine' has frames 1 to 5.$"),
    ("cine", FRAMES + 1, "labels", "^Reference frame 6 is out of range"),
    ("cine", 1, None, "^Select the labels of the reference frame"),
    ("cine", 1, "volume", "must be a segmentation or a label map volume"),
    ("cine", 1, "cine", "must be a segmentation or a label map volume"),
    ("cine", 1, "cropped", "^The label map 'cropped' is not on the cine's voxel grid"),
    ("cine", 1, "zeros", "^The label map 'zeros' is empty"),
    ("cine", 1, "empty segmentation", "has no segments"),
    ("cine", 1, "two LVs", "'LV' and 'lv blood pool' of .* both name the LV: rename or remove one.$"),
    ("cine", 1, "shifted", "labels .* is under a transform"),
    ("cine", 1, "elsewhere", "labels .* is in another scene"),
    ("cine", 1, "outside", "has no voxel inside the cine's frames"),
]


@pytest.mark.parametrize(("cine", "reference", "labels", "message"), BAD_INPUTS)
def test_bad_inputs_give_one_line_and_change_nothing(bad, tmp_path, cine, reference, labels, message):
    scene, (logics, _, _), nodes = bad
    before = scene_state(scene)
    folders = set(Path(tempfile.gettempdir()).glob("FSDiffReg-*"))
    with pytest.raises(InputError, match=message) as error:
        TrackingJob(nodes.get(cine), reference, nodes.get(labels), logics["sequences"], RegisterOptions(device="cpu"),
                    Worker(launcher(tmp_path)))
    assert "\n" not in str(error.value)
    assert scene_state(scene) == before
    assert set(Path(tempfile.gettempdir()).glob("FSDiffReg-*")) == folders


def test_the_good_inputs_of_the_bad_scene_pass(bad):
    scene, (logics, _, _), nodes = bad
    for cine in ("cine", "multivolume"):
        for labels in ("labels", "segmentation"):
            checkCine(nodes[cine], FRAMES, nodes[labels])


# --- the real command line -----------------------------------------------------------------------


def test_the_real_track_command_gives_outputs_slicer_loads(tmp_path, untrained_weights):
    """The real ``fsdiffreg track`` in the real worker (untrained weights, network only) on a 3-frame cine:
    its output folder must load whole (the contract of TRACK-DESIGN.md), read as the Slicer releases read,
    without a warning or an error from Slicer's readers."""
    scene, logics = new_scene()
    cinePath, labelsPath = write_cine(tmp_path, count=3)
    cine = load_cine(scene, logics, cinePath)
    labels = segmentation_of(scene, load_volume(scene, labelsPath, "vtkMRMLLabelMapVolumeNode"), ["RV", "Myo", "LV"])
    options = RegisterOptions(device="cpu", weights=str(untrained_weights), refineSteps=0)
    job = TrackingJob(cine, 2, labels, logics["sequences"], options, Worker(sys.executable))
    lines: list[str] = []
    with release_sequence_reading(), vtk_log() as log:
        out = job.wait(onLines=lines.extend)
    assert log.text == ""
    assert "fsdiffreg: reading cine" in lines and job.progress == 95
    assert out.transforms.GetNumberOfDataNodes() == out.segmentations.GetNumberOfDataNodes() == 3
    out.browser.SetSelectedItemNumber(1)  # the reference frame: no motion, the given labels
    transform = out.browser.GetProxyNode(out.transforms).GetTransformFromParent()
    centre = (ijk_to_ras(cineFrames(cine)[0]) @ np.r_[(np.array(SIZE) - 1) / 2.0, 1.0])[:3]
    np.testing.assert_allclose(transform.TransformPoint(centre), centre, atol=1e-6)
    tracked = out.browser.GetProxyNode(out.segmentations)
    given = centroid_ras(labels, labels.GetSegmentation().GetNthSegmentID(2))
    np.testing.assert_allclose(centroid_ras(tracked, "LV"), given, atol=1e-3)
    assert column(out.table, "frame") == [1, 2, 3] and out.table.GetTable().GetColumnByName("LV_ml") is not None
    assert "LV EF" in column(out.functionTable, "quantity") and out.function["ED_frame"] == 2
    assert not job.workDir.exists()


# --- a real cine ----------------------------------------------------------------------------------

SUNNYBROOK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sunnybrook-cine" / "SCD0000101"


def test_a_real_cine_is_written_frame_by_frame_in_order(tmp_path):
    """SCD0000101 (20 phases, ED = frame 19) loaded as Slicer loads a 4D NIfTI: frame N of the files is
    phase N of the cine, on its grid, and the ED labels keep their value (3, LV only)."""
    if not SUNNYBROOK.is_dir():
        pytest.skip(f"Sunnybrook cine not found at {SUNNYBROOK}: this test needs ../shared/data/sunnybrook-cine")
    scene, logics = new_scene()
    cine = load_cine(scene, logics, SUNNYBROOK / "SCD0000101_4d.nii.gz")
    labels = load_volume(scene, SUNNYBROOK / "SCD0000101_frame19_gt.nii.gz", "vtkMRMLLabelMapVolumeNode")
    checkCine(cine, 19, labels)
    (tmp_path / "work").mkdir()
    files = writeCineInputs(tmp_path / "work", cine, 19, labels)
    assert sorted(p.name for p in files.frames.iterdir()) == [f"frame_{k:02d}.nrrd" for k in range(1, 21)]
    assert {v: s.name for v, s in files.structures.items()} == {3: "LV"}
    four_d = sitk.ReadImage(str(SUNNYBROOK / "SCD0000101_4d.nii.gz"))
    for k in (1, 8, 19, 20):
        written = sitk.ReadImage(str(files.frames / f"frame_{k:02d}.nrrd"))
        phase = four_d[:, :, :, k - 1]
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(written), sitk.GetArrayViewFromImage(phase))
        np.testing.assert_allclose(written.GetOrigin(), phase.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(written.GetDirection(), phase.GetDirection(), atol=1e-5)
    for written, original in ((files.frames / "frame_19.nrrd", "SCD0000101_frame19.nii.gz"),
                              (files.labels, "SCD0000101_frame19_gt.nii.gz")):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(written))),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(SUNNYBROOK / original))))


def real_4d_nifti() -> tuple[Path, int, Path]:
    """A real 4D NIfTI cine, its ED frame and ED labels: ACDC's first ``patientNNN_4d.nii.gz`` where present,
    else Sunnybrook's SCD0000101."""
    acdc = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ACDC" / "training"
    for cine in sorted(acdc.glob("patient*/patient*_4d.nii.gz")):
        info = dict(line.split(": ", 1) for line in (cine.parent / "Info.cfg").read_text().splitlines() if ": " in line)
        ed = int(info["ED"])
        return cine, ed, cine.parent / f"{cine.parent.name}_frame{ed:02d}_gt.nii.gz"
    if not SUNNYBROOK.is_dir():
        pytest.skip(f"no 4D NIfTI cine: this test needs ../shared/data/ACDC (patientNNN_4d.nii.gz) or {SUNNYBROOK}")
    return SUNNYBROOK / "SCD0000101_4d.nii.gz", 19, SUNNYBROOK / "SCD0000101_frame19_gt.nii.gz"


def test_a_real_4d_nifti_imported_as_a_multivolume_is_written_frame_by_frame(tmp_path):
    """A real 4D NIfTI as the MultiVolumeImporter module imports it: frame N of the files is phase N of the file,
    on its grid; its 1 s placeholder interval gives no times; the ED labels fit its grid."""
    path, ed, edLabels = real_4d_nifti()
    scene, _ = new_scene()
    cine = load_multivolume(scene, path)
    labels = load_volume(scene, edLabels, "vtkMRMLLabelMapVolumeNode")
    checkCine(cine, ed, labels)
    four_d = sitk.ReadImage(str(path))
    (tmp_path / "work").mkdir()
    files = writeCineInputs(tmp_path / "work", cine, ed, labels)
    assert frameCount(cine) == four_d.GetSize()[3] == len(list(files.frames.iterdir()))
    for k in sorted({1, ed, four_d.GetSize()[3]}):
        written = sitk.ReadImage(str(files.frames / f"frame_{k:02d}.nrrd"))
        phase = four_d[:, :, :, k - 1]
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(written), sitk.GetArrayViewFromImage(phase))
        np.testing.assert_allclose(written.GetOrigin(), phase.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(written.GetDirection(), phase.GetDirection(), atol=1e-5)
    interval = 1000.0 * four_d.GetSpacing()[3]  # ms, the file's time unit being s (ACDC's and Sunnybrook's)
    low, high = PLAUSIBLE_INTERVAL_MS
    times = [interval * k for k in range(frameCount(cine))] if low <= interval <= high else None
    assert files.timesMs == (pytest.approx(times) if times else None)
