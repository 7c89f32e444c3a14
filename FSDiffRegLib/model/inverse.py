"""A flow's inverse, and the network run on both orders of a pair (issue 21: the direction it was trained in).

A flow u maps a voxel p of the fixed grid to p + u(p) in the moving image (FSDiffRegLib.model.spatial). Its inverse
v maps back: v(x) = -u(x + v(x)), solved by the damped fixed-point iteration v <- v - (v + u(x + v)) / 2 (as
FSDiffRegLib.pipeline.strain carries points), which converges where the map is locally invertible.
"""

from __future__ import annotations

import torch

from .spatial import warp

ITERATIONS = 40  # damped fixed-point steps; the residual halves at least every step where |grad u| < 1
DAMPING = 0.5


def invert_flow(flow: torch.Tensor, iterations: int = ITERATIONS) -> torch.Tensor:
    """The inverse (N, 3, D, H, W) of ``flow``: p + v(p) + u(p + v(p)) = p; u read at the grid's border outside."""
    v = -flow
    for _ in range(iterations):
        v = v - DAMPING * (v + warp(flow, v, padding="border"))
    return v


def inverse_residual(flow: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """|v(p) + u(p + v(p))| per voxel (N, D, H, W): how far ``inverse`` is from inverting ``flow``."""
    return (inverse + warp(flow, inverse, padding="border")).norm(dim=1)
