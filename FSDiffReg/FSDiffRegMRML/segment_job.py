"""Segmenting a cine's reference frame (``fsdiffreg segment``) in the worker: the frame to a file, the labels back as
a new segmentation (segments RV, Myo, LV, as the tracked segmentations name and colour them), which the user can
edit in Segment Editor and track."""

from __future__ import annotations

from pathlib import Path

from FSDiffRegLib import events
from FSDiffRegLib.labels import COLORS, STRUCTURES

from .cine_inputs import Structure, checkCineFrame, cineFrame
from .cine_outputs import labelSegmentation, readLabelFrame
from .inputs import writeVolume
from .job import RegistrationError, RegistrationJob
from .process import RegisterOptions, RegistrationProcess, Worker

#: Progress (percent) of ``fsdiffreg segment`` at each stage's start; its progress events move from 10 to 95.
SEGMENT_STAGES = {"reading": 5, "loading": 10}
#: The segments of the labels: ACDC's values, names and colours.
SEGMENTS = {value: Structure(name, COLORS[value]) for value, name in STRUCTURES.items()}


class SegmentationError(RegistrationError):
    """The segmentation process failed or was cancelled; the scene was left as it was."""


def segmentCommand(frame: Path, labels: Path, options: RegisterOptions, weights: str = "") -> list[str]:
    """The ``fsdiffreg`` arguments that segment ``frame`` into ``labels``, on ``options``' device. ``weights``: the
    segmentation weights ("" the bundled ones; ``options.weights`` are the registration network's)."""
    args = ["segment", str(frame), "--out", str(labels), "--device", options.device]
    return args + (["--weights", str(weights)] if weights else [])


class SegmentationProcess(RegistrationProcess):
    """A running ``fsdiffreg segment``: as a registration, with progress slice by slice."""

    what = "segmentation"

    @staticmethod
    def stageProgress(event: events.Event) -> int | None:
        if event.stage == "segmenting":
            return 10 + round(85 * (event.fraction or 0.0))
        return SEGMENT_STAGES.get(event.stage)


class SegmentationJob(RegistrationJob):
    """A job's life (``poll()`` until ``finished``, then ``outputs()``, or ``cancel()``; ``wait()``) for ``fsdiffreg
    segment`` of a cine's reference frame. Nothing is added to the scene until ``outputs()`` succeeds, the cine is
    never changed, and the work folder is removed in every case."""

    def __init__(self, cine, referenceFrame: int, options: RegisterOptions | None = None,
                 worker: Worker | None = None, weights: str = ""):
        """``referenceFrame``: 1-based; ``weights``: the segmentation weights ("" the bundled ones)."""
        checkCineFrame(cine, referenceFrame)
        self.cine, self.referenceFrame = cine, referenceFrame
        self._begin(worker)
        try:
            self.frame = cineFrame(cine, referenceFrame - 1)
            framePath = writeVolume(self.frame, self.workDir / "reference_frame.nrrd")
            command = segmentCommand(framePath, self.workDir / "labels.nii.gz", options or RegisterOptions(), weights)
            self.process = SegmentationProcess(self.worker.run(command, self.workDir))
        except BaseException:
            self._clean()
            raise

    def outputs(self):
        """After the child finished: the new segmentation in the cine's scene, or SegmentationError with the reason."""
        try:
            if not self.process.succeeded:
                raise SegmentationError(self.process.failure())
            labelmap = readLabelFrame(self.workDir / "labels.nii.gz", self.frame, "segmentation")
            return addSegmentation(labelmap, self.frame, self.cine, self.referenceFrame)
        finally:
            self._clean()


def addSegmentation(labelmap, frame, cine, referenceFrame: int):
    """A new segmentation in the cine's scene, named after the frame, with the RV, Myo and LV segments of ``labelmap``
    (on ``frame``'s grid) and display nodes; nothing is left in the scene when it cannot be made."""
    scene = cine.GetScene()
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        segmentation = labelSegmentation(labelmap, frame, SEGMENTS, scene)
        segmentation.SetName(scene.GenerateUniqueName(f"{cine.GetName()} frame {referenceFrame} segmentation"))
        segmentation.CreateDefaultDisplayNodes()
    except BaseException:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in before:
                scene.RemoveNode(node)
        raise
    return segmentation


def segmentationSummary(segmentation) -> str:
    """The one-line result shown to the user."""
    return f"'{segmentation.GetName()}' made: check or edit its segments in Segment Editor, then Track."

