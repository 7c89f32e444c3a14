"""Training under torchrun: 2 CPU processes (gloo, DistributedDataParallel) on real ACDC pairs."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from FSDiffRegLib.commands.cli import main
from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.network import FSDiffRegNet
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.training.train import RUN_MARK, global_batches

ROOT = Path(__file__).resolve().parent.parent
# a tiny network on a coarse grid; 2 training pairs and 2 ranks of batch 1: one step an epoch (random crops, flips)
TINY = dict(base_width=4, norm_groups=2, channel_mults=(1, 2), grid_size=(32, 32, 8), grid_spacing=(6.0, 6.0, 12.0),
            train_crop=(24, 24, 8), ncc_window=3, batch_size=1, val_every=1, lr=2e-3)
EPOCHS = 8

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch has no torch.distributed with the gloo backend")


def train_args(data_dir: Path, run: Path, cfg: Config) -> list[str]:
    config = run.parent / f"{run.name}.json"
    config.write_text(cfg.to_json())
    return ["train", "--data", str(data_dir), "--out", str(run), "--config", str(config), "--device", "cpu",
            "--train-limit", "2", "--val-limit", "1"]


def torchrun(args: list[str]) -> str:
    """``torchrun --nproc-per-node 2 -m FSDiffRegLib.commands.cli ARGS`` on the CPU (gloo); its output."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
               "-m", "FSDiffRegLib.commands.cli", *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def ddp_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-process run of one epoch (one step; last.pt kept as one_step.pt), resumed to EPOCHS epochs."""
    run = tmp_path_factory.mktemp("ddp") / "run"
    torchrun(train_args(data_dir, run, Config(**TINY, epochs=1)))
    shutil.copy(run / "last.pt", run.parent / "one_step.pt")
    out = torchrun(train_args(data_dir, run, Config(**TINY, epochs=EPOCHS)))
    assert out.count(f"stopped at epoch {EPOCHS}, step {EPOCHS}") == 2, out  # both ranks agree
    return run


@needs_gloo
def test_two_processes_learn_log_once_and_resume(ddp_run: Path):
    with open(ddp_run / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == list(range(1, EPOCHS + 1))  # rank 0 alone writes the log
    log = (ddp_run / "train.log").read_text()
    assert log.count("start epoch 0 step 0") == 1 and log.count("start epoch 1 step 1") == 1  # resumed once
    assert log.count("validation RV") == EPOCHS and log.count(f"epoch {EPOCHS} done") == 1
    # the denoising term, learnt from scratch, falls within steps (the NCC term takes many more)
    losses = [float(r["diffusion"]) for r in rows]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.05, losses
    model, info = load_model(ddp_run / "best.pt")  # plain weights: no DDP 'module.' prefixes
    assert isinstance(model, FSDiffRegNet) and info["info"]["epoch"] >= 1
    ckpt = torch.load(ddp_run / "last.pt", weights_only=True)
    FSDiffRegNet(Config.from_dict(ckpt["config"])).load_state_dict(ckpt["model"])
    assert ckpt["state"]["step"] == EPOCHS


@needs_gloo
def test_one_step_on_two_processes_equals_one_process_on_the_same_global_batch(ddp_run: Path, data_dir: Path):
    single = ddp_run.parent / "single"
    shutil.copytree(ddp_run / "cache", single / "cache")  # the same preprocessed pairs, in a run folder of ours
    shutil.copy(ddp_run / RUN_MARK, single / RUN_MARK)
    assert main(train_args(data_dir, single, Config(**{**TINY, "batch_size": 2}, epochs=1))) == 0
    one = torch.load(single / "last.pt", weights_only=True)
    two = torch.load(ddp_run.parent / "one_step.pt", weights_only=True)
    assert one["state"]["step"] == two["state"]["step"] == 1
    torch.manual_seed(0)
    start = FSDiffRegNet(Config(**TINY))
    moved, differ = [], []
    for i, (name, weight) in enumerate(start.named_parameters()):
        gradient = one["optimizer"]["state"][i]["exp_avg"]  # Adam's first moment: 0.1 x the (averaged) gradient
        assert torch.allclose(two["optimizer"]["state"][i]["exp_avg"], gradient, rtol=0,
                              atol=1e-4 * gradient.abs().max().item()), name
        moved.append((one["model"][name] - weight.detach()).abs().flatten())
        differ.append((one["model"][name] - two["model"][name]).abs().flatten())
    moved, differ = torch.cat(moved) / TINY["lr"], torch.cat(differ) / TINY["lr"]
    assert moved.mean() > 0.5  # Adam's first step moves each weight by lr * g / (|g| + 1e-8): about lr
    # the same weights; only the rare gradients near Adam's 1e-8 turn rounding into a visible part of lr
    assert differ.mean() < 1e-4 and differ.max() < 0.25, (differ.mean(), differ.max())


def test_global_batches_are_shared_equally_by_the_ranks():
    order = np.array([4, 0, 3, 1, 2])
    assert [b.tolist() for b in global_batches(order, 2, 1)] == [[4, 0], [3, 1], [2]]  # one process: as before
    assert [b.tolist() for b in global_batches(order, 2, 2)] == [[4, 0, 3, 1], [2, 4]]  # wraps to fill every rank
    assert [b.tolist() for b in global_batches(order[:1], 1, 3)] == [[4, 4, 4]]
