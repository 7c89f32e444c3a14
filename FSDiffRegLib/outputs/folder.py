"""The out-dir: checked before a run, then given one run's complete set of outputs or left as it was.

- The out-dir is refused before any computation when it is empty text, a file, not writable,
  holds an input of the run, or holds anything but a previous run's outputs: a user's files
  are never written over, moved or deleted. A previous set is recognised by its metrics.json,
  which names the fsdiffreg version that wrote it (``MARK``).
- The run writes into a hidden staging folder beside the out-dir; when every file is written
  the old folder is renamed aside, the staging folder renamed into its place (one rename) and
  the old set deleted. An out-dir thus holds exactly one run's set, or, if a run is killed
  between these two renames, none.
- An existing out-dir in a read-only parent, a mount point, or the current folder (or one
  holding it: it must not be renamed away under the shell) is filled in place instead: the
  old metrics.json goes first, the new one last, so a set without metrics.json is incomplete.
- A lock file beside the staging folder keeps a second run out while one writes; the hidden
  folders a killed run left (``.<name>.fsdiffreg-stage-*`` and ``-old-*``) go at the next run.
- Every file is checked as it is written (images read back whole: ``imageio.write_image``); a
  write that fails (file-size limit, full disk) ends the run with one line naming the file and
  the cause (``WriteError``), the out-dir left as it was.

Imports nothing heavy: the command line catches ``OutputError``.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from .. import __version__
from ..errors import OutputError, WriteError
from ..files import writable, written

OUTPUT_NAME = re.compile(  # the files of a `register` or `track` set, which a new run of either may replace
    r"(displacement|warped|jacobian|warped_labels|labels|reference_labels_auto|(field|labels)_\d{2,})\.nii\.gz"
    r"|metrics\.json|figure\.png"
    r"|function\.(json|png)|volumes\.csv|strain\.csv|strain_bullseye\.png")
METRICS = "metrics.json"
MARK = "fsdiffreg"  # metrics.json key: the version that wrote the set


@contextmanager
def output_folder(out_dir: str | Path, inputs: Mapping[str, str | Path | None] | None = None) -> Iterator[Path]:
    """Check ``out_dir`` and lock it; yield an empty staging folder; on success make it the out-dir's set.

    ``inputs`` (role -> path) may not lie inside the out-dir. On any error or interrupt the
    staging folder is removed and the out-dir left as it was.
    """
    out = checked_out_dir(out_dir)
    for role, path in (inputs or {}).items():
        if path:
            refuse_inside(out, role, Path(path))
    beside = lock_place(out)
    with locked(beside / f".{out.name}.fsdiffreg-lock", out):
        remove_left(beside, out)
        refuse_foreign(out)
        in_place = beside == out or (out.is_dir() and (mount_point(out) or holds_cwd(out)))
        staging = (out if in_place else beside) / f".{out.name}.fsdiffreg-stage-{secrets.token_hex(4)}"
        try:
            os.mkdir(staging)
        except OSError as err:
            raise OutputError(f"cannot write the output folder {out}: {(err.strerror or str(err)).lower()}") from None
        try:
            yield staging
            if not (staging / METRICS).is_file():
                raise OutputError(f"the run wrote no {METRICS}; nothing written to {out}")
            with interrupts_held():
                if in_place:
                    fill_in_place(staging, out)
                else:
                    swap_in(staging, out, beside)
        except WriteError as err:
            raise OutputError(f"cannot write {err.name}: {err.cause}; nothing written to {out}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def checked_out_dir(out_dir: str | Path) -> Path:
    """The out-dir as an absolute path (symbolic links followed), refused when it names no usable folder."""
    if not str(out_dir).strip():
        raise OutputError("the output folder is empty text: name a folder, e.g. --out-dir results")
    out = Path(out_dir).resolve()
    if out == out.parent:
        raise OutputError(f"the output folder {out} is the root of a file system: name a folder in it")
    if out.exists() and not out.is_dir():
        raise OutputError(f"the output folder {out} is a file: name a folder")
    return out


def refuse_inside(out: Path, role: str, path: Path) -> None:
    """Refuse an input that is the out-dir or lies inside it (compared by file identity)."""
    if not out.is_dir():
        return
    here = os.stat(out)
    for start in {Path(os.path.abspath(path)), path.resolve()}:
        for folder in (start, *start.parents):
            if folder.exists() and os.path.samestat(os.stat(folder), here):
                raise OutputError(f"the {role} {path} lies inside the output folder {out}, whose contents a run "
                                  "replaces: choose another --out-dir")


def holds_cwd(out: Path) -> bool:
    cwd = Path.cwd()
    return out == cwd or out in cwd.parents


def read_only(folder: Path) -> bool:
    """Whether ``folder`` lies on a file system mounted read-only (the out-dir a read-only bind mount in a
    writable parent: the set could be neither swapped in nor filled in place)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # Windows has no statvfs
        return False


