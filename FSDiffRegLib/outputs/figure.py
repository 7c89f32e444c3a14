"""A one-page PNG of a registration: images, differences, Jacobian, deformation grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..events import Report, ignore
from ..imaging.field import field_to_flow, resample_field
from ..imaging.preprocess import normalized, resample_to
from .plotting import pyplot

GRID_STEP = 4


def _slice(image: sitk.Image, grid: sitk.Image, default: float = -1.0) -> np.ndarray:
    array = sitk.GetArrayFromImage(resample_to(image, grid, default))
    return array[array.shape[0] // 2]


def save_figure(fixed: sitk.Image, moving: sitk.Image, result, path: Path,
                log: Report = ignore) -> Path | None:
    """Middle slice of the heart-centred grid: fixed, moving, warped, |f-m|, |f-w|, det J, grid.
    None (and one line to ``log``) where matplotlib is missing."""
    plt = pyplot(Path(path).name, log)
    if plt is None:
        return None
    from matplotlib.colors import TwoSlopeNorm

    grid = result.grid
    f, m, w = (_slice(normalized(x), grid) for x in (fixed, moving, result.warped))
    jac = _slice(result.jacobian, grid, 1.0)
    flow = field_to_flow(resample_field(result.field, grid))
    middle = flow.shape[1] // 2
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.5))
    panels = [(f, "fixed (ED)"), (m, "moving (ES)"), (w, "warped moving"), (np.abs(f - m), "|fixed - moving|"),
              (np.abs(f - w), "|fixed - warped|")]
    for ax, (img, title) in zip(axes.ravel(), panels):
        ax.imshow(img, cmap="gray", vmin=0 if "|" in title else -1, vmax=1)
        ax.set_title(title)
    ax = axes.ravel()[5]
    shown = ax.imshow(jac, cmap="RdBu_r", norm=TwoSlopeNorm(1.0, min(jac.min(), 0.5), max(jac.max(), 1.5)))
    folds = np.ma.masked_where(jac > 0, np.ones_like(jac))
    ax.imshow(folds, cmap="autumn", alpha=0.9)
    ax.set_title("Jacobian determinant (folds in yellow)")
    fig.colorbar(shown, ax=ax, fraction=0.046)
    ax = axes.ravel()[6]
    ax.imshow(f, cmap="gray", vmin=-1, vmax=1)
    rows, cols = np.mgrid[0:f.shape[0], 0:f.shape[1]].astype(np.float32)
    y, x = rows + flow[1, middle], cols + flow[2, middle]
    for i in range(0, f.shape[0], GRID_STEP):
        ax.plot(x[i], y[i], color="lime", lw=0.6)
    for j in range(0, f.shape[1], GRID_STEP):
        ax.plot(x[:, j], y[:, j], color="lime", lw=0.6)
    ax.set_title("deformation grid (fixed -> moving)")
    ax = axes.ravel()[7]
    ax.axis("off")
    shown = {k: v for k, v in result.metrics.items() if k != "weights_sha256" and not isinstance(v, dict)}
    text = "\n".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in shown.items())
    ax.text(0, 1, text, va="top", family="monospace", fontsize=10)
    for ax in axes.ravel()[:7]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
