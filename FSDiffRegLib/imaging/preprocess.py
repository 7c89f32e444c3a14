"""Preprocessing as the paper: a 1.5 x 1.5 x 3.15 mm, 128 x 128 x 32 grid around the heart.

The network grid is a SimpleITK image with the network's spacing and size, its centre on the
heart, and the fixed image's axes in one canonical order and sense (LPS, as every ACDC image the
model was trained on), so every array on it maps back to physical space and the network sees the
same arrays however the images are stored. The heart is located without labels, from where the
two frames differ: between end-diastole and end-systole the heart is what moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..model.config import Config
from . import imageio  # noqa: F401  (silences ITK warnings)

HEART_GRID_SMOOTHING_MM = 8.0
HEART_GRID_TOP_FRACTION = 0.05
CANONICAL = "LPS"  # ACDC's orientation (identity direction), the one the bundled model was trained in
CANONICAL_LETTER = {"L": "L", "R": "L", "P": "P", "A": "P", "S": "S", "I": "S"}


@dataclass
class PreparedPair:
    """A pair on the network grid: arrays (D, H, W) in [-1, 1] and the grid image."""

    grid: sitk.Image
    fixed: np.ndarray
    moving: np.ndarray


def normalized(image: sitk.Image) -> sitk.Image:
    """Intensities to [-1, 1]: minimum to -1, the 99.5th percentile (and above) to 1."""
    array = sitk.GetArrayViewFromImage(image).astype(np.float32)
    lo, hi = float(array.min()), float(np.percentile(array, 99.5))
    if hi <= lo:
        hi = float(array.max())
    scaled = np.clip((array - lo) / (hi - lo), 0.0, 1.0) * 2.0 - 1.0
    out = sitk.GetImageFromArray(scaled.astype(np.float32))
    out.CopyInformation(image)
    return out


def resample_to(image: sitk.Image, reference: sitk.Image, default: float, nearest: bool = False) -> sitk.Image:
    """``image`` on ``reference``'s grid through the identity (physical space is kept)."""
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    pixel = image.GetPixelID() if nearest else sitk.sitkFloat32
    return sitk.Resample(image, reference, sitk.Transform(), interp, default, pixel)


def image_centre(image: sitk.Image) -> np.ndarray:
    """Physical point at the centre of an image's voxel grid."""
    middle = [(n - 1) / 2.0 for n in image.GetSize()]
    return np.array(image.TransformContinuousIndexToPhysicalPoint(middle))


def heart_grid_centre(fixed: sitk.Image, moving: sitk.Image) -> np.ndarray:
    """Physical centre of the heart: the centroid of the strongest change between the frames.

    Both normalised images are compared on the fixed grid, the absolute difference is
    smoothed, and the top 5 % of it gives a weighted centroid. Falls back to the image
    centre when the frames do not differ.
    """
    f = normalized(fixed)
    m = resample_to(normalized(moving), f, -1.0)
    diff = sitk.SmoothingRecursiveGaussian(sitk.Abs(f - m), HEART_GRID_SMOOTHING_MM)
    array = sitk.GetArrayFromImage(diff)
    threshold = np.quantile(array, 1.0 - HEART_GRID_TOP_FRACTION)
    weights = np.where(array >= threshold, array, 0.0)
    if weights.sum() <= 0:
        return image_centre(fixed)
    zyx = np.indices(array.shape).reshape(3, -1) @ weights.ravel() / weights.sum()
    return np.array(fixed.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[::-1]]))


def slice_axis(spacing: tuple[float, ...]) -> int | None:
    """The axis whose spacing exceeds the other two (a stack of slices); None when there is no such axis."""
    order = np.argsort(spacing)
    return int(order[2]) if spacing[order[2]] > 1.001 * spacing[order[1]] else None


def canonical(image: sitk.Image) -> sitk.Image:
    """The image with its axes reordered and flipped to lie nearest the canonical orientation, obliquity kept.

    The slice axis of a stack stays the third axis, as in training; the other axes (all three for a
    near-isotropic image) take the canonical order. Any permutation or flip of the stored axes gives
    the same result: the same voxels on the same grid.
    """
    letters = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    target = CANONICAL
    axis = slice_axis(image.GetSpacing())
    if axis is not None:
        last = CANONICAL_LETTER[letters[axis]]
        target = target.replace(last, "") + last
    return sitk.DICOMOrient(image, target)


def network_grid(fixed: sitk.Image, centre: np.ndarray, cfg: Config) -> sitk.Image:
    """The network's grid: the fixed image's canonical axes, cfg spacing and size, centred on ``centre``."""
    size = [int(n) for n in cfg.grid_size]
    spacing = np.array(cfg.grid_spacing, dtype=float)
    direction = np.array(canonical(fixed).GetDirection()).reshape(3, 3)
    half = (np.array(size) - 1) / 2.0
    origin = centre - direction @ (spacing * half)
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin(origin.tolist())
    return grid


def prepare_pair(fixed: sitk.Image, moving: sitk.Image, cfg: Config) -> PreparedPair:
    """Both images, normalised, on the heart-centred network grid."""
    fixed = canonical(fixed)  # the same arrays, so the same heart centre, however the images are stored
    grid = network_grid(fixed, heart_grid_centre(fixed, moving), cfg)
    f = sitk.GetArrayFromImage(resample_to(normalized(fixed), grid, -1.0))
    m = sitk.GetArrayFromImage(resample_to(normalized(moving), grid, -1.0))
    return PreparedPair(grid, f, m)


def through_plane_axis(image: sitk.Image) -> int:
    """The array axis (D, H, W order) with the largest spacing: the slice axis of a short-axis stack."""
    return int(np.argmax(image.GetSpacing()[::-1]))


def base_first(lv_sizes: Sequence[float] | np.ndarray) -> bool:
    """Whether a short-axis stack stores its base first: the LV blood pool is larger towards the base, so the
    first half of its per-slice sizes (``lv_sizes``, in stack order) sums at least as large as the last half."""
    sizes = np.asarray(lv_sizes, float)
    half = len(sizes) // 2
    return bool(sizes[:half].sum() >= sizes[len(sizes) - half:].sum())
