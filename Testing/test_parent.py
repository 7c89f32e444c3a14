"""A child that ends with its parent (FSDiffRegLib.parent), run as real processes: it ends when its stdin
closes only where asked, removes only a work folder, and stale work folders go only when their process ended."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from FSDiffRegLib import parent
from FSDiffRegLib.resources import sample_pair

ROOT = Path(__file__).resolve().parent.parent

#: A child as the command line starts: asks to end with its parent, then works for a while.
CHILD = ("import os, sys, time\n"
         "from FSDiffRegLib.parent import ENV, exit_with_parent_if_asked\n"
         "exit_with_parent_if_asked()\n"
         "os.write(1, f'passed on: {os.environ.get(ENV)}\\n'.encode())  # one write: the exit cannot cut it\n"
         "time.sleep(float(sys.argv[1]))\n"
         "print('still here', flush=True)\n")


def child(asked: str | None, seconds: float = 60.0) -> subprocess.CompletedProcess:
    """Run CHILD with its stdin already at its end (as after the parent's death)."""
    env = {k: v for k, v in os.environ.items() if k != parent.ENV}
    if asked is not None:
        env[parent.ENV] = asked
    return subprocess.run([sys.executable, "-c", CHILD, str(seconds)], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_child_not_asked_ignores_its_stdin():
    """``fsdiffreg`` typed in a terminal (or run with no stdin) runs to its end."""
    run = child(None, seconds=1.0)
    assert run.returncode == 0 and run.stdout.splitlines() == ["passed on: None", "still here"]


def test_a_child_asked_ends_when_its_stdin_ends_and_asks_no_grandchild():
    run = child("1")
    assert run.returncode == parent.PARENT_GONE and "still here" not in run.stdout
    assert run.stdout.splitlines() in ([], ["passed on: None"])  # the variable is not passed on


def test_a_child_asked_removes_its_work_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    work = parent.new_work_folder()
    (work / "fixed.nrrd").write_bytes(b"patient")
    assert parent.owner(work) == os.getpid()
    assert child(str(work)).returncode == parent.PARENT_GONE
    assert not work.exists()


def test_a_child_asked_never_removes_a_folder_not_named_as_a_work_folder(tmp_path):
    precious = tmp_path / "FSDiffReg-results"
    precious.mkdir()
    (precious / "metrics.json").write_text("{}")
    assert child(str(precious)).returncode == parent.PARENT_GONE
    assert (precious / "metrics.json").is_file()


def test_work_folder_names():
    assert parent.owner(Path("/tmp/FSDiffReg-4242-ab_c9z12")) == 4242
    for name in ("FSDiffReg-ab_c9z12", "FSDiffReg-4242", "FSDiffReg-x42-abc", "fixed.nrrd"):
        assert parent.owner(Path(name)) is None, name


def test_process_exists():
    assert parent.process_exists(os.getpid()) and not parent.process_exists(dead_pid())


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
            (folder / "fixed.nrrd").write_bytes(b"patient")
        link = tmp_path / f"FSDiffReg-{dead}-link0000"
        link.symlink_to(elsewhere, target_is_directory=True)
        kept.append(link)
        new = parent.new_work_folder()
        assert not stale.exists() and all(folder.exists() for folder in kept) and elsewhere.is_dir()
        assert new.is_dir() and parent.owner(new) == os.getpid() and new.parent == tmp_path
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_command_line_ends_with_its_parent_when_asked(tmp_path):
    """``fsdiffreg register`` with its stdin at its end, as after the parent's death: it stops before
    doing any work (FSDiffRegLib.cli's main asks FSDiffRegLib.parent first thing)."""
    sample = sample_pair()
    env = {**os.environ, parent.ENV: "1"}
    run = subprocess.run([sys.executable, "-m", "FSDiffRegLib.cli", "register", str(sample["fixed"]),
                          str(sample["moving"]), "--out-dir", str(tmp_path / "out"), "--device", "cpu"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert run.returncode == parent.PARENT_GONE, run.stderr[-2000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.name == "nt", reason="the child is started through a shell script")
def test_through_a_launcher_the_child_still_sees_the_end(tmp_path):
    """Like PythonSlicer, a launcher that starts the real Python as its child passes stdin on."""
    launcher = tmp_path / "PythonLauncher"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nexit $?\n')
    launcher.chmod(0o755)
    env = {**os.environ, parent.ENV: "1"}
    run = subprocess.run([str(launcher), "-c", CHILD, "60"], stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=120)
    assert run.returncode == parent.PARENT_GONE
