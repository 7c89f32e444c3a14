"""Training the heart head on the frozen network's features (ACDC training labels), and its validation Dice."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from ..defaults import HEART_HEAD_TRAINING, HeartHeadTraining
from ..errors import OutputError
from ..events import Report, ignore, note, progress
from ..imaging import acdc
from ..imaging.metrics import dice
from ..imaging.preprocess import prepare_pair
from ..model.heart_head import HeartHead, head_inputs
from ..model.network import FSDiffRegNet
from ..model.weights import heart_head_path, load_model, save_heart_head
from ..resources import weights_path


def heart_labels_on_grid(labels: sitk.Image, grid: sitk.Image) -> torch.Tensor:
    """A label map's heart (labels > 0) on ``grid``, 1 x 1 x D x H x W."""
    heart_labels = sitk.Resample(labels > 0, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return torch.from_numpy(sitk.GetArrayFromImage(heart_labels).astype(np.float32))[None, None]


def pair_features(model: FSDiffRegNet, pair: acdc.AcdcPair) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The pair's head inputs (half precision, to hold many pairs) and the fixed frame's heart on the grid."""
    prepared = prepare_pair(sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving)), model.cfg)
    moving, fixed = (torch.from_numpy(a)[None, None] for a in (prepared.moving, prepared.fixed))
    features = [f.half() for f in head_inputs(model, moving, fixed)]
    return features, heart_labels_on_grid(sitk.ReadImage(str(pair.fixed_labels)), prepared.grid)


def train_heart_head(model: FSDiffRegNet, pairs: list[acdc.AcdcPair], options: HeartHeadTraining = HEART_HEAD_TRAINING,
                     log: Report = ignore) -> HeartHead:
    """A head trained on whole volumes of the given pairs (binary cross-entropy), the network frozen."""
    examples = [pair_features(model, pair) for pair in pairs[: options.pairs]]
    torch.manual_seed(options.seed)
    head = HeartHead([f.shape[1] for f in examples[0][0]])
    head.standardise_on([features for features, _ in examples])
    optimizer = torch.optim.Adam(head.parameters(), lr=options.lr)
    order = torch.randint(0, len(examples), (options.steps,), generator=torch.Generator().manual_seed(options.seed))
    for step, index in enumerate(order.tolist()):
        features, heart_labels = examples[index]
        logits = head(features)
        loss = F.binary_cross_entropy_with_logits(logits, F.adaptive_avg_pool3d(heart_labels, logits.shape[2:]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0:
            log(progress("training", step + 1, options.steps,
                         f"heart head: {step + 1} of {options.steps} steps done, loss {loss.item():.4f}"))
    return head.eval()


def head_dice(model: FSDiffRegNet, head: HeartHead, pairs: list[acdc.AcdcPair]) -> list[float]:
    """The head's Dice against each pair's labelled heart (probability > 0.5) on the network grid."""
    scores = []
    for pair in pairs:
        features, heart_labels = pair_features(model, pair)
        predicted = head.probability(features).numpy() > 0.5
        scores.append(dice(predicted, heart_labels.numpy() > 0.5))
    return scores


def make_heart_head(data_dir: Path, weights: str | None, out: Path | None, options: HeartHeadTraining,
               log: Report = ignore) -> dict:
    """Train a head for ``weights`` on the ACDC training split, measure it on the validation split and save
    it to ``out`` (default: beside the weights, where ``register`` finds it); an existing file (or checksum file
    beside it) is refused.
    Returns the head's info: the network it reads, its training and its validation Dice."""
    out = out or heart_head_path(weights_path(weights))
    for path in (out, out.with_name(out.name + ".sha256")):
        if os.path.lexists(path):
            raise OutputError(f"{path} exists: remove it first, or name another --out")
    model, about = load_model(weights)
    log(note(f"features of {options.pairs} training pairs through {about['name']}"))
    head = train_heart_head(model, acdc.split(data_dir, "train"), options, log)
    scores = head_dice(model, head, acdc.split(data_dir, "validation"))
    info = {"network_sha256": about["sha256"], "weights": about["name"], "training": asdict(options),
            "validation_heart_dice": {"mean": round(float(np.mean(scores)), 4), "min": round(min(scores), 4),
                                      "pairs": len(scores)}}
    save_heart_head(head, out, info)
    return info
