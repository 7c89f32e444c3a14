"""Instance refinement: optimise the network's flow on the given pair itself.

Starting from the prediction, the flow is optimised directly (a free-form field on the
network grid) for N Adam steps with the training objective's registration terms: the
SDG-weighted local NCC (weights from the network's own diffusion score) and smoothness.
With ``diffeomorphic`` the optimised variable is a stationary velocity field, integrated
by scaling and squaring, which keeps the map invertible.
"""

from __future__ import annotations

from typing import Callable

import torch

from .config import Config
from .losses import score_weights, sdg_ncc_loss, smoothness_loss
from .spatial import integrate_velocity, warp

REFINE_LR = 0.05  # voxels per step, Adam


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
    """Return the flow after ``steps`` steps; ``smoothness`` overrides cfg.lam_phi.

    The diffeomorphic variant starts from v = flow (exp(v) ~ id + v for small v).
    """
    lam_phi = cfg.lam_phi if smoothness is None else smoothness
    weights = score_weights(score, cfg.gamma) if cfg.sdg else None
    variable = flow.detach().clone().requires_grad_(True)
    to_flow = integrate_velocity if diffeomorphic else (lambda v: v)
    optimizer = torch.optim.Adam([variable], lr=REFINE_LR)
    for step in range(steps):
        if step % max(steps // 10, 1) == 0:
            log(f"refining {step}/{steps}")
        field = to_flow(variable)
        loss = cfg.lam * sdg_ncc_loss(warp(moving, field), fixed, weights, cfg.ncc_window)
        loss = loss + lam_phi * smoothness_loss(field)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return to_flow(variable.detach())
