"""The function PNG: volume curves, and strain curves when there is strain."""

from __future__ import annotations

import matplotlib.image
import matplotlib.pyplot as plt

from FSDiffRegLib.outputs.curves import save_curves
from FSDiffRegLib.pipeline.function import Strain, cardiac_function

VOLUMES = [{"RV": 150.0, "Myo": 100.0, "LV": 160.0}, {"RV": 120.0, "Myo": 101.0, "LV": 100.0},
           {"RV": 80.0, "Myo": 99.0, "LV": 60.0}]


def read_png(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path).shape[:2]


def test_volume_and_strain_curves(tmp_path):
    function = cardiac_function(VOLUMES, 1, Strain([0.0, 20.0, float("nan")], [0.0, -10.0, float("nan")]))
    path = save_curves(VOLUMES, function, [0.0, 40.0, 80.0], tmp_path / "function.png")
    assert path == tmp_path / "function.png"
    height, width = read_png(path)
    assert (height, width) == (450, 1200)  # two panels
    assert plt.get_fignums() == []  # the figure is closed


def test_volume_curves_only_without_strain_or_lv(tmp_path):
    height, width = read_png(save_curves(VOLUMES, cardiac_function(VOLUMES, 2, None), None, tmp_path / "a.png"))
    assert (height, width) == (450, 650)  # one panel
    rv_only = [{"RV": v["RV"]} for v in VOLUMES]
    assert read_png(save_curves(rv_only, cardiac_function(rv_only, 1, None), None, str(tmp_path / "b.png")))
