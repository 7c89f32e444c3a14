"""Where the heart is, from the registration network's own features, and a field kept regular elsewhere.

A small head reads every decoder block's features (both decoders, caught from the network's one
forward pass) and the two images, and gives the probability that a voxel of the fixed image is
heart (ACDC labels > 0). Its first layer is linear, so it runs on each block at that block's
resolution and only the sums are brought to one grid: the same result as on the features resized
first, at a small part of the memory. The network stays frozen; the head is trained on training
labels alone (``training.heart_head_train``) and saved beside the weights it reads (``weights.heart_head_path``).
``blurred_outside`` keeps the flow within reach of the heart and blurs it elsewhere, where it fits
only noise: about half of the Jacobian's spread lies there (docs/method.md, "Instance refinement").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from .network import FSDiffRegNet
from .predict import predict
from .spatial import gaussian_blur

HIDDEN = 32  # hidden units of the head
OUTSIDE_SIGMA = (2.0, 6.0, 6.0)  # blur of the flow away from the heart, network voxels (D, H, W)
MASK_SIGMA = (4 / 3, 4.0, 4.0)  # the heart mask widened by about 4 voxels in-plane before blending


@contextmanager
def decoder_outputs(model: FSDiffRegNet) -> Iterator[list[torch.Tensor]]:
    """A list that the network's forward passes inside the block fill with every decoder block's output
    (the diffusion decoder's, then the registration decoder's)."""
    caught: list[torch.Tensor] = []
    hooks = [decoder.register_forward_hook(lambda module, inputs, output: caught.extend(output))
             for decoder in (model.diff_decoder, model.reg_decoder)]
    try:
        yield caught
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def head_inputs(model: FSDiffRegNet, moving: torch.Tensor, fixed: torch.Tensor) -> list[torch.Tensor]:
    """The head's inputs from a forward pass as at inference ({m, f, f}, t = 0): the decoders' block
    outputs, then the fixed and moving images."""
    with decoder_outputs(model) as features:
        predict(model, moving, fixed)
    return features + [fixed, moving]


class HeartHead(nn.Module):
    """logit = w2 . relu(sum_i resize(A_i z_i) + b) + c over the inputs f_i, each standardised per
    channel (z_i = (f_i - mean_i) / std_i, the statistics of the training features)."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.channels = list(channels)
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
        depth, height, width = (n // 2 for n in features[-1].shape[2:])
        size = (depth, height, width)
        sums: dict[tuple[int, ...], torch.Tensor] = {}  # projections summed per resolution, resized once
        for i, (project, f) in enumerate(zip(self.project, features)):
            f = F.adaptive_avg_pool3d(f.float(), size) if f.shape[2] > size[0] else f.float()
            p = project((f - getattr(self, f"mean{i}")) / getattr(self, f"std{i}"))
            key = tuple(p.shape[2:])
            sums[key] = sums[key] + p if key in sums else p
        hidden = self.bias + sum(F.interpolate(p, size=size, mode="trilinear", align_corners=True)
                                 if key != size else p for key, p in sums.items())
        return self.out(F.relu(hidden))

    @torch.no_grad()
    def probability(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The heart's probability on the grid of the last input, N x 1 x D x H x W."""
        logits = self(features)
        return torch.sigmoid(F.interpolate(logits, size=features[-1].shape[2:], mode="trilinear",
                                           align_corners=True))


def blurred_outside(flow: torch.Tensor, heart_probability: torch.Tensor) -> torch.Tensor:
    """``flow`` kept where the heart head finds the heart (``heart_probability``, N x 1 x D x H x W), widened by
    MASK_SIGMA, and blurred by OUTSIDE_SIGMA beyond it."""
    near = (3 * gaussian_blur(heart_probability, MASK_SIGMA)).clamp(max=1.0)
    return near * flow + (1 - near) * gaussian_blur(flow, OUTSIDE_SIGMA)