def mount_point(folder: Path) -> bool:
    """Whether ``folder`` is a mount point: a bind mount of a folder of the same file system too, which
    os.path.ismount (a change of device) misses and Linux lists in /proc/self/mountinfo."""
    if os.path.ismount(folder):
        return True
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    octal = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040
    return any(octal.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4]) == str(folder)
               for line in lines if len(line.split()) > 4)


def lock_place(out: Path) -> Path:
    """Where the lock (and the staging folder, unless filled in place) goes: beside the out-dir, made if
    needed; inside it when its parent is read-only."""
    if out.is_dir() and read_only(out):
        raise OutputError(f"cannot write the output folder {out}: it is on a read-only file system")
    if out.is_dir() and not writable(out.parent):
        if not writable(out):
            raise OutputError(f"cannot write the output folder {out}: it is not writable")
        return out
    existing = next(folder for folder in out.parents if folder.exists())
    if not existing.is_dir():
        raise OutputError(f"cannot write the output folder {out}: {existing} is a file")
    if not writable(existing):
        raise OutputError(f"cannot write the output folder {out}: {existing} is not writable")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write the output folder {out}: {err.strerror}") from None
    return out.parent


def ours(name: str, out_name: str) -> bool:
    """Whether ``name`` is a lock or hidden folder this module makes for the out-dir ``out_name``."""
    return re.fullmatch(rf"\.{re.escape(out_name)}\.fsdiffreg-(lock|stage-[0-9a-f]{{8}}|old-[0-9a-f]{{8}})",
                        name) is not None


