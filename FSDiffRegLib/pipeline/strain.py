"""Myocardial strain as contour-based feature tracking measures it, global and per AHA segment.

Contours at ED, on every short-axis slice (image slice k) of the ED labels that holds LV blood pool
(label 3) and LV myocardium (label 2):

- the LV centre is the blood pool's centroid on the slice; RAYS rays leave it in the slice plane,
  one every 360 / RAYS degrees;
- along each ray the labels are interpolated linearly (one indicator image per boundary): the
  endocardial point is where the ray first leaves the blood pool, the epicardial point where it
  then first leaves blood pool and myocardium; a ray that crosses no myocardium on the way (the
  outflow tract's gap on basal slices) has no points;
- each contour's radius is averaged over 2 SMOOTHING + 1 neighbouring rays (25 degrees): the voxels
  of the labels make a ragged contour whose zig-zags would not shorten with the heart;
- the mid-wall point of a ray is half way between its endocardial and epicardial points.

Each ED point X is carried into a frame through the tracked field: the frame point x with
x + u(x) = X (u: the frame's field, frame -> ED, interpolated linearly; solved by the damped
fixed-point iteration x <- x - (x + u(x) - X) / 2). Lagrangian strain relative to ED, in per cent:

- circumferential: the relative change of a contour's length (the sum of the distances between the
  points of neighbouring rays), for the mid-wall contour (``circumferential_percent``) and the
  endocardial and epicardial contours;
- radial: the relative change of the wall thickness, the distance between a ray's endocardial
  and epicardial points, summed over the rays.

Global strain sums lengths and thicknesses over every slice; a segment's over its rays (and the
contour pieces between its rays). Distances are in 3D, so through-plane motion counts.

AHA 16-segment model (Cerqueira et al., Circulation 2002;105:539-542): the slices with contours are
split along the long axis into basal, mid and apical thirds (``numpy.array_split``, the basal third
the largest when they cannot be equal), the base being the end of the stack with the larger blood
pool (``imaging.preprocess.base_first``). Angles run counter-clockwise as seen from the apex (the AHA's
short-axis view). Basal and mid slices have six 60-degree segments starting at the anterior RV insertion
point, which is the border of segments 1 (anterior) and 2 (anteroseptal), then 3 inferoseptal, 4 inferior,
5 inferolateral, 6 anterolateral (7-12 on mid slices); apical slices four 90-degree segments, 14 (septal) centred
60 degrees from the insertion point (the middle of the septum), then 15 inferior, 16 lateral and
13 anterior. The anterior RV insertion point of a slice is the first end, counter-clockwise, of
the arc of myocardium touching the RV blood pool (label 1). Slices without RV use the mean
insertion angle of the slices with it; without RV on any slice, the border of segments 1 and 2 is
put 30 degrees counter-clockwise of the patient's anterior direction (segment 1 centred on it) and
``anchor`` says so.

References: Vo, Marwick, Negishi, JACC Cardiovasc Imaging 2018;11:196-205 (feature-tracking strain
normals); Cerqueira et al. 2002 (AHA segments).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..imaging.preprocess import base_first
from ..labels import LV, MYO, RV

RAYS = 72  # 5 degrees apart: segment borders fall on rays
STEP_MM = 0.25  # sampling along a ray
SMOOTHING = 2  # a contour's radius is averaged over this many rays on either side: label voxels make it jagged
MAX_RADIUS_MM = 120.0
ITERATIONS = 100  # damped fixed-point steps carrying a point into a frame, at most
TOLERANCE_MM = 1e-9  # ... stopping when no point moves more
DAMPING = 0.5  # converges where the frame -> ED map stretches by up to 3 along any direction (not only 1)
ANTERIOR_LPS = np.array([0.0, -1.0, 0.0])
SEGMENT_NAMES = ["basal anterior", "basal anteroseptal", "basal inferoseptal", "basal inferior",
                 "basal inferolateral", "basal anterolateral", "mid anterior", "mid anteroseptal",
                 "mid inferoseptal", "mid inferior", "mid inferolateral", "mid anterolateral",
                 "apical anterior", "apical septal", "apical inferior", "apical lateral"]
ANCHOR_RV = "anterior RV insertion point"
ANCHOR_ANTERIOR = "no RV label: segment 1 centred on the patient's anterior direction"


@dataclass
class Strain:
    """Strain per frame (list index = frame - 1), in per cent; NaN where not measurable.

    ``segments_*[s]`` is AHA segment s + 1; ``outside_frames`` the 1-based frames whose carried contour
    points leave the image grid."""

    radial_percent: list[float]
    circumferential_percent: list[float]
    endocardial_circumferential_percent: list[float] = field(default_factory=list)
    epicardial_circumferential_percent: list[float] = field(default_factory=list)
    segments_radial_percent: list[list[float]] = field(default_factory=list)
    segments_circumferential_percent: list[list[float]] = field(default_factory=list)
    anchor: str = ""
    outside_frames: list[int] = field(default_factory=list)


@dataclass
class Contours:
    """ED contour points (slices, RAYS, 3) in LPS mm, NaN on rays without wall; the AHA segment of each
    ray and of each contour piece from ray n to ray n + 1 (0: none)."""

    endo: np.ndarray
    epi: np.ndarray
    ray_segments: np.ndarray
    edge_segments: np.ndarray
    anchor: str


def _matrix(image: sitk.Image) -> np.ndarray:
    """M with physical point = origin + M @ (i, j, k)."""
    return np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())


def _linear(array: np.ndarray, index: np.ndarray, clamp: bool) -> np.ndarray:
    """``array`` interpolated linearly at the fractional array indices ``index`` (ndim, ...); outside the array
    the nearest value where ``clamp``, else 0."""
    shape = np.array(array.shape, float).reshape((-1,) + (1,) * (index.ndim - 1))
    if clamp:
        index = np.clip(index, 0.0, shape - 1)
    low = np.floor(index)
    fraction = index - low
    result = np.zeros(index.shape[1:])
    for corner in itertools.product((0, 1), repeat=array.ndim):
        at = low + np.array(corner).reshape(shape.shape)
        weight = np.prod(np.where(np.array(corner).reshape(shape.shape) == 1, fraction, 1.0 - fraction), axis=0)
        inside = ((at >= 0) & (at <= shape - 1)).all(axis=0)
        clipped = tuple(np.clip(at, 0, shape - 1).astype(int))
        result += np.where(inside, weight * array[clipped], 0.0)
    return result


def _touching(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels of ``b`` with a pixel of ``a`` among their 8 neighbours or on them."""
    padded = np.pad(a, 1)
    rows, cols = a.shape
    near = np.zeros_like(a, bool)
    for dj, di in itertools.product(range(3), repeat=2):
        near |= padded[dj:dj + rows, di:di + cols]
    return near & b


