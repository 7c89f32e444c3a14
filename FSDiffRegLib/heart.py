"""Where the heart is, from the registration network's own features, and a field kept regular elsewhere.

A small head reads every decoder block's features (both decoders, caught from the network's one
forward pass) and the two images, and gives the probability that a voxel of the fixed image is
heart (ACDC labels > 0). Its first layer is linear, so it runs on each block at that block's
resolution and only the sums are brought to one grid: the same result as on the features resized
first, at a small part of the memory. The network stays frozen; the head is trained on training
labels alone and saved beside the weights it reads (``heart_path``). ``blurred_outside`` keeps the
flow within reach of the heart and blurs it elsewhere, where it fits only noise: about half of the
Jacobian's spread lies there (docs/method.md, "Instance refinement").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import acdc
from .defaults import HEART_TRAINING, HeartTraining
from .errors import WeightsError
from .metrics import dice
from .network import FSDiffRegNet
from .outputs import OutputError
from .preprocess import prepare_pair
from .resources import weights_path
from .spatial import gaussian_blur
from .weights import checked_payload, first_line, load_model, write_with_checksum

HIDDEN = 32  # hidden units of the head
OUTSIDE_SIGMA = (2.0, 6.0, 6.0)  # blur of the flow away from the heart, network voxels (D, H, W)
MASK_SIGMA = (4 / 3, 4.0, 4.0)  # the heart mask widened by about 4 voxels in-plane before blending


def heart_path(weights: Path) -> Path:
    """Where the heart head of ``weights`` lies: beside them, ``<stem>_heart.pt``."""
    return weights.with_name(weights.stem + "_heart.pt")


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
        model(moving, fixed, fixed, torch.zeros(moving.shape[0], dtype=torch.long, device=moving.device))
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

    @torch.no_grad()
    def probability(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The heart's probability on the grid of the last input, N x 1 x D x H x W."""
        logits = self(features)
        return torch.sigmoid(F.interpolate(logits, size=features[-1].shape[2:], mode="trilinear",
                                           align_corners=True))


def blurred_outside(flow: torch.Tensor, heart: torch.Tensor) -> torch.Tensor:
    """``flow`` kept where ``heart`` (a probability, N x 1 x D x H x W) is, widened by MASK_SIGMA, and
    blurred by OUTSIDE_SIGMA beyond it."""
    near = (3 * gaussian_blur(heart, MASK_SIGMA)).clamp(max=1.0)
    return near * flow + (1 - near) * gaussian_blur(flow, OUTSIDE_SIGMA)


def save_heart(head: HeartHead, path: Path, info: dict) -> None:
    """Write {config: {channels}, state_dict, info} and its ``.sha256`` beside it."""
    payload = {"config": {"channels": head.channels},
               "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()}, "info": info}
    write_with_checksum(payload, path)


def load_heart(weights: Path, network_sha256: str) -> HeartHead | None:
    """The head saved beside ``weights`` (None when there is none), checked against its checksum and
    against the network it was trained on."""
    path = heart_path(weights)
    if not path.is_file():
        return None
    payload, _ = checked_payload(path)
    trained_on = payload.get("info", {}).get("network_sha256")
    if trained_on != network_sha256:
        raise WeightsError(f"heart head {path.name} was trained for other weights than {weights.name} "
                           f"(network SHA256 {str(trained_on)[:12]}... != {network_sha256[:12]}...)")
    try:
        head = HeartHead(list(payload["config"]["channels"]))
        head.load_state_dict(payload["state_dict"])
    except Exception as err:  # a missing key, a shape that does not fit
        raise WeightsError(f"cannot load heart head {path}: {first_line(err)}") from None
    return head.eval()


def heart_on_grid(labels: sitk.Image, grid: sitk.Image) -> torch.Tensor:
    """A label map's heart (labels > 0) on ``grid``, 1 x 1 x D x H x W."""
    heart = sitk.Resample(labels > 0, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return torch.from_numpy(sitk.GetArrayFromImage(heart).astype(np.float32))[None, None]


def pair_features(model: FSDiffRegNet, pair: acdc.AcdcPair) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The pair's head inputs (half precision, to hold many pairs) and the fixed frame's heart on the grid."""
    prepared = prepare_pair(sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving)), model.cfg)
    moving, fixed = (torch.from_numpy(a)[None, None] for a in (prepared.moving, prepared.fixed))
    features = [f.half() for f in head_inputs(model, moving, fixed)]
    return features, heart_on_grid(sitk.ReadImage(str(pair.fixed_labels)), prepared.grid)


def train_heart(model: FSDiffRegNet, pairs: list[acdc.AcdcPair], options: HeartTraining = HEART_TRAINING,
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


def head_dice(model: FSDiffRegNet, head: HeartHead, pairs: list[acdc.AcdcPair]) -> list[float]:
    """The head's Dice against each pair's labelled heart (probability > 0.5) on the network grid."""
    scores = []
    for pair in pairs:
        features, heart = pair_features(model, pair)
        predicted = head.probability(features).numpy() > 0.5
        scores.append(dice(predicted, heart.numpy() > 0.5))
    return scores


def make_heart(data_dir: Path, weights: str | None, out: Path | None, options: HeartTraining,
               log: Callable[[str], None] = lambda message: None) -> dict:
    """Train a head for ``weights`` on the ACDC training split, measure it on the validation split and save
    it to ``out`` (default: beside the weights, where ``register`` finds it); an existing file (or checksum file
    beside it) is refused.
    Returns the head's info: the network it reads, its training and its validation Dice."""
    out = out or heart_path(weights_path(weights))
    for path in (out, out.with_name(out.name + ".sha256")):
        if os.path.lexists(path):
            raise OutputError(f"{path} exists: remove it first, or name another --out")
    model, about = load_model(weights)
    log(f"features of {options.pairs} training pairs through {about['name']}")
    head = train_heart(model, acdc.split(data_dir, "train"), options, log)
    scores = head_dice(model, head, acdc.split(data_dir, "validation"))
    info = {"network_sha256": about["sha256"], "weights": about["name"], "training": asdict(options),
            "validation_heart_dice": {"mean": round(float(np.mean(scores)), 4), "min": round(min(scores), 4),
                                      "pairs": len(scores)}}
    save_heart(head, out, info)
    return info
