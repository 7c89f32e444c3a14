"""Where the heart is, from the registration network's own features, and a field kept regular elsewhere.

A small head reads every decoder block's features (both decoders) and the two images, and gives the
probability that a voxel of the fixed image is heart (ACDC labels > 0). Its first layer is linear, so
it runs on each block at that block's resolution and only the sums are brought to the full grid:
the same result as on the features upsampled first, at a small part of the memory. The network stays
frozen; the head is trained on the training labels alone. ``blurred_outside`` keeps the flow within
reach of the heart and blurs it elsewhere, where it fits only noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import acdc
from .network import FSDiffRegNet
from .preprocess import prepare_pair
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
    """logit = w2 . relu(sum_i up(A_i z_i) + b) + c over the blocks' features f_i, each standardised
    per channel (z_i = (f_i - mean_i) / std_i, the statistics of the training features)."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.project = nn.ModuleList(nn.Conv3d(c, HIDDEN, 1, bias=False) for c in channels)
        self.bias = nn.Parameter(torch.zeros(1, HIDDEN, 1, 1, 1))
        self.out = nn.Conv3d(HIDDEN, 1, 1)
        for i, c in enumerate(channels):
            self.register_buffer(f"mean{i}", torch.zeros(1, c, 1, 1, 1))
            self.register_buffer(f"std{i}", torch.ones(1, c, 1, 1, 1))

    def standardise_on(self, examples: list[list[torch.Tensor]]) -> None:
        """Set each channel's mean and standard deviation from the training features."""
        for i in range(len(self.project)):
            stacked = torch.cat([f[i].float().transpose(0, 1).flatten(1) for f in examples], dim=1)
            getattr(self, f"mean{i}").copy_(stacked.mean(dim=1).view(1, -1, 1, 1, 1))
            getattr(self, f"std{i}").copy_(stacked.std(dim=1).view(1, -1, 1, 1, 1) + 1e-6)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits on the grid halved along each axis (the mask is widened by several voxels anyway)."""
        size = tuple(n // 2 for n in features[-1].shape[2:])
        sums: dict[tuple[int, ...], torch.Tensor] = {}  # projections summed per resolution, resized once
        for i, (project, f) in enumerate(zip(self.project, features)):
            f = F.adaptive_avg_pool3d(f.float(), size) if f.shape[2] > size[0] else f.float()
            p = project((f - getattr(self, f"mean{i}")) / getattr(self, f"std{i}"))
            key = tuple(p.shape[2:])
            sums[key] = sums[key] + p if key in sums else p
        hidden = self.bias + sum(F.interpolate(p, size=size, mode="trilinear", align_corners=True)
                                 if key != size else p for key, p in sums.items())
        return self.out(F.relu(hidden))


def blurred_outside(flow: torch.Tensor, heart: torch.Tensor) -> torch.Tensor:
    """``flow`` kept where ``heart`` (a probability, N x 1 x D x H x W) is, widened by MASK_SIGMA, and
    blurred by OUTSIDE_SIGMA beyond it."""
    near = (3 * gaussian_blur(heart, MASK_SIGMA)).clamp(max=1.0)
    return near * flow + (1 - near) * gaussian_blur(flow, OUTSIDE_SIGMA)


@dataclass(frozen=True)
class HeartTraining:
    """Training of the head: Adam ``steps`` at ``lr`` on the first ``pairs`` ACDC training pairs."""

    steps: int = 1500
    lr: float = 3e-3
    pairs: int = 24
    seed: int = 0


def heart_on_grid(pair: acdc.AcdcPair, grid: sitk.Image) -> torch.Tensor:
    """The fixed frame's labelled heart (labels > 0) on ``grid``, 1 x 1 x D x H x W."""
    labels = sitk.ReadImage(str(pair.fixed_labels)) > 0
    heart = sitk.Resample(labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return torch.from_numpy(sitk.GetArrayFromImage(heart).astype(np.float32))[None, None]


def pair_features(model: FSDiffRegNet, pair: acdc.AcdcPair) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The pair's decoder features (half precision, to hold many pairs) and its heart on the network grid."""
    prepared = prepare_pair(sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving)), model.cfg)
    moving, fixed = (torch.from_numpy(a)[None, None] for a in (prepared.moving, prepared.fixed))
    return [f.half() for f in decoder_features(model, moving, fixed)], heart_on_grid(pair, prepared.grid)


def train_heart(model: FSDiffRegNet, pairs: list[acdc.AcdcPair], options: HeartTraining = HeartTraining(),
                log: Callable[[str], None] = lambda message: None) -> HeartHead:
    """A head trained on whole volumes of the given pairs (binary cross-entropy), the network frozen."""
    examples = [pair_features(model, pair) for pair in pairs[: options.pairs]]
    torch.manual_seed(options.seed)
    head = HeartHead([f.shape[1] for f in examples[0][0]])
    head.standardise_on([features for features, _ in examples])
    optimizer = torch.optim.Adam(head.parameters(), lr=options.lr)
    order = torch.randint(0, len(examples), (options.steps,), generator=torch.Generator().manual_seed(options.seed))
    for step, index in enumerate(order.tolist()):
        features, heart = examples[index]
        logits = head(features)
        loss = F.binary_cross_entropy_with_logits(logits, F.adaptive_avg_pool3d(heart, logits.shape[2:]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0:
            log(f"heart head step {step + 1}/{options.steps}: loss {loss.item():.4f}")
    return head.eval()
