"""Evaluation in both directions (issue 21): the direction swap, the paired bootstrap, the carried LV EF error."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from FSDiffRegLib.evaluation.baselines import identity_field
from FSDiffRegLib.evaluation.benchmark import benchmark, comparison
from FSDiffRegLib.evaluation.evaluate import identity_row, paired_bootstrap, score_field
from FSDiffRegLib.evaluation.evaluate_function import ejection_fraction
from FSDiffRegLib.evaluation.methods import Method
from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.imaging.preprocess import heart_grid_centre, network_grid
from FSDiffRegLib.model.config import Config
from FSDiffRegLib.pipeline.function import structure_volumes


def test_the_swap_turns_fixed_and_moving_and_their_labels(validation_pair: acdc.AcdcPair):
    back = acdc.directed(validation_pair, "ed-es")
    info = acdc.read_info(validation_pair.fixed.parent)
    assert back.fixed.name.endswith(f"frame{int(info['ES']):02d}.nii.gz")  # ES is fixed
    assert back.moving.name.endswith(f"frame{int(info['ED']):02d}.nii.gz")
    assert (back.fixed_labels, back.moving_labels) == (validation_pair.moving_labels, validation_pair.fixed_labels)
    assert acdc.directed(back, "ed-es") == validation_pair
    assert acdc.directed(validation_pair, "es-ed") == validation_pair
    with pytest.raises(ValueError, match="unknown direction"):
        acdc.directed(validation_pair, "sideways")


def test_the_bootstrap_on_real_dice(data_dir):
    """Identical candidates: a zero interval; a constant shift: the interval is the shift."""
    dice = [identity_row(p)["mean"] for p in acdc.split(data_dir, "validation")[:5]]
    same = paired_bootstrap(dice, dice)
    assert same["difference"] == same["low"] == same["high"] == 0.0 and same["wins"] == same["losses"] == 0
    shifted = paired_bootstrap([d + 0.02 for d in dice], dice)
    assert shifted["low"] == pytest.approx(0.02) and shifted["high"] == pytest.approx(0.02)
    assert shifted["wins"] == 5 and shifted["losses"] == 0
    mixed = paired_bootstrap(dice, dice[::-1])  # a real spread: an interval around the mean difference
    assert mixed["low"] < mixed["difference"] < mixed["high"]
    assert mixed == paired_bootstrap(dice, dice[::-1])  # a fixed seed


def test_carried_labels_unmoved_give_minus_the_manual_ef(validation_pair: acdc.AcdcPair):
    """ED onto ES through the identity: the carried ED labels keep the ED volume, EF 0: the error is -EF."""
    back = acdc.directed(validation_pair, "ed-es")
    es, ed = sitk.ReadImage(str(back.fixed)), sitk.ReadImage(str(back.moving))
    es_labels, ed_labels = sitk.ReadImage(str(back.fixed_labels)), sitk.ReadImage(str(back.moving_labels))
    grid = network_grid(es, heart_grid_centre(es, ed), Config())
    row = score_field(identity_field(es, ed), grid, ed_labels, es_labels, carried_ef=True)
    manual = ejection_fraction(structure_volumes(ed_labels)["LV"], structure_volumes(es_labels)["LV"])
    assert 20 < manual < 90
    assert row["LV_EF_error"] == pytest.approx(-manual)
    assert row["folding_percent"] == row["folding_fixed_percent"] == 0.0
    assert "LV_EF_error" not in score_field(identity_field(es, ed), grid, ed_labels, es_labels)


def test_the_benchmark_runs_each_pair_both_ways(data_dir):
    pairs = acdc.split(data_dir, "validation")[:2]
    method = Method("FSDiffReg (network)", lambda fixed, moving, moving_labels: identity_field(fixed, moving))
    rows, cases = benchmark(pairs, [method], ways=("es-ed", "ed-es"))
    assert cases == [(pairs[0].patient, "ES->ED"), (pairs[0].patient, "ED->ES"),
                     (pairs[1].patient, "ES->ED"), (pairs[1].patient, "ED->ES")]
    r = rows["FSDiffReg (network)"]
    assert [("LV_EF_error" in x) for x in r] == [False, True, False, True]
    assert np.isclose(r[0]["mean"], r[1]["mean"])  # ED and ES share a grid: unmoved labels overlap alike
    table = comparison(rows, cases)
    assert "| FSDiffReg (network) | ED->ES | " in table and "+0.0000 [+0.0000, +0.0000] | 0/0" in table
