"""Registration metrics: Dice, Jacobian determinant, folding, SD|J| (of a field on a grid), global NCC."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..labels import VALUES
from .field import resample_field


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def heart_labels_dice(warped_labels: np.ndarray, fixed_labels: np.ndarray) -> dict[str, float]:
    """Dice of LV, Myo, RV, their mean, and the whole heart (all labels > 0)."""
    scores = {name: dice(warped_labels == v, fixed_labels == v) for name, v in VALUES.items()}
    scores["mean"] = float(np.mean([scores["LV"], scores["Myo"], scores["RV"]]))
    scores["heart"] = dice(warped_labels > 0, fixed_labels > 0)
    return scores


def jacobian_determinant(field: sitk.Image) -> sitk.Image:
    """det(I + grad u) of a displacement field in physical space, on the field's grid.

    SimpleITK's filter differentiates along the index axes and ignores the grid's
    direction, so the vectors are first expressed in the grid's own frame (D^T u),
    which makes the determinant right for oblique grids too.
    """
    direction = np.array(field.GetDirection()).reshape(3, 3)
    local = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(field) @ direction, isVector=True)
    local.SetSpacing(field.GetSpacing())
    jacobian = sitk.DisplacementFieldJacobianDeterminant(local, True)
    jacobian.CopyInformation(field)
    return jacobian


def jacobian_stats(jacobian: np.ndarray) -> dict[str, float]:
    """Folding (% of voxels with det <= 0) and the standard deviation of det."""
    return {
        "folding_percent": float(100.0 * np.mean(jacobian <= 0)),
        "sd_jacobian": float(np.std(jacobian)),
    }


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Global normalised cross-correlation of two arrays."""
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def field_metrics(field: sitk.Image, grid: sitk.Image) -> dict[str, float]:
    """Folding % and SD|J| of a field, measured on the heart-centred network grid."""
    jac = sitk.GetArrayFromImage(jacobian_determinant(resample_field(field, grid)))
    return jacobian_stats(jac)