def remove_stale(place: Path, out_name: str) -> None:
    """Remove the hidden folders a killed run left (the lock is held: no other run is writing)."""
    for entry in place.iterdir():
        if ours(entry.name, out_name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def remove_left(beside: Path, out: Path) -> None:
    """Remove the hidden folders a killed run left beside ``out`` and in it (the lock beside it is held)."""
    for folder in {beside, out}:
        if folder.is_dir():
            remove_stale(folder, out.name)


def clear_left(folder: str | Path) -> None:
    """Remove what killed runs left in ``folder`` for the out-dirs in it (their locks and hidden folders), but not
    for one whose lock a live run holds: for a batch whose workers were stopped mid-case."""
    folder = Path(folder).resolve()
    left = re.compile(r"\.(.+)\.fsdiffreg-(?:lock|stage-[0-9a-f]{8}|old-[0-9a-f]{8})")
    names = {match.group(1) for match in map(left.fullmatch, os.listdir(folder)) if match}
    for name in sorted(names):
        with suppress(OutputError), locked(folder / f".{name}.fsdiffreg-lock", folder / name):
            remove_left(folder, folder / name)


def foreign(folder: Path, out_name: str) -> str | None:
    """Why ``folder`` (the out-dir ``out_name``, or its old set moved aside) does not hold just a previous
    run's set, or None if it does (or is empty)."""
    if not folder.is_dir():
        return None
    entries = [e for e in os.scandir(folder) if not ours(e.name, out_name)]
    others = sorted(e.name for e in entries
                    if not OUTPUT_NAME.fullmatch(e.name) or not e.is_file(follow_symlinks=False))
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        return f"holds {shown}, which fsdiffreg did not write"
    if entries and not marked(folder / METRICS):
        return f"holds {', '.join(sorted(e.name for e in entries))} but no {METRICS} written by fsdiffreg"
    return None


def refuse_foreign(out: Path) -> None:
    reason = foreign(out, out.name)
    if reason:
        raise OutputError(f"the output folder {out} {reason}; name a new or empty folder (a run replaces "
                          "the folder's contents whole)")


def marked(metrics: Path) -> bool:
    """Whether ``metrics`` is a metrics.json fsdiffreg wrote."""
    try:
        data = json.loads(metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and MARK in data


def swap_in(staging: Path, out: Path, beside: Path) -> None:
    """Rename the old out-dir aside and the staging folder into its place; then delete the old set."""
    aside = None
    if out.exists():
        shutil.copymode(out, staging)
        aside = beside / f".{out.name}.fsdiffreg-old-{secrets.token_hex(4)}"
        os.rename(out, aside)
        reason = foreign(aside, out.name)
        if reason:  # a file came in while the run computed
            os.rename(aside, out)
            raise OutputError(f"the output folder {out} changed during the run and now {reason}; nothing written")
    try:
        os.rename(staging, out)
    except OSError:
        if aside is not None:
            os.rename(aside, out)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def fill_in_place(staging: Path, out: Path) -> None:
    """Replace the set file by file: the old metrics.json first, the new one last."""
    refuse_foreign(out)
    if (out / METRICS).exists():
        os.remove(out / METRICS)
    new = {p.name for p in staging.iterdir()}
    for name in sorted(new - {METRICS}):
        os.replace(staging / name, out / name)
    for entry in os.scandir(out):
        if OUTPUT_NAME.fullmatch(entry.name) and entry.name not in new:
            os.remove(entry.path)
    os.replace(staging / METRICS, out / METRICS)


@contextmanager
def locked(lock: Path, out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``lock`` (made if needed, removed after); refuse if another run holds it."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputError(f"cannot write the output folder {out}: {err.strerror}") from None
        try:
            lock_file(fd)
        except OSError:
            os.close(fd)
            raise OutputError(f"another fsdiffreg run is writing the output folder {out}; wait for it to end "
                              f"or name another folder (lock {lock})") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the run that held it removed it meanwhile: lock the new one
    try:
        yield
    finally:
        if sys.platform == "win32":  # Windows removes no open file; a lock another run opened meanwhile stays
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            os.close(fd)
            with suppress(OSError):
                os.remove(lock)
        else:  # removed while held, so that a run which opened it meanwhile sees a new one
            with suppress(OSError):
                os.remove(lock)
            os.close(fd)


def lock_file(fd: int) -> None:
    """Lock an open file exclusively without waiting; OSError if another process holds it."""
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (and a terminate signal) back while the set is swapped in; it takes effect right after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(signum, lambda signum, frame: caught.append(signum)) for signum in held]
    try:
        yield
    finally:
        for signum, handler in zip(held, previous):
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if caught:
            raise KeyboardInterrupt


def non_finite(value: object, name: str = "") -> list[str]:
    """The keys (dotted) of the non-finite floats in nested dicts."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [name]
    if isinstance(value, dict):
        return [bad for key, item in value.items() for bad in non_finite(item, f"{name}.{key}" if name else key)]
    return []


def write_json(path: Path, data: dict) -> None:
    """Strict JSON, so a non-finite value is refused."""
    bad = non_finite(data)
    if bad:
        raise OutputError(f"the run gave non-finite values for {', '.join(bad)}; nothing written")
    with written(path):
        path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_metrics(folder: Path, metrics: dict) -> None:
    """metrics.json, stamped with the fsdiffreg version (the mark of a set a later run may replace)."""
    write_json(folder / METRICS, {MARK: __version__, **metrics})
