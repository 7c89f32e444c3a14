"""Writing one file: whole or not at all, and why a write failed (torch-free)."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import WriteError

FULL_DISK_BYTES = 1 << 20  # free space below which a write that failed without a reason is put down to a full disk


@contextmanager
def replaced_whole(path: Path) -> Iterator[BinaryIO]:
    """A new hidden temporary file beside ``path`` (never one already there) to write; when the block ends
    without error it replaces ``path`` in one rename, else it is removed and ``path`` left as it was."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


@contextmanager
def written(path: Path) -> Iterator[None]:
    """Turn a failed write of ``path`` (an OSError, which names no file) into a WriteError naming it and why."""
    try:
        yield
    except OSError as err:
        raise WriteError(path, write_failure(path, err)) from None


def write_failure(path: Path, err: OSError | None = None) -> str:
    """Why writing ``path`` failed: the system's reason ``err``, or, where the writer gives none (ITK), what
    the file and its folder show."""
    limit = file_size_limit()
    if (err is not None and err.errno == errno.EFBIG) or (limit is not None and size(path) >= limit):
        return ("it reached the file-size limit" + (f" of {limit} bytes (ulimit -f)" if limit is not None else "")
                + " before it was whole")
    if err is not None:
        return (err.strerror or str(err)).lower()
    if not writable(path.parent):
        return f"{path.parent} is not writable"
    free = shutil.disk_usage(path.parent).free
    if free < FULL_DISK_BYTES:
        return f"the disk is full ({free} bytes free)"
    return "the file on disk is incomplete or differs from what was written"


def file_size_limit() -> int | None:
    """The largest file this process may write (``ulimit -f``) in bytes; None without a limit."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
