"""``python -m FSDiffRegLib.worker``: one long-lived process that runs ``fsdiffreg`` commands sent to it.

The Slicer module keeps one worker so that Python starts, torch is imported and its kernels are
warmed up once, not at every Register. Each line on stdin is one command, a JSON object
``{"args": [...], "work_folder": path or null}`` (``args`` as after ``fsdiffreg``). The worker runs
it as the command line would, printing the same lines, then ``fsdiffreg: finished <exit status>``.

Its parent holds stdin, and the system closes it when the parent ends, however it ends (a crash, a
kill, a power cut), through a launcher such as ``PythonSlicer`` too. At the end of stdin the worker
ends at once: with status 0 when idle (the parent stopped it), else with PARENT_GONE after removing
the running command's work folder (FSDiffRegLib.work_folders). No heavy imports until a command needs
them.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import io
import json
import os
import queue
import shutil
import sys
import threading
from pathlib import Path

from .cli import main
from .work_folders import owner

FINISHED = "fsdiffreg: finished"
PARENT_GONE = 3  # exit status of a worker whose input ended while it ran a command


class Worker:
    """Takes commands from stdin (a thread, so the end of stdin is seen even mid-command) and runs them."""

    def __init__(self) -> None:
        self.commands: queue.Queue[str] = queue.Queue()
        self.running = False
        self.work_folder: Path | None = None  # the running command's

    def read(self) -> None:
        """Queue each command line; at the end of stdin, remove the running command's folder and end.

        Reads the file descriptor unbuffered: a daemon thread holding the stdin buffer's lock at the
        interpreter's exit (a command's exception ends the worker) can make Python abort."""
        for line in io.FileIO(0, closefd=False):
            self.commands.put(line.decode("utf-8", "replace"))
        folder = self.work_folder
        if folder is not None and owner(folder) is not None:
            shutil.rmtree(folder, ignore_errors=True)
        os._exit(PARENT_GONE if self.running else 0)

    def serve(self) -> None:
        """Run commands one at a time, forever (``read`` ends the process)."""
        threading.Thread(target=self.read, daemon=True).start()
        while True:
            command = parse(self.commands.get())
            if command is None:
                status = 2
            else:
                self.work_folder = Path(command["work_folder"]) if command["work_folder"] else None
                self.running = True
                status = run(command["args"])
                self.running, self.work_folder = False, None
            print(f"{FINISHED} {status}", flush=True)


def parse(line: str) -> dict | None:
    """A command line's JSON object; None (and an error line) when it is not one."""
    try:
        command = json.loads(line)
        if isinstance(command["args"], list) and all(isinstance(a, str) for a in command["args"]):
            command.setdefault("work_folder", None)
            return command
    except (ValueError, TypeError, KeyError):
        pass
    print(f"fsdiffreg: error: the worker was sent something other than a command: {line.strip()[:80]!r}",
          file=sys.stderr, flush=True)
    return None


def run(args: list[str]) -> int:
    """One command as ``fsdiffreg`` runs it; its exit status. The memory it held is given back after."""
    importlib.invalidate_caches()  # packages installed since the worker started can be imported
    try:
        status = main(args)
    except SystemExit as exit_:  # argparse's refusal of the arguments
        status = exit_.code if isinstance(exit_.code, int) else 2
    sys.stderr.flush()
    sys.stdout.flush()
    release_memory()
    return status


def release_memory() -> None:
    """Give the system back what the command freed, so an idle worker holds little: Python's garbage,
    the GPU memory torch cached, and the C heap's free pages (glibc keeps them: 860 MB against 440 MB
    idle after a registration of the sample pair)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # a C library other than glibc
            pass


if __name__ == "__main__":
    Worker().serve()
