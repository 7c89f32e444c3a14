"""Jacobian determinant and folding of known fields; Dice."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from FSDiffRegLib.imaging.metrics import dice, heart_labels_dice, jacobian_determinant, jacobian_stats
from test_spatial import field_from, grid


def det(displacement, oblique: bool = True) -> np.ndarray:
    g = grid(oblique)
    return sitk.GetArrayFromImage(jacobian_determinant(field_from(g, displacement)))[2:-2, 2:-2, 2:-2]


def test_identity_has_unit_jacobian():
    jac = det(lambda p: np.zeros_like(p))
    assert np.allclose(jac, 1.0)
    assert jacobian_stats(jac) == {"folding_percent": 0.0, "sd_jacobian": 0.0}


def test_uniform_scaling_gives_s_cubed_in_physical_units():
    s = 1.3
    jac = det(lambda p: (s - 1.0) * p)
    assert np.allclose(jac, s**3, atol=1e-6)


def test_folding_field_is_counted():
    """u_x = -2 x inside a slab: the map x -> x + u folds there (det = -1)."""
    jac = det(lambda p: np.stack([np.where(np.abs(p[..., 0]) < 10, -2.0 * p[..., 0], 0), 0 * p[..., 0],
                                  0 * p[..., 0]], -1), oblique=False)
    stats = jacobian_stats(jac)
    assert jac.min() < 0
    assert 0 < stats["folding_percent"] == 100 * np.mean(jac <= 0)
    assert stats["sd_jacobian"] > 0.5


def test_dice_and_heart_dice():
    a = np.zeros((4, 4, 4), np.uint8)
    b = a.copy()
    a[:2], b[1:3] = 3, 3
    assert dice(a == 3, b == 3) == 0.5
    scores = heart_labels_dice(a, b)
    assert scores["LV"] == 0.5 and scores["RV"] == 1.0 and scores["heart"] == 0.5
    assert scores["mean"] == np.mean([0.5, 1.0, 1.0])
