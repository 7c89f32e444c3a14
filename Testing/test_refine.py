"""Instance refinement on synthetic pairs with a known smooth displacement."""

from __future__ import annotations

import re

import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from FSDiffRegLib.defaults import MAX_STEPS, REFINE_OPTION, REFINE_STEPS, RefineOptions
from FSDiffRegLib.errors import InputError
from FSDiffRegLib.events import Event, line, read
from FSDiffRegLib.imaging.metrics import heart_labels_dice
from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.spatial import warp
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.pipeline.refine import Progress, duration, level_sizes, refine_flow
from FSDiffRegLib.pipeline.register import register_images
from FSDiffRegLib.resources import SAMPLE

SIZE = (32, 128, 128)  # (D, H, W), the network grid
CFG = Config()
INNER = (slice(None), slice(None), slice(4, -4), slice(16, -16), slice(16, -16))  # away from the borders


def smooth_noise(channels: int, passes: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, *SIZE, generator=generator)
    for _ in range(passes):
        x = F.avg_pool3d(x, 5, stride=1, padding=2, count_include_pad=False)
    return x


@pytest.fixture(scope="module")
def pair() -> dict[str, torch.Tensor]:
    """moving: textured image in [-1, 1]; fixed(p) = moving(p + truth(p)), truth smooth on the scale
    of the coarse levels' NCC windows (as the heart's motion), up to 3 voxels in-plane, 1 across."""
    image = smooth_noise(1, 4, seed=0)
    moving = torch.tanh(image / image.std())
    knots = torch.rand(1, 3, 2, 3, 3, generator=torch.Generator().manual_seed(1)) * 2.0 - 1.0
    truth = F.interpolate(knots, size=SIZE, mode="trilinear", align_corners=True)
    truth = truth * torch.tensor([1.0, 3.0, 3.0])[None, :, None, None, None]
    return {"moving": moving, "fixed": warp(moving, truth), "truth": truth, "score": torch.zeros(1, 1, *SIZE)}


