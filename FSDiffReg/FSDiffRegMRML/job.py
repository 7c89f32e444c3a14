"""One registration of MRML volumes: inputs to files, the CLI in a child process, outputs to new nodes."""

from __future__ import annotations

import shutil
import time
from typing import Callable

from FSDiffRegLib.commands.work_folders import new_work_folder

from .inputs import checkInputs, writeInputs
from .process import RegisterOptions, RegistrationProcess, Worker, pythonSlicerExecutable, registerCommand
from .registration_outputs import RegistrationOutputs, loadOutputs


class RegistrationError(RuntimeError):
    """The registration process failed or was cancelled; the scene was left as it was."""


class RegistrationJob:
    """Start with checked inputs; ``poll()`` until ``finished``; then ``outputs()`` (or ``cancel()``).

    Until ``outputs()`` succeeds nothing is added to the scene, and the input nodes are
    never changed. The work folder (input copies, output files) is removed at the end; if
    this process dies first, the child removes it and ends, and folders left by a process
    that no longer runs are removed when the next job starts (FSDiffRegLib.commands.work_folders).
    """

    def __init__(self, fixed, moving, labels=None, options: RegisterOptions | None = None,
                 worker: Worker | None = None):
        """``worker`` runs the command (one kept between runs); unless given, one of its own that ends
        with the job."""
        checkInputs(fixed, moving, labels)
        self.fixed, self.moving, self.labels = fixed, moving, labels
        self._begin(worker)
        try:
            fixedPath, movingPath, labelsPath = writeInputs(self.workDir, fixed, moving, labels)
            command = registerCommand(fixedPath, movingPath, self.outDir, options or RegisterOptions(), labelsPath)
            self.process = RegistrationProcess(self.worker.run(command, self.workDir))
        except BaseException:
            self._clean()
            raise

    def _begin(self, worker: Worker | None) -> None:
        """Take ``worker``, or one of the job's own (stopped at the end), and make the work folder."""
        self.worker, self._ownWorker = worker or Worker(pythonSlicerExecutable()), worker is None
        self.workDir = new_work_folder()
        self.outDir = self.workDir / "out"

    def poll(self) -> list[str]:
        """New output lines of the child process (never blocks)."""
        return self.process.poll()

    @property
    def finished(self) -> bool:
        return self.process.finished

    @property
    def progress(self) -> int:
        return self.process.progress

    def cancel(self) -> None:
        """Stop the child process and forget its work."""
        self.process.cancel()
        self._clean()

    def outputs(self) -> RegistrationOutputs:
        """After the child finished: the new output nodes, or RegistrationError with the reason."""
        try:
            if not self.process.succeeded:
                raise RegistrationError(self.process.failure())
            return loadOutputs(self.outDir, self.fixed, self.moving, self.labels)
        finally:
            self._clean()

    def wait(self, onLines: Callable[[list[str]], None] = lambda lines: None,
             idle: Callable[[], None] = lambda: time.sleep(0.05)) -> RegistrationOutputs:
        """Block until the child ends (calling ``idle`` in between), then return ``outputs()``."""
        while not self.finished:
            onLines(self.poll())
            idle()
        return self.outputs()

    def _clean(self) -> None:
        shutil.rmtree(self.workDir, ignore_errors=True)
        if self._ownWorker:
            self.worker.stop()
