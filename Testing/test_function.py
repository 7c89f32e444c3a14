"""Volumes, ejection fraction, mass and the strain summary: known labels, hand-made volume curves and real
ACDC labels (strain itself: test_strain.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.imaging.imageio import read_image
from FSDiffRegLib.pipeline.function import cardiac_function, quality_notes, strain_csv, structure_volumes, volumes_csv
from FSDiffRegLib.pipeline.strain import Strain


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


def small_labels(myo_voxels: int) -> sitk.Image:
    """A 10 x 10 x 4 grid of 1 mm3 voxels: LV 100 voxels, Myo ``myo_voxels``."""
    values = np.zeros((4, 10, 10), np.uint8)
    values[0] = 3
    values[1].flat[:myo_voxels] = 2
    out = sitk.GetImageFromArray(values)
    return out


def zero_like(labels: sitk.Image) -> sitk.Image:
    field = sitk.GetImageFromArray(np.zeros((*labels.GetSize()[::-1], 3)), isVector=True)
    field.CopyInformation(labels)
    return field


def test_quality_notes():
    labels = small_labels(100)
    fields = [zero_like(labels)] * 4
    volumes = [{"RV": 150.0, "Myo": 100.0, "LV": 160.0}, {"RV": 120.0, "Myo": 100.0, "LV": 100.0},
               {"RV": 80.0, "Myo": 100.0, "LV": 70.0}, {"RV": 75.0, "Myo": 100.0, "LV": 90.0}]
    volumes = [{k: v * 1000 for k, v in frame.items()} for frame in volumes]  # ml -> far above FEW_VOXELS of 1 mm3
    function = cardiac_function(volumes, 1, None)
    assert quality_notes(function, volumes, fields, [labels] * 4, None) == []  # ES frame 3 of 4, EF 56 %
    volumes[3]["LV"] = 4000.0
    function = cardiac_function(volumes, 1, None)
    checks = [n["check"] for n in quality_notes(function, volumes, fields, [labels] * 4, None)]
    assert checks == ["ef_range", "es_at_end"]  # LV EF 97.5 %, ES the last of four frames
    assert quality_notes(cardiac_function(volumes[:2], 1, None), volumes[:2], fields[:2], [labels] * 2, None) == []
    few = [dict(frame, LV=lv) for frame, lv in zip(volumes, (0.3, 0.19, 0.1, 0.15))]  # voxels of 1 mm3
    notes = quality_notes(cardiac_function(few, 1, None), few, fields, [labels] * 4, None)
    assert [n["check"] for n in notes] == ["few_voxels"]
    assert notes[0]["message"] == ("LV has fewer than 200 voxels in frames 2, 3, 4: its boundary voxels decide "
                                   "its volume")
    strain = Strain([0.0, 1.0, 2.0], [0.0, -1.0, -2.0], outside_frames=[3])
    function = cardiac_function(volumes[:3], 1, None)
    assert [n["check"] for n in quality_notes(function, volumes[:3], fields[:3], [labels] * 3, strain)] == \
        ["labels_off_grid", "es_at_end"]


def test_quality_note_on_folds_in_the_myocardium():
    labels = small_labels(100)  # slice 1 all Myo
    u = np.zeros((4, 10, 10, 3))
    u[1, :, :5, 0] = 3.0  # along i: x + u(x) jumps back 3 mm at i = 5, folding the neighbours there
    folded = sitk.GetImageFromArray(u, isVector=True)
    volumes = [{"Myo": 0.1, "LV": 0.1}, {"Myo": 0.1, "LV": 0.05}]
    function = cardiac_function(volumes, 1, None)
    notes = quality_notes(function, volumes, [zero_like(labels), folded], [labels] * 2, None)
    assert [n["check"] for n in notes] == ["myocardium_folds", "few_voxels", "few_voxels"]
    assert notes[0]["message"].startswith("folds in the myocardium (det <= 0 in more than 1 % of its voxels): "
                                          "frames 2 (")


def test_segment_strain_in_function_json_and_strain_csv():
    segments = [[0.0, -float(s)] for s in range(16)]
    segments[15] = [math.nan, math.nan]  # segment 16 without myocardium
    strain = Strain([0.0, 30.0], [0.0, -20.0], [0.0, -30.0], [0.0, -10.0], [[0.0, 2.0 * s] for s in range(16)],
                    segments, anchor="anterior RV insertion point")
    summary = cardiac_function(VOLUMES[:2], 1, strain)["strain"]
    assert summary["endocardial_circumferential_percent"] == [0.0, -30.0]
    assert summary["segment_anchor"] == "anterior RV insertion point"
    assert summary["segments"][1] == {"segment": 2, "name": "basal anteroseptal",
                                      "peak_circumferential_percent": -1.0, "peak_radial_percent": 2.0}
    assert summary["segments"][15]["peak_circumferential_percent"] is None
    lines = strain_csv(strain, [0.0, 40.0]).splitlines()
    assert lines[0] == "frame,time_ms,segment,name,radial_percent,circumferential_percent"
    assert len(lines) == 1 + 2 * 17
    assert lines[18] == "2,40.000,global,global,30.00,-20.00"
    assert lines[20] == "2,40.000,2,basal anteroseptal,2.00,-1.00"
    assert lines[34] == "2,40.000,16,apical lateral,30.00,"
