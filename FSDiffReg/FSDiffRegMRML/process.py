"""``fsdiffreg`` commands run in a child process, and their output followed.

The child is plain Python (``PythonSlicer`` inside Slicer) running ``-m FSDiffRegLib.commands.worker``
from the folder that holds FSDiffRegLib, so the GUI never imports torch or blocks. It is kept
between commands (``Worker``), so torch is imported and warmed up once, not at every run.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from FSDiffRegLib import events
from FSDiffRegLib.defaults import DEFAULT_STEPS, MAX_STEPS
from FSDiffRegLib.resources import PACKAGE

#: Progress (percent) of ``fsdiffreg register`` once each stage (``events``' stage name) begins.
STAGES = {
    "reading": 10,
    "loading": 20,
    "registering": 35,
    "refining": 60,
    "writing": 90,
}
#: Progress (percent) of ``fsdiffreg track``: each stage's span; its progress events move within it.
TRACK_STAGES = {
    "reading": (5, 5),
    "loading": (10, 10),
    "network": (10, 50),
    "refining": (50, 85),
    "writing": (85, 95),
}
KILLED = -9  # the exit status of a cancelled command


def libraryRoot() -> Path:
    """The folder holding FSDiffRegLib: the child runs there, so ``-m`` finds the library the module uses."""
    return PACKAGE.parent


def pythonSlicerExecutable() -> str:
    """The Python that runs the child: ``PythonSlicer`` as Slicer finds it (on PATH, which Slicer's
    launcher sets, else beside the application), or, outside Slicer, this Python interpreter."""
    application = Path(sys.executable)
    found = shutil.which("PythonSlicer") or shutil.which("PythonSlicer", path=str(application.parent))
    if found:
        return found
    if application.name.lower().startswith("python"):
        return sys.executable
    raise FileNotFoundError(f"PythonSlicer not found on PATH or beside {application}: "
                            "the Slicer installation is incomplete, reinstall Slicer")


@dataclass
class RegisterOptions:
    """What the user chose beside the images; defaults are the library's."""

    device: str = "auto"
    weights: str = ""
    refineSteps: int = DEFAULT_STEPS
    smoothness: float | None = None
    maxRefineSteps: ClassVar[int] = MAX_STEPS  # the library's limit, which the panel allows too


def modelArguments(options: RegisterOptions) -> list[str]:
    """The command-line options of ``register`` and ``track`` that choose the device and the weights."""
    args = ["--device", options.device]
    if options.weights:
        args += ["--weights", str(options.weights)]
    return args


def refineArguments(options: RegisterOptions) -> list[str]:
    """The command-line options of ``register`` that set its refinement."""
    args = ["--refine", str(options.refineSteps)]
    if options.refineSteps > 0 and options.smoothness is not None:
        args += ["--smoothness", repr(float(options.smoothness))]
    return args


def registerCommand(fixed: Path, moving: Path, outDir: Path, options: RegisterOptions,
                    movingLabels: Path | None = None) -> list[str]:
    """The ``fsdiffreg`` arguments that register ``moving`` to ``fixed`` into ``outDir``."""
    args = ["register", str(fixed), str(moving), "--out-dir", str(outDir)]
    if movingLabels is not None:
        args += ["--moving-labels", str(movingLabels)]
    return args + modelArguments(options) + refineArguments(options)


def trackCommand(frames: Path, labels: Path, outDir: Path, referenceFrame: int,
                 options: RegisterOptions, timesMs: list[float] | None = None) -> list[str]:
    """The ``fsdiffreg`` arguments that track the cine in folder ``frames`` (one 3D file per frame) into ``outDir``;
    ``labels`` belong to frame ``referenceFrame`` (1-based). The device and weights are ``options``'; the
    refinement is ``track``'s own default (validated for tracking), not ``register``'s steps. ``timesMs``:
    the frames' times (the frame files carry none)."""
    args = ["track", str(frames), "--labels", str(labels),
            "--out-dir", str(outDir), "--reference-frame", str(referenceFrame), *modelArguments(options)]
    if timesMs:
        args += ["--frame-times-ms", ",".join(repr(float(t)) for t in timesMs)]
    return args


