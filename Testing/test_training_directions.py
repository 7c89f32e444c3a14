"""Training in both directions (issue 21): the order drawn per step, the inverse-consistency term, resuming."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from FSDiffRegLib.commands.cli import main
from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.diffusion import NoiseSchedule
from FSDiffRegLib.model.inverse import invert_flow
from FSDiffRegLib.model.losses import inverse_consistency_loss
from FSDiffRegLib.model.network import FSDiffRegNet
from FSDiffRegLib.training.dataset import GridPair, training_sample
from FSDiffRegLib.training.train import training_loss

TINY = dict(base_width=4, norm_groups=2, channel_mults=(1, 2), grid_size=(32, 32, 8), grid_spacing=(6.0, 6.0, 12.0),
            train_crop=(32, 32, 8), ncc_window=3)


def marked_pair() -> GridPair:
    """A pair whose images say which is which: ED (fixed) all 0.5, ES (moving) all -0.5, labels 1 and 2."""
    shape = (8, 32, 32)
    return GridPair("p", np.full(shape, 0.5, np.float32), np.full(shape, -0.5, np.float32),
                    np.ones(shape, np.uint8), np.full(shape, 2, np.uint8))


def orders(cfg: Config, draws: int = 40) -> list[str]:
    rng = np.random.default_rng(0)
    drawn = []
    for _ in range(draws):
        sample = training_sample(marked_pair(), cfg, rng)
        assert sample.moving_labels.unique().item() == (2 if sample.moving.mean() < 0 else 1)  # labels follow
        drawn.append("ES->ED" if sample.moving.mean() < 0 else "ED->ES")
    return drawn


def test_both_directions_draw_both_orders_and_one_keeps_es_onto_ed():
    both = orders(Config(**TINY, directions="both"))
    assert 10 < both.count("ED->ES") < 30 and both == orders(Config(**TINY, directions="both"))  # seeded
    assert set(orders(Config(**TINY, directions="one"))) == {"ES->ED"}
    with pytest.raises(ValueError, match="directions"):
        Config(directions="backwards")


def bump(size: tuple[int, int, int] = (16, 32, 32), amplitude: float = 4.0) -> torch.Tensor:
    """A smooth flow (1, 3, D, H, W) of ``amplitude`` voxels at the centre, nothing at the borders."""
    axes = [torch.linspace(-1, 1, n) for n in size]
    d, h, w = torch.meshgrid(*axes, indexing="ij")
    envelope = torch.exp(-(d**2 + h**2 + w**2) * 4)
    return amplitude * torch.stack([0.3 * envelope, envelope, -0.6 * envelope])[None]


def test_the_inverse_consistency_term_is_zero_for_inverse_flows_only():
    t = torch.tensor([1.5, -2.0, 0.7]).view(1, 3, 1, 1, 1).expand(1, 3, 8, 16, 16)
    assert inverse_consistency_loss(t, -t).item() < 1e-10  # translations +t and -t
    assert inverse_consistency_loss(t, t).item() == pytest.approx((2 * t[0, :, 0, 0, 0]).pow(2).sum().item())  # |2t|^2
    u = bump()
    assert inverse_consistency_loss(u, invert_flow(u)).item() < 1e-3  # a smooth field and its inverse (2e-4:
    assert inverse_consistency_loss(u, -u).item() > 2e-2  # trilinear sampling); -u is not its inverse (5e-2)
    assert inverse_consistency_loss(u, torch.zeros_like(u)).item() > 0.5


def test_inverse_consistency_trains_both_orders_of_each_pair():
    cfg = Config(**TINY, inverse_consistency=5.0, lam_dice=1.0)
    sample = training_sample(marked_pair(), cfg, np.random.default_rng(0))
    torch.manual_seed(0)
    model = FSDiffRegNet(cfg)
    seen = []
    model.register_forward_hook(lambda _module, args, _out: seen.append(args[0].mean(dim=(1, 2, 3, 4))))
    parts = training_loss(model, NoiseSchedule(cfg), sample.moving, sample.fixed,
                          (sample.moving_labels, sample.fixed_labels))
    assert sorted(seen[0].tolist()) == [-0.5, 0.5]  # one batch: the pair, then the pair swapped
    assert parts["inverse"].item() > 0
    plain = parts["diffusion"] + cfg.lam * parts["ncc"] + cfg.lam_phi * parts["smooth"] + cfg.lam_dice * parts["dice"]
    assert torch.allclose(parts["loss"], plain + cfg.inverse_consistency * parts["inverse"])
    parts["loss"].backward()
    assert "inverse" not in training_loss(FSDiffRegNet(Config(**TINY)), NoiseSchedule(cfg), sample.moving,
                                          sample.fixed)


def test_an_inverse_consistent_run_validates_both_ways_and_resumes_its_step_count(data_dir, tmp_path):
    cfg = Config(**TINY, epochs=1, val_every=1, batch_size=2)
    (tmp_path / "tiny.json").write_text(cfg.to_json())
    run = tmp_path / "run"
    command = ["train", "--data", str(data_dir), "--out", str(run), "--config", str(tmp_path / "tiny.json"),
               "--train-limit", "2", "--val-limit", "1", "--directions", "both", "--inverse-consistency", "2"]
    main(command)
    cfg2 = Config(**TINY, epochs=2, val_every=1, batch_size=2)  # the budget raised; the stored options kept
    (tmp_path / "tiny.json").write_text(cfg2.to_json())
    main(command[:-4])
    stored = Config.from_dict(torch.load(run / "last.pt", weights_only=True)["config"])
    assert (stored.inverse_consistency, stored.directions, stored.epochs) == (2.0, "both", 2)
    with open(run / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows] == [1, 2]
    assert float(rows[0]["inverse"]) == 0 < float(rows[1]["inverse"])  # the flow head starts at zero
    log = (run / "train.log").read_text()
    assert "start epoch 1 step 1" in log and "epoch 2 done, step 2" in log
    assert "epoch 2 validation ED->ES" in log
    info = torch.load(run / "best.pt", weights_only=True)["info"]["validation_dice"]
    assert info["both directions"] == pytest.approx((info["mean"] + info["mean ED->ES"]) / 2)
