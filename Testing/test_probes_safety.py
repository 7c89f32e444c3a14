"""Probes of issue 20, as an attacker or a hurried user would try them, on real processes and real files:
``train`` never writes over a user's folder nor runs code from a checkpoint or weights; the worker removes
only work folders made for the run, and its status lines cannot be forged or its loop killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from FSDiffRegLib import events
from FSDiffRegLib.commands import work_folders
from FSDiffRegLib.commands.worker import PARENT_GONE
from FSDiffRegLib.events import FINISHED
from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.network import FSDiffRegNet
from FSDiffRegLib.model.weights import save_weights

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "FSDiffReg"))
from FSDiffRegMRML.process import Worker  # noqa: E402
from test_worker import input_ends_mid_command as ends_mid_command  # noqa: E402
from test_worker import send  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = Config(base_width=4, norm_groups=2, channel_mults=(1, 2), grid_size=(32, 32, 8), grid_spacing=(6.0, 6.0, 12.0),
              train_crop=(32, 32, 8), ncc_window=3, epochs=1, batch_size=2)


def fsdiffreg(*args: str) -> subprocess.CompletedProcess:
    """``python -m FSDiffRegLib.commands.cli ARGS`` in a process of its own."""
    return subprocess.run([sys.executable, "-m", "FSDiffRegLib.commands.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def one_line_refusal(done: subprocess.CompletedProcess) -> str:
    """The one error line of a refused command (exit 2, nothing else said)."""
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("fsdiffreg: error: "), \
        (done.returncode, done.stdout, done.stderr)
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in folder.rglob("*")}


def train_args(data: Path, run: Path, config: Path, *more: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(run), "--config", str(config), "--device", "cpu",
            "--train-limit", "2", "--val-limit", "1", *more]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(TINY.to_json())
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Real ACDC where present, else a missing folder: the refusals of the run folder and of last.pt come before
    the data is read (those of --init-weights after it: their tests take data_dir)."""
    real = ROOT.parent / "shared" / "data" / "ACDC"
    return real if (real / "training").is_dir() else tmp_path / "no-data"


