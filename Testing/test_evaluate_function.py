"""``evaluate-function`` on a real ACDC validation pair: the sign of EF errors, Dice, the table."""

from __future__ import annotations

from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from FSDiffRegLib.defaults import RefineOptions
from FSDiffRegLib.evaluation.baselines import identity_field
from FSDiffRegLib.evaluation.evaluate_function import Method, acdc_table, ejection_fraction, model_method, pair_row
from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.pipeline.function import structure_volumes

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ACDC"
pytestmark = pytest.mark.skipif(not (DATA / "training" / "patient091").is_dir(),
                                reason=f"ACDC data not found at {DATA} (tests read patient 091 from ../shared/data)")


@pytest.fixture(scope="module")
def pair() -> acdc.AcdcPair:
    return acdc.load_pair(DATA / "training" / "patient091")


def test_unmoved_labels_give_zero_ef_and_its_full_error(pair: acdc.AcdcPair):
    """The identity carries the ED labels unchanged: ESV = EDV, EF 0, so the error is minus the manual EF."""
    row = pair_row(Method("identity", lambda ed, es, labels: identity_field(es, ed)), pair)
    ed = structure_volumes(sitk.ReadImage(str(pair.fixed_labels)))
    es = structure_volumes(sitk.ReadImage(str(pair.moving_labels)))
    manual = ejection_fraction(ed["LV"], es["LV"])
    assert 40 < manual < 80
    assert row["LV_EF_manual"] == pytest.approx(manual)
    assert row["LV_EF_error"] == pytest.approx(-manual)
    assert row["LV_ESV_error"] == pytest.approx(ed["LV"] - es["LV"])
    assert row["folding_percent"] == 0.0


def test_tracking_carries_the_labels_towards_es(pair: acdc.AcdcPair):
    model, _ = load_model(None, torch.device("cpu"))
    identity = pair_row(Method("identity", lambda ed, es, labels: identity_field(es, ed)), pair)
    row = pair_row(model_method("network", model, torch.device("cpu"), RefineOptions(steps=0)), pair)
    assert row["mean"] > identity["mean"] + 0.05
    assert abs(row["LV_EF_error"]) < abs(identity["LV_EF_error"]) - 10
    table = acdc_table({"identity": [identity], "network": [row]})
    assert table.count("\n") == 3 and "| network | " in table
