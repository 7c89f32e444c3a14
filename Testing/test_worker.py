"""``python -m FSDiffRegLib.worker``: one process runs command after command until its input ends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from FSDiffRegLib.worker import FINISHED

ROOT = Path(__file__).resolve().parent.parent


def until_finished(worker: subprocess.Popen) -> list[str]:
    """The worker's lines up to and with the next 'finished' line."""
    lines = []
    while not lines or not lines[-1].startswith(FINISHED):
        line = worker.stdout.readline()
        assert line, f"the worker ended; lines so far: {lines}"
        lines.append(line.rstrip("\n"))
    return lines


@pytest.fixture
def worker():
    process = subprocess.Popen([sys.executable, "-m", "FSDiffRegLib.worker"], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield process
    process.kill()
    process.wait()


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
