"""Volumes, ejection fraction, mass and global strain: known labels, hand-made volume curves,
analytic displacement fields of known strain on an anisotropic oblique grid, and real ACDC labels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from FSDiffRegLib import acdc
from FSDiffRegLib.function import (
    Strain,
    cardiac_function,
    long_axis,
    myocardial_strain,
    structure_volumes,
    volumes_csv,
)
from FSDiffRegLib.imageio import read_image
from test_spatial import points

SPACING = (1.5, 1.5, 8.0)  # cine MRI: fine in-plane, thick slices
SHIFT = np.array([1, -1, 1])  # the LV axis moves one voxel in i and j per slice: tilted ~15 deg from the slice normal
R_IN, R_OUT = 20.0, 30.0  # ED endocardial and epicardial radii (mm)


def grid(oblique: bool) -> sitk.Image:
    image = sitk.Image([64, 64, 8], sitk.sitkUInt8)
    image.SetSpacing(SPACING)
    image.SetOrigin((-40.0, 25.0, 7.0))
    if oblique:  # short-axis slices at an angle to the scanner axes, as cines are planned
        a, b = math.radians(30), math.radians(-40)
        rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
        image.SetDirection((rz @ rx).ravel().tolist())
    return image


class Cylinder:
    """Cylindrical coordinates (r, theta, z) around the LV axis of ``grid``: through voxel (28, 36, 0), along SHIFT.

    The axis crosses every slice at a voxel centre, so the LV centroid of each slice lies on it exactly.
    """

    def __init__(self, image: sitk.Image):
        matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
        self.point = np.array(image.TransformIndexToPhysicalPoint((28, 36, 0)))
        self.axis = matrix @ SHIFT / np.linalg.norm(matrix @ SHIFT)
        e1 = np.cross(self.axis, matrix[:, 2] + matrix[:, 0])
        self.e1 = e1 / np.linalg.norm(e1)
        self.e2 = np.cross(self.axis, self.e1)

    def coords(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rel = p - self.point
        x, y = rel @ self.e1, rel @ self.e2
        return np.hypot(x, y), np.arctan2(y, x), rel @ self.axis

    def point_at(self, r: np.ndarray, theta: np.ndarray, z: np.ndarray) -> np.ndarray:
        return (self.point + z[..., None] * self.axis
                + r[..., None] * (np.cos(theta)[..., None] * self.e1 + np.sin(theta)[..., None] * self.e2))


def labels_image(image: sitk.Image, r: np.ndarray, theta: np.ndarray, sector: float) -> sitk.Image:
    """LV (3) inside R_IN, Myo (2) from R_IN to R_OUT within |theta| < sector, on slices 1-6 (not the end slices)."""
    theta = np.angle(np.exp(1j * theta))  # in (-pi, pi]
    values = np.where(r < R_IN, 3, np.where((r <= R_OUT) & (np.abs(theta) < sector), 2, 0)).astype(np.uint8)
    values[[0, -1]] = 0
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(image)
    return out


def track(oblique: bool, backward, sector: float = math.pi):
    """ED labels, a frame's field x -> X = backward(r, theta) at ED, the frame's labels, and (r, R) at its Myo."""
    image = grid(oblique)
    cyl = Cylinder(image)
    x = points(image)
    r, theta, z = cyl.coords(x)
    ed_labels = labels_image(image, r, theta, sector)
    big_r, big_theta = backward(r, theta)
    field = sitk.GetImageFromArray(cyl.point_at(big_r, big_theta, z) - x, isVector=True)
    field.CopyInformation(image)
    frame_labels = labels_image(image, big_r, big_theta, sector)
    myo = sitk.GetArrayFromImage(frame_labels) == 2
    zero = sitk.GetImageFromArray(np.zeros(x.shape), isVector=True)
    zero.CopyInformation(image)
    strain = myocardial_strain([zero, field], [ed_labels, frame_labels], ed_labels)
    return strain, r[myo], big_r[myo]


@pytest.mark.parametrize("oblique", [False, True])
def test_long_axis_is_the_line_through_the_slice_centroids_of_the_blood_pool(oblique):
    image = grid(oblique)
    cyl = Cylinder(image)
    r, theta, _ = cyl.coords(points(image))
    point, axis = long_axis(labels_image(image, r, theta, math.pi))
    assert abs(axis @ cyl.axis) == pytest.approx(1.0, abs=1e-9)
    assert np.linalg.norm(np.cross(point - cyl.point, cyl.axis)) < 1e-6
    one_slice = sitk.GetArrayFromImage(labels_image(image, r, theta, math.pi))
    one_slice[[1, 2, 4, 5, 6]] = 0
    flat = sitk.GetImageFromArray(one_slice)
    flat.CopyInformation(image)
    point, axis = long_axis(flat)
    assert np.allclose(abs(axis @ np.array(image.GetDirection()).reshape(3, 3)[:, 2]), 1.0)  # the slice normal


@pytest.mark.parametrize("oblique", [False, True])
def test_rotation_about_the_long_axis_has_no_strain(oblique):
    strain, _, _ = track(oblique, lambda r, theta: (r, theta - 0.4))
    assert strain.radial_percent[0] == pytest.approx(0.0, abs=1e-9)  # the reference frame
    assert strain.circumferential_percent[0] == pytest.approx(0.0, abs=1e-9)
    assert strain.radial_percent[1] == pytest.approx(0.0, abs=1e-6)
    assert strain.circumferential_percent[1] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("oblique", [False, True])
def test_circumferential_shortening(oblique):
    """theta -> c theta on a sector of the ring (a full ring cannot shorten without tearing or thickening):
    segments along the circumference shorten by c, radial ones keep their length."""
    c = 0.8
    strain, _, _ = track(oblique, lambda r, theta: (r, theta / c), sector=0.75 * math.pi)
    assert strain.circumferential_percent[1] == pytest.approx(100 * (c - 1), abs=0.3)  # -20 %
    assert strain.radial_percent[1] == pytest.approx(0.0, abs=0.3)


@pytest.mark.parametrize("oblique", [False, True])
def test_wall_thickening(oblique):
    """r = s R + b with b < 0: the wall thickens by s everywhere (radial strain s - 1) while the
    endocardium moves in more than the epicardium (circumferential strain r / R - 1, -30 % to -7 %)."""
    s, b = 1.4, -14.0  # ED wall 20-30 mm -> 14-28 mm: 10 mm -> 14 mm thick
    strain, r, big_r = track(oblique, lambda r, theta: ((r - b) / s, theta))
    weight = big_r / (s * r)  # the ED volume each frame voxel came from: det(dX/dx)
    expected = np.average(r / big_r - 1, weights=weight) * 100
    assert abs(expected - np.mean(r / big_r - 1) * 100) > 0.3  # weighting by ED volume matters at this tolerance
    assert strain.radial_percent[1] == pytest.approx(100 * (s - 1), abs=0.3)  # +40 %: thickening is positive
    assert strain.circumferential_percent[1] == pytest.approx(expected, abs=0.1)
    assert strain.circumferential_percent[1] < -10  # shortening is negative


def test_no_strain_without_myocardium_or_blood_pool():
    image = grid(False)
    r, theta, _ = Cylinder(image).coords(points(image))
    labels = labels_image(image, r, theta, math.pi)
    zero = sitk.GetImageFromArray(np.zeros((*labels.GetSize()[::-1], 3)), isVector=True)
    zero.CopyInformation(image)
    assert myocardial_strain([zero], [labels], labels) is not None
    for missing in (2, 3):
        assert myocardial_strain([zero], [labels], sitk.Mask(labels, labels != missing)) is None
    with pytest.raises(ValueError, match="2 displacement fields for 1 label images"):
        myocardial_strain([zero, zero], [labels], labels)


def test_volumes_are_voxel_counts_times_voxel_volume():
    labels = sitk.Image([10, 8, 4], sitk.sitkUInt8)
    labels.SetSpacing((1.5, 2.0, 10.0))  # 30 mm3 a voxel
    labels.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    values = sitk.GetArrayFromImage(labels)
    values[0, :2] = 1  # 20 voxels of RV
    values[1] = 3  # 80 of LV
    values[2, 0, :5] = 2  # 5 of Myo
    values[3, 0, 0] = 7
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(labels)
    volumes = structure_volumes(out)
    assert list(volumes) == ["RV", "Myo", "LV", "label7"]
    assert volumes == pytest.approx({"RV": 0.6, "Myo": 0.15, "LV": 2.4, "label7": 0.03})
    assert structure_volumes(sitk.Image([3, 3, 3], sitk.sitkUInt8)) == {}


VOLUMES = [{"RV": 150.0, "Myo": 100.0, "LV": 160.0}, {"RV": 120.0, "Myo": 101.0, "LV": 100.0},
           {"RV": 80.0, "Myo": 99.0, "LV": 60.0}, {"RV": 70.0, "Myo": 100.0, "LV": 64.0}]


def test_function_from_volume_curves():
    strain = Strain([0.0, 20.0, 35.5, 30.0], [0.0, -10.0, -18.25, -19.0])
    function = cardiac_function(VOLUMES, 1, strain)
    assert function == {
        "frames": 4, "ED_frame": 1, "ES_frame": 3,  # minimum LV volume, not minimum RV (frame 4)
        "LV": {"EDV_ml": 160.0, "ESV_ml": 60.0, "SV_ml": 100.0, "EF_percent": 62.5},
        "RV": {"EDV_ml": 150.0, "ESV_ml": 80.0, "SV_ml": 70.0, "EF_percent": 46.67},  # at the LV's ES frame
        "Myo": {"ED_volume_ml": 100.0, "mass_g": 105.0},
        "strain": {"radial_percent": [0.0, 20.0, 35.5, 30.0], "circumferential_percent": [0.0, -10.0, -18.25, -19.0],
                   "peak_radial_percent": 35.5, "peak_radial_frame": 3,
                   "peak_circumferential_percent": -19.0, "peak_circumferential_frame": 4}}


def test_function_with_structures_missing():
    rv_only = [{"RV": v["RV"]} for v in VOLUMES]
    function = cardiac_function(rv_only, 2, None)
    assert function == {"frames": 4, "ED_frame": 2, "ES_frame": 4,  # without LV: minimum RV volume
                        "RV": {"EDV_ml": 120.0, "ESV_ml": 70.0, "SV_ml": 50.0, "EF_percent": 41.67}}
    assert cardiac_function([{"label5": 3.0}] * 2, 1, None) == {"frames": 2, "ED_frame": 1, "ES_frame": None}
    lv_lost = [VOLUMES[0], {"RV": 100.0}]  # a structure missing from a later frame has volume 0 there
    assert cardiac_function(lv_lost, 1, None)["LV"]["ESV_ml"] == 0.0
    with pytest.raises(ValueError, match="ED frame 5 is outside the frames 1..4"):
        cardiac_function(VOLUMES, 5, None)


def test_strain_of_a_frame_without_myocardium_is_null():
    function = cardiac_function(VOLUMES[:2], 1, Strain([-1e-15, math.nan], [0.0, math.nan]))
    assert "-0.0" not in json.dumps(function)
    assert function["strain"] == {"radial_percent": [0.0, None], "circumferential_percent": [0.0, None],
                                  "peak_radial_percent": 0.0, "peak_radial_frame": 1,
                                  "peak_circumferential_percent": 0.0, "peak_circumferential_frame": 1}


def test_volumes_csv():
    volumes = [{"LV": 100.0, "label9": 1.0, "RV": 90.5, "label4": 2.0}, {"LV": 50.12345, "RV": 60.0}]
    assert volumes_csv(volumes, [0.0, 33.3333]) == (
        "frame,time_ms,RV_ml,LV_ml,label4_ml,label9_ml\n"
        "1,0.000,90.500,100.000,2.000,1.000\n"
        "2,33.333,60.000,50.123,0.000,0.000\n")
    assert volumes_csv(volumes[1:], None) == "frame,RV_ml,LV_ml\n1,60.000,50.123\n"
    with pytest.raises(ValueError, match="1 frame times for 2 frames"):
        volumes_csv(volumes, [0.0])


@pytest.mark.parametrize(("patient", "check"), [
    # ACDC's group definitions (Bernard et al. 2018): DCM = LV EDV > 100 ml/m2 and LV EF < 40 %; NOR: normal EF
    ("patient001", lambda lv, bsa: lv["EDV_ml"] / bsa > 100 and lv["EF_percent"] < 40),
    ("patient061", lambda lv, bsa: lv["EDV_ml"] / bsa < 100 and 50 < lv["EF_percent"] < 80),
])
def test_acdc_manual_labels_match_their_diagnostic_group(data_dir, patient, check):
    folder = data_dir / "training" / patient
    pair, info = acdc.load_pair(folder), acdc.read_info(folder)
    volumes = [structure_volumes(read_image(path, "labels")) for path in (pair.fixed_labels, pair.moving_labels)]
    function = cardiac_function(volumes, 1, None)
    bsa = math.sqrt(float(info["Height"]) * float(info["Weight"]) / 3600)  # Mosteller, m2
    assert function["ES_frame"] == 2 and set(function) >= {"LV", "RV", "Myo"}
    assert check(function["LV"], bsa), (info["Group"], function["LV"], bsa)
