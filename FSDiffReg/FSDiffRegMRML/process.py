"""The ``fsdiffreg register`` command run in a child process, and its output followed.

The child is plain Python (``PythonSlicer`` inside Slicer) running ``-m FSDiffRegLib.cli``
from the folder that holds FSDiffRegLib, so the GUI never imports torch or blocks.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parent.parent

#: Progress (percent) reached when the CLI announces each stage on stderr.
STAGES = {
    "reading images": 10,
    "loading weights": 20,
    "registering": 35,
    "refining": 60,
    "writing outputs": 90,
}
ERROR_LINE = re.compile(r"^fsdiffreg(?: \w+)?: error: (.*)$")
STAGE_LINE = re.compile(r"^fsdiffreg: (.*)$")


def libraryRoot() -> Path:
    """The folder holding FSDiffRegLib: the module folder once installed, the repository in a checkout."""
    for folder in (MODULE_DIR, MODULE_DIR.parent):
        if (folder / "FSDiffRegLib" / "__init__.py").is_file():
            return folder
    raise FileNotFoundError(f"FSDiffRegLib not found beside {MODULE_DIR}: the extension is incomplete")


def bundledWeights() -> Path:
    """The weights shipped with the extension (the library's own default)."""
    return libraryRoot() / "FSDiffRegLib" / "assets" / "weights" / "fsdiffreg_acdc_cpu.pt"


@dataclass
class RegisterOptions:
    """What the user chose beside the images; defaults are the library's."""

    device: str = "auto"
    weights: str = ""
    refineSteps: int = 60  # FSDiffRegLib.refine.DEFAULT_STEPS (not imported: that needs torch)
    smoothness: float | None = None


def registerCommand(python: str, fixed: Path, moving: Path, outDir: Path, options: RegisterOptions,
                    movingLabels: Path | None = None) -> list[str]:
    """The command line that registers ``moving`` to ``fixed`` into ``outDir``."""
    args = [python, "-m", "FSDiffRegLib.cli", "register", str(fixed), str(moving),
            "--out-dir", str(outDir), "--device", options.device]
    if options.weights:
        args += ["--weights", str(options.weights)]
    if movingLabels is not None:
        args += ["--moving-labels", str(movingLabels)]
    args += ["--refine", str(options.refineSteps)]
    if options.refineSteps > 0 and options.smoothness is not None:
        args += ["--smoothness", repr(float(options.smoothness))]
    return args


def launch(args: list[str], cwd: Path) -> subprocess.Popen:
    """Start ``args`` in a process group of its own, stdout and stderr merged into one text pipe.

    Its own group lets cancel stop launchers (``PythonSlicer`` starts the real Python as
    a child) together with what they started; on Windows no console window opens.
    """
    if os.name == "nt":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        return subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                creationflags=flags)
    return subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def killTree(process: subprocess.Popen) -> None:
    """Kill a process started by ``launch`` and every process it started."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True,
                       creationflags=subprocess.CREATE_NO_WINDOW)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


class RegistrationProcess:
    """A running ``fsdiffreg register``: its lines, progress, outcome; cancel kills it.

    A thread reads the child's merged output into a queue; ``poll()`` (called by a GUI
    timer, or a loop) takes the new lines without ever blocking.
    """

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.progress = 0
        self.error: str | None = None
        self.lastLine = ""
        self.cancelled = False
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\r\n"))
        self._lines.put(None)

    def poll(self) -> list[str]:
        """The lines printed since the last call; updates progress and error."""
        lines = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._ended = True
                self.process.wait()
                break
            self._parse(line)
            lines.append(line)
        return lines

    def _parse(self, line: str) -> None:
        if not line.strip():
            return
        self.lastLine = line
        error = ERROR_LINE.match(line)
        if error:
            self.error = error.group(1)
            return
        stage = STAGE_LINE.match(line)
        if stage:
            percent = next((p for name, p in STAGES.items() if stage.group(1).startswith(name)), None)
            self.progress = max(self.progress, percent or 0)

    @property
    def finished(self) -> bool:
        """True once the child has exited and every line was polled."""
        return self._ended

    @property
    def succeeded(self) -> bool:
        return self._ended and not self.cancelled and self.process.returncode == 0

    def failure(self) -> str:
        """A one-line reason for a failed run."""
        if self.cancelled:
            return "registration cancelled"
        if self.error:
            return self.error
        return f"registration failed (exit code {self.process.returncode}): {self.lastLine or 'no output'}"

    def cancel(self) -> None:
        """Stop the child now; its outputs (written atomically) never appear."""
        self.cancelled = True
        killTree(self.process)
