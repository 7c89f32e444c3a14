"""Instance refinement on synthetic pairs with a known smooth displacement."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from FSDiffRegLib.config import Config
from FSDiffRegLib.refine import level_sizes, refine_flow
from FSDiffRegLib.spatial import warp

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


def refine(pair: dict[str, torch.Tensor], start: torch.Tensor, steps: int, **kwargs) -> torch.Tensor:
    return refine_flow(start, pair["moving"], pair["fixed"], pair["score"], CFG, steps, **kwargs)


def test_levels_of_the_network_grid_are_about_12_then_6_then_3_mm():
    assert level_sizes((32, 128, 128), 9) == [(16, 16, 16), (32, 32, 32), (32, 64, 64)]
    assert level_sizes((16, 48, 48), 9) == [(9, 9, 9), (16, 12, 12), (16, 24, 24)]  # never fewer voxels than the window
    assert level_sizes((4, 8, 8), 9) == [(4, 8, 8)] * 3  # nor more than the grid


def test_zero_steps_return_the_input(pair):
    start = 0.5 * pair["truth"]
    assert torch.equal(refine(pair, start, 0), start)


@pytest.mark.parametrize("diffeomorphic", [False, True])
def test_refinement_from_zero_recovers_the_known_displacement(pair, diffeomorphic):
    zero = torch.zeros_like(pair["truth"])
    refined = refine(pair, zero, 60, diffeomorphic=diffeomorphic)
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


def test_progress_lines_follow_the_contract(pair):
    lines: list[str] = []
    refine(pair, torch.zeros_like(pair["truth"]), 7, log=lines.append)
    assert lines[0] == "refining 0/7" and all(re.fullmatch(r"refining [0-6]/7", line) for line in lines)
    assert len(lines) == 7
    lines.clear()
    refine(pair, torch.zeros_like(pair["truth"]), 40, log=lines.append)
    assert lines == [f"refining {k}/40" for k in range(0, 40, 4)]
