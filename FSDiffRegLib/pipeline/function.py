"""Cardiac function from labels tracked over a cine: volumes, ejection fraction, mass and strain.

Volumes: the number of voxels of each label times the voxel volume, in ml. ACDC labels:
1 = RV (right ventricular blood pool), 2 = Myo (LV myocardium), 3 = LV (LV blood pool);
any other value v is named ``label<v>``. Background (0) is not a structure. RV, Myo and LV
need MIN_STRUCTURE_VOXELS voxels in the reference labels (``check_structures``): in fewer (less
than a 3 x 3 x 3 block) every voxel lies on the structure's surface, where carrying the labels
by nearest neighbour can lose them all, so EF and mass mean nothing (two voxels of LV gave an
EF of 100 %).

Myocardial strain: contour-based, global and per AHA segment (``strain.py``).

Quality (``quality_notes``): when a result should not be trusted, one note each: folds in the
myocardium (more than FOLD_PERCENT of a frame's myocardium voxels with det(I + grad u) <= 0),
contour points carried off the image grid, an LV or RV EF outside 5-90 %, ES at the first or last
frame of a cine of more than two frames (the minimum may lie outside the recording; a 2-frame
cine ED, ES has no curve to check), a structure of fewer than FEW_VOXELS voxels in some frame.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..labels import MYO, STRUCTURES, structure_name, structure_names
from .strain import SEGMENT_NAMES, Strain

MYOCARDIUM_DENSITY_G_PER_ML = 1.05
DECIMALS = 2  # function.json; volumes.csv has 3 decimals
MIN_STRUCTURE_VOXELS = 27  # fewest voxels of RV, Myo or LV in the reference labels (module docstring)
FEW_VOXELS = 200  # a quality note below this in any frame (about 4.5 ml on ACDC's 1.5 x 1.5 x 10 mm voxels)
FOLD_PERCENT = 1.0  # a quality note above this share of folded myocardium voxels in a frame
EF_RANGE = (5.0, 90.0)  # a quality note outside


def check_structures(labels: sitk.Image, role: str) -> None:
    """InputError where RV, Myo or LV has fewer than MIN_STRUCTURE_VOXELS voxels in ``labels``."""
    values, counts = np.unique(sitk.GetArrayViewFromImage(labels), return_counts=True)
    small = [f"{STRUCTURES[v]} (label {v}) has {n} voxels" for v, n in zip(values.tolist(), counts.tolist())
             if v in STRUCTURES and n < MIN_STRUCTURE_VOXELS]
    if small:
        raise InputError(f"{role} labels: {', '.join(small)}, too few to measure a volume (at least "
                         f"{MIN_STRUCTURE_VOXELS}): are these the heart's labels?")


def structure_volumes(labels: sitk.Image) -> dict[str, float]:
    """Volume in ml of each label present in a 3D integer label image (background 0 excluded)."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.ComputePerimeterOff()
    stats.ComputeFeretDiameterOff()
    stats.ComputeOrientedBoundingBoxOff()
    stats.Execute(labels)
    return {structure_name(v): stats.GetPhysicalSize(v) / 1000.0 for v in sorted(stats.GetLabels())}


def _round(value: float) -> float | None:
    return round(float(value), DECIMALS) + 0.0 if math.isfinite(value) else None  # + 0.0: no -0.0


def _ejection(edv: float, esv: float) -> dict[str, float | None]:
    return {"EDV_ml": _round(edv), "ESV_ml": _round(esv), "SV_ml": _round(edv - esv),
            "EF_percent": _round(100.0 * (edv - esv) / edv)}


def _peak(values: list[float], pick: Callable) -> tuple[float | None, int | None]:
    """The picked (max or min) finite value and its 1-based frame."""
    finite = [(v, frame) for frame, v in enumerate(values, start=1) if math.isfinite(v)]
    if not finite:
        return None, None
    value, frame = pick(finite, key=lambda pair: pair[0])
    return _round(value), frame


def _strain_summary(strain: Strain) -> dict:
    peak_radial, radial_frame = _peak(strain.radial_percent, max)
    peak_circumferential, circumferential_frame = _peak(strain.circumferential_percent, min)
    summary: dict[str, Any] = {"radial_percent": [_round(v) for v in strain.radial_percent],
               "circumferential_percent": [_round(v) for v in strain.circumferential_percent],
               "peak_radial_percent": peak_radial, "peak_radial_frame": radial_frame,
               "peak_circumferential_percent": peak_circumferential,
               "peak_circumferential_frame": circumferential_frame}
    if not strain.segments_radial_percent:
        return summary
    summary.update({
        "endocardial_circumferential_percent": [_round(v) for v in strain.endocardial_circumferential_percent],
        "epicardial_circumferential_percent": [_round(v) for v in strain.epicardial_circumferential_percent],
        "segment_anchor": strain.anchor,
        "segments": [{"segment": s + 1, "name": name,
                      "peak_circumferential_percent": _peak(strain.segments_circumferential_percent[s], min)[0],
                      "peak_radial_percent": _peak(strain.segments_radial_percent[s], max)[0]}
                     for s, name in enumerate(SEGMENT_NAMES)]})
    return summary


