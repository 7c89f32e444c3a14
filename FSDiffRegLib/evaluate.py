"""The paper's Table 1 on the validation split, through the full ``register`` pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from . import acdc
from .field import apply_field
from .metrics import heart_dice
from .network import FSDiffRegNet
from .register import register_images

COLUMNS = ["LV", "Myo", "RV", "mean", "heart", "folding_percent", "sd_jacobian", "seconds"]


def evaluate_pair(pair: acdc.AcdcPair, model: FSDiffRegNet, device: torch.device) -> dict[str, float]:
    """Dice of the moving labels warped onto the fixed grid, with the field's metrics."""
    fixed, moving = sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving))
    result = register_images(fixed, moving, model, device)
    warped = apply_field(sitk.ReadImage(str(pair.moving_labels)), result.field, nearest=True)
    fixed_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(pair.fixed_labels)))
    return {**heart_dice(sitk.GetArrayFromImage(warped), fixed_labels), **result.metrics}


def identity_row(pair: acdc.AcdcPair) -> dict[str, float]:
    """The 'Initial' row: Dice of the moving labels resampled onto the fixed grid, unwarped."""
    fixed_labels = sitk.ReadImage(str(pair.fixed_labels))
    moving = sitk.Resample(sitk.ReadImage(str(pair.moving_labels)), fixed_labels, sitk.Transform(),
                           sitk.sitkNearestNeighbor, 0)
    row = heart_dice(sitk.GetArrayFromImage(moving), sitk.GetArrayFromImage(fixed_labels))
    return {**row, "folding_percent": 0.0, "sd_jacobian": 0.0, "seconds": 0.0}


def summarize(rows: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each column."""
    return {c: (float(np.mean([r[c] for r in rows])), float(np.std([r[c] for r in rows]))) for c in COLUMNS}


def markdown_table(named: dict[str, dict[str, tuple[float, float]]]) -> str:
    """One row per method: mean (sd) of each column."""
    header = "| method | Dice LV | Dice Myo | Dice RV | Dice mean | Dice heart | abs(J)<=0 % | SD abs(J) | s/pair |"
    lines = [header, "|" + "---|" * 9]
    for name, s in named.items():
        cells = [f"{s[c][0]:.3f} ({s[c][1]:.3f})" for c in COLUMNS[:5]]
        cells += [f"{s['folding_percent'][0]:.4f}", f"{s['sd_jacobian'][0]:.3f}", f"{s['seconds'][0]:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate(data_dir: Path, model: FSDiffRegNet, device: torch.device, limit: int | None = None) -> str:
    """Markdown table of 'Initial' and this model on the validation split."""
    pairs = acdc.split(data_dir, "validation")[:limit]
    initial = summarize([identity_row(p) for p in pairs])
    ours = summarize([evaluate_pair(p, model, device) for p in pairs])
    return markdown_table({"Initial": initial, "FSDiffReg": ours})
