"""The paper's Table 1 on the validation split, through the full ``register`` pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..defaults import DEFAULT_REFINE, RefineOptions
from ..imaging import acdc
from ..imaging.field import apply_field
from ..imaging.metrics import field_metrics, heart_labels_dice, jacobian_determinant, jacobian_stats
from ..model.network import FSDiffRegNet
from ..pipeline.function import structure_volumes
from ..pipeline.register import register_images

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

COLUMNS = ["LV", "Myo", "RV", "mean", "heart", "folding_percent", "sd_jacobian", "seconds", "peak_mb"]
HEADER = ["method", "Dice LV", "Dice Myo", "Dice RV", "Dice mean", "Dice heart", "abs(J)<=0 %", "SD abs(J)",
          "s/pair median", "s/pair mean", "peak MB"]


def score_field(field: sitk.Image, grid: sitk.Image, moving_labels: sitk.Image, fixed_labels: sitk.Image,
                carried_ef: bool = False) -> dict[str, float]:
    """Dice of the moving labels warped through ``field`` onto the fixed grid; folding and SD|J| on ``grid``
    (the heart-centred 1.5 x 1.5 x 3.15 mm grid) and folding on the field's own grid (``folding_fixed_percent``).
    With ``carried_ef`` (moving = ED, fixed = ES): ``LV_EF_error``, the LV ejection fraction of the carried
    labels (ED volume of the moving labels, ES volume of the warped ones) minus that of the manual labels, points."""
    warped = apply_field(moving_labels, field, nearest=True)
    row = {**heart_labels_dice(sitk.GetArrayFromImage(warped), sitk.GetArrayFromImage(fixed_labels)),
           **field_metrics(field, grid)}
    row["folding_fixed_percent"] = jacobian_stats(sitk.GetArrayFromImage(jacobian_determinant(field)))[
        "folding_percent"]
    if carried_ef:
        ed, es, carried = (structure_volumes(x).get("LV", 0.0) for x in (moving_labels, fixed_labels, warped))
        row["LV_EF_error"] = 100.0 * (es - carried) / ed if ed > 0 else float("nan")
    return row


def paired_bootstrap(candidate: list[float], reference: list[float], resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> dict[str, float]:
    """The mean paired difference candidate - reference, its percentile bootstrap 95 % interval (pairs resampled
    with replacement, a fixed seed), and the pairs the candidate wins and loses."""
    d = np.asarray(candidate, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    means = d[np.random.default_rng(seed).integers(0, len(d), (resamples, len(d)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"difference": float(d.mean()), "low": float(low), "high": float(high),
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}


def evaluate_pair(pair: acdc.AcdcPair, model: FSDiffRegNet, device: torch.device,
                  refine: RefineOptions = DEFAULT_REFINE) -> dict[str, float]:
    """Dice of the moving labels warped onto the fixed grid, with the field's metrics."""
    fixed, moving = sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving))
    result = register_images(fixed, moving, model, device, refine=refine)
    row = score_field(result.field, result.grid, sitk.ReadImage(str(pair.moving_labels)),
                      sitk.ReadImage(str(pair.fixed_labels)))
    return {**row, "seconds": result.metrics["seconds"]}


def identity_row(pair: acdc.AcdcPair) -> dict[str, float]:
    """The 'Initial' row: Dice of the moving labels resampled onto the fixed grid, unwarped."""
    fixed_labels = sitk.ReadImage(str(pair.fixed_labels))
    moving = sitk.Resample(sitk.ReadImage(str(pair.moving_labels)), fixed_labels, sitk.Transform(),
                           sitk.sitkNearestNeighbor, 0)
    row = heart_labels_dice(sitk.GetArrayFromImage(moving), sitk.GetArrayFromImage(fixed_labels))
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
