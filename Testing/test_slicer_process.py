"""The child processes as the module runs them: which Python, the command line, progress, failure,
cancel, and the device query."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "FSDiffReg"))
from FSDiffRegLib import events
from FSDiffRegLib.commands import work_folders
from FSDiffRegLib.commands.work_folders import process_exists
from FSDiffRegLib.defaults import DEFAULT_STEPS
from FSDiffRegLib.resources import sample_pair
from FSDiffRegMRML import process as child  # noqa: E402
from FSDiffRegMRML.job import RegistrationError, RegistrationJob  # noqa: E402
from FSDiffRegMRML.process import RegisterOptions, RegistrationProcess, Worker, registerCommand  # noqa: E402
from test_slicer_outputs import load_volume, new_scene

#: How long a test waits for a child that should end at once before calling it hung.
PATIENCE = 60.0
ROOT = Path(__file__).resolve().parent.parent


def test_command_line_carries_every_option():
    options = RegisterOptions(device="cuda", weights="/w/model.pt", refineSteps=25, smoothness=2.5)
    args = registerCommand(Path("f.nrrd"), Path("m.nrrd"), Path("out"), options, Path("l.nrrd"))
    assert args[:3] == ["register", "f.nrrd", "m.nrrd"]
    flags = dict(zip(args[3::2], args[4::2]))
    assert flags == {"--out-dir": "out", "--device": "cuda", "--weights": "/w/model.pt",
                     "--moving-labels": "l.nrrd", "--refine": "25", "--smoothness": "2.5"}


def test_command_line_leaves_library_defaults_alone():
    args = registerCommand(Path("f"), Path("m"), Path("o"), RegisterOptions(refineSteps=0, smoothness=3.0))
    assert "--weights" not in args and "--moving-labels" not in args and "--smoothness" not in args
    assert args[-2:] == ["--refine", "0"]  # the network alone, said explicitly


def test_the_module_refines_as_the_command_line_does_by_default():
    assert RegisterOptions().refineSteps == DEFAULT_STEPS
    assert registerCommand(Path("f"), Path("m"), Path("o"), RegisterOptions())[-2:] == ["--refine", str(DEFAULT_STEPS)]


def stand_in_worker(folder: Path, command: str) -> Worker:
    """A worker whose launcher (as PythonSlicer) runs the real worker loop (FSDiffRegLib.commands.worker) with
    ``command`` (Python source defining ``run(args) -> exit status``) in place of the command line."""
    script = folder / "stand_in_worker.py"
    script.write_text(f"import os, sys, time\nsys.path.insert(0, {str(ROOT)!r})\n"
                      "from FSDiffRegLib.commands import worker\n"
                      "from FSDiffRegLib.events import error, read, result, stage, to_stderr\n"
                      f"{command}\nworker.run = run\nworker.CommandServer().serve()\n")
    launcher = folder / "PythonLauncher"
    launcher.write_text('#!/bin/sh\n[ "$*" = "-m FSDiffRegLib.commands.worker" ] '
                        '|| { echo "bad arguments: $*" >&2; exit 3; }\n'
                        f'"{sys.executable}" "{script}"\nexit $?\n')
    launcher.chmod(0o755)
    return Worker(str(launcher))


def printing(said: list[events.Event], ending: str = "return 0") -> str:
    """A stand-in command that reports ``said`` as the CLI does (the human lines, and the events the worker's
    parent asks for), then runs ``ending``."""
    prints = "".join(f"    to_stderr(read({events.line(event)!r}))\n" for event in said)
    return f"def run(args):\n{prints}    {ending}\n"


def scripted(folder: Path, said: list[events.Event], ending: str = "return 0") -> RegistrationProcess:
    """A registration in a stand-in worker whose command reports ``said``, then runs ``ending``."""
    return RegistrationProcess(stand_in_worker(folder, printing(said, ending)).run(["register"]))


def drain(process: RegistrationProcess) -> list[str]:
    """Every line until the child ended (a hung reader fails the test instead of blocking it)."""
    seen, deadline = [], time.monotonic() + PATIENCE
    while not process.finished:
        assert time.monotonic() < deadline, f"the child's end was never seen; lines so far: {seen}"
        seen += process.poll()
        time.sleep(0.01)
    return seen


pytestmark = pytest.mark.skipif(os.name == "nt", reason="the stand-in launchers are shell scripts")


def test_progress_follows_the_stage_events_and_the_log_shows_their_text(tmp_path):
    said = [events.stage("reading", "reading images"), events.stage("loading", "loading weights on cpu"),
            events.stage("registering"), events.progress("refining", 5, 25, "refining: 5 of 25 steps done"),
            events.stage("writing", "writing outputs")]
    assert [RegistrationProcess.stageProgress(event) for event in said] == [10, 20, 35, 60, 90]
    process = scripted(tmp_path, said)
    assert drain(process) == [events.human(event) for event in said]  # the log shows their text, not the events
    assert process.progress == 90 and process.succeeded and process.error is None


def test_error_line_becomes_the_failure_message(tmp_path):
    process = scripted(tmp_path, [events.stage("reading", "reading images"),
                                  events.error("moving image must be 3D, got 4D")], "return 2")
    drain(process)
    assert not process.succeeded and process.failure() == "moving image must be 3D, got 4D"


def test_crash_without_error_line_reports_exit_code_and_last_line(tmp_path):
    """An exception no handler expects ends the worker (status 1, the traceback's last line)."""
    process = scripted(tmp_path, [events.stage("reading", "reading images")], "raise MemoryError")
    drain(process)
    assert process.failure() == "registration failed (exit code 1): MemoryError"


def test_undecodable_output_is_replaced_not_fatal(tmp_path):
    """One byte that is not UTF-8 (a Windows code page path, a library's binary noise) must not kill
    the reader: the command's end is still seen, its lines still reported."""
    command = ("def run(args):\n"
               "    sys.stderr.buffer.write(b'fsdiffreg: reading images from caf\\xe9 \\xff\\xfe\\n')\n"
               "    sys.stderr.flush()\n"
               "    to_stderr(stage('reading', 'reading images'))\n"
               "    to_stderr(error('weights file not found'))\n"
               "    return 2\n")
    process = RegistrationProcess(stand_in_worker(tmp_path, command).run(["register"]))
    lines = drain(process)
    assert lines[0].startswith("fsdiffreg: reading images from caf\ufffd")
    assert process.progress == 10 and process.failure() == "weights file not found"


@pytest.fixture(params=[None, "segmentation", "segmentation without display node", "label map"])
def sample_scene(request, validation_pair):
    """A real pair in a scene with Slicer's module logics; moving labels as the user may pick them."""
    scene, logics = new_scene()
    fixed = load_volume(scene, validation_pair.fixed)
    moving = load_volume(scene, validation_pair.moving)
    labels = None
    if request.param is not None:
        labels = load_volume(scene, validation_pair.moving_labels, "vtkMRMLLabelMapVolumeNode")
        labels.CreateDefaultDisplayNodes()
    if request.param is not None and request.param.startswith("segmentation"):
        labelmap, labels = labels, scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, labels, "")
    if request.param == "segmentation without display node":
        scene.RemoveNode(labels.GetDisplayNode())
        assert labels.GetNumberOfDisplayNodes() == 0
    return scene, fixed, moving, labels, logics


