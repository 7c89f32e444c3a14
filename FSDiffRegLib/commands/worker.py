"""``python -m FSDiffRegLib.commands.worker``: one long-lived process that runs ``fsdiffreg`` commands sent to it.

The Slicer module keeps one worker so that Python starts, torch is imported and its kernels are
warmed up once, not at every Register. Each line on stdin is one command, a JSON object
``{"args": [...], "work_folder": path or null, "token": text}`` (``args`` as after ``fsdiffreg``;
``work_folder`` and ``token`` optional). The worker runs it as the command line would, printing
the same lines, then ``fsdiffreg: finished <token> <exit status>`` (``events.FINISHED``) (without a token: ``fsdiffreg:
finished <exit status>``). The parent makes a new random token for each command, so neither the
arguments nor what a command prints can forge its status line. A line that is not such a command
gets one error line and status 2, and the worker goes on.

Its parent holds stdin, and the system closes it when the parent ends, however it ends (a crash, a
kill, a power cut), through a launcher such as ``PythonSlicer`` too. At the end of stdin the worker
ends at once: with status 0 when idle (the parent stopped it), else with PARENT_GONE after removing
the running command's work folder if the parent made it for the run (FSDiffRegLib.commands.work_folders.made_here).
No heavy imports until a command needs them.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import io
import json
import os
import queue
import re
import shutil
import sys
import threading
from pathlib import Path

from ..events import FINISHED, error, to_stderr
from .cli import main
from .work_folders import made_here

PARENT_GONE = 3  # exit status of a worker whose input ended while it ran a command
TOKEN = re.compile(r"[0-9A-Za-z_-]{8,64}")


class CommandServer:
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
        if folder is not None and made_here(folder):
            shutil.rmtree(folder, ignore_errors=True)
        os._exit(PARENT_GONE if self.running else 0)

    def serve(self) -> None:
        """Run commands one at a time, forever (``read`` ends the process)."""
        threading.Thread(target=self.read, daemon=True).start()
        while True:
            line = self.commands.get()
            value = loaded(line)
            token = value.get("token") if isinstance(value, dict) else None
            token = token if isinstance(token, str) and TOKEN.fullmatch(token) else None
            problem = refusal(value)
            if problem:
                to_stderr(error(f"the worker was sent {problem}: {line.strip()[:80]!r}"))
                status = 2
            else:
                assert isinstance(value, dict)  # refusal() found it a command
                self.work_folder = Path(value["work_folder"]) if value.get("work_folder") else None
                self.running = True
                status = run(value["args"])
                self.running, self.work_folder = False, None
            print(f"{FINISHED} {token} {status}" if token else f"{FINISHED} {status}", flush=True)


def loaded(line: str) -> object:
    """A command line's JSON value; None when it is not JSON (or nested too deeply to read)."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def refusal(value: object) -> str | None:
    """What is wrong with a command's JSON value (a few words); None when it is a command."""
    if not (isinstance(value, dict) and isinstance(value.get("args"), list)
            and all(isinstance(a, str) for a in value["args"])):
        return "something other than a command"
    if not isinstance(value.get("work_folder"), (str, type(None))):
        return "a work_folder that is not a path"
    if "token" in value and not (isinstance(value["token"], str) and TOKEN.fullmatch(value["token"])):
        return "a token that is not 8 to 64 letters, digits, '-' or '_'"
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
    CommandServer().serve()
