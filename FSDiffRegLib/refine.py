"""Instance refinement: optimise the network's flow on the given pair itself.

Starting from the prediction, a correction of the flow is optimised for N Adam steps with
the training objective's registration terms: the SDG-weighted local NCC (weights from the
network's own diffusion score) and smoothness. It runs coarse to fine, on the images and
weights averaged down to voxels of about 6 x 12 x 12 mm, then 3 x 6 x 6 mm, then
3 x 3 x 3 mm (LEVEL_FACTORS of the 3.15 x 1.5 x 1.5 mm network grid): there a step costs
a small part of one on the network grid, and on the coarse levels the NCC window
(REFINE_WINDOW voxels) spans enough of the heart to pull large misalignments in. Each
level's correction is interpolated back and added to the flow, which keeps the network's
fine detail. Window, smoothness weight and levels were chosen on the validation split
(README, "Instance refinement"). With ``diffeomorphic`` a level optimises a stationary
velocity field instead, whose exponential (scaling and squaring) is composed with the
flow, so an invertible map stays invertible.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .config import Config
from .defaults import REFINE_SMOOTHNESS
from .losses import score_weights, sdg_ncc_loss, smoothness_loss
from .spatial import integrate_velocity, upsample_flow, warp

LEVEL_FACTORS = ((2, 8, 8), (1, 4, 4), (1, 2, 2))  # (D, H, W) shrink of each level, coarse to fine
REFINE_LR = 0.2  # coarse voxels per step, Adam
REFINE_WINDOW = 13  # NCC window of the refinement, voxels of each level


def level_sizes(size: tuple[int, ...], window: int) -> list[tuple[int, ...]]:
    """Grid size of each level, never fewer voxels along an axis than the NCC window (or the grid)."""
    return [tuple(max(min(n, window), round(n / k)) for n, k in zip(size, factors)) for factors in LEVEL_FACTORS]


def compose(flow: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """The flow of x -> x + step(x) followed by ``flow``: step(x) + flow(x + step(x))."""
    return step + warp(flow, step, padding="border")


def refine_flow(
    flow: torch.Tensor,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    score: torch.Tensor,
    cfg: Config,
    steps: int,
    smoothness: float | None = None,
    diffeomorphic: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> torch.Tensor:
    """The flow after ``steps`` steps, split evenly over the levels; ``smoothness`` overrides REFINE_SMOOTHNESS."""
    lam_phi = REFINE_SMOOTHNESS if smoothness is None else smoothness
    weights = score_weights(score, cfg.gamma) if cfg.sdg else torch.ones_like(fixed)
    size = tuple(flow.shape[2:])
    flow = flow.detach()
    done = 0
    for level, coarse in enumerate(level_sizes(size, REFINE_WINDOW)):
        level_steps = steps * (level + 1) // len(LEVEL_FACTORS) - steps * level // len(LEVEL_FACTORS)
        if level_steps == 0:
            continue
        m, f, w = (F.adaptive_avg_pool3d(x, coarse) for x in (moving, fixed, weights))
        base = upsample_flow(flow, coarse)
        variable = torch.zeros_like(base, requires_grad=True)
        optimizer = torch.optim.Adam([variable], lr=REFINE_LR)
        for _ in range(level_steps):
            if done % max(steps // 10, 1) == 0:
                log(f"refining {done}/{steps}")
            field = compose(base, integrate_velocity(variable)) if diffeomorphic else base + variable
            loss = cfg.lam * sdg_ncc_loss(warp(m, field), f, w, REFINE_WINDOW) + lam_phi * smoothness_loss(field)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
        with torch.no_grad():
            if diffeomorphic:
                flow = compose(flow, upsample_flow(integrate_velocity(variable), size))
            else:
                flow = flow + upsample_flow(variable, size)
    return flow
