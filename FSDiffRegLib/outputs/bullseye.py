"""A PNG of the peak strain per AHA segment: two bullseyes (circumferential, radial) as the AHA draws them.

Rings from the outside in: basal (1-6), mid (7-12), apical (13-16); segment 1 (anterior) at the top,
numbers increasing counter-clockwise (anteroseptal to the upper left), as seen from the apex.
Segments without myocardium are grey.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..events import Report, ignore
from .plotting import pyplot

#: Each bullseye: function.json's key, its title, its colour scale's limits (%), its matplotlib colour map.
PANELS = (("peak_circumferential_percent", "peak circumferential strain (%)", (-30.0, 0.0), "magma"),
          ("peak_radial_percent", "peak radial strain (%)", (0.0, 100.0), "viridis"))


def wedge(segment: int) -> tuple[float, float, float]:
    """(centre angle in radians, angular width, inner radius) of a segment's wedge; rings 1 wide, apex ring from 1."""
    if segment <= 12:
        ring, count, first = (3.0 if segment <= 6 else 2.0), 6, (segment - 1) % 6
    else:
        ring, count, first = 1.0, 4, segment - 13
    width = 2 * math.pi / count
    return math.pi / 2 + first * width, width, ring


def save_bullseye(segments: list[dict], path: str | Path,
                  log: Report = ignore) -> Path | None:
    """Bullseyes of ``segments`` (function.json's ``strain.segments``); None (and one line to ``log``) where
    matplotlib is missing."""
    plt = pyplot(Path(path).name, log)
    if plt is None:
        return None
    from matplotlib import cm, colormaps, colors

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6), subplot_kw={"projection": "polar"})
    for ax, (key, title, limits, cmap) in zip(axes, PANELS):
        norm = colors.Normalize(*limits)
        for item in segments:
            value = item[key]
            angle, width, inner = wedge(item["segment"])
            colour = "lightgrey" if value is None else colormaps[cmap](norm(value))
            ax.bar(angle, 1.0, width=width, bottom=inner, color=colour, edgecolor="white", linewidth=1.5)
            label = f"{item['segment']}\n" + ("-" if value is None else f"{value:.0f}")
            ax.text(angle, inner + 0.5, label, ha="center", va="center", fontsize=7,
                    bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "edgecolor": "none"})
        ax.set_ylim(0, 4)
        ax.set_axis_off()
        ax.set_title(title, fontsize=10)
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.6, pad=0.08)
    fig.suptitle("AHA segments, seen from the apex (1 anterior, 2 anteroseptal)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