def scene_state(scene) -> list[tuple]:
    """Each node's ID and modification time, and its display nodes where it has any."""
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    return [(node.GetID(), node.GetMTime(), input_state(node)) for node in nodes]


def input_state(node) -> tuple:
    """What a run must not change in an input node: its modification time and its display nodes."""
    displays = node.GetNumberOfDisplayNodes() if node.IsA("vtkMRMLDisplayableNode") else None
    return node.GetMTime(), displays


def test_cli_failure_reaches_the_user_and_changes_nothing(sample_scene, tmp_path):
    """The scene keeps its nodes and each node its modification time (no colour table added by
    exporting a segmentation, no input touched)."""
    scene, fixed, moving, labels, _ = sample_scene
    before, inputs = scene_state(scene), [input_state(node) for node in (fixed, moving, labels) if node]
    missing = tmp_path / "no_such_weights.pt"
    job = RegistrationJob(fixed, moving, labels, RegisterOptions(device="cpu", weights=str(missing)))
    with pytest.raises(RegistrationError, match="weights file not found"):
        job.wait()
    assert [input_state(node) for node in (fixed, moving, labels) if node] == inputs
    assert scene_state(scene) == before and not job.workDir.exists()


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
    scene, fixed, moving, labels, _ = sample_scene
    launcher = tmp_path / "PythonLauncher"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nexit $?\n')
    launcher.chmod(0o755)
    before, inputs = scene_state(scene), [input_state(node) for node in (fixed, moving, labels) if node]
    job = RegistrationJob(fixed, moving, labels, RegisterOptions(device="cpu", weights=str(untrained_weights)),
                          Worker(str(launcher)))
    lines = []
    while not lines and not job.finished:
        lines += job.poll()
        time.sleep(0.01)
    assert lines[0] == "fsdiffreg: reading images" and not job.finished
    group = job.worker.pid
    assert len(live_members(group)) == 2  # the launcher and the Python it started
    job.cancel()
    assert survivors(group) == []
    with pytest.raises(RegistrationError, match="cancelled"):
        job.outputs()
    assert [input_state(node) for node in (fixed, moving, labels) if node] == inputs
    assert scene_state(scene) == before and not job.workDir.exists()