def launch(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """Start ``args`` in a process group of its own, stdout and stderr merged into one UTF-8 text pipe.

    Its own group lets cancel stop launchers (``PythonSlicer`` starts the real Python as
    a child) together with what they started; on Windows no console window opens. The child
    prints its events (``FSDiffRegLib.events``) beside its log lines. The
    child writes UTF-8 whatever the system's code page; a byte that still does not decode
    becomes U+FFFD instead of stopping the reader. Its stdin is a pipe that only this
    process holds, so the system closes it when this process ends, however it ends (the
    worker then ends too: FSDiffRegLib.commands.worker).
    """
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", events.SWITCH: "1"}
    options: dict[str, Any] = dict(cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   encoding="utf-8", errors="replace", env=env)
    if sys.platform == "win32":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        return subprocess.Popen(args, creationflags=flags, **options)
    return subprocess.Popen(args, start_new_session=True, **options)


def killTree(process: subprocess.Popen[str]) -> None:
    """Kill a process started by ``launch`` and every process it started."""
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True,
                       creationflags=subprocess.CREATE_NO_WINDOW)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    if process.stdin is not None:
        process.stdin.close()


class ChildProcess:
    """A process started by ``launch``: a thread reads its merged output into a queue, and
    ``poll()`` (called by a GUI timer, or a loop) takes the new lines without ever blocking."""

    def __init__(self, process: subprocess.Popen[str]):
        assert process.stdin is not None and process.stdout is not None  # ``launch`` gives both pipes
        self.process, self.stdin, self.stdout = process, process.stdin, process.stdout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.stdout:
            self._lines.put(line.rstrip("\r\n"))
        self._lines.put(None)

    def poll(self) -> list[str]:
        """The lines printed since the last call."""
        lines = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._ended = True
                self.process.wait()
                self.stdin.close()
                break
            lines.append(line)
        return lines

    @property
    def finished(self) -> bool:
        """True once the child has exited and every line was polled."""
        return self._ended

    def cancel(self) -> None:
        """Stop the child now."""
        killTree(self.process)


class WorkerRun:
    """One command given to a ``Worker``: its lines, then its exit status once the worker says it finished.

    The worker's status line carries a random token of this command's, which only the worker's stdin
    carries: neither the arguments nor what the command prints can forge it (FSDiffRegLib.commands.worker).
    ``poll()`` never blocks; ``finished`` once the status is known and every line was polled.
    """

    def __init__(self, worker: Worker, args: list[str], workDir: Path | None):
        self.worker = worker
        token = secrets.token_hex(16)
        self.request = json.dumps({"args": args, "work_folder": str(workDir) if workDir else None, "token": token})
        self._finished = re.compile(re.escape(f"{events.FINISHED} {token} ") + r"(-?\d+)$")
        self.sent = False
        self.returncode: int | None = None
        self.cancelled = False
        self.lastLine = ""
        self._lines: list[str] = []

    def take(self, line: str) -> None:
        """A line of the worker's while this command runs; the status line may follow a last line that the
        command did not end."""
        finished = self._finished.search(line)
        if finished:
            self.returncode = int(finished.group(1))
            line = line[:finished.start()]
            if not line:
                return
        if line.strip() and events.read(line) is None:
            self.lastLine = line
        self._lines.append(line)

    def poll(self) -> list[str]:
        """The lines printed since the last call."""
        self.worker.dispatch()
        lines, self._lines = self._lines, []
        return lines

    @property
    def finished(self) -> bool:
        return self.returncode is not None and not self._lines

    def cancel(self) -> None:
        """Stop the command now (the worker with it, if it had begun); its unread lines are dropped."""
        self.cancelled = True
        self.worker.cancel(self)
        if self.returncode is None:
            self.returncode = KILLED
        self._lines.clear()

    def crash(self, what: str) -> str:
        """A one-line reason for a command that ended badly without saying why."""
        return f"{what} failed (exit code {self.returncode}): {self.lastLine or 'no output'}"