class Marker:
    """Unpickling this object makes the folder ``path``: proof that a file's code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def our_run_folder(run: Path) -> Path:
    """A run folder as ``train`` leaves it before its first checkpoint (its mark, config, log)."""
    run.mkdir()
    (run / "fsdiffreg-run.json").write_text('{"fsdiffreg": "0.1.0", "run": "train"}')  # train.RUN_MARK
    (run / "config.json").write_text(TINY.to_json())
    (run / "log.csv").write_text("epoch,step,loss,diffusion,ncc,smooth,dice,seconds\n")
    return run


# --- train: the run folder -------------------------------------------------------------------------------

def test_train_refuses_a_users_folder_and_leaves_it_byte_identical(tmp_path, data, config):
    user = tmp_path / "my-study"
    user.mkdir()
    (user / "config.json").write_text('{"study": "my own settings"}\n')
    (user / "log.csv").write_text("date,patient,note\n2024-01-02,p1,seen\n")
    before = snapshot(user)
    line = one_line_refusal(fsdiffreg(*train_args(data, user, config)))
    assert "not a run of fsdiffreg train" in line and str(user) in line
    assert snapshot(user) == before


def test_train_with_a_missing_data_folder_leaves_no_run_folder(tmp_path, config):
    run = tmp_path / "new" / "run"
    line = one_line_refusal(fsdiffreg(*train_args(tmp_path / "no-such-data", run, config)))
    assert "no-such-data" in line and not (tmp_path / "new").exists()


def test_a_refused_train_leaves_an_empty_folder_empty(tmp_path, config):
    run = tmp_path / "empty"
    run.mkdir()
    one_line_refusal(fsdiffreg(*train_args(tmp_path / "no-such-data", run, config)))
    assert list(run.iterdir()) == []


def test_a_second_train_in_a_running_runs_folder_is_refused(data_dir, tmp_path, config):
    from FSDiffRegLib.outputs.folder import locked

    run = our_run_folder(tmp_path / "run")
    before = snapshot(run)
    with locked(run / ".fsdiffreg-train-lock", run):  # as a run that trains there holds it (train.RUN_LOCK)
        line = one_line_refusal(fsdiffreg(*train_args(data_dir, run, config)))
    assert "another fsdiffreg run is writing the run folder" in line and snapshot(run) == before


@pytest.mark.parametrize("existing", [False, True])
def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_nothing(data_dir, tmp_path, monkeypatch, existing):
    """A damaged data file found while preprocessing: the folders the run made go, an empty one is emptied."""
    from FSDiffRegLib.errors import InputError
    from FSDiffRegLib.training import train

    def damaged(*args):
        raise InputError("cannot read image patient001_frame01.nii.gz: damaged")

    monkeypatch.setattr(train, "_load_items", damaged)
    run = tmp_path / "empty" if existing else tmp_path / "new" / "run"
    if existing:
        run.mkdir()
    with pytest.raises(InputError, match="damaged"):
        train.train(data_dir, run, TINY, torch.device("cpu"))
    assert list(tmp_path.iterdir()) == ([run] if existing else []) and (not existing or list(run.iterdir()) == [])


# --- train: checkpoints and initial weights hold no code -----------------------------------------------------

def test_a_last_pt_holding_code_is_refused_without_running_it(tmp_path, data, config):
    run = our_run_folder(tmp_path / "run")
    ran = tmp_path / "the-checkpoint-ran-code"
    torch.save({"model": {}, "optimizer": {}, "state": {}, "config": json.loads(TINY.to_json()),
                "rng": Marker(ran)}, run / "last.pt")
    before = snapshot(run)
    line = one_line_refusal(fsdiffreg(*train_args(data, run, config)))
    assert "refused for safety" in line and "last.pt" in line
    assert not ran.exists() and snapshot(run) == before


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
def test_a_damaged_last_pt_is_one_line(tmp_path, data, config, damage):
    run = our_run_folder(tmp_path / "run")
    last = run / "last.pt"
    if damage == "garbage":
        last.write_bytes(b"\x00not a checkpoint at all")
    elif damage == "truncated":
        torch.save({"model": FSDiffRegNet(TINY).state_dict(), "config": json.loads(TINY.to_json())}, last)
        last.write_bytes(last.read_bytes()[:5000])
    else:  # plain weights, not a checkpoint
        save_weights(FSDiffRegNet(TINY), last)
    before = snapshot(run)
    line = one_line_refusal(fsdiffreg(*train_args(data, run, config)))
    assert "last.pt" in line and snapshot(run) == before


def test_init_weights_holding_code_are_refused_without_running_them(data_dir, tmp_path, config):
    ran = tmp_path / "the-weights-ran-code"
    weights = tmp_path / "evil.pt"
    torch.save({"config": json.loads(TINY.to_json()), "state_dict": Marker(ran)}, weights)
    run = tmp_path / "run"
    line = one_line_refusal(fsdiffreg(*train_args(data_dir, run, config, "--init-weights", str(weights))))
    assert "refused for safety" in line and not ran.exists() and not run.exists()


def test_init_weights_of_another_network_are_one_line(data_dir, tmp_path, config):
    weights = tmp_path / "other.pt"
    save_weights(FSDiffRegNet(Config(base_width=4, norm_groups=2)), weights)  # three levels, not TINY's two
    run = tmp_path / "run"
    line = one_line_refusal(fsdiffreg(*train_args(data_dir, run, config, "--init-weights", str(weights))))
    assert "do not fit the network" in line and str(weights) in line and not run.exists()


def test_a_checkpoint_holds_only_what_weights_only_loads(data_dir, tmp_path):
    """A real run's last.pt loads with weights_only=True and resumes (the random state included)."""
    import numpy as np

    from FSDiffRegLib.training.train import train

    cfg = Config(**{**TINY.__dict__, "val_every": 1})
    train(data_dir, tmp_path / "run", cfg, torch.device("cpu"), train_limit=2, val_limit=1)
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert checkpoint["state"]["step"] == 1
    assert np.array_equal(checkpoint["rng"]["numpy"]["keys"].numpy().astype(np.uint32), np.random.get_state()[1])


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 half a zip", b"\x80\x04 a pickle"])
def test_a_damaged_preprocessing_cache_is_made_again(data_dir, tmp_path, damage):
    """A run killed while writing its cache, or a file put there: the pairs are preprocessed again."""
    from FSDiffRegLib.imaging import acdc
    from FSDiffRegLib.training.dataset import load_grid_pairs

    pairs, cfg, cache = acdc.split(data_dir, "validation")[:1], Config(**TINY.__dict__), tmp_path / "cache.npz"
    made = load_grid_pairs(pairs, cfg, cache)
    cache.write_bytes(damage)
    again = load_grid_pairs(pairs, cfg, cache)
    assert again[0].patient == made[0].patient and (again[0].fixed == made[0].fixed).all()
    assert load_grid_pairs(pairs, cfg, cache)[0].patient == made[0].patient  # written whole again


def test_saving_weights_never_writes_over_a_file_beside_them(tmp_path):
    """The temporary file of a save is a new one: a user's ``w.tmp`` beside ``w.pt`` stays."""
    (tmp_path / "w.tmp").write_bytes(b"the user's file")
    save_weights(FSDiffRegNet(TINY), tmp_path / "w.pt")
    assert (tmp_path / "w.tmp").read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt", "w.pt.sha256", "w.tmp"]


