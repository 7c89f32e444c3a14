"""Folds removed by construction: a projection of a displacement field that changes it only around the
voxels where det J <= 0, until none is left.

The Jacobian is checked on two grids: the field's own (the fixed image's, as delivered) and a finer grid
(the heart-centred network grid, 1.5 x 1.5 x 3.15 mm), through the field resampled onto it; a fold on the
finer grid marks the field's voxels that its interpolation reads. Each round adds the folded voxels to a
region, widens it by one voxel more than the round before (not at all the first time; a soft edge) and
relaxes the field there twice towards its local (small-Gaussian) average: a local diffusion that irons
the fold out. Should folds remain after ROUNDS rounds, the last resort scales the whole displacement
down: the Jacobian of s * u tends to the identity's as s goes to 0 (both grids' finite differences and
the linear resampling are linear in u), so the loop ends with no fold. Away from the folds the field is
left exactly as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from ..imaging.field import resample_field
from ..imaging.metrics import jacobian_determinant
from ..imaging.preprocess import through_plane_axis
from ..model.spatial import gaussian_blur

ROUNDS = 20  # rounds of local relaxation, the neighbourhood of the folds widened by one voxel each round
DIFFUSION_STEPS = 2  # relaxation steps a round: the field blended with its small-Gaussian average
DIFFUSION_SIGMA = (0.5, 0.7)  # that Gaussian, voxels (through-plane, in-plane): the least Dice lost on 001-003
GLOBAL_ROUNDS = 30  # halvings of the whole displacement, the last resort (then the identity, never folded)


@dataclass
class Unfolded:
    """A field with its folds removed, the folded voxels before (``stats``) and its Jacobian determinants as the
    last check measured them: on its own grid, and on the finer grid (D, H, W; None without one)."""

    field: sitk.Image
    stats: dict[str, int]
    jacobian: sitk.Image
    fine_jacobian: np.ndarray | None


def determinants(field: sitk.Image, grid: sitk.Image | None) -> tuple[sitk.Image, np.ndarray | None]:
    """det J of ``field`` on its own grid, and on ``grid`` through the field resampled onto it."""
    fine = sitk.GetArrayFromImage(jacobian_determinant(resample_field(field, grid))) if grid is not None else None
    return jacobian_determinant(field), fine


def folded_voxels(field: sitk.Image, grid: sitk.Image | None = None) -> tuple[np.ndarray, int, int]:
    """The field's voxels (D, H, W mask) at or next to a fold on its own grid or on ``grid``, and the folded
    voxel counts on each grid."""
    return folds(field, grid, *determinants(field, grid))


def folds(field: sitk.Image, grid: sitk.Image | None, own: sitk.Image,
          fine: np.ndarray | None) -> tuple[np.ndarray, int, int]:
    """``folded_voxels`` from the determinants already measured (``determinants``)."""
    mask = sitk.GetArrayFromImage(own) <= 0
    count = int(mask.sum())
    fine_folds = fine <= 0 if fine is not None else np.zeros(0, dtype=bool)
    if fine_folds.any() and grid is not None:  # fine determinants are measured on a grid
        mask |= marked_on(field, grid, np.argwhere(fine_folds))
    return mask, count, int(fine_folds.sum())


def marked_on(field: sitk.Image, grid: sitk.Image, zyx: np.ndarray) -> np.ndarray:
    """A mask on ``field``'s grid of the voxels whose linear interpolation reaches the points of ``grid``
    at indices ``zyx`` (rows of z, y, x)."""
    def to_physical(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())[None, :]
        return np.array(image.GetOrigin()), matrix

    origin, matrix = to_physical(grid)
    points = origin + zyx[:, ::-1] @ matrix.T
    f_origin, f_matrix = to_physical(field)
    ijk = (points - f_origin) @ np.linalg.inv(f_matrix).T
    size = np.array(field.GetSize())
    mask = np.zeros(field.GetSize()[::-1], dtype=bool)
    for corner in np.ndindex(2, 2, 2):
        index = np.clip(np.floor(ijk).astype(int) + np.array(corner), 0, size - 1)
        mask[index[:, 2], index[:, 1], index[:, 0]] = True
    return mask


def per_axis(field: sitk.Image, through: float, in_plane: float) -> tuple:
    """A value for each array axis (D, H, W) of ``field``: ``through`` on its through-plane axis (the largest
    spacing), ``in_plane`` on the others; so the result does not depend on how the image is stored."""
    slice_axis = through_plane_axis(field)
    return tuple(through if axis == slice_axis else in_plane for axis in range(3))


def neighbourhood(mask: np.ndarray, radius: int, field: sitk.Image) -> np.ndarray:
    """A weight in [0, 1]: 1 on ``mask`` widened by ``radius`` voxels (one through-plane), fading to 0 over
    about two voxels beyond, exactly 0 further away."""
    x = torch.from_numpy(mask.astype(np.float32))[None, None]
    wide = widened(x, per_axis(field, 1, radius))
    soft = (2 * gaussian_blur(wide, per_axis(field, 0.5, 1.0))).clamp(max=1.0)
    soft[soft < 0.01] = 0.0
    return soft[0, 0].numpy().astype(np.float64)


def widened(x: torch.Tensor, radii: tuple[int, ...]) -> torch.Tensor:
    """The maximum of ``x`` (N, C, D, H, W) over the box of ``radii`` voxels around each voxel (D, H, W), one axis
    after the other: the same values as one 3D max-pooling, in a few percent of its time at the wide radii of the
    last rounds."""
    for axis, radius in enumerate(radii):
        kernel = [1, 1, 1]
        kernel[axis] = 2 * radius + 1
        padding = [0, 0, 0]
        padding[axis] = radius
        x = torch.nn.functional.max_pool3d(x, tuple(kernel), stride=1, padding=tuple(padding))
    return x


def as_field(u: np.ndarray, like: sitk.Image) -> sitk.Image:
    field = sitk.GetImageFromArray(u, isVector=True)
    field.CopyInformation(like)
    return field


def relaxed(u: np.ndarray, weight: np.ndarray, sigmas: tuple) -> np.ndarray:
    """``u`` (D, H, W, 3) relaxed DIFFUSION_STEPS times towards its Gaussian (``sigmas``) average with ``weight``,
    in place.

    Where the weight is 0 nothing changes, so the work is done on the box around its support widened by the
    Gaussian's reach (what the blur there reads; the image's edges, replicated, where the box meets them)."""
    bounds = []
    for axis, sigma in enumerate(sigmas):
        support = np.flatnonzero(weight.any(axis=tuple(a for a in range(3) if a != axis)))
        if not support.size:
            return u
        reach = math.ceil(3 * sigma)  # gaussian_blur's radius
        bounds.append(slice(max(int(support[0]) - reach, 0), int(support[-1]) + reach + 1))
    box = tuple(bounds)
    w = torch.from_numpy(np.ascontiguousarray(weight[box]))
    x = torch.from_numpy(np.moveaxis(u[box], -1, 0).copy())[None]
    for _ in range(DIFFUSION_STEPS):
        x = x + w * (gaussian_blur(x, sigmas) - x)
    u[box] = np.moveaxis(x[0].numpy(), 0, -1)
    return u


def unfold(field: sitk.Image, grid: sitk.Image | None = None) -> Unfolded:
    """``field`` with no det J <= 0 on its grid nor on ``grid``, changed only around the folds; ``stats``: the
    folded voxels before (``folded_before``, ``folded_before_fine``), the rounds it took and whether the last
    resort was needed (``scaled_globally``)."""
    measured = determinants(field, grid)
    mask, before, before_fine = folds(field, grid, *measured)
    region = np.zeros_like(mask)
    u = sitk.GetArrayFromImage(field).astype(np.float64)
    rounds = 0
    while mask.any() and rounds < ROUNDS:
        region |= mask
        rounds += 1
        u = relaxed(u, neighbourhood(region, rounds - 1, field), per_axis(field, *DIFFUSION_SIGMA))
        measured = determinants(as_field(u, field), grid)
        mask = folds(field, grid, *measured)[0]
    scale, halvings = 1.0, 0
    while mask.any():  # the last resort: the whole displacement scaled towards the identity
        halvings += 1
        scale = 0.5**halvings if halvings < GLOBAL_ROUNDS else 0.0
        measured = determinants(as_field(scale * u, field), grid)
        mask = folds(field, grid, *measured)[0]
    stats = {"folded_before": before, "folded_before_fine": before_fine, "rounds": rounds,
             "scaled_globally": int(halvings > 0)}
    return Unfolded(as_field(scale * u, field), stats, *measured)


def unfold_onto(field: sitk.Image, reference: sitk.Image) -> Unfolded:
    """``field`` (on the grid its flow was made on: the heart-centred network grid) with its folds removed there
    first, then resampled onto ``reference`` and unfolded on both grids (``unfold``). The relaxation works at the
    flow's own spacing, not across a frame's thick slices, so it changes the heart less (``track``: issue 21,
    Testing/benchmarks/track_unfold.py). Counts: ``field``'s folds on ``reference`` (``folded_before``) and on
    its own grid (``folded_before_fine``); the rounds of both removals; whether either needed the last resort.
    The determinants are those of the last check, on ``reference`` and on ``field``'s grid."""
    before = folded_voxels(resample_field(field, reference))[1]
    own = unfold(field)
    both = unfold(resample_field(own.field, reference), field)
    stats = {"folded_before": before, "folded_before_fine": own.stats["folded_before"],
             "rounds": own.stats["rounds"] + both.stats["rounds"],
             "scaled_globally": max(own.stats["scaled_globally"], both.stats["scaled_globally"])}
    return Unfolded(both.field, stats, both.jacobian, both.fine_jacobian)