class Worker:
    """One ``python -m FSDiffRegLib.commands.worker`` child that runs commands one at a time, in the order given.

    It starts with the first command and stays for the next ones; a command that is cancelled or
    crashes takes it along, and the next command starts a new one. ``stop()`` ends it.
    """

    def __init__(self, python: str):
        """``python`` runs the child (``pythonSlicerExecutable()`` in Slicer)."""
        self.python = python
        self._child: ChildProcess | None = None
        self._runs: list[WorkerRun] = []  # the first is running, the others wait

    @property
    def pid(self) -> int | None:
        """The process id of the running worker (of its launcher, through PythonSlicer); None: not running."""
        return self._child.process.pid if self._child is not None and not self._child.finished else None

    def run(self, args: list[str], workDir: Path | None = None) -> WorkerRun:
        """Give the worker ``fsdiffreg`` ``args``; ``workDir`` is removed if this process ends while they run."""
        command = WorkerRun(self, args, workDir)
        self._runs.append(command)
        self.dispatch()
        return command

    def dispatch(self) -> None:
        """Send the next command when the worker is free, and give each its lines."""
        while self._runs:
            command = self._runs[0]
            child = self._child if command.sent else self._send(command)
            assert child is not None  # a command sent is the running child's
            for line in child.poll():
                command.take(line)
            if command.returncode is None and child.finished:  # the worker died mid-command
                command.returncode = child.process.returncode or 1
            if command.returncode is None:
                return
            self._runs.pop(0)

    def _send(self, command: WorkerRun) -> ChildProcess:
        """Give ``command`` to the worker, started if it is not running; the worker."""
        child = self._child
        if child is None or child.finished:
            child = self._child = ChildProcess(launch([self.python, "-m", "FSDiffRegLib.commands.worker"],
                                                      libraryRoot()))
        command.sent = True
        try:
            child.stdin.write(command.request + "\n")
            child.stdin.flush()
        except OSError:  # it ended on its own; its end is seen by the next poll
            pass
        return child

    def cancel(self, command: WorkerRun) -> None:
        """Drop ``command``: a waiting one is never sent; a running one ends with the worker."""
        if command not in self._runs:
            return
        self._runs.remove(command)
        if command.sent and self._child is not None:
            self._child.cancel()
            self._child = None

    def stop(self) -> None:
        """End the worker; commands running or waiting are cancelled."""
        for command in list(self._runs):
            command.cancel()
        if self._child is not None:
            self._child.cancel()
            self._child = None


class RegistrationProcess:
    """A running ``fsdiffreg register``: its log lines, progress and outcome, from its events; cancel stops it."""

    what = "registration"

    def __init__(self, command: WorkerRun):
        self.command = command
        self.progress = 0
        self.error: str | None = None

    def poll(self) -> list[str]:
        """New log lines for people (never blocks); the events among the output move the progress."""
        lines = []
        for line in self.command.poll():
            event = events.read(line)
            if event is None:
                lines.append(line)
            else:
                self.take(event)
        return lines

    @property
    def finished(self) -> bool:
        return self.command.finished

    def cancel(self) -> None:
        self.command.cancel()

    def take(self, event: events.Event) -> None:
        if event.type == "error":
            self.error = event.text
        elif event.type in ("stage", "progress"):
            self.progress = max(self.progress, self.stageProgress(event) or 0)

    @staticmethod
    def stageProgress(event: events.Event) -> int | None:
        """Percent reached at a stage or progress event; None: a stage without a place on the bar."""
        return STAGES.get(event.stage)

    @property
    def succeeded(self) -> bool:
        return self.command.finished and not self.command.cancelled and self.command.returncode == 0

    def failure(self) -> str:
        """A one-line reason for a failed run."""
        if self.command.cancelled:
            return f"{self.what} cancelled"
        return self.error or self.command.crash(self.what)


class TrackingProcess(RegistrationProcess):
    """A running ``fsdiffreg track``: as a registration, with progress frame by frame."""

    what = "tracking"

    @staticmethod
    def stageProgress(event: events.Event) -> int | None:
        if event.stage not in TRACK_STAGES:
            return None
        start, end = TRACK_STAGES[event.stage]
        return start + round((end - start) * (event.fraction or 0.0))


class DeviceQuery:
    """``fsdiffreg devices`` in the worker: which torch is installed and which devices it can use (its result
    event).

    ``poll()`` is None while it runs, then ``{"torch": version or None, "devices": [...],
    "error": None or a one-line reason}`` (no devices when the command failed or was cancelled).
    """

    def __init__(self, worker: Worker):
        self.command = worker.run(["devices"])
        self._lines: list[str] = []

    def poll(self) -> dict | None:
        self._lines += self.command.poll()
        if not self.command.finished:
            return None
        return self._answer()

    def cancel(self) -> None:
        self.command.cancel()

    def _answer(self) -> dict:
        failed: dict[str, Any] = {"torch": None, "devices": []}
        if self.command.cancelled:
            return {**failed, "error": "device query cancelled"}
        said = [event for event in map(events.read, self._lines) if event is not None]
        error = next((event.text for event in said if event.type == "error"), None)
        if error is not None:
            return {**failed, "error": error}
        reply = next((event.data for event in reversed(said) if event.type == "result"), None)
        if self.command.returncode != 0 or reply is None:
            return {**failed, "error": self.command.crash("device query")}
        return {"torch": reply.get("torch"), "devices": list(reply.get("devices", [])), "error": None}
