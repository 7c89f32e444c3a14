"""The inverse of a flow (FSDiffRegLib.model.inverse): known analytic inverses, and a fold-free inverse of a smooth
flow."""

from __future__ import annotations

import SimpleITK as sitk
import torch

from FSDiffRegLib.imaging.metrics import jacobian_determinant, jacobian_stats
from FSDiffRegLib.model.inverse import inverse_residual, invert_flow
from FSDiffRegLib.model.spatial import _identity_grid


def affine_flow(matrix: torch.Tensor, shift: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """u(p) = A p + b on a grid of ``size`` (1, 3, D, H, W)."""
    p = _identity_grid(size, torch.device("cpu"))
    return (torch.einsum("ij,jdhw->idhw", matrix, p) + shift.view(3, 1, 1, 1))[None]


def test_affine_inverse_is_the_known_one():
    """p -> (I + A) p + b is inverted by x -> (I + A)^-1 (x - b): v(x) = (I + A)^-1 (x - b) - x, exactly inside."""
    size = (16, 24, 24)
    a = torch.tensor([[0.05, 0.0, 0.0], [0.0, -0.15, 0.1], [0.0, 0.08, 0.2]])
    b = torch.tensor([0.5, -1.0, 1.5])
    inverse = invert_flow(affine_flow(a, b, size))
    m = torch.linalg.inv(torch.eye(3) + a)
    known = affine_flow(m - torch.eye(3), -m @ b, size)
    inside = (slice(None), slice(None), slice(3, -3), slice(5, -5), slice(5, -5))  # x + v(x) within the grid
    assert torch.allclose(inverse[inside], known[inside], atol=1e-3)


def test_contraction_inverted_and_fold_free():
    """A smooth radial contraction (as of a heart's ES to ED): its inverse composes to the identity within 0.01
    voxel, and has det J > 0 everywhere."""
    size = (12, 40, 40)
    p = _identity_grid(size, torch.device("cpu"))
    centre = torch.tensor([5.5, 19.5, 19.5]).view(3, 1, 1, 1)
    r = p - centre
    r[0] = 0
    bump = torch.exp(-(r**2).sum(0) / (2 * 8.0**2))
    flow = (0.35 * bump * r)[None]  # p + u(p) reaches out: the moving image's structures are larger
    inverse = invert_flow(flow)
    assert inverse_residual(flow, inverse).max() < 0.01
    stats = jacobian_stats(jacobian_of(inverse))
    assert stats["folding_percent"] == 0.0


def jacobian_of(flow: torch.Tensor):
    """det J of p -> p + u(p) (numpy, D, H, W) through the project's metric on a unit-spaced field."""
    field = sitk.GetImageFromArray(flow[0].flip(0).permute(1, 2, 3, 0).double().numpy(), isVector=True)
    return sitk.GetArrayFromImage(jacobian_determinant(field))
