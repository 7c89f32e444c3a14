"""A PNG of a tracked cine: volume curves per structure and global strain curves, ED and ES marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..events import Report, ignore
from ..labels import structure_names
from .plotting import pyplot


def _mark_frames(ax, x: list[float], function: dict) -> None:
    for key, style in (("ED_frame", "--"), ("ES_frame", ":")):
        frame = function.get(key)
        if frame is not None:
            ax.axvline(x[frame - 1], color="black", linestyle=style, linewidth=1,
                       label=f"{key[:2]} (frame {frame})")


def _title(function: dict) -> str:
    lv = function.get("LV")
    if lv is None or lv["EF_percent"] is None:
        return "cardiac function"
    return f"LV EF {lv['EF_percent']:.1f} %  (EDV {lv['EDV_ml']:.1f} ml, ESV {lv['ESV_ml']:.1f} ml)"


def save_curves(volumes: list[dict[str, float]], function: dict, times_ms: list[float] | None,
                path: str | Path, log: Report = ignore) -> Path | None:
    """Volume curves (ml) and, when ``function`` has strain, strain curves (%), against the frame
    number or the frame time (ms) when known; ``function`` is the dict of ``cardiac_function``.
    None (and one line to ``log``) where matplotlib is missing."""
    plt = pyplot(Path(path).name, log)
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    x: list[float] = list(range(1, len(volumes) + 1)) if times_ms is None else list(times_ms)
    strain = function.get("strain")
    fig, axes = plt.subplots(1, 2 if strain else 1, figsize=(12 if strain else 6.5, 4.5), squeeze=False)
    ax = axes[0, 0]
    for name in structure_names(volumes):
        ax.plot(x, [frame.get(name, 0.0) for frame in volumes], marker="o", markersize=3, label=name)
    ax.set_ylabel("volume (ml)")
    ax.set_title("volumes")
    if strain:
        ax = axes[0, 1]
        for key, label in (("radial_percent", "radial"), ("circumferential_percent", "circumferential")):
            values = [np.nan if v is None else v for v in strain[key]]
            ax.plot(x, values, marker="o", markersize=3, label=label)
        ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.set_ylabel("strain (%)")
        ax.set_title("global LV myocardial strain (vs ED)")
    for ax in axes.ravel():
        _mark_frames(ax, x, function)
        ax.set_xlabel("frame" if times_ms is None else "time (ms)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=times_ms is None))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_title(function))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
