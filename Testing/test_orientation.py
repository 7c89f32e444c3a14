"""The same answer however the images are stored: axis order, axis senses, an oblique frame.

Storing both images of a pair another way (``DICOMOrient``, a rigid rotation of the physical frame)
must not change the displacement field in physical space. The network grid takes the fixed image's
axes in one canonical order and sense (ACDC's LPS, in which the model was trained), so the network
sees the same arrays; the fields then agree to float64 rounding (measured: < 1e-12 mm).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from FSDiffRegLib.defaults import RefineOptions
from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.imaging.preprocess import canonical, prepare_pair
from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.pipeline.register import register_images
from FSDiffRegLib.resources import sample_pair

STORAGES = ("RAS", "LPI", "ASL", "IRP")  # flips, and transposed axis orders
TOLERANCE_MM = 1e-3
SAMPLE = sample_pair()


def every_orientation() -> list[str]:
    """The 48 axis-aligned orientations: each order of the three axis pairs, each sense."""
    return ["".join(letters) for pairs in itertools.permutations(("LR", "PA", "SI"))
            for letters in itertools.product(*pairs)]


def rotation(degrees: float, axis: tuple[float, float, float]) -> np.ndarray:
    return np.array(sitk.VersorTransform(axis, np.radians(degrees)).GetMatrix()).reshape(3, 3)


def rotated(image: sitk.Image, matrix: np.ndarray, centre: np.ndarray) -> sitk.Image:
    """``image`` with its frame rigidly rotated about ``centre``: the same voxels, moved in space."""
    out = sitk.Image(image)
    out.SetDirection((matrix @ np.array(image.GetDirection()).reshape(3, 3)).ravel().tolist())
    out.SetOrigin((centre + matrix @ (np.array(image.GetOrigin()) - centre)).tolist())
    return out


def centre_of(image: sitk.Image) -> np.ndarray:
    return np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))


def test_every_storage_of_a_stack_gives_the_same_canonical_image():
    fixed = sitk.ReadImage(str(SAMPLE["fixed"]))
    for orientation in every_orientation():
        image = canonical(sitk.DICOMOrient(fixed, orientation))
        assert image.GetDirection() == fixed.GetDirection(), orientation  # ACDC's LPS, kept exactly
        assert np.allclose(image.GetOrigin(), fixed.GetOrigin(), atol=1e-9), orientation
        assert np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(fixed)), orientation


def test_acdc_orientation_is_left_as_it_is():
    fixed = sitk.ReadImage(str(SAMPLE["fixed"]))
    prepared = prepare_pair(fixed, sitk.ReadImage(str(SAMPLE["moving"])), Config())
    assert prepared.grid.GetDirection() == fixed.GetDirection()  # the grid the model was trained on


def test_an_oblique_stack_keeps_its_obliquity():
    fixed = sitk.ReadImage(str(SAMPLE["fixed"]))
    matrix = rotation(8.0, (1.0, 2.0, 3.0))
    oblique = rotated(fixed, matrix, centre_of(fixed))
    for orientation in ("LPS", "RAS", "ASL", "IRP"):
        image = canonical(sitk.DICOMOrient(oblique, orientation))
        assert np.allclose(image.GetDirection(), oblique.GetDirection(), atol=1e-12), orientation


def test_the_slice_axis_stays_the_third_axis():
    """A stack whose slices are stacked along L keeps them along the grid's third axis, as in training."""
    stack = sitk.Image([224, 180, 8], sitk.sitkFloat32)
    stack.SetSpacing([1.5, 1.5, 10.0])
    stack.SetDirection([0, 0, 1, 1, 0, 0, 0, 1, 0])  # in-plane axes P and S, slices along L
    for orientation in every_orientation():
        image = canonical(sitk.DICOMOrient(stack, orientation))
        assert image.GetSpacing() == (1.5, 1.5, 10.0), orientation
        assert image.GetDirection() == stack.GetDirection(), orientation
    isotropic = sitk.Image([16, 16, 16], sitk.sitkFloat32)
    isotropic.SetDirection([0, -1, 0, 0, 0, 1, -1, 0, 0])
    assert np.array_equal(canonical(isotropic).GetDirection(), np.eye(3).ravel())


@pytest.fixture(scope="module")
def model(bundled_weights):
    return load_model(bundled_weights, "cpu")[0]


def field(model, fixed: sitk.Image, moving: sitk.Image, refine: int) -> sitk.Image:
    return register_images(fixed, moving, model, torch.device("cpu"), refine=RefineOptions(refine)).field


def unrotated(field: sitk.Image, matrix: np.ndarray, centre: np.ndarray) -> sitk.Image:
    """A field computed in a rotated frame, taken back to the original frame (grid and vectors)."""
    back = sitk.GetImageFromArray(sitk.GetArrayFromImage(field) @ matrix, isVector=True)  # R^T u per voxel
    back.CopyInformation(field)
    return rotated(back, matrix.T, centre)


def distance_mm(reference: sitk.Image, other: sitk.Image) -> tuple[float, float]:
    """Max and mean distance between two fields at the reference's voxels (the same points in space)."""
    other = sitk.Resample(other, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0, sitk.sitkVectorFloat64)
    distance = np.linalg.norm(sitk.GetArrayViewFromImage(reference) - sitk.GetArrayViewFromImage(other), axis=-1)
    return float(distance.max()), float(distance.mean())


def stored(image: sitk.Image, storage: str, matrix: np.ndarray, centre: np.ndarray) -> sitk.Image:
    """``image`` stored another way: "RAS" reoriented, "oblique" rotated, "oblique ASL" both."""
    if storage.startswith("oblique"):
        image = rotated(image, matrix, centre)
        storage = storage[len("oblique"):].strip()
    return sitk.DICOMOrient(image, storage) if storage else image


def check_pair(model, fixed: sitk.Image, moving: sitk.Image, refine: int, storages: tuple[str, ...]) -> None:
    """Each storage gives the reference field, in physical space, within TOLERANCE_MM."""
    reference = field(model, fixed, moving, refine)
    assert np.abs(sitk.GetArrayViewFromImage(reference)).max() > 1.0  # a real deformation, not zero
    matrix, centre = rotation(8.0, (1.0, 2.0, 3.0)), centre_of(fixed)
    for storage in storages:
        other = field(model, stored(fixed, storage, matrix, centre), stored(moving, storage, matrix, centre), refine)
        if storage.startswith("oblique"):
            other = unrotated(other, matrix, centre)
        assert distance_mm(reference, other)[0] < TOLERANCE_MM, storage


@pytest.mark.slow
def test_the_sample_pair_gives_one_field_however_stored(model):
    fixed, moving = sitk.ReadImage(str(SAMPLE["fixed"])), sitk.ReadImage(str(SAMPLE["moving"]))
    check_pair(model, fixed, moving, 0, (*STORAGES, "oblique", "oblique ASL"))
    check_pair(model, fixed, moving, 1, ("ASL", "oblique IRP"))  # refinement starts from identical arrays too


@pytest.mark.slow
def test_acdc_validation_pairs_give_one_field_however_stored(model, data_dir):
    for pair in acdc.split(data_dir, "validation")[1:3]:
        check_pair(model, sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving)), 0, ("RAS", "oblique IRP"))
