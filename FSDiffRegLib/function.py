"""Cardiac function from labels tracked over a cine: volumes, ejection fraction, mass and strain.

Volumes: the number of voxels of each label times the voxel volume, in ml. ACDC labels:
1 = RV (right ventricular blood pool), 2 = Myo (LV myocardium), 3 = LV (LV blood pool);
any other value v is named ``label<v>``. Background (0) is not a structure. RV, Myo and LV
need MIN_STRUCTURE_VOXELS voxels in the reference labels (``check_structures``): in fewer (less
than a 3 x 3 x 3 block) every voxel lies on the structure's surface, where carrying the labels
by nearest neighbour can lose them all, so EF and mass mean nothing (two voxels of LV gave an
EF of 100 %).

Global myocardial strain (Lagrangian, in per cent, relative to ED):

- LV long axis: the least-squares line through the centroids of the LV blood pool on each
  slice of the ED labels (the slice normal through the blood-pool centroid when the blood pool
  lies on one slice only).
- Tracking gives, for every voxel x of a frame, the point x + u(x) it came from at ED. A small
  piece of myocardium at ED point X = x + u(x) is stretched and turned into the frame by
  F = (I + grad u(x))^-1 (the deformation gradient, ED -> frame; grad u by central differences
  between neighbouring voxels, in mm, one-sided on the first and last slice).
- At X, the radial direction e_r points away from the long axis, perpendicular to it; the
  circumferential direction is e_c = axis x e_r.
- Strain along e: (L - L0) / L0 = |F e| - 1, where L0 is the length at ED of a short segment
  along e and L its length in the frame. Wall thickening gives positive radial strain,
  circumferential shortening negative circumferential strain.
- Global strain of a frame: the mean over the LV myocardium carried from ED onto that frame,
  each voxel weighted by the ED volume it came from (det(I + grad u)). So every frame averages
  the same tissue, and the global circumferential strain is the change in total length of the
  myocardium's circumferential material lines (the mid-wall circle and its neighbours), relative
  to their length at ED, as contour-based feature tracking measures it; the radial strain is the
  same for the lines across the wall (wall thickening). Folded voxels (det <= 0: no valid
  deformation) are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import SimpleITK as sitk

from .errors import InputError

STRUCTURES = {1: "RV", 2: "Myo", 3: "LV"}
MYO, LV = 2, 3
MYOCARDIUM_DENSITY_G_PER_ML = 1.05
DECIMALS = 2  # function.json; volumes.csv has 3 decimals
MIN_STRUCTURE_VOXELS = 27  # fewest voxels of RV, Myo or LV in the reference labels (module docstring)


@dataclass
class Strain:
    """Global strain of the LV myocardium per frame (list index = frame - 1), in per cent."""

    radial_percent: list[float]
    circumferential_percent: list[float]


def structure_name(value: int) -> str:
    return STRUCTURES.get(value, f"label{value}")


def structure_names(volumes: list[dict[str, float]]) -> list[str]:
    """Structures of any frame in the order RV, Myo, LV, then label<v> by value."""
    known = list(STRUCTURES.values())

    def order(name: str) -> tuple[int, int]:
        return (0, known.index(name)) if name in known else (1, int(name[len("label"):]))

    return sorted({name for frame in volumes for name in frame}, key=order)


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


def _voxel_matrix(image: sitk.Image) -> np.ndarray:
    """M with physical point = origin + M @ (i, j, k)."""
    return np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())


def long_axis(ed_labels: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """A point on the LV long axis and its unit direction (LPS mm), from the LV blood pool (label 3)."""
    kji = np.argwhere(sitk.GetArrayViewFromImage(ed_labels) == LV)
    slices = np.unique(kji[:, 0])
    index_centroids = np.array([kji[kji[:, 0] == k, ::-1].mean(0) for k in slices])
    centroids = np.array(ed_labels.GetOrigin()) + index_centroids @ _voxel_matrix(ed_labels).T
    if len(slices) < 2:
        direction = np.array(ed_labels.GetDirection()).reshape(3, 3)[:, 2]
    else:
        direction = np.polyfit(slices, centroids, 1)[0]  # centroid = a + k * direction, least squares
    return centroids.mean(0), direction / np.linalg.norm(direction)


def _frame_strain(field: sitk.Image, labels: sitk.Image, point: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Global (radial, circumferential) strain in per cent of one frame; NaN without myocardium."""
    if field.GetSize() != labels.GetSize():
        raise ValueError(f"displacement field size {field.GetSize()} differs from labels size {labels.GetSize()}")
    kji = np.argwhere(sitk.GetArrayViewFromImage(labels) == MYO)
    if len(kji) == 0:
        return np.full(2, np.nan)
    low = np.maximum(kji.min(0) - 1, 0)
    u = sitk.GetArrayViewFromImage(field)[tuple(slice(a, b + 2) for a, b in zip(low, kji.max(0)))]
    local = tuple((kji - low).T)
    # d u / d index along i, j, k (array axes 2, 1, 0); an image one slice thick has no through-plane change
    by_index = [np.gradient(u, axis=a)[local] if u.shape[a] > 1 else np.zeros((len(kji), 3)) for a in (2, 1, 0)]
    g = np.eye(3) + np.stack(by_index, axis=-1) @ np.linalg.inv(_voxel_matrix(field))  # I + grad u, physical
    x = np.array(field.GetOrigin()) + kji[:, ::-1] @ _voxel_matrix(field).T
    offset = x + u[local] - point  # material point X at ED, relative to the axis
    radial = offset - np.outer(offset @ axis, axis)
    distance = np.linalg.norm(radial, axis=1)
    weight = np.linalg.det(g)
    keep = (weight > 0) & (distance > 1e-6)
    if not keep.any():
        return np.full(2, np.nan)
    e_r = radial[keep] / distance[keep, None]
    directions = np.stack([e_r, np.cross(axis, e_r)], axis=-1)  # (n, 3, 2): e_r, e_c at X
    stretch = np.linalg.norm(np.linalg.solve(g[keep], directions), axis=1)  # |F e| with F = g^-1
    return 100.0 * (weight[keep] @ (stretch - 1.0)) / weight[keep].sum()


def myocardial_strain(fields: list[sitk.Image], frame_labels: list[sitk.Image],
                      ed_labels: sitk.Image) -> Strain | None:
    """Global radial and circumferential strain per frame (module docstring); None without Myo or LV.

    ``fields[t]`` maps each point x of frame t to x + u(x) at ED (ITK displacement field, LPS mm);
    ``frame_labels[t]`` are the ED labels carried onto frame t, on the same grid.
    """
    if len(fields) != len(frame_labels):
        raise ValueError(f"{len(fields)} displacement fields for {len(frame_labels)} label images")
    present = np.unique(sitk.GetArrayViewFromImage(ed_labels))
    if MYO not in present or LV not in present:
        return None
    point, axis = long_axis(ed_labels)
    values = np.array([_frame_strain(f, labels, point, axis) for f, labels in zip(fields, frame_labels)])
    return Strain([float(v) for v in values[:, 0]], [float(v) for v in values[:, 1]])


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
    return {"radial_percent": [_round(v) for v in strain.radial_percent],
            "circumferential_percent": [_round(v) for v in strain.circumferential_percent],
            "peak_radial_percent": peak_radial, "peak_radial_frame": radial_frame,
            "peak_circumferential_percent": peak_circumferential,
            "peak_circumferential_frame": circumferential_frame}


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
        if name in curves:
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
