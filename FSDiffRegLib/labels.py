"""ACDC's cardiac structures: label values, names, colours and the segment names taken for each.

The one place that names them; torch-free and SimpleITK-free, so the Slicer GUI imports it too.
"""

from __future__ import annotations

import re

STRUCTURES = {1: "RV", 2: "Myo", 3: "LV"}  # ACDC's label value -> name (Bernard et al. 2018)
VALUES = {name: value for value, name in STRUCTURES.items()}
RV, MYO, LV = VALUES["RV"], VALUES["Myo"], VALUES["LV"]
#: Colours of the structures where the labels give none (label maps): RV blue, Myo green, LV red.
COLORS = {RV: (0.25, 0.45, 0.9), MYO: (0.35, 0.75, 0.35), LV: (0.9, 0.3, 0.25)}
#: Segment names (lower case, words split by single spaces) taken for each structure.
SYNONYMS = {
    RV: {"rv", "right ventricle", "right ventricular cavity", "rv cavity", "rv blood pool",
         "right ventricle blood pool", "right ventricular blood pool"},
    MYO: {"myo", "myocardium", "lv myocardium", "left ventricular myocardium", "left ventricle myocardium",
          "lv myo", "lv wall", "myocardial wall"},
    LV: {"lv", "left ventricle", "left ventricular cavity", "lv cavity", "lv blood pool", "left ventricle blood pool",
         "left ventricular blood pool", "lv endocardium"},
}


def structure_name(value: int) -> str:
    """RV, Myo, LV for ACDC's values; label<v> for any other."""
    return STRUCTURES.get(value, f"label{value}")


def structure_names(volumes: list[dict[str, float]]) -> list[str]:
    """Structures of any frame in the order RV, Myo, LV, then label<v> by value."""
    known = list(STRUCTURES.values())

    def order(name: str) -> tuple[int, int]:
        return (0, known.index(name)) if name in known else (1, int(name[len("label"):]))

    return sorted({name for frame in volumes for name in frame}, key=order)


def structure_of(segment_name: str) -> int | None:
    """The ACDC value a segment name stands for (``"LV blood pool"`` -> 3, any case), or None."""
    words = " ".join(re.split(r"[\s_-]+", segment_name.strip().lower()))
    return next((value for value, names in SYNONYMS.items() if words in names), None)
