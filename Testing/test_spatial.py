"""Known displacements move images the right way, in voxels and in physical space."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from FSDiffRegLib.imaging.field import apply_field, field_to_flow, flow_to_field, resample_field
from FSDiffRegLib.model.spatial import gaussian_blur, integrate_velocity, upsample_flow, warp

BLOB = np.array([4.0, -6.0, 10.0])  # physical (LPS mm) centre of the test blob


def grid(oblique: bool) -> sitk.Image:
    image = sitk.Image([48, 40, 24], sitk.sitkFloat32)
    image.SetSpacing([1.5, 1.5, 3.0])
    if oblique:
        a, b = math.radians(25), math.radians(15)
        rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
        image.SetDirection((rz @ rx).ravel().tolist())
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([23.5, 19.5, 11.5]))
    image.SetOrigin((np.array(image.GetOrigin()) - centre).tolist())
    return image


def points(image: sitk.Image) -> np.ndarray:
    """Physical coordinates (D, H, W, 3) of every voxel."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in image.GetSize()[::-1]], indexing="ij")[::-1], axis=-1)
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    return idx @ matrix.T + np.array(image.GetOrigin())


def blob(image: sitk.Image, centre: np.ndarray = BLOB) -> sitk.Image:
    values = np.exp(-((points(image) - centre) ** 2).sum(-1) / (2 * 6.0**2)).astype(np.float32)
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(image)
    return out


def centroid(image: sitk.Image) -> np.ndarray:
    w = sitk.GetArrayFromImage(image).astype(np.float64)
    return (points(image) * w[..., None]).sum((0, 1, 2)) / w.sum()


def field_from(image: sitk.Image, displacement) -> sitk.Image:
    field = sitk.GetImageFromArray(displacement(points(image)).astype(np.float64), isVector=True)
    field.CopyInformation(image)
    return field


def torch_warp(moving: sitk.Image, field: sitk.Image) -> sitk.Image:
    flow = torch.from_numpy(field_to_flow(field))[None]
    out = warp(torch.from_numpy(sitk.GetArrayFromImage(moving))[None, None], flow)
    image = sitk.GetImageFromArray(out[0, 0].numpy())
    image.CopyInformation(moving)
    return image


def rotation_about(centre: np.ndarray, degrees: float):
    a = math.radians(degrees)
    r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    return r, (lambda p: (p - centre) @ r.T + centre - p)


@pytest.mark.parametrize("oblique", [False, True])
def test_translation_moves_image_by_minus_u_both_ways(oblique):
    """u = +5 mm along LPS x: the warped image shows the moving content 5 mm towards -x."""
    g = grid(oblique)
    moving = blob(g)
    field = field_from(g, lambda p: np.broadcast_to([5.0, 0.0, 0.0], p.shape))
    expected = BLOB - [5.0, 0.0, 0.0]
    by_itk = apply_field(moving, field)
    by_torch = torch_warp(moving, field)
    assert np.allclose(centroid(by_itk), expected, atol=0.1)
    assert np.allclose(centroid(by_torch), expected, atol=0.1)
    assert np.abs(sitk.GetArrayFromImage(by_itk) - sitk.GetArrayFromImage(by_torch)).max() < 1e-3


@pytest.mark.parametrize("oblique", [False, True])
def test_rotation_is_the_same_through_torch_and_itk(oblique):
    """u(x) = R(x - c) + c - x samples the moving image at R x: content turns by R^-1."""
    g = grid(oblique)
    moving = blob(g)
    r, displacement = rotation_about(np.zeros(3), 12.0)
    field = field_from(g, displacement)
    expected = r.T @ BLOB
    by_itk, by_torch = apply_field(moving, field), torch_warp(moving, field)
    assert np.allclose(centroid(by_itk), expected, atol=0.15)
    assert np.allclose(centroid(by_torch), expected, atol=0.15)
    assert np.abs(sitk.GetArrayFromImage(by_itk) - sitk.GetArrayFromImage(by_torch)).max() < 2e-3


