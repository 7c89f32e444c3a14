"""``python -m FSDiffRegLib.commands.worker``: one process runs command after command until its input ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from FSDiffRegLib.commands import work_folders
from FSDiffRegLib.commands.worker import PARENT_GONE
from FSDiffRegLib.events import FINISHED

ROOT = Path(__file__).resolve().parent.parent


def until_finished(worker: subprocess.Popen) -> list[str]:
    """The worker's lines up to and with the next 'finished' line."""
    lines = []
    while not lines or not lines[-1].startswith(FINISHED):
        line = worker.stdout.readline()
        assert line, f"the worker ended; lines so far: {lines}"
        lines.append(line.rstrip("\n"))
    return lines


def send(worker: subprocess.Popen, line: str) -> list[str]:
    worker.stdin.write(line + "\n")
    worker.stdin.flush()
    return until_finished(worker)


def test_commands_run_one_after_another_in_one_process(worker):
    first = send(worker, json.dumps({"args": ["devices"]}))
    assert first[-1] == f"{FINISHED} 0" and "cpu" in json.loads(first[-2])["devices"]
    refused = send(worker, json.dumps({"args": ["register", "only-one-image"], "work_folder": None}))
    assert refused[-1] == f"{FINISHED} 2" and "the following arguments are required" in refused[0]
    assert send(worker, json.dumps({"args": ["devices"]}))[-1] == f"{FINISHED} 0"
    assert worker.poll() is None  # the same process all along


def test_something_else_than_a_command_is_refused_and_the_worker_goes_on(worker):
    refused = send(worker, "register a b")
    assert refused == ["fsdiffreg: error: the worker was sent something other than a command: 'register a b'",
                       f"{FINISHED} 2"]
    assert send(worker, json.dumps({"args": ["devices"]}))[-1] == f"{FINISHED} 0"


def test_the_end_of_input_ends_an_idle_worker(worker):
    assert send(worker, json.dumps({"args": ["devices"]}))[-1] == f"{FINISHED} 0"
    worker.stdin.close()
    assert worker.wait(timeout=30) == 0


#: The real worker loop, whose command says it started and is then busy for a minute.
BUSY = ("import time; from FSDiffRegLib.commands import worker; "
        "worker.run = lambda args: (print('started', flush=True), time.sleep(60)); worker.CommandServer().serve()")


def input_ends_mid_command(python: list[str], folder: Path, env: dict | None = None) -> int:
    """Start a busy command with work folder ``folder`` in a worker run by ``python`` (in environment ``env``,
    else this one), close the worker's input (as the system does when its parent dies), and return the
    worker's exit status."""
    worker = subprocess.Popen([*python, "-c", BUSY], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        worker.stdin.write(json.dumps({"args": ["register"], "work_folder": str(folder)}) + "\n")
        worker.stdin.flush()
        assert worker.stdout.readline() == "started\n"
        worker.stdin.close()
        return worker.wait(timeout=30)
    finally:
        worker.kill()
        worker.wait()


def in_temporary_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``folder`` the temporary folder of this process and of the workers it starts."""
    monkeypatch.setattr("tempfile.tempdir", str(folder))
    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.setenv(name, str(folder))


def test_the_end_of_input_mid_command_ends_the_worker_and_removes_the_work_folder(tmp_path, monkeypatch):
    in_temporary_folder(tmp_path, monkeypatch)
    work = work_folders.new_work_folder()
    (work / "fixed.nrrd").write_bytes(b"patient")
    assert input_ends_mid_command([sys.executable], work) == PARENT_GONE and not work.exists()


def test_a_folder_not_named_as_a_work_folder_is_never_removed(tmp_path):
    precious = tmp_path / "FSDiffReg-results"
    precious.mkdir()
    (precious / "metrics.json").write_text("{}")
    assert input_ends_mid_command([sys.executable], precious) == PARENT_GONE
    assert (precious / "metrics.json").is_file()


@pytest.mark.skipif(os.name == "nt", reason="the worker is started through a shell script")
def test_through_a_launcher_the_worker_still_sees_the_end(tmp_path, monkeypatch):
    """Like PythonSlicer, a launcher that starts the real Python as its child passes stdin on."""
    launcher = tmp_path / "PythonLauncher"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nexit $?\n')
    launcher.chmod(0o755)
    in_temporary_folder(tmp_path, monkeypatch)
    work = work_folders.new_work_folder()
    assert input_ends_mid_command([str(launcher)], work) == PARENT_GONE and not work.exists()