def strain_csv(strain: Strain, times_ms: list[float] | None) -> str:
    """strain.csv: a row per frame and segment (``global``, then 1-16): frame, time_ms when known, segment,
    name, radial_percent, circumferential_percent (2 decimals, empty where not measurable)."""
    def cell(value: float) -> str:
        return "" if not math.isfinite(value) else f"{value + 0.0:.2f}"

    rows = [("global", "global", strain.radial_percent, strain.circumferential_percent)]
    rows += [(str(s + 1), name, strain.segments_radial_percent[s], strain.segments_circumferential_percent[s])
             for s, name in enumerate(SEGMENT_NAMES)]
    lines = [",".join(["frame"] + ["time_ms"] * (times_ms is not None)
                      + ["segment", "name", "radial_percent", "circumferential_percent"])]
    for index in range(len(strain.radial_percent)):
        time = [] if times_ms is None else [f"{times_ms[index]:.3f}"]
        for segment, name, radial, circumferential in rows:
            lines.append(",".join([str(index + 1)] + time + [segment, name, cell(radial[index]),
                                                              cell(circumferential[index])]))
    return "\n".join(lines) + "\n"


def cardiac_function(volumes: list[dict[str, float]], ed_frame: int, strain: Strain | None) -> dict:
    """The content of function.json from per-frame volumes (ml), the 1-based ED frame and the strain.

    ES is the frame of minimum LV volume (without LV: minimum RV volume). Structures absent
    from the ED frame are left out; a structure missing from another frame has volume 0 there.
    """
    if not 1 <= ed_frame <= len(volumes):
        raise ValueError(f"ED frame {ed_frame} is outside the frames 1..{len(volumes)}")
    ed = volumes[ed_frame - 1]
    curves = {name: [frame.get(name, 0.0) for frame in volumes] for name in ed}
    chamber = next((name for name in ("LV", "RV") if name in curves), None)
    es = None if chamber is None else int(np.argmin(curves[chamber]))
    function: dict = {"frames": len(volumes), "ED_frame": ed_frame, "ES_frame": None if es is None else es + 1}
    for name in ("LV", "RV"):
        if name in curves and es is not None:  # es is None only without LV and RV
            function[name] = _ejection(ed[name], curves[name][es])
    if "Myo" in ed:
        function["Myo"] = {"ED_volume_ml": _round(ed["Myo"]),
                           "mass_g": _round(ed["Myo"] * MYOCARDIUM_DENSITY_G_PER_ML)}
    if strain is not None:
        function["strain"] = _strain_summary(strain)
    return function


def volumes_csv(volumes: list[dict[str, float]], times_ms: list[float] | None) -> str:
    """volumes.csv: frame (1-based), time_ms when known, then ml per structure (3 decimals)."""
    if times_ms is not None and len(times_ms) != len(volumes):
        raise ValueError(f"{len(times_ms)} frame times for {len(volumes)} frames")
    names = structure_names(volumes)
    lines = [",".join(["frame"] + ["time_ms"] * (times_ms is not None) + [f"{name}_ml" for name in names])]
    for index, frame in enumerate(volumes):
        time = [] if times_ms is None else [f"{times_ms[index]:.3f}"]
        lines.append(",".join([str(index + 1)] + time + [f"{frame.get(name, 0.0):.3f}" for name in names]))
    return "\n".join(lines) + "\n"


def _note(check: str, message: str) -> dict[str, str]:
    return {"check": check, "message": message}


def _frames(frames: list[int]) -> str:
    return ("frame " if len(frames) == 1 else "frames ") + ", ".join(str(f) for f in frames)


def quality_notes(function: dict, volumes: list[dict[str, float]], fields: list[sitk.Image],
                  frame_labels: list[sitk.Image], strain: Strain | None) -> list[dict[str, str]]:
    """The ``quality`` list of function.json (module docstring): a ``check`` name and a one-line ``message``
    for each reason not to trust the results; empty when there is none."""
    notes = []
    folded = []
    for frame, (displacement, labels) in enumerate(zip(fields, frame_labels), start=1):
        myo = sitk.GetArrayViewFromImage(labels) == MYO
        if myo.any():
            det = sitk.GetArrayViewFromImage(sitk.DisplacementFieldJacobianDeterminant(displacement))
            share = 100.0 * float((det[myo] <= 0).mean())
            if share > FOLD_PERCENT:
                folded.append(f"{frame} ({share:.1f} %)")
    if folded:
        notes.append(_note("myocardium_folds", f"folds in the myocardium (det <= 0 in more than {FOLD_PERCENT:g} % "
                                               f"of its voxels): frames {', '.join(folded)}"))
    if strain is not None and strain.outside_frames:
        notes.append(_note("labels_off_grid", f"contour points carried off the image grid in "
                                              f"{_frames(strain.outside_frames)}: strain there is extrapolated"))
    for name in ("LV", "RV"):
        ef = (function.get(name) or {}).get("EF_percent")
        if ef is not None and not EF_RANGE[0] <= ef <= EF_RANGE[1]:
            notes.append(_note("ef_range", f"{name} EF {ef:.1f} % is outside {EF_RANGE[0]:g}-{EF_RANGE[1]:g} %"))
    es, n = function.get("ES_frame"), function["frames"]
    if es is not None and n > 2 and es in (1, n):
        notes.append(_note("es_at_end", f"ES (frame {es}) is the {'first' if es == 1 else 'last'} frame: the "
                                        "smallest LV volume may lie outside the recording"))
    voxel_ml = float(np.prod(frame_labels[0].GetSpacing())) / 1000.0
    for name in ("RV", "Myo", "LV"):
        if name in volumes[function["ED_frame"] - 1]:
            small = [f for f, v in enumerate(volumes, start=1) if v.get(name, 0.0) / voxel_ml < FEW_VOXELS - 0.5]
            if small:
                notes.append(_note("few_voxels", f"{name} has fewer than {FEW_VOXELS} voxels in {_frames(small)}: "
                                                 "its boundary voxels decide its volume"))
    return notes
