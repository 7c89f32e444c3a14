"""The Slicer module's work folders (FSDiffRegLib.commands.work_folders): their names, and stale ones go only when
their process ended."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from FSDiffRegLib.commands import work_folders


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_work_folder_names():
    assert work_folders.owner(Path("/tmp/FSDiffReg-4242-ab_c9z12")) == 4242
    for name in ("FSDiffReg-ab_c9z12", "FSDiffReg-4242", "FSDiffReg-x42-abc", "fixed.nrrd"):
        assert work_folders.owner(Path(name)) is None, name


def test_process_exists():
    assert work_folders.process_exists(os.getpid()) and not work_folders.process_exists(dead_pid())


def test_stale_work_folders_of_ended_processes_go_the_rest_stays(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead, elsewhere = dead_pid(), tmp_path / "elsewhere"
        elsewhere.mkdir()
        stale = tmp_path / f"FSDiffReg-{dead}-abcd1234"
        kept = [tmp_path / f"FSDiffReg-{sleeper.pid}-abcd1234", tmp_path / f"FSDiffReg-{os.getpid()}-abcd1234",
                tmp_path / "FSDiffReg-abcd1234", tmp_path / "FSDiffReg-notes"]
        for folder in (stale, *kept):
            folder.mkdir()
            work_folders.mark(folder)
            (folder / "fixed.nrrd").write_bytes(b"patient")
        link = tmp_path / f"FSDiffReg-{dead}-link0000"
        link.symlink_to(elsewhere, target_is_directory=True)
        kept.append(link)
        new = work_folders.new_work_folder()
        assert not stale.exists() and all(folder.exists() for folder in kept) and elsewhere.is_dir()
        assert new.is_dir() and work_folders.owner(new) == os.getpid() and new.parent == tmp_path
    finally:
        sleeper.kill()
        sleeper.wait()
