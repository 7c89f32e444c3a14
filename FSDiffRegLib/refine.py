"""Instance refinement: optimise the network's flow on the given pair itself.

Starting from the prediction, the flow is optimised directly (a free-form field on the
network grid) for N Adam steps with the training objective's registration terms: the
SDG-weighted local NCC (weights from the network's own diffusion score) and smoothness.
"""

from __future__ import annotations

from typing import Callable

import torch

from .config import Config
from .losses import score_weights, sdg_ncc_loss, smoothness_loss
from .spatial import warp

REFINE_LR = 0.05  # voxels per step, Adam


def refine_flow(
    flow: torch.Tensor,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    score: torch.Tensor,
    cfg: Config,
    steps: int,
    smoothness: float | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> torch.Tensor:
    """Return the flow after ``steps`` steps; ``smoothness`` overrides cfg.lam_phi."""
    lam_phi = cfg.lam_phi if smoothness is None else smoothness
    weights = score_weights(score, cfg.gamma) if cfg.sdg else None
    field = flow.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([field], lr=REFINE_LR)
    for step in range(steps):
        if step % max(steps // 10, 1) == 0:
            log(f"refining {step}/{steps}")
        loss = cfg.lam * sdg_ncc_loss(warp(moving, field), fixed, weights, cfg.ncc_window)
        loss = loss + lam_phi * smoothness_loss(field)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return field.detach()
