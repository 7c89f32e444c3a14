"""Displacement fields in physical space: from network flows to ITK fields, and applying them.

An ITK displacement field holds, at each point x of its grid, the vector u(x) in LPS
millimetres such that x + u(x) is the corresponding point of the moving image.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def flow_to_field(flow: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """A flow (3, D, H, W) in grid voxels along (D, H, W) -> an ITK field on ``grid``."""
    ijk = np.moveaxis(flow[::-1], 0, -1).astype(np.float64)  # (D, H, W, 3) ordered (i, j, k)
    matrix = np.array(grid.GetDirection()).reshape(3, 3) * np.array(grid.GetSpacing())[None, :]
    field = sitk.GetImageFromArray(ijk @ matrix.T, isVector=True)
    field.CopyInformation(grid)
    return field


def field_to_flow(field: sitk.Image) -> np.ndarray:
    """An ITK field -> a flow (3, D, H, W) in voxels of the field's own grid."""
    matrix = np.array(field.GetDirection()).reshape(3, 3) * np.array(field.GetSpacing())[None, :]
    ijk = sitk.GetArrayFromImage(field) @ np.linalg.inv(matrix).T
    return np.moveaxis(ijk, -1, 0)[::-1].astype(np.float32)


def resample_field(field: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """The same physical displacements sampled on ``reference``'s grid (zero outside)."""
    out = sitk.Resample(field, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
    return out


def apply_field(image: sitk.Image, field: sitk.Image, nearest: bool = False) -> sitk.Image:
    """``image`` resampled onto the field's grid through the field (labels: nearest)."""
    transform = sitk.DisplacementFieldTransform(sitk.Image(field))  # it takes ownership: pass a copy
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, field, transform, interp, 0.0, image.GetPixelID())
