"""The similarity, SDG weighting, smoothness and diffusion losses."""

from __future__ import annotations

import pytest
import torch

from FSDiffRegLib.model.losses import (
    local_ncc_map,
    one_hot,
    score_weights,
    sdg_ncc_loss,
    smoothness_loss,
    soft_dice_loss,
)


def textured(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, 16, 24, 24, generator=g) * 2 - 1


def test_local_ncc_is_one_for_identical_images_and_lower_for_others():
    a = textured(0)
    assert torch.allclose(local_ncc_map(a, a)[..., 4:-4, 4:-4, 4:-4], torch.ones(1), atol=1e-3)
    assert local_ncc_map(a, textured(1)).mean() < 0.1
    assert torch.isclose(sdg_ncc_loss(a, a, None), -local_ncc_map((a + 1) / 2, (a + 1) / 2).mean())


def test_sdg_pulls_harder_where_the_score_marks_hard_voxels():
    """The same mismatch gets a larger gradient where sigmoid(S)^gamma is larger."""
    fixed = textured(0)
    warped = fixed.clone()
    warped[..., 4:8, 4:10, 4:10] = textured(2)[..., 4:8, 4:10, 4:10]  # mismatch in region A
    warped[..., 4:8, 14:20, 14:20] = textured(3)[..., 4:8, 14:20, 14:20]  # same size, region B
    score = torch.full_like(fixed, -3.0)
    score[..., :, :12, :12] = 3.0  # A is "hard"
    warped.requires_grad_(True)
    sdg_ncc_loss(warped, fixed, score_weights(score, gamma=2.0)).backward()
    grad = warped.grad.abs()
    assert grad[..., 4:8, 4:10, 4:10].mean() > 5 * grad[..., 4:8, 14:20, 14:20].mean()
    assert torch.all(score_weights(score, 2.0) <= score_weights(score, 1.0))


def test_smoothness_is_zero_for_translation_positive_for_shear():
    flow = torch.ones(1, 3, 8, 8, 8)
    assert smoothness_loss(flow) == 0
    flow[:, 0] = torch.arange(8.0)
    assert torch.isclose(smoothness_loss(flow), torch.tensor(1 / 3 * (1 / 3) * 7 / 7))


def test_soft_dice_loss_is_zero_for_equal_maps_and_one_for_disjoint_ones():
    labels = torch.zeros(1, 1, 4, 4, 4, dtype=torch.uint8)
    labels[..., :2] = 1
    labels[..., 2:] = 3
    maps = one_hot(labels, 3)
    assert maps.shape == (1, 3, 4, 4, 4) and maps.sum() == 64
    assert soft_dice_loss(maps, maps).item() == pytest.approx(0.0, abs=1e-6)
    swapped = one_hot(4 - labels, 3)  # 1 <-> 3 disjoint; 2 absent from both (matched)
    assert soft_dice_loss(swapped, maps).item() == pytest.approx(2 / 3, abs=1e-6)
