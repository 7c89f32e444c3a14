"""One tracking of a cine (a volume sequence or a multivolume): frames and labels to files, ``fsdiffreg
track`` in a child process, outputs to new nodes browsed with the cine."""

from __future__ import annotations

from .cine_inputs import checkCine, writeCineInputs
from .cine_outputs import CineOutputs, loadCineOutputs
from .job import RegistrationError, RegistrationJob
from .process import RegisterOptions, TrackingProcess, Worker, trackCommand


class TrackingError(RegistrationError):
    """The tracking process failed or was cancelled; the scene was left as it was."""


class TrackingJob(RegistrationJob):
    """A registration job's life (``poll()`` until ``finished``, then ``outputs()``, or ``cancel()``;
    ``wait()``) for ``fsdiffreg track``: every frame registered to the reference frame.

    Until ``outputs()`` succeeds nothing is added to the scene, and the input nodes are never
    changed; the work folder (frames, labels, output files) is removed in every case.
    ``sequencesLogic`` (Slicer's ``slicer.modules.sequences.logic()``) finds the cine's browser and
    makes the proxy nodes of the new sequences.
    """

    def __init__(self, cine, referenceFrame: int, labels, sequencesLogic, options: RegisterOptions | None = None,
                 worker: Worker | None = None):
        """``referenceFrame``: the frame (1-based) ``labels`` belong to; ``worker`` runs the command (one
        kept between runs); unless given, one of its own that ends with the job."""
        checkCine(cine, referenceFrame, labels)
        self.cine, self.referenceFrame, self.labels = cine, referenceFrame, labels
        self.sequencesLogic = sequencesLogic
        self._begin(worker)
        try:
            self.files = writeCineInputs(self.workDir, cine, referenceFrame, labels)
            command = trackCommand(self.files.frames, self.files.labels, self.outDir, referenceFrame,
                                   options or RegisterOptions(), self.files.timesMs)
            self.process = TrackingProcess(self.worker.run(command, self.workDir))
        except BaseException:
            self._clean()
            raise

    def outputs(self) -> CineOutputs:  # type: ignore[override]  # RegistrationJob's run, a cine's outputs
        """After the child finished: the new output nodes, or TrackingError with the reason."""
        try:
            if not self.process.succeeded:
                raise TrackingError(self.process.failure())
            return loadCineOutputs(self.outDir, self.cine, self.labels, self.files.structures, self.sequencesLogic)
        finally:
            self._clean()
