"""Training on real ACDC data: the model learns, and runs resume where they stopped."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from FSDiffRegLib.commands.cli import main
from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.diffusion import NoiseSchedule
from FSDiffRegLib.model.network import FSDiffRegNet
from FSDiffRegLib.model.weights import save_weights
from FSDiffRegLib.training.dataset import grid_pair, load_grid_pairs, training_sample
from FSDiffRegLib.training.train import learning_rate, train, training_loss, validate

# a small network on a half-resolution grid (same field of view), so CPU steps are short
SMALL = dict(base_width=4, norm_groups=2, channel_mults=(1, 2, 4), grid_size=(64, 64, 16),
             grid_spacing=(3.0, 3.0, 6.3), train_crop=(64, 64, 16), ncc_window=5)
STEPS = 40


def write_config(cfg: Config, folder: Path) -> Path:
    path = folder / "config.json"
    path.write_text(cfg.to_json())
    return path


@pytest.mark.slow
def test_a_small_model_learns_to_register_a_real_pair(data_dir):
    """Minutes of training on one ACDC pair raise the Dice of its warped labels."""
    cfg = Config(**SMALL, lr=2e-3, lam_phi=2.0, augment=False, directions="one")
    item = grid_pair(acdc.split(data_dir, "train")[0], cfg)
    torch.manual_seed(0)
    model = FSDiffRegNet(cfg)
    before = validate(model, [item], torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    schedule = NoiseSchedule(cfg)
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        samples = [training_sample(item, cfg, rng) for _ in range(2)]  # batch 2: fast CPU kernels
        moving, fixed = (torch.cat(x) for x in list(zip(*samples))[:2])
        parts = training_loss(model, schedule, moving, fixed)
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
    after = validate(model, [item], torch.device("cpu"))
    assert after["mean"] > before["mean"] + 0.05, (before, after)


def test_training_resumes_from_its_last_checkpoint(data_dir, tmp_path):
    cfg = Config(base_width=4, norm_groups=2, channel_mults=(1, 2), grid_size=(32, 32, 8),
                 grid_spacing=(6.0, 6.0, 12.0), train_crop=(32, 32, 8), ncc_window=3, epochs=1, val_every=1,
                 batch_size=2)
    first = train(data_dir, tmp_path, cfg, torch.device("cpu"), train_limit=2, val_limit=1)
    assert (first.epoch, first.step) == (1, 1) and (tmp_path / "best.pt").is_file()
    with open(tmp_path / "log.csv", "a") as handle:  # a step of an epoch interrupted before its checkpoint
        handle.write("2,2,0,0,0,0,1.0\n")
    second = train(data_dir, tmp_path, Config(epochs=2, lr_schedule="cosine"), torch.device("cpu"),
                   train_limit=2, val_limit=1)
    assert (second.epoch, second.step) == (2, 2)
    assert "epoch 2 done, step 2, lr 1.00e-04" in (tmp_path / "train.log").read_text()  # half of 2e-4
    with open(tmp_path / "log.csv") as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == [1, 2]
    assert "start epoch 1 step 1" in (tmp_path / "train.log").read_text()
    assert Config.from_dict(torch.load(tmp_path / "last.pt", weights_only=True)["config"]).base_width == 4


def test_the_preprocessing_cache_gives_the_same_pairs_and_reads_each_array_once(data_dir, tmp_path):
    cfg = Config(**SMALL)
    pairs = acdc.split(data_dir, "validation")[:2]
    made = load_grid_pairs(pairs, cfg, tmp_path / "cache.npz")
    read = load_grid_pairs(pairs, cfg, tmp_path / "cache.npz")
    for a, b in zip(made, read):
        assert a.patient == b.patient and np.array_equal(a.fixed, b.fixed)
        assert np.array_equal(a.moving_labels, b.moving_labels)
    assert read[0].fixed.base is read[1].fixed.base  # one decompressed array, not one per pair


def test_cosine_learning_rate_falls_from_lr_to_zero():
    cfg = Config(lr=1e-3, epochs=10, lr_schedule="cosine")
    assert [round(learning_rate(cfg, e) / 1e-3, 3) for e in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert learning_rate(Config(lr=1e-3, epochs=10), 7) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        Config(lr_schedule="step")


def test_weak_supervision_adds_the_dice_of_the_warped_training_labels(data_dir):
    cfg = Config(**SMALL, lam_dice=10.0)
    item = grid_pair(acdc.split(data_dir, "train")[0], cfg)
    sample = training_sample(item, cfg, np.random.default_rng(0))
    assert set(np.unique(sample.moving_labels.numpy())) <= {0, 1, 2, 3}
    torch.manual_seed(0)
    model = FSDiffRegNet(cfg)
    parts = training_loss(model, NoiseSchedule(cfg), sample.moving, sample.fixed,
                          (sample.moving_labels, sample.fixed_labels))
    assert 0.0 < parts["dice"].item() < 1.0
    unsupervised = parts["loss"] - cfg.lam_dice * parts["dice"]
    assert torch.allclose(unsupervised, parts["diffusion"] + cfg.lam * parts["ncc"] + cfg.lam_phi * parts["smooth"])
    assert "dice" not in training_loss(model, NoiseSchedule(Config(**SMALL)), sample.moving, sample.fixed)


def test_a_new_run_starts_from_the_given_weights_and_a_resumed_one_ignores_them(data_dir, tmp_path):
    cfg = Config(base_width=4, norm_groups=2, channel_mults=(1, 2), grid_size=(32, 32, 8),
                 grid_spacing=(6.0, 6.0, 12.0), train_crop=(32, 32, 8), ncc_window=3, epochs=1, val_every=1,
                 batch_size=2, lr=1e-6)
    torch.manual_seed(1)
    start = FSDiffRegNet(cfg)
    save_weights(start, tmp_path / "start.pt")
    run = tmp_path / "run"
    main(["train", "--data", str(data_dir), "--out", str(run), "--config", str(write_config(cfg, tmp_path)),
          "--train-limit", "2", "--val-limit", "1", "--init-weights", str(tmp_path / "start.pt")])
    trained = torch.load(run / "last.pt", weights_only=True)["model"]
    for name, value in start.state_dict().items():  # one step at lr 1e-6 stays next to the start
        assert torch.allclose(trained[name].float(), value.float(), atol=1e-4), name
    assert "initialised from" in (run / "train.log").read_text()
