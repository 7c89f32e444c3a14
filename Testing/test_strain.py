"""Contour-based strain (FSDiffRegLib/pipeline/strain.py) on analytic labels and fields of known strain: short-axis
stacks on anisotropic (and oblique) grids, fields frame -> ED built from a backward map in the slice plane."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from FSDiffRegLib.pipeline.strain import ANCHOR_ANTERIOR, ANCHOR_RV, RAYS, contour_strain, ed_contours, segment_of
from FSDiffRegLib.pipeline.track import zero_field

SIZE = (80, 80, 6)  # i, j, k: six 10 mm slices, base at k = 0
WALL_MM = 10.0


def grid(oblique: bool) -> sitk.Image:
    image = sitk.Image(SIZE, sitk.sitkUInt8)
    image.SetSpacing((1.5, 1.5, 10.0))
    image.SetOrigin((-60.0, -55.0, 20.0))
    if oblique:  # short-axis slices at an angle to the scanner axes
        a, b = math.radians(30), math.radians(-40)
        rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
        image.SetDirection((rz @ rx).ravel().tolist())
    return image


class Stack:
    """Physical points of ``image`` in slice-plane polar coordinates around the LV axis (through voxel (40, 40),
    along the slice normal toward the apex); psi: counter-clockwise seen from the apex, from ``reference``."""

    def __init__(self, image: sitk.Image, reference: np.ndarray | None = None):
        self.image = image
        direction = np.array(image.GetDirection()).reshape(3, 3)
        self.normal = direction[:, 2]
        self.centre = np.array(image.TransformContinuousIndexToPhysicalPoint((40.0, 40.0, 0.0)))
        k, j, i = np.meshgrid(*(np.arange(n) for n in SIZE[::-1]), indexing="ij")
        index = np.stack([i, j, k], -1).astype(float)
        matrix = direction * np.array(image.GetSpacing())
        self.points = np.array(image.GetOrigin()) + index @ matrix.T
        rel = self.points - self.centre
        self.height = rel @ self.normal
        self.inplane = rel - self.height[..., None] * self.normal
        self.r = np.linalg.norm(self.inplane, axis=-1)
        a = direction[:, 0] if reference is None else reference
        self.a, self.b = a, np.cross(self.normal, a)
        self.psi = np.degrees(np.arctan2(self.inplane @ self.b, self.inplane @ self.a)) % 360

    def labels(self, rv: tuple[float, float] | None = None) -> sitk.Image:
        """LV inside 22 - 2k mm, Myo the 10 mm around it; RV beyond the wall between angles ``rv`` (degrees)."""
        k = np.arange(SIZE[2])[:, None, None]
        inner = 22.0 - 2.0 * k
        values = np.where(self.r < inner, 3, np.where(self.r <= inner + WALL_MM, 2, 0)).astype(np.uint8)
        if rv is not None:
            arc = (self.psi >= rv[0]) & (self.psi <= rv[1])
            values[arc & (self.r > inner + WALL_MM) & (self.r < inner + WALL_MM + 15)] = 1
        out = sitk.GetImageFromArray(values)
        out.CopyInformation(self.image)
        return out

    def field(self, backward_r, backward_psi=lambda r, psi: psi) -> sitk.Image:
        """The field x -> X of the backward in-plane map (r, psi) -> (R, Psi) (degrees)."""
        big_r, big_psi = backward_r(self.r, self.psi), np.radians(backward_psi(self.r, self.psi))
        direction = np.cos(big_psi)[..., None] * self.a + np.sin(big_psi)[..., None] * self.b
        target = self.centre + self.height[..., None] * self.normal + big_r[..., None] * direction
        out = sitk.GetImageFromArray(target - self.points, isVector=True)
        out.CopyInformation(self.image)
        return out


def strain_of(stack: Stack, labels: sitk.Image, field: sitk.Image):
    return contour_strain([zero_field(labels), field], labels)


@pytest.mark.parametrize("oblique", [False, True])
def test_rotation_has_no_strain(oblique):
    stack = Stack(grid(oblique))
    strain = strain_of(stack, stack.labels(), stack.field(lambda r, psi: r, lambda r, psi: psi - 17.0))
    for values in ([strain.radial_percent, strain.circumferential_percent, strain.endocardial_circumferential_percent,
                    strain.epicardial_circumferential_percent] + strain.segments_radial_percent
                   + strain.segments_circumferential_percent):
        assert values == pytest.approx([0.0, 0.0], abs=1e-6)
    assert strain.outside_frames == []


@pytest.mark.parametrize("oblique", [False, True])
def test_uniform_in_plane_shortening(oblique):
    """x = c + (1 - s)(X - c): every contour and every wall shortens by s."""
    s = 0.15
    stack = Stack(grid(oblique))
    strain = strain_of(stack, stack.labels(), stack.field(lambda r, psi: r / (1 - s)))
    for values in ([strain.circumferential_percent, strain.endocardial_circumferential_percent,
                    strain.epicardial_circumferential_percent, strain.radial_percent]
                   + strain.segments_circumferential_percent + strain.segments_radial_percent):
        assert values == pytest.approx([0.0, -100 * s], abs=1e-6)


def test_wall_thickening():
    """r = a R + b (b < 0): every wall thickens by a (radial strain a - 1); the mid-wall contour of radius Rm
    goes to a Rm + b."""
    a, b = 1.3, -9.0
    stack = Stack(grid(False))
    strain = strain_of(stack, stack.labels(), stack.field(lambda r, psi: (r - b) / a))
    assert strain.radial_percent[1] == pytest.approx(100 * (a - 1), abs=0.2)  # +30 %: thickening is positive
    mid = 22.0 - 2.0 * np.arange(SIZE[2]) + WALL_MM / 2  # mid-wall radius per slice: perimeter is proportional to it
    assert strain.circumferential_percent[1] == pytest.approx(100 * ((a * mid + b).sum() / mid.sum() - 1), abs=0.3)
    assert strain.endocardial_circumferential_percent[1] < strain.circumferential_percent[1] < -10
    for values in strain.segments_radial_percent:
        assert values[1] == pytest.approx(30.0, abs=0.5)


def test_one_segment_contracting_the_rest_still():
    """Shortening by 20 % only inside segment 9 (mid inferoseptal, 60-120 degrees from the insertion point) on
    the mid slices, fading to nothing 10 degrees inside its borders: only segment 9 has strain."""
    image = grid(False)
    probe = ed_contours(Stack(image).labels())
    assert probe.anchor == ANCHOR_ANTERIOR
    first = probe.endo[0, 0] - probe.endo[0, 0:RAYS // 2 + 1:RAYS // 2].mean(0)  # ray 0 of slice 0
    stack = Stack(image, reference=first / np.linalg.norm(first))
    weight = np.clip(np.minimum(stack.psi - 70.0, 110.0 - stack.psi) / 10.0, 0.0, 1.0)
    weight[[0, 1, 4, 5]] = 0.0  # slices 2 and 3 are the mid third of six
    strain = strain_of(stack, stack.labels(), stack.field(lambda r, psi: r / (1.0 - 0.2 * weight)))
    assert strain.segments_radial_percent[8][1] < -5.0
    assert abs(strain.segments_circumferential_percent[8][1]) > 1.0
    for s in range(16):
        if s != 8:
            assert strain.segments_radial_percent[s] == pytest.approx([0.0, 0.0], abs=1e-6), s + 1
            assert strain.segments_circumferential_percent[s] == pytest.approx([0.0, 0.0], abs=1e-6), s + 1
    assert strain.segments_radial_percent[8][1] < strain.radial_percent[1] < 0.0


def test_segments_by_third_and_rv_insertion():
    """Six slices: basal, mid and apical thirds of two; the ray at 0 degrees is the anterior RV insertion point
    (the counter-clockwise start of the RV's contact with the wall), the border of segments 1 and 2."""
    stack = Stack(grid(True))
    contours = ed_contours(stack.labels(rv=(100.0, 220.0)))
    assert contours.anchor == ANCHOR_RV
    assert set(contours.ray_segments[:2].ravel()) == set(range(1, 7))
    assert set(contours.ray_segments[2:4].ravel()) == set(range(7, 13))
    assert set(contours.ray_segments[4:].ravel()) == set(range(13, 17))
    for s in range(SIZE[2]):
        inplane = contours.endo[s, 0] - stack.centre
        inplane -= (inplane @ stack.normal) * stack.normal
        angle = math.degrees(math.atan2(inplane @ stack.b, inplane @ stack.a)) % 360
        assert angle == pytest.approx(100.0, abs=4.0)
    assert list(contours.ray_segments[0, ::RAYS // 12]) == [2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 1, 1]
    flipped = sitk.GetImageFromArray(sitk.GetArrayFromImage(stack.labels())[::-1].copy())  # base at the last slice
    flipped.CopyInformation(stack.image)
    assert set(ed_contours(flipped).ray_segments[:2].ravel()) == set(range(13, 17))


def test_segment_of():
    assert segment_of(np.array([0.0, 59.9, 60.0, 299.9, 300.0, 359.0]), 0).tolist() == [2, 2, 3, 6, 1, 1]
    assert segment_of(np.array([0.0, 130.0]), 1).tolist() == [8, 10]
    assert segment_of(np.array([14.9, 15.0, 104.9, 105.0, 195.0, 285.0]), 2).tolist() == [13, 14, 14, 15, 16, 13]


def test_no_contours_without_blood_pool_or_myocardium():
    stack = Stack(grid(False))
    labels = stack.labels()
    for missing in (2, 3):
        without = sitk.Mask(labels, labels != missing)
        assert ed_contours(without) is None
        assert contour_strain([zero_field(labels)], without) is None