def test_flow_to_field_round_trip_and_units():
    g = grid(True)
    flow = np.random.default_rng(0).normal(size=(3, 24, 40, 48)).astype(np.float32)
    assert np.allclose(field_to_flow(flow_to_field(flow, g)), flow, atol=1e-5)
    one_slice = np.zeros_like(flow)
    one_slice[0] = 1.0  # one voxel along the slice axis = 3 mm along the third direction column
    vector = sitk.GetArrayFromImage(flow_to_field(one_slice, g))[0, 0, 0]
    assert np.allclose(vector, 3.0 * np.array(g.GetDirection()).reshape(3, 3)[:, 2])


def test_field_resampled_to_another_grid_keeps_physical_displacements():
    """A network-grid field put on a coarser, shifted grid still moves the image the same."""
    g = grid(True)
    field = field_from(g, lambda p: np.broadcast_to([0.0, 3.0, -2.0], p.shape))
    other = sitk.Image([30, 30, 10], sitk.sitkFloat32)
    other.SetSpacing([2.0, 2.0, 6.0])
    other.SetOrigin([-25.0, -25.0, -25.0])
    moved = apply_field(blob(other), resample_field(field, other))
    assert np.allclose(centroid(moved), BLOB - [0.0, 3.0, -2.0], atol=0.2)


def test_upsampled_flow_rescales_displacements():
    coarse = torch.ones(1, 3, 4, 8, 8)
    fine = upsample_flow(coarse, (8, 16, 16))
    assert torch.allclose(fine[0, 0], torch.full((8, 16, 16), 7 / 3))
    assert torch.allclose(fine[0, 1], torch.full((8, 16, 16), 15 / 7))


def test_integrated_velocity_is_invertible_where_the_plain_field_folds():
    """exp(v) of a constant v is the same translation; a folding v becomes a fold-free map."""
    assert torch.allclose(integrate_velocity(torch.full((1, 3, 8, 8, 8), 0.7))[..., 2:-2, 2:-2, 2:-2],
                          torch.full((1, 3, 4, 4, 4), 0.7), atol=1e-4)
    w = torch.arange(32.0)
    bump = 6.0 * torch.exp(-((w - 16) ** 2) / 8.0)  # u_W = bump(W): slope < -1 somewhere -> folds
    v = torch.zeros(1, 3, 4, 4, 32)
    v[:, 2] = bump
    slope_plain = 1 + torch.diff(v[0, 2, 2, 2])
    slope_exp = 1 + torch.diff(integrate_velocity(v)[0, 2, 2, 2])
    assert slope_plain.min() < 0 < slope_exp.min()


def test_gaussian_blur_spreads_an_impulse_along_the_asked_axes_only():
    impulse = torch.zeros(1, 2, 9, 21, 21)
    impulse[:, :, 4, 10, 10] = 1.0
    blurred = gaussian_blur(impulse, (0.0, 0.0, 1.5))
    profile = blurred[0, 1, 4, 10]
    offsets = torch.arange(21.0) - 10
    assert float(blurred.sum()) == pytest.approx(2.0, rel=1e-5)  # each channel keeps its mass
    assert float(blurred[0, :, :, :, 10].sum()) == pytest.approx(2 * float(profile[10]), rel=1e-5)  # W only
    assert float((profile * offsets**2).sum()) == pytest.approx(1.5**2, rel=0.03)  # variance sigma^2 (cut at 3 sigma)
    assert int((profile > 0).sum()) == 11  # radius ceil(3 sigma) = 5


def test_gaussian_blur_keeps_an_affine_displacement_away_from_the_edges():
    d, h, w = torch.meshgrid(torch.arange(12.0), torch.arange(20.0), torch.arange(20.0), indexing="ij")
    flow = torch.stack([0.1 * d + 0.5, 0.2 * h - 0.3 * w, 0.05 * d + 0.4 * w])[None]
    inner = (slice(None), slice(None), slice(2, -2), slice(5, -5), slice(5, -5))
    assert torch.allclose(gaussian_blur(flow, (0.5, 1.5, 1.5))[inner], flow[inner], atol=1e-4)
