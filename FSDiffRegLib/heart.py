"""Where the heart is, from the registration network's own features, and a field kept regular elsewhere.

A small head reads every decoder block's features (both decoders) and the two images, and gives the
probability that a voxel of the fixed image is heart (ACDC labels > 0). Its first layer is linear, so
it runs on each block at that block's resolution and only the sums are brought to the full grid:
the same result as on the features upsampled first, at a small part of the memory. The network stays
frozen; the head is trained on the training labels alone. ``blurred_outside`` keeps the flow within
reach of the heart and blurs it elsewhere, where it fits only noise.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .network import FSDiffRegNet
from .spatial import gaussian_blur

HIDDEN = 32  # hidden units of the head
OUTSIDE_SIGMA = (2.0, 6.0, 6.0)  # blur of the flow away from the heart, network voxels (D, H, W)
MASK_SIGMA = (4 / 3, 4.0, 4.0)  # the heart mask widened by about 4 voxels in-plane before blending


@torch.no_grad()
def decoder_features(model: FSDiffRegNet, moving: torch.Tensor, fixed: torch.Tensor) -> list[torch.Tensor]:
    """Every decoder block's output (diffusion decoder, then registration decoder) and the two images,
    each at its own resolution; inputs as the network takes them at inference ({m, f, f}, t = 0)."""
    temb = model.time(torch.zeros(moving.shape[0], dtype=torch.long, device=moving.device))
    skips, h = model.encoder(torch.cat([moving, fixed, fixed], dim=1), temb)
    diffusion = model.diff_decoder(h, skips, temb)
    guide = diffusion if model.cfg.fdg else None
    return diffusion + model.reg_decoder(h, skips, temb, guide=guide) + [fixed, moving]


class HeartHead(nn.Module):
    """logit = w2 . relu(sum_i up(A_i f_i) + b) + c over the blocks' features f_i."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.project = nn.ModuleList(nn.Conv3d(c, HIDDEN, 1, bias=False) for c in channels)
        self.bias = nn.Parameter(torch.zeros(1, HIDDEN, 1, 1, 1))
        self.out = nn.Conv3d(HIDDEN, 1, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[-1].shape[2:]
        hidden = self.bias
        for project, f in zip(self.project, features):
            p = project(f)
            hidden = hidden + (p if p.shape[2:] == size else F.interpolate(p, size=size, mode="trilinear",
                                                                             align_corners=True))
        return self.out(F.relu(hidden))


def blurred_outside(flow: torch.Tensor, heart: torch.Tensor) -> torch.Tensor:
    """``flow`` kept where ``heart`` (a probability, N x 1 x D x H x W) is, widened by MASK_SIGMA, and
    blurred by OUTSIDE_SIGMA beyond it."""
    near = (3 * gaussian_blur(heart, MASK_SIGMA)).clamp(max=1.0)
    return near * flow + (1 - near) * gaussian_blur(flow, OUTSIDE_SIGMA)
