"""The network's one inference pass, as the paper runs it: input {m, f, f} at diffusion step t = 0."""

from __future__ import annotations

import torch

from .network import FSDiffRegNet


@torch.no_grad()
def predict(model: FSDiffRegNet, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The score and the flow (N x 3 x D x H x W, network voxels) from ``moving`` to ``fixed`` (N x 1 x D x H x W)."""
    return model(moving, fixed, fixed, torch.zeros(moving.shape[0], dtype=torch.long, device=moving.device))