# --- which Python runs the child -------------------------------------------------------


def fake_executable(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture()
def slicer_install(tmp_path, monkeypatch) -> Path:
    """Inside Slicer: ``sys.executable`` is the application (bin/SlicerApp-real), PATH has no PythonSlicer."""
    monkeypatch.setattr(sys, "executable", str(fake_executable(tmp_path / "Slicer" / "bin", "SlicerApp-real")))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    return tmp_path


@pytest.mark.skipif(os.name == "nt", reason="fake executables are shell scripts")
def test_python_slicer_on_path_first_as_slicer_finds_it(slicer_install, monkeypatch):
    fake_executable(slicer_install / "Slicer" / "bin", "PythonSlicer")
    on_path = fake_executable(slicer_install / "launcher" / "bin", "PythonSlicer")
    monkeypatch.setenv("PATH", os.pathsep.join([str(slicer_install / "elsewhere"), str(on_path.parent)]))
    assert child.pythonSlicerExecutable() == str(on_path)


@pytest.mark.skipif(os.name == "nt", reason="fake executables are shell scripts")
def test_python_slicer_beside_the_application_when_not_on_path(slicer_install):
    beside = fake_executable(slicer_install / "Slicer" / "bin", "PythonSlicer")
    assert child.pythonSlicerExecutable() == str(beside)


@pytest.mark.skipif(os.name == "nt", reason="fake executables are shell scripts")
def test_the_slicer_application_itself_is_never_taken_for_python(slicer_install):
    with pytest.raises(FileNotFoundError, match="PythonSlicer") as error:
        child.pythonSlicerExecutable()
    assert "\n" not in str(error.value) and "SlicerApp-real" in str(error.value)


@pytest.mark.skipif(os.name == "nt", reason="fake executables are shell scripts")
@pytest.mark.parametrize("name", ["python", "python3.9", "Python.exe"])
def test_plain_python_runs_the_child_itself(tmp_path, monkeypatch, name):
    python = fake_executable(tmp_path / "venv" / "bin", name)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert child.pythonSlicerExecutable() == str(python)


# --- asking the child which devices torch can use ----------------------------------------


def devices_stand_in(folder: Path, body: str) -> Worker:
    """A stand-in worker answering only ``devices``: its command runs ``body`` (Python lines)."""
    command = ("def run(args):\n    if args != ['devices']:\n        print('bad arguments', args, file=sys.stderr)\n"
               "        return 3\n" + "".join(f"    {line}\n" for line in body.splitlines()))
    return stand_in_worker(folder, command)


def answer(query) -> dict:
    deadline = time.monotonic() + PATIENCE
    while True:
        result = query.poll()
        if result is not None:
            return result
        assert time.monotonic() < deadline, "the device query never ended"
        time.sleep(0.01)


@pytest.mark.skipif(os.name == "nt", reason="stand-ins are shell scripts")
def test_device_query_reads_the_result_event_among_other_output(tmp_path):
    reply = {"torch": "2.4.1", "cuda": True, "devices": ["cpu", "cuda"], "cuda_names": ["RTX"]}
    body = (f"print('UserWarning: something', file=sys.stderr)\nto_stderr(result('devices found', {reply!r}))\n"
            f"print({json.dumps(reply)!r})\nreturn 0")
    query = child.DeviceQuery(devices_stand_in(tmp_path, body))
    assert answer(query) == {"torch": "2.4.1", "devices": ["cpu", "cuda"], "error": None}
    assert query.poll() == answer(query)  # the answer stays


@pytest.mark.skipif(os.name == "nt", reason="stand-ins are shell scripts")
def test_device_query_reports_the_cli_error_event(tmp_path):
    body = "to_stderr(error(\"torch cannot be imported: No module named 'torch'\"))\nreturn 2"
    result = answer(child.DeviceQuery(devices_stand_in(tmp_path, body)))
    assert result == {"torch": None, "devices": [], "error": "torch cannot be imported: No module named 'torch'"}


@pytest.mark.skipif(os.name == "nt", reason="stand-ins are shell scripts")
def test_device_query_reports_a_crash_in_one_line(tmp_path):
    body = "print('Fatal Python error: Aborted', file=sys.stderr, flush=True)\nos._exit(134)"
    result = answer(child.DeviceQuery(devices_stand_in(tmp_path, body)))
    assert result["torch"] is None and result["devices"] == []
    assert "134" in result["error"] and "Fatal Python error: Aborted" in result["error"]
    assert "\n" not in result["error"]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc to see the process tree")
def test_device_query_is_none_while_running_and_cancel_stops_it(tmp_path):
    worker = devices_stand_in(tmp_path, "time.sleep(60)")
    query = child.DeviceQuery(worker)
    assert query.poll() is None
    group = worker.pid
    assert live_members(group)
    query.cancel()
    assert survivors(group) == []
    assert answer(query) == {"torch": None, "devices": [], "error": "device query cancelled"}


def test_device_query_asks_the_real_command_line():
    result = answer(child.DeviceQuery(Worker(sys.executable)))
    assert result["error"] is None
    assert result["torch"] == importlib.metadata.version("torch") and "cpu" in result["devices"]


# --- one worker kept between runs -----------------------------------------------------------


def test_the_device_query_and_registrations_share_one_worker(untrained_weights):
    """As in the module: the device query starts the worker, a registration given meanwhile waits its
    turn, the next registration finds the same process (torch imported once)."""
    scene, _ = new_scene()
    sample = sample_pair()
    fixed, moving = load_volume(scene, sample["fixed"]), load_volume(scene, sample["moving"])
    options = RegisterOptions(device="cpu", weights=str(untrained_weights), refineSteps=0)
    worker = Worker(sys.executable)
    try:
        query = child.DeviceQuery(worker)
        first = RegistrationJob(fixed, moving, None, options, worker)
        pid = worker.pid
        assert answer(query)["error"] is None
        outputs = [first.wait(), RegistrationJob(fixed, moving, None, options, worker).wait()]
        assert worker.pid == pid
        assert outputs[0].metrics["ncc_after"] == outputs[1].metrics["ncc_after"]  # the same model, the same run
    finally:
        worker.stop()
    assert worker.pid is None and not process_exists(pid)


def test_commands_wait_their_turn_and_a_cancelled_waiting_one_never_runs(tmp_path):
    command = "def run(args):\n    time.sleep(0.2)\n    print('fsdiffreg: ran', *args, file=sys.stderr)\n    return 0\n"
    worker = stand_in_worker(tmp_path, command)
    first, second, third = (worker.run([name]) for name in ("first", "second", "third"))
    pid = worker.pid
    second.cancel()
    assert drain(third) == ["fsdiffreg: ran third"] and drain(first) == ["fsdiffreg: ran first"]
    assert first.returncode == third.returncode == 0 and second.cancelled and second.finished
    assert worker.pid == pid
    worker.stop()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc to see the process tree")
def test_after_a_cancel_the_next_command_starts_a_new_worker(tmp_path):
    command = ("def run(args):\n    if args == ['hang']:\n        time.sleep(60)\n"
               "    print('fsdiffreg: ran', *args, file=sys.stderr)\n    return 0\n")
    worker = stand_in_worker(tmp_path, command)
    hung = worker.run(["hang"])
    group = worker.pid
    hung.cancel()
    assert survivors(group) == [] and hung.finished
    after = worker.run(["next"])
    assert drain(after) == ["fsdiffreg: ran next"] and after.returncode == 0 and worker.pid != group
    worker.stop()


# --- a Slicer that dies mid-run ------------------------------------------------------------

#: A parent like Slicer: starts a RegistrationJob of the sample pair through a launcher, says the
#: launcher's process group and the job's work folder once the child spoke, then waits to be killed.
PARENT = """
import sys, time
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/FSDiffReg"]
import slicer
from FSDiffRegMRML.job import RegistrationJob
from FSDiffRegMRML.process import Worker

def load(scene, path):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(path)
    assert storage.ReadData(node)
    return node

scene = slicer.vtkMRMLScene()
job = RegistrationJob(load(scene, sys.argv[2]), load(scene, sys.argv[3]), worker=Worker(sys.argv[4]))
deadline = time.monotonic() + 60
while not job.poll():
    assert time.monotonic() < deadline, "the child never spoke"
    time.sleep(0.01)
print(job.worker.pid, job.workDir, flush=True)
time.sleep(300)
"""

#: The real worker loop, whose command says one line and is then busy for minutes without a word
#: (so no write to a closed pipe ends it).
QUIET_CHILD = ("import time; from FSDiffRegLib.commands import worker; "
               "worker.run = lambda args: (print('fsdiffreg: reading images', flush=True), time.sleep(300)); "
               "worker.CommandServer().serve()")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc to see the process tree")
def test_a_killed_parent_takes_its_child_and_work_folder_along(tmp_path):
    """SIGKILL, as a crash: no clean-up code of the parent runs; the child must end and remove the
    copies of the images, through a launcher (PythonSlicer) as well."""
    launcher = tmp_path / "PythonLauncher"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" -c "{QUIET_CHILD}"\nexit $?\n')
    launcher.chmod(0o755)
    script = tmp_path / "slicer_stand_in.py"
    script.write_text(PARENT)
    sample = sample_pair()
    root = Path(__file__).resolve().parent.parent
    slicer_stand_in = subprocess.Popen([sys.executable, str(script), str(root), str(sample["fixed"]),
                                        str(sample["moving"]), str(launcher)], stdout=subprocess.PIPE, text=True)
    group, workDir = None, None
    try:
        group, workDir = slicer_stand_in.stdout.readline().split()
        group, workDir = int(group), Path(workDir)
        assert len(live_members(group)) == 2 and (workDir / "fixed.nrrd").is_file()
        slicer_stand_in.kill()
        slicer_stand_in.wait()
        assert survivors(group, patience=PATIENCE) == []
        assert not workDir.exists()
    finally:
        slicer_stand_in.kill()
        slicer_stand_in.wait()
        if group is not None and live_members(group):
            os.killpg(group, signal.SIGKILL)
        if workDir is not None:
            shutil.rmtree(workDir, ignore_errors=True)


def test_the_next_job_removes_work_folders_of_ended_processes_only(tmp_path, monkeypatch):
    """A folder a dead Slicer left goes when a job starts; one of a running process stays."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale, live = tmp_path / f"FSDiffReg-{ended.pid}-abcd1234", tmp_path / f"FSDiffReg-{running.pid}-abcd1234"
        for folder in (stale, live):
            folder.mkdir()
            work_folders.mark(folder)
            (folder / "fixed.nrrd").write_bytes(b"patient")
        scene, _ = new_scene()
        sample = sample_pair()
        fixed, moving = load_volume(scene, sample["fixed"]), load_volume(scene, sample["moving"])
        job = RegistrationJob(fixed, moving, None, RegisterOptions(device="cpu", weights=str(tmp_path / "none.pt")))
        assert job.workDir.parent == tmp_path and job.workDir.name.startswith(f"FSDiffReg-{os.getpid()}-")
        assert not stale.exists() and (live / "fixed.nrrd").is_file()
        with pytest.raises(RegistrationError, match="weights file not found"):
            job.wait()
        assert sorted(tmp_path.iterdir()) == [live]
    finally:
        running.kill()
        running.wait()
