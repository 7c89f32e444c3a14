"""A child process that ends when its parent does, and the parent's work folders.

The Slicer module runs ``fsdiffreg`` in a child process on copies of the user's images,
kept in a work folder in the system's temporary folder. A Slicer that dies (crash, kill,
power cut) removes neither the folder nor the child. So:

- the parent names its work folder ``FSDiffReg-<its process id>-<random>``, and removes
  those of processes that no longer run before making a new one (``new_work_folder``);
- the parent starts the child with ``FSDIFFREG_EXIT_WITH_PARENT`` set to that folder and a
  pipe on its stdin that only the parent holds open. However the parent ends, the system
  closes the pipe; the child (``exit_with_parent_if_asked``, first thing in ``main``) sees
  end-of-file, removes the work folder and ends at once. A launcher in between
  (``PythonSlicer``) passes its stdin on, so this works through it too, on every system.

Without the variable (``fsdiffreg`` typed in a terminal) nothing changes. No heavy imports.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

ENV = "FSDIFFREG_EXIT_WITH_PARENT"
PREFIX = "FSDiffReg-"
WORK_FOLDER = re.compile(re.escape(PREFIX) + r"(\d+)-\w+")
PARENT_GONE = 3  # exit status of a child whose parent ended


def new_work_folder() -> Path:
    """A new, empty work folder named after this process (stale ones of ended processes go first)."""
    remove_stale_work_folders()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))


def owner(folder: Path) -> int | None:
    """The process id in a work folder's name; None for any other name."""
    match = WORK_FOLDER.fullmatch(folder.name)
    return int(match.group(1)) if match else None


def remove_stale_work_folders() -> None:
    """Remove the work folders in the temporary folder whose process no longer runs."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        pid = owner(folder)
        if pid is not None and not folder.is_symlink() and folder.is_dir() and not process_exists(pid):
            shutil.rmtree(folder, ignore_errors=True)


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` runs; True where that cannot be told (its folder is then kept)."""
    if os.name == "nt":
        return _windows_process_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


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


def exit_with_parent_if_asked() -> None:
    """Where ``FSDIFFREG_EXIT_WITH_PARENT`` is set, end this process as soon as stdin closes.

    The variable is taken out of the environment, so processes this one starts are not asked.
    """
    value = os.environ.pop(ENV, "")
    if value:
        threading.Thread(target=_exit_at_end_of_input, args=(Path(value),), daemon=True).start()


def _exit_at_end_of_input(work_folder: Path) -> None:
    """Block until stdin ends, remove ``work_folder`` if it is one, and end the process at once.

    Reads the file descriptor, not ``sys.stdin``: a daemon thread holding the stdin buffer's
    lock makes Python abort at a normal exit.
    """
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    if owner(work_folder) is not None:
        shutil.rmtree(work_folder, ignore_errors=True)
    os._exit(PARENT_GONE)
