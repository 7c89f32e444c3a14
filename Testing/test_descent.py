"""The RV volume corrected for the base's descent (descent.py): a synthetic cine whose base moves out of the
basal slice, by RV_DESCENT_MM_PER_ML per ml the LV ejects, while the tracked labels, carried within the slices,
keep it."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from FSDiffRegLib.pipeline.descent import RV_DESCENT_MM_PER_ML, corrected_volumes
from FSDiffRegLib.pipeline.function import cardiac_function, structure_volumes

SLICES, SPACING = (8, 10.0), (3.5, 3.5, 10.0)


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    jj, ii = np.mgrid[0:shape[0], 0:shape[1]]
    return (jj - centre[0]) ** 2 + (ii - centre[1]) ** 2 <= radius**2


def heart(scale: float, rv_slices: range, base_first: bool = True, rv_scale: float | None = None) -> sitk.Image:
    """8 slices of 10 mm: LV blood pool (3, 170 ml) in a myocardium ring (2), the RV (1) beside it on ``rv_slices``
    (0 = basal); the LV narrows towards the apex; ``scale`` shrinks every structure within the slices, ``rv_scale``
    the RV instead where given."""
    array = np.zeros((SLICES[0], 64, 64), np.uint8)
    for k in range(SLICES[0]):
        lv = 10.0 - 0.8 * k
        array[k][disc((64, 64), (32, 36), (lv + 3) * scale)] = 2
        array[k][disc((64, 64), (32, 36), lv * scale)] = 3
        if k in rv_slices:
            array[k][disc((64, 64), (32, 14), 9 * (scale if rv_scale is None else rv_scale)) & (array[k] == 0)] = 1
    image = sitk.GetImageFromArray(array if base_first else array[::-1].copy())
    image.SetSpacing(SPACING)
    return image


def test_the_basal_slab_leaves_as_the_base_descends():
    """ED, half way and ES tracked within the slices: the base descends RV_DESCENT_MM_PER_ML per ml the LV has
    ejected (74 ml at ES: 11.8 mm); the basal slab keeps what lies below the descended base; the LV is as
    tracked."""
    frames = [heart(1.0, range(8)), heart(0.875, range(8)), heart(0.75, range(8))]
    volumes = [structure_volumes(f) for f in frames]
    corrected, descent = corrected_volumes(volumes, frames, 0)
    assert descent == pytest.approx([RV_DESCENT_MM_PER_ML * (volumes[0]["LV"] - v["LV"]) for v in volumes])
    assert 10.0 < descent[2] < 13.0  # past the 10 mm basal slab, into the next
    slab_ml = [(sitk.GetArrayFromImage(frames[2])[k] == 1).sum() * 3.5 * 3.5 * 10.0 / 1000 for k in range(8)]
    assert corrected[2]["RV"] == pytest.approx((20.0 - descent[2]) / 10.0 * slab_ml[1] + sum(slab_ml[2:]))
    assert corrected[0] == volumes[0]
    assert [v["LV"] for v in corrected] == [v["LV"] for v in volumes]
    before, after = (cardiac_function(v, 1, None)["RV"]["EF_percent"] for v in (volumes, corrected))
    assert after > before + 5  # 43 -> 51 %


def rv_and_descent(frames: list[sitk.Image]) -> tuple[list[float], list[float]]:
    volumes, descent = corrected_volumes([structure_volumes(f) for f in frames], frames, 0)
    return [v["RV"] for v in volumes], descent


def test_a_heart_that_barely_pumps_barely_descends():
    """The same RV, carried the same way: under an LV that ejects 7 ml the base moves about 1 mm and the RV stays
    as tracked (within 2 %); under one that ejects 74 ml it moves past the basal slab."""
    ed = heart(1.0, range(8))
    weak, strong = ([ed, heart(lv, range(8), rv_scale=0.75)] for lv in (0.98, 0.75))
    (weak_rv, weak_descent), (strong_rv, strong_descent) = (rv_and_descent(f) for f in (weak, strong))
    tracked_rv = structure_volumes(weak[1])["RV"]
    assert weak_descent[1] < 1.5 and weak_rv[1] == pytest.approx(tracked_rv, rel=0.02)
    assert strong_descent[1] > 10.0 and strong_rv[1] < tracked_rv * 0.9


def test_the_same_however_the_stack_is_stored():
    """Base last instead of first, or the slice axis stored last: the same descent and volumes."""
    rv, descent = rv_and_descent([heart(1.0, range(8)), heart(0.75, range(8))])
    assert descent[1] > 10.0
    flipped = rv_and_descent([heart(1.0, range(8), base_first=False), heart(0.75, range(8), base_first=False)])
    transposed = []
    for f in (heart(1.0, range(8)), heart(0.75, range(8))):
        t = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(f), (1, 2, 0))))
        t.SetSpacing((10.0, 3.5, 3.5))
        transposed.append(t)
    for other in (flipped, rv_and_descent(transposed)):
        assert other[0] == pytest.approx(rv) and other[1] == pytest.approx(descent)


def test_the_lv_times_the_descent():
    """A poorly tracked RV that does not shrink still descends with the blood the LV ejects; an LV that does not
    shrink moves nothing."""
    ed, es = heart(1.0, range(8)), heart(0.75, range(8))
    rv = sitk.Cast(ed == 1, sitk.sitkUInt8)
    still_rv = [ed, sitk.Mask(es, sitk.Cast(rv == 0, sitk.sitkUInt8)) + rv]  # ES's LV and Myo, ED's RV
    volumes = [structure_volumes(f) for f in still_rv]
    assert volumes[1]["RV"] == volumes[0]["RV"] and volumes[1]["LV"] < volumes[0]["LV"]
    ejected = volumes[0]["LV"] - volumes[1]["LV"]
    assert corrected_volumes(volumes, still_rv, 0)[1][1] == pytest.approx(RV_DESCENT_MM_PER_ML * ejected)
    still_lv = [ed, sitk.Mask(ed, sitk.Cast(rv == 0, sitk.sitkUInt8)) + sitk.Cast(es == 1, sitk.sitkUInt8)]
    volumes = [structure_volumes(f) for f in still_lv]
    assert volumes[1]["RV"] < volumes[0]["RV"] and volumes[1]["LV"] == volumes[0]["LV"]
    assert corrected_volumes(volumes, still_lv, 0) == (volumes, [0.0, 0.0])


def test_nothing_to_correct():
    """No LV fall (a still heart) or no LV: the volumes as tracked, no descent."""
    still = [heart(1.0, range(8)), heart(1.0, range(8))]
    volumes = [structure_volumes(f) for f in still]
    assert corrected_volumes(volumes, still, 0) == (volumes, [0.0, 0.0])
    no_lv = [sitk.Cast(sitk.ChangeLabel(heart(s, range(8)), {3: 0}), sitk.sitkUInt8) for s in (1.0, 0.8)]
    volumes = [structure_volumes(f) for f in no_lv]
    assert corrected_volumes(volumes, no_lv, 0) == (volumes, [0.0, 0.0])


def test_the_base_is_the_end_with_the_larger_lv_stored_first_or_last():
    """One rule for strain and descent (imaging.preprocess.base_first): the half of the stack whose LV blood
    pool is larger is the base, whichever end it is stored at."""
    from FSDiffRegLib.imaging.preprocess import base_first, through_plane_axis
    from FSDiffRegLib.labels import LV
    from FSDiffRegLib.pipeline.descent import slab_counts

    assert base_first([9, 7, 5, 3, 1]) and not base_first([1, 3, 5, 7, 9])
    assert base_first(np.array([0, 6, 6, 2, 0.0])) and not base_first(np.array([0, 2, 6, 6, 0.0]))
    stored_first = heart(1.0, range(0, 5))
    stored_last = heart(1.0, range(0, 5), base_first=False)
    for image, expected in ((stored_first, True), (stored_last, False)):
        assert base_first(slab_counts(image, LV, through_plane_axis(image))) is expected
