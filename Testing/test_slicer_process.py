"""The registration child process as the module runs it: command line, progress, failure, cancel."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "FSDiffReg"))
from FSDiffRegMRML.job import RegistrationError, RegistrationJob  # noqa: E402
from FSDiffRegMRML.process import (RegisterOptions, RegistrationProcess, bundledWeights, launch,  # noqa: E402
                                   registerCommand)

from FSDiffRegLib.refine import DEFAULT_STEPS
from FSDiffRegLib.resources import BUNDLED_WEIGHTS
from test_slicer_outputs import load_volume, new_scene


def test_command_line_carries_every_option():
    options = RegisterOptions(device="cuda", weights="/w/model.pt", refineSteps=25, smoothness=2.5)
    args = registerCommand("py", Path("f.nrrd"), Path("m.nrrd"), Path("out"), options, Path("l.nrrd"))
    assert args[:6] == ["py", "-m", "FSDiffRegLib.cli", "register", "f.nrrd", "m.nrrd"]
    flags = dict(zip(args[6::2], args[7::2]))
    assert flags == {"--out-dir": "out", "--device": "cuda", "--weights": "/w/model.pt",
                     "--moving-labels": "l.nrrd", "--refine": "25", "--smoothness": "2.5"}


def test_command_line_leaves_library_defaults_alone():
    args = registerCommand("py", Path("f"), Path("m"), Path("o"), RegisterOptions(refineSteps=0, smoothness=3.0))
    assert "--weights" not in args and "--moving-labels" not in args and "--smoothness" not in args
    assert args[-2:] == ["--refine", "0"]  # the network alone, said explicitly


def test_the_module_refines_as_the_command_line_does_by_default():
    assert RegisterOptions().refineSteps == DEFAULT_STEPS
    assert registerCommand("py", Path("f"), Path("m"), Path("o"), RegisterOptions())[-2:] == ["--refine", "60"]


def test_bundled_weights_path_is_the_librarys():
    assert bundledWeights() == BUNDLED_WEIGHTS


def scripted(lines: list[str], code: int = 0) -> RegistrationProcess:
    """A real child process printing ``lines`` like the CLI does, then exiting with ``code``."""
    script = "import sys\n" + "".join(f"print({line!r}, file=sys.stderr, flush=True)\n" for line in lines)
    return RegistrationProcess(launch([sys.executable, "-c", script + f"sys.exit({code})"], Path.cwd()))


def drain(process: RegistrationProcess) -> list[str]:
    seen = []
    while not process.finished:
        seen += process.poll()
        time.sleep(0.01)
    return seen


def test_progress_follows_the_stage_lines():
    stages = ["fsdiffreg: reading images", "fsdiffreg: loading weights on cpu", "fsdiffreg: registering",
              "fsdiffreg: refining (25 steps)", "fsdiffreg: writing outputs"]
    process = scripted(stages)
    assert drain(process) == stages
    assert process.progress == 90 and process.succeeded and process.error is None


def test_error_line_becomes_the_failure_message():
    process = scripted(["fsdiffreg: reading images", "fsdiffreg: error: moving image must be 3D, got 4D"], code=2)
    drain(process)
    assert not process.succeeded and process.failure() == "moving image must be 3D, got 4D"


def test_crash_without_error_line_reports_exit_code_and_last_line():
    process = scripted(["Traceback (most recent call last):", "MemoryError"], code=1)
    drain(process)
    assert process.failure() == "registration failed (exit code 1): MemoryError"


@pytest.fixture()
def sample_scene(validation_pair):
    scene, logics = new_scene()
    fixed = load_volume(scene, validation_pair.fixed)
    moving = load_volume(scene, validation_pair.moving)
    return scene, fixed, moving, logics


def scene_state(scene) -> list[tuple[str, int]]:
    return [(scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetMTime()) for i in range(scene.GetNumberOfNodes())]


def work_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("FSDiffReg-*"))


def test_cli_failure_reaches_the_user_and_changes_nothing(sample_scene, tmp_path):
    scene, fixed, moving, _ = sample_scene
    before, dirs = scene_state(scene), work_dirs()
    missing = tmp_path / "no_such_weights.pt"
    job = RegistrationJob(fixed, moving, options=RegisterOptions(device="cpu", weights=str(missing)))
    with pytest.raises(RegistrationError, match="weights file not found"):
        job.wait()
    assert scene_state(scene) == before and work_dirs() == dirs


def live_members(group: int) -> list[int]:
    """PIDs of processes of a process group that are still running (zombies excluded)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def survivors(group: int, patience: float = 3.0) -> list[int]:
    """Live members of ``group`` once SIGKILL had time to land (processes die asynchronously)."""
    deadline = time.monotonic() + patience
    while live_members(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    return live_members(group)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc to see the process tree")
def test_cancel_kills_launcher_and_child_and_changes_nothing(sample_scene, tmp_path, untrained_weights):
    """Like PythonSlicer, a launcher script starts the real Python as its child; cancel stops both."""
    scene, fixed, moving, _ = sample_scene
    launcher = tmp_path / "PythonLauncher"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nexit $?\n')
    launcher.chmod(0o755)
    before, dirs = scene_state(scene), work_dirs()
    job = RegistrationJob(fixed, moving, options=RegisterOptions(device="cpu", weights=str(untrained_weights)),
                          python=str(launcher))
    lines = []
    while not lines and not job.finished:
        lines += job.poll()
        time.sleep(0.01)
    assert lines[0] == "fsdiffreg: reading images" and not job.finished
    group = job.process.process.pid
    assert len(live_members(group)) == 2  # the launcher and the Python it started
    job.cancel()
    assert survivors(group) == []
    with pytest.raises(RegistrationError, match="cancelled"):
        job.outputs()
    assert scene_state(scene) == before and work_dirs() == dirs
