"""The Slicer module's work folders: copies of the user's images and the outputs of one run.

The module runs ``fsdiffreg`` in a worker process on copies of the user's images, kept in a
work folder in the system's temporary folder. A Slicer that dies (crash, kill, power cut)
does not remove it, so the module names its work folders ``FSDiffReg-<its process id>-<random>``
and removes those of processes that no longer run before making a new one
(``new_work_folder``); the worker removes the folder of the command it was running when
Slicer ends (FSDiffRegLib.commands.worker). Only folders made here are ever removed (``made_here``):
directly in the temporary folder, so named, and holding the mark written when they were made
(``MARK``, a random token); a user's folder of the same name elsewhere, or without the mark,
stays. No heavy imports.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

PREFIX = "FSDiffReg-"
WORK_FOLDER = re.compile(re.escape(PREFIX) + r"(\d+)-\w+")
MARK = ".fsdiffreg-work-folder"  # the file that marks a folder made by new_work_folder: a random token
TOKEN = re.compile(r"[0-9a-f]{32}")


def new_work_folder() -> Path:
    """A new work folder named after this process, holding only its mark (stale ones of ended processes
    go first)."""
    remove_stale_work_folders()
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    mark(folder)
    return folder


def mark(folder: Path) -> None:
    """Write the mark of a work folder into ``folder`` (a new file: never one already there)."""
    with open(folder / MARK, "x", encoding="ascii") as handle:
        handle.write(secrets.token_hex(16))


def made_here(folder: Path) -> bool:
    """Whether ``folder`` is a work folder ``new_work_folder`` made: a folder (not a link) directly in the
    temporary folder, named as one, holding its mark."""
    folder = Path(os.path.abspath(folder))
    try:
        if owner(folder) is None or folder.is_symlink() or not folder.is_dir():
            return False
        if not os.path.samefile(folder.parent, tempfile.gettempdir()):
            return False
        marked = folder / MARK
        if marked.is_symlink() or not marked.is_file() or marked.stat().st_size != 32:
            return False
        return TOKEN.fullmatch(marked.read_text(encoding="ascii")) is not None
    except (OSError, ValueError):  # unreadable, or a path the system refuses (a NUL character)
        return False


def owner(folder: Path) -> int | None:
    """The process id in a work folder's name; None for any other name."""
    match = WORK_FOLDER.fullmatch(folder.name)
    return int(match.group(1)) if match else None


def remove_stale_work_folders() -> None:
    """Remove the work folders in the temporary folder whose process no longer runs."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        pid = owner(folder)
        if pid is not None and made_here(folder) and not process_exists(pid):
            shutil.rmtree(folder, ignore_errors=True)


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` runs; True where that cannot be told (its folder is then kept)."""
    if sys.platform == "win32":
        return _windows_process_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


if sys.platform == "win32":
    def _windows_process_exists(pid: int) -> bool:
        # os.kill(pid, 0) would send Ctrl-C on Windows: ask the kernel instead.
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() != 87  # ERROR_INVALID_PARAMETER: no such process
        try:
            code = wintypes.DWORD()
            return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
