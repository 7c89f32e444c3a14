"""ACDC reading, the split, and preprocessing onto the heart-centred grid, on real data."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.imaging.preprocess import heart_grid_centre, network_grid, normalized, prepare_pair
from FSDiffRegLib.model.config import Config


def test_split_is_fixed_and_uses_info_cfg(data_dir):
    train, validation = acdc.split(data_dir, "train"), acdc.split(data_dir, "validation")
    assert [p.patient for p in validation] == [f"patient{i:03d}" for i in range(91, 101)]
    assert len(train) == 90 and not {p.patient for p in train} & {p.patient for p in validation}
    pair = acdc.load_pair(data_dir / "training" / "patient001")
    assert pair.fixed.name == "patient001_frame01.nii.gz"  # Info.cfg: ED 1, ES 12
    assert pair.moving.name == "patient001_frame12.nii.gz"
    assert pair.moving_labels.name == "patient001_frame12_gt.nii.gz"


def test_heart_is_found_without_labels(validation_pair):
    fixed = sitk.ReadImage(str(validation_pair.fixed))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(validation_pair.fixed_labels)))
    zyx = np.argwhere(labels > 0).mean(axis=0)
    truth = np.array(fixed.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[::-1]]))
    found = heart_grid_centre(fixed, sitk.ReadImage(str(validation_pair.moving)))
    assert np.linalg.norm(found - truth) < 25.0


def test_prepared_pair_has_the_paper_grid_and_keeps_geometry(validation_pair):
    fixed = sitk.ReadImage(str(validation_pair.fixed))
    prepared = prepare_pair(fixed, sitk.ReadImage(str(validation_pair.moving)), Config())
    assert prepared.fixed.shape == prepared.moving.shape == (32, 128, 128)
    assert prepared.grid.GetSpacing() == (1.5, 1.5, 3.15)
    assert np.allclose(prepared.grid.GetDirection(), fixed.GetDirection())
    assert prepared.fixed.min() >= -1 and prepared.fixed.max() <= 1 and prepared.fixed.max() == 1
    # the labelled heart lies inside the crop
    labels = sitk.Resample(sitk.ReadImage(str(validation_pair.fixed_labels)), prepared.grid, sitk.Transform(),
                           sitk.sitkNearestNeighbor, 0)
    assert (sitk.GetArrayFromImage(labels) == 3).sum() > 1000


def test_network_grid_is_centred_on_the_given_point():
    image = sitk.Image([10, 10, 10], sitk.sitkFloat32)
    image.SetDirection([0, 1, 0, -1, 0, 0, 0, 0, 1])
    centre = np.array([3.0, -4.0, 7.5])
    grid = network_grid(image, centre, Config())
    assert np.allclose(grid.TransformContinuousIndexToPhysicalPoint([63.5, 63.5, 15.5]), centre)


def test_normalization_maps_min_to_minus_one_and_clips_outliers():
    array = np.zeros((8, 8, 8), np.float32)
    array[..., :4] = 100.0
    array[0, 0, 0] = 10000.0
    image = sitk.GetImageFromArray(array)
    out = sitk.GetArrayFromImage(normalized(image))
    assert out.min() == -1.0 and out.max() == 1.0 and np.isclose(out[1, 1, 1], 1.0)
