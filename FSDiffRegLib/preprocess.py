"""Preprocessing as the paper: a 1.5 x 1.5 x 3.15 mm, 128 x 128 x 32 grid around the heart.

The network grid is a SimpleITK image with the fixed image's direction, the network's
spacing and size, and its centre on the heart, so every array on it maps back to physical
space. The heart is located without labels, from where the two frames differ: between
end-diastole and end-systole the heart is what moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from . import imageio  # noqa: F401  (silences ITK warnings)
from .config import Config

HEART_SMOOTHING_MM = 8.0
HEART_TOP_FRACTION = 0.05


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


def locate_heart(fixed: sitk.Image, moving: sitk.Image) -> np.ndarray:
    """Physical centre of the heart: the centroid of the strongest change between the frames.

    Both normalised images are compared on the fixed grid, the absolute difference is
    smoothed, and the top 5 % of it gives a weighted centroid. Falls back to the image
    centre when the frames do not differ.
    """
    f = normalized(fixed)
    m = resample_to(normalized(moving), f, -1.0)
    diff = sitk.SmoothingRecursiveGaussian(sitk.Abs(f - m), HEART_SMOOTHING_MM)
    array = sitk.GetArrayFromImage(diff)
    threshold = np.quantile(array, 1.0 - HEART_TOP_FRACTION)
    weights = np.where(array >= threshold, array, 0.0)
    if weights.sum() <= 0:
        return image_centre(fixed)
    zyx = np.indices(array.shape).reshape(3, -1) @ weights.ravel() / weights.sum()
    return np.array(fixed.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[::-1]]))


def network_grid(fixed: sitk.Image, centre: np.ndarray, cfg: Config) -> sitk.Image:
    """The network's grid: fixed direction, cfg spacing and size, centred on ``centre``."""
    size = [int(n) for n in cfg.grid_size]
    spacing = np.array(cfg.grid_spacing, dtype=float)
    direction = np.array(fixed.GetDirection()).reshape(3, 3)
    half = (np.array(size) - 1) / 2.0
    origin = centre - direction @ (spacing * half)
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin(origin.tolist())
    return grid


def prepare_pair(fixed: sitk.Image, moving: sitk.Image, cfg: Config) -> PreparedPair:
    """Both images, normalised, on the heart-centred network grid."""
    grid = network_grid(fixed, locate_heart(fixed, moving), cfg)
    f = sitk.GetArrayFromImage(resample_to(normalized(fixed), grid, -1.0))
    m = sitk.GetArrayFromImage(resample_to(normalized(moving), grid, -1.0))
    return PreparedPair(grid, f, m)