def error(flow: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean voxel distance between a flow and the true displacement, inside the image."""
    return float((flow - truth)[INNER].norm(dim=1).mean())


def refine(pair: dict[str, torch.Tensor], start: torch.Tensor, steps: int, log=lambda line: None,
           **options) -> torch.Tensor:
    return refine_flow(start, pair["moving"], pair["fixed"], pair["score"], CFG, RefineOptions(steps, **options), log)


def test_levels_of_the_network_grid_are_about_12_then_6_then_3_mm():
    assert level_sizes((32, 128, 128), 9) == [(16, 16, 16), (32, 32, 32), (32, 64, 64)]
    assert level_sizes((16, 48, 48), 9) == [(9, 9, 9), (16, 12, 12), (16, 24, 24)]  # never fewer voxels than the window
    assert level_sizes((4, 8, 8), 9) == [(4, 8, 8)] * 3  # nor more than the grid


def test_zero_steps_return_the_input(pair):
    start = 0.5 * pair["truth"]
    assert torch.equal(refine(pair, start, 0), start)


@pytest.mark.parametrize("diffeomorphic", [False, True])
@pytest.mark.parametrize("gaussian", [False, True])
def test_refinement_from_zero_recovers_the_known_displacement(pair, diffeomorphic, gaussian):
    zero = torch.zeros_like(pair["truth"])
    refined = refine(pair, zero, 60, diffeomorphic=diffeomorphic, gaussian=gaussian)
    assert error(refined, pair["truth"]) < 0.35 * error(zero, pair["truth"])
    for axis, least_slope in ((0, 0.6), (1, 0.85), (2, 0.85)):  # right sign and voxel units, per component
        r, t = refined[INNER][:, axis].flatten(), pair["truth"][INNER][:, axis].flatten()
        assert float(torch.corrcoef(torch.stack([r, t]))[0, 1]) > 0.85
        assert least_slope < float((r * t).sum() / (t * t).sum()) < 1.1


def test_refinement_improves_a_partial_flow(pair):
    start = 0.5 * pair["truth"]
    refined = refine(pair, start, 40)
    assert error(refined, pair["truth"]) < 0.75 * error(start, pair["truth"])


def test_a_perfect_flow_stays_within_half_a_voxel(pair):
    assert error(refine(pair, pair["truth"], 20), pair["truth"]) < 0.5


SAMPLE_MODES = {"plain": RefineOptions(REFINE_STEPS, gaussian=False, heart=False),
                "gaussian": RefineOptions(REFINE_STEPS, heart=False), "default": REFINE_OPTION}


@pytest.fixture(scope="module")
def sample_registrations() -> dict[str, tuple[float, dict]]:
    """The bundled sample pair (ES onto ED) refined in each of SAMPLE_MODES: mean Dice of the warped labels and
    the field's metrics."""
    model, _ = load_model(None)
    read = {name: sitk.ReadImage(str(SAMPLE / f"acdc091_{name}.nii.gz"))
            for name in ("ED", "ES", "ES_labels", "ED_labels")}
    results = {}
    for mode, options in SAMPLE_MODES.items():
        reg = register_images(read["ED"], read["ES"], model, torch.device("cpu"), read["ES_labels"], refine=options)
        dice = heart_labels_dice(sitk.GetArrayFromImage(reg.warped_labels), sitk.GetArrayFromImage(read["ED_labels"]))
        results[mode] = dice["mean"], reg.metrics
    return results


def folded_before_removal(metrics: dict) -> int:
    """Voxels the refined field folded (fixed grid and heart grid) before ``register`` removed its folds."""
    return metrics["unfold"]["folded_before"] + metrics["unfold"]["folded_before_fine"]


def test_gaussian_refinement_of_a_real_pair_is_fold_free_and_smoother_at_the_same_dice(sample_registrations):
    (plain_dice, plain), (dice, smooth) = sample_registrations["plain"], sample_registrations["gaussian"]
    assert folded_before_removal(plain) > 0 and folded_before_removal(smooth) == 0
    assert plain["folding_percent"] == smooth["folding_percent"] == 0  # as delivered: no fold either way
    assert smooth["sd_jacobian"] < plain["sd_jacobian"] - 0.02  # 0.03 before the fold removal smoothed plain's folds
    assert dice > plain_dice - 0.002


def test_the_default_blurs_away_from_the_heart_for_a_smoother_field_at_the_same_dice(sample_registrations):
    (gaussian_dice, gaussian), (dice, default) = sample_registrations["gaussian"], sample_registrations["default"]
    assert default["refine"]["heart"] and not gaussian["refine"]["heart"]
    assert folded_before_removal(default) == 0 and default["folding_percent"] == 0
    assert default["sd_jacobian"] < gaussian["sd_jacobian"] - 0.02
    assert dice > gaussian_dice - 0.002


def test_progress_events_say_steps_work_and_time_left(pair):
    said: list[Event] = []
    refine(pair, torch.zeros_like(pair["truth"]), 7, log=said.append)
    assert all(e.type == "progress" and e.stage == "refining" and e.total == 7 for e in said)
    assert (said[0].step, said[0].fraction, said[-1].step, said[-1].fraction) == (0, 0.0, 7, 1.0)
    assert said[0].text == "refining: 0 of 7 steps done (0 % of the work)"
    assert said[-1].text == "refining: 7 of 7 steps done (100 % of the work)"
    assert all(re.fullmatch(r"refining: [1-6] of 7 steps done \(\d+ % of the work\), about \d+ (s|min \d+ s) left",
                            e.text) for e in said[1:-1])
    assert [read(line(e)) for e in said] == said  # as they cross to the Slicer module


class Clock:
    """A clock that moves ``tick`` seconds at each reading."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_progress_counts_work_so_that_fine_steps_weigh_more():
    said: list[Event] = []
    progress = Progress([1] * 5 + [3] * 5, said.append, Clock(1.0))  # 1 s a step, whatever its work
    for _ in range(10):
        progress.step()
    assert [(e.step, round(100 * e.fraction)) for e in said] == [(0, 0), (2, 10), (4, 20), (6, 40), (7, 55), (8, 70),
                                                                  (9, 85), (10, 100)]
    assert [e.text for e in said[:2]] == ["refining: 0 of 10 steps done (0 % of the work)",
                                          "refining: 2 of 10 steps done (10 % of the work), about 18 s left"]
    assert [e.text.split("about ")[-1] for e in said[2:-1]] == ["16 s left", "9 s left", "6 s left", "3 s left",
                                                                 "2 s left"]


def test_slow_steps_give_a_line_at_least_every_ten_seconds():
    said: list[Event] = []
    progress = Progress([1] * 1000, said.append, Clock(11.0))
    for _ in range(30):
        progress.step()
    assert len(said) == 31
    assert said[-1].text == "refining: 30 of 1000 steps done (3 % of the work), about 2 h 57 min left"


def test_durations_read_naturally():
    assert [duration(s) for s in (0.4, 42, 185, 7440)] == ["0 s", "42 s", "3 min 5 s", "2 h 4 min"]


@pytest.mark.parametrize("options, words", [
    ({"steps": -1}, "at least 0"), ({"steps": MAX_STEPS + 1}, f"at most {MAX_STEPS}"), ({"steps": 2.5}, "whole"),
    ({"smoothness": -5.0}, "at least 0"), ({"smoothness": float("nan")}, "finite"),
    ({"smoothness": float("inf")}, "finite"), ({"window": 8}, "odd"), ({"window": 1}, "at least 3"),
])
def test_refine_options_are_checked_when_made(options, words):
    with pytest.raises(InputError, match=words):
        RefineOptions(**options)