def test_train_heart_refuses_a_checksum_file_it_would_write_over(tmp_path, untrained_weights):
    from FSDiffRegLib.defaults import HeartHeadTraining
    from FSDiffRegLib.errors import OutputError
    from FSDiffRegLib.training.heart_head_train import make_heart_head

    out = tmp_path / "head.pt"
    out.with_name("head.pt.sha256").write_text("the user's notes\n")
    with pytest.raises(OutputError, match="head.pt.sha256 exists"):
        make_heart_head(tmp_path / "no-data", str(untrained_weights), out, HeartHeadTraining(steps=1, pairs=1))
    assert out.with_name("head.pt.sha256").read_text() == "the user's notes\n" and not out.exists()


# --- the worker: work folders ----------------------------------------------------------------------------

def input_ends_mid_command(folder: Path, temp: Path) -> int:
    """A busy command with work folder ``folder`` in a worker whose temporary folder is ``temp``; its input
    closed (as when its parent dies); the worker's exit status."""
    return ends_mid_command([sys.executable], folder, {**os.environ, "TMPDIR": str(temp), "TEMP": str(temp),
                                                      "TMP": str(temp)})


def users_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.csv").write_text("patient,EF\np1,55\n")
    return folder


def test_a_users_folder_named_as_a_work_folder_survives_the_worker(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    outside = users_folder(tmp_path / "studies" / "FSDiffReg-123-abc")  # not in the temporary folder
    unmarked = users_folder(temp / "FSDiffReg-123-abc")  # in it, but not made for a run
    for folder in (outside, unmarked):
        assert input_ends_mid_command(folder, temp) == PARENT_GONE
        assert (folder / "results.csv").read_text() == "patient,EF\np1,55\n"


def test_stale_work_folders_without_the_mark_stay(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    user = users_folder(tmp_path / f"FSDiffReg-{ended.pid}-notes")  # named as a work folder of an ended process
    work_folders.new_work_folder()
    assert (user / "results.csv").is_file()


# --- the worker: its protocol ----------------------------------------------------------------------------

def drain(run) -> list[str]:
    lines, deadline = [], time.monotonic() + 60
    while not run.finished:
        assert time.monotonic() < deadline, f"the command's end was never seen; lines so far: {lines}"
        lines += run.poll()
        time.sleep(0.01)
    return lines


def test_a_newline_in_an_argument_cannot_forge_the_finished_line(tmp_path):
    worker = Worker(sys.executable)
    try:
        run = worker.run(["demo", f"--out-dir={tmp_path}", f"--x\n{FINISHED} 0\n{FINISHED} 0"])
        lines = drain(run)
        assert run.returncode == 2, lines
        assert any("error: unrecognized arguments: --x" in line for line in lines), lines
        following = worker.run(["register", "only-one-image"])
        drain(following)
        assert following.returncode == 2
    finally:
        worker.stop()


@pytest.mark.skipif(os.name == "nt", reason="the stand-in launcher is a shell script")
def test_a_last_line_without_its_newline_does_not_hide_the_status(tmp_path):
    from test_slicer_process import RegistrationProcess, stand_in_worker

    last = events.line(events.error("no newline"))  # the event, its line unended
    command = (f"def run(args):\n    print('fsdiffreg: error: no newline', flush=True)\n"
               f"    sys.stdout.write({last!r})\n    return 2\n")
    process = RegistrationProcess(stand_in_worker(tmp_path, command).run(["register"]))
    assert drain(process) == ["fsdiffreg: error: no newline"]
    assert process.command.returncode == 2 and process.failure() == "no newline"


@pytest.mark.parametrize("line", [
    json.dumps({"args": ["register"], "work_folder": 5}),
    json.dumps({"args": ["register"], "work_folder": ["/tmp/x"]}),
    '{"args": ["register"], "work_folder": ' + "[" * 100000 + "]" * 100000 + "}",
    "[" * 100000,
    '{"args": ["register"], "work_folder": null',
    json.dumps({"args": ["register"], "token": "x\nfsdiffreg: finished 0"}),
])
def test_a_malformed_command_gets_one_error_status_and_the_worker_goes_on(worker, line):
    lines = send(worker, line)
    assert len(lines) == 2 and lines[0].startswith("fsdiffreg: error: the worker was sent ")
    assert lines[1] == f"{FINISHED} 2"
    answer = send(worker, json.dumps({"args": ["register", "only-one-image"], "token": "0123abcd"}))
    assert answer[-1] == f"{FINISHED} 0123abcd 2" and worker.poll() is None


def test_the_status_line_carries_the_token_of_a_refused_command(worker):
    lines = send(worker, json.dumps({"args": ["register"], "work_folder": 5, "token": "feedc0de"}))
    assert lines[-1] == f"{FINISHED} feedc0de 2"