def _crossing(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Per row, the first sample index (fractional, linear between samples) at or after ``start`` where
    ``values`` falls below 0.5; NaN where it never does."""
    below = (values < 0.5) & (np.arange(values.shape[1]) >= start[:, None])
    first = np.argmax(below, axis=1)
    hit = below[np.arange(len(values)), first] & (first > 0)
    before, after = values[np.arange(len(values)), first - 1], values[np.arange(len(values)), first]
    fraction = (before - 0.5) / np.maximum(before - after, 1e-9)
    return np.where(hit, first - 1 + fraction, np.nan)


def _smooth(radius: np.ndarray) -> np.ndarray:
    """The mean of each ray's radius and its SMOOTHING neighbours on either side that have one (NaN: none)."""
    offsets = range(-SMOOTHING, SMOOTHING + 1)
    stacked = np.stack([np.roll(radius, n) for n in offsets])
    valid = np.isfinite(stacked)
    return np.where(valid, stacked, 0.0).sum(0) / np.maximum(valid.sum(0), 1)


def _angle(vectors: np.ndarray, u1: np.ndarray, toward_apex: np.ndarray) -> np.ndarray:
    """Counter-clockwise angle (radians) seen from the apex, from in-plane ``u1``."""
    return np.arctan2(vectors @ np.cross(toward_apex, u1), vectors @ u1)


def _insertion_angle(rv: np.ndarray, myo: np.ndarray, points: np.ndarray, centre: np.ndarray,
                     u1: np.ndarray, toward_apex: np.ndarray) -> float | None:
    """The angle of the anterior RV insertion point of one slice: the counter-clockwise start of the arc of
    myocardium touching the RV; None where they do not touch."""
    touching = _touching(rv, myo)
    if touching.sum() < 2:
        return None
    angles = np.sort(_angle(points[touching] - centre, u1, toward_apex))
    gaps = np.diff(np.append(angles, angles[0] + 2 * np.pi))
    return float(angles[(np.argmax(gaps) + 1) % len(angles)])


def segment_of(psi_degrees: np.ndarray, third: int) -> np.ndarray:
    """AHA segment (1-16) at angle ``psi`` counter-clockwise from the anterior RV insertion point on a
    basal (0), mid (1) or apical (2) slice."""
    psi = np.mod(psi_degrees, 360.0)
    if third < 2:
        return 1 + 6 * third + (np.floor(psi / 60.0).astype(int) + 1) % 6
    return 13 + (np.floor(np.mod(psi - 15.0, 360.0) / 90.0).astype(int) + 1) % 4


def ed_contours(ed_labels: sitk.Image) -> Contours | None:
    """Endocardial and epicardial contour points of every slice with LV blood pool and myocardium (module
    docstring); None where no slice has both."""
    values = sitk.GetArrayFromImage(ed_labels)
    slices = [k for k in range(values.shape[0]) if (values[k] == LV).any() and (values[k] == MYO).any()]
    if not slices:
        return None
    matrix, origin = _matrix(ed_labels), np.array(ed_labels.GetOrigin())
    direction = np.array(ed_labels.GetDirection()).reshape(3, 3)
    u1, normal = direction[:, 0], direction[:, 2]
    stored_base_first = base_first([int((values[k] == LV).sum()) for k in slices])
    toward_apex = normal if stored_base_first else -normal
    order = slices if stored_base_first else slices[::-1]
    jj, ii = np.mgrid[0:values.shape[1], 0:values.shape[2]]
    centres, insertions = {}, {}
    for k in slices:
        points = origin + np.stack([ii, jj, np.full_like(ii, k)], -1) @ matrix.T
        centres[k] = points[values[k] == LV].mean(0)
        insertions[k] = _insertion_angle(values[k] == RV, values[k] == MYO, points, centres[k], u1, toward_apex)
    known = [a for a in insertions.values() if a is not None]
    if known:
        default, anchor = float(np.angle(np.mean(np.exp(1j * np.array(known))))), ANCHOR_RV
    else:
        default = float(_angle(ANTERIOR_LPS, u1, toward_apex)) + np.radians(30.0)
        anchor = ANCHOR_ANTERIOR
    psi = np.arange(RAYS) * 360.0 / RAYS
    radii = np.arange(0.0, MAX_RADIUS_MM, STEP_MM)
    inverse = np.linalg.inv(matrix)
    shape = (len(slices), RAYS)
    endo, epi = np.full(shape + (3,), np.nan), np.full(shape + (3,), np.nan)
    ray_segments, edge_segments = np.zeros(shape, int), np.zeros(shape, int)
    thirds = np.array_split(np.arange(len(order)), 3)
    for s, k in enumerate(slices):
        angle = (insertions[k] if insertions[k] is not None else default) + np.radians(psi)
        rays = np.cos(angle)[:, None] * u1 + np.sin(angle)[:, None] * np.cross(toward_apex, u1)
        samples = centres[k] + rays[:, None, :] * radii[None, :, None]  # (RAYS, radii, 3)
        index = (samples - origin) @ inverse.T  # i, j, k
        where = np.stack([index[..., 1], index[..., 0]])
        cavity, wall, myo = (_linear(m.astype(float), where, clamp=False)
                             for m in (values[k] == LV, values[k] >= MYO, values[k] == MYO))
        inner = _crossing(cavity, np.zeros(RAYS, int))
        outer = _crossing(wall, np.nan_to_num(np.ceil(inner), nan=len(radii)).astype(int))
        crosses = np.array([np.isfinite(a) and np.isfinite(b) and myo[n, int(a):int(np.ceil(b)) + 1].max() >= 0.5
                            for n, (a, b) in enumerate(zip(inner, outer))])
        inner, outer = (np.where(crosses, _smooth(np.where(crosses, r, np.nan)), np.nan) for r in (inner, outer))
        endo[s][crosses] = centres[k] + rays[crosses] * (inner[crosses, None] * STEP_MM)
        epi[s][crosses] = centres[k] + rays[crosses] * (outer[crosses, None] * STEP_MM)
        third = next(t for t, members in enumerate(thirds) if order.index(k) in members)
        ray_segments[s] = segment_of(psi, third)
        edge_segments[s] = segment_of(psi + 180.0 / RAYS, third)
    return Contours(endo, epi, ray_segments, edge_segments, anchor)


def carry(points: np.ndarray, displacement: sitk.Image) -> tuple[np.ndarray, bool]:
    """ED points (..., 3) carried into a frame whose field maps frame points x to ED points x + u(x); and
    whether any carried point lies outside the field's grid."""
    u = sitk.GetArrayViewFromImage(displacement)  # (k, j, i, 3)
    inverse = np.linalg.inv(_matrix(displacement))
    origin = np.array(displacement.GetOrigin())
    flat = points.reshape(-1, 3)
    x = flat.copy()
    for _ in range(ITERATIONS):
        index = ((x - origin) @ inverse.T)[:, ::-1].T  # k, j, i
        moved = np.stack([_linear(u[..., c], np.nan_to_num(index), clamp=True) for c in range(3)], -1)
        step = DAMPING * (x + moved - flat)
        x = x - step
        if not np.nanmax(np.abs(step), initial=0.0) > TOLERANCE_MM:
            break
    index = (x - origin) @ inverse.T
    size = np.array(displacement.GetSize())
    finite = np.isfinite(index).all(1)
    outside = bool(((index[finite] < -0.5) | (index[finite] > size - 0.5)).any())
    return x.reshape(points.shape), outside


def _lengths(contour: np.ndarray) -> np.ndarray:
    """(slices, RAYS) distances from each ray's point to the next ray's."""
    return np.linalg.norm(np.roll(contour, -1, axis=1) - contour, axis=-1)


def _change(now: np.ndarray, before: np.ndarray, where: np.ndarray) -> float:
    keep = where & np.isfinite(now) & np.isfinite(before)
    total = before[keep].sum()
    return 100.0 * (now[keep].sum() / total - 1.0) if total > 0 else float("nan")


def contour_strain(fields: list[sitk.Image], ed_labels: sitk.Image) -> Strain | None:
    """Global and per-segment strain of every frame (module docstring); None without a slice holding LV
    blood pool and myocardium. ``fields[t]`` maps frame t's points to ED (ITK displacement field, LPS mm)."""
    contours = ed_contours(ed_labels)
    if contours is None:
        return None
    before = {"endo": contours.endo, "epi": contours.epi, "mid": (contours.endo + contours.epi) / 2}
    lengths0 = {name: _lengths(c) for name, c in before.items()}
    thickness0 = np.linalg.norm(contours.epi - contours.endo, axis=-1)
    everywhere = np.ones(contours.ray_segments.shape, bool)
    strain = Strain([], [], anchor=contours.anchor,
                    segments_radial_percent=[[] for _ in SEGMENT_NAMES],
                    segments_circumferential_percent=[[] for _ in SEGMENT_NAMES])
    for frame, displacement in enumerate(fields, start=1):
        endo, outside_endo = carry(contours.endo, displacement)
        epi, outside_epi = carry(contours.epi, displacement)
        if outside_endo or outside_epi:
            strain.outside_frames.append(frame)
        mid = _lengths((endo + epi) / 2)
        thickness = np.linalg.norm(epi - endo, axis=-1)
        strain.radial_percent.append(_change(thickness, thickness0, everywhere))
        strain.circumferential_percent.append(_change(mid, lengths0["mid"], everywhere))
        strain.endocardial_circumferential_percent.append(_change(_lengths(endo), lengths0["endo"], everywhere))
        strain.epicardial_circumferential_percent.append(_change(_lengths(epi), lengths0["epi"], everywhere))
        for s in range(len(SEGMENT_NAMES)):
            strain.segments_radial_percent[s].append(_change(thickness, thickness0, contours.ray_segments == s + 1))
            strain.segments_circumferential_percent[s].append(
                _change(mid, lengths0["mid"], contours.edge_segments == s + 1))
    return strain
