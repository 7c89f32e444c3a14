"""The paper's Table 1 on the validation split, through the full ``register`` pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from . import acdc
from .defaults import DEFAULT_REFINE, RefineOptions
from .field import apply_field
from .metrics import heart_dice
from .network import FSDiffRegNet
from .register import field_metrics, register_images

COLUMNS = ["LV", "Myo", "RV", "mean", "heart", "folding_percent", "sd_jacobian", "seconds", "peak_mb"]
HEADER = ["method", "Dice LV", "Dice Myo", "Dice RV", "Dice mean", "Dice heart", "abs(J)<=0 %", "SD abs(J)",
          "s/pair median", "s/pair mean", "peak MB"]


def score_field(field: sitk.Image, grid: sitk.Image, moving_labels: sitk.Image,
                fixed_labels: np.ndarray) -> dict[str, float]:
    """Dice of the moving labels warped through ``field`` onto the fixed grid; folding and SD|J| on ``grid``."""
    warped = apply_field(moving_labels, field, nearest=True)
    return {**heart_dice(sitk.GetArrayFromImage(warped), fixed_labels), **field_metrics(field, grid)}


def evaluate_pair(pair: acdc.AcdcPair, model: FSDiffRegNet, device: torch.device,
                  refine: RefineOptions = DEFAULT_REFINE) -> dict[str, float]:
    """Dice of the moving labels warped onto the fixed grid, with the field's metrics."""
    fixed, moving = sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving))
    result = register_images(fixed, moving, model, device, refine=refine)
    fixed_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(pair.fixed_labels)))
    row = score_field(result.field, result.grid, sitk.ReadImage(str(pair.moving_labels)), fixed_labels)
    return {**row, "seconds": result.metrics["seconds"]}


def identity_row(pair: acdc.AcdcPair) -> dict[str, float]:
    """The 'Initial' row: Dice of the moving labels resampled onto the fixed grid, unwarped."""
    fixed_labels = sitk.ReadImage(str(pair.fixed_labels))
    moving = sitk.Resample(sitk.ReadImage(str(pair.moving_labels)), fixed_labels, sitk.Transform(),
                           sitk.sitkNearestNeighbor, 0)
    row = heart_dice(sitk.GetArrayFromImage(moving), sitk.GetArrayFromImage(fixed_labels))
    return {**row, "folding_percent": 0.0, "sd_jacobian": 0.0, "seconds": 0.0}


def summarize(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, median and maximum of each column the rows have."""
    stats = {}
    for c in COLUMNS:
        if c in rows[0]:
            values = [r[c] for r in rows]
            stats[c] = {"mean": float(np.mean(values)), "sd": float(np.std(values)),
                        "median": float(np.median(values)), "max": float(np.max(values))}
    return stats


def _cell(s: dict[str, dict[str, float]], column: str, stat: str, digits: int) -> str:
    if column not in s:
        return "-"
    value = s[column][stat]
    return "n/a" if np.isnan(value) else f"{value:.{digits}f}"


def markdown_table(named: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per method: Dice mean (sd); mean folding and SD|J|; median and mean seconds; largest peak MB."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for name, s in named.items():
        cells = [f"{s[c]['mean']:.3f} ({s[c]['sd']:.3f})" for c in COLUMNS[:5]]
        cells += [_cell(s, "folding_percent", "mean", 4), _cell(s, "sd_jacobian", "mean", 3),
                  _cell(s, "seconds", "median", 2), _cell(s, "seconds", "mean", 2), _cell(s, "peak_mb", "max", 0)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def row_name(refine: RefineOptions) -> str:
    """'FSDiffReg (network)', or e.g. 'FSDiffReg (+refine 60, SVF, Gaussian, the default)' or
    'FSDiffReg (+refine 80, smoothness 5)'."""
    if refine.steps == 0:
        return "FSDiffReg (network)"
    notes = [f"+refine {refine.steps}"]
    notes += ["SVF"] if refine.diffeomorphic else []
    notes += ["Gaussian"] if refine.gaussian else []
    notes += [f"smoothness {refine.smoothness:g}"] if refine.smoothness != DEFAULT_REFINE.smoothness else []
    notes += [f"window {refine.window}"] if refine.window != DEFAULT_REFINE.window else []
    notes += ["the default"] if refine == DEFAULT_REFINE else []
    return f"FSDiffReg ({', '.join(notes)})"


def evaluate(data_dir: Path, model: FSDiffRegNet, device: torch.device, limit: int | None = None,
             refine: RefineOptions = DEFAULT_REFINE) -> str:
    """Markdown table of 'Initial' and this model (refined as ``refine`` says) on the validation split."""
    pairs = acdc.split(data_dir, "validation")[:limit]
    initial = summarize([identity_row(p) for p in pairs])
    ours = summarize([evaluate_pair(p, model, device, refine) for p in pairs])
    return markdown_table({"Initial": initial, row_name(refine): ours})
