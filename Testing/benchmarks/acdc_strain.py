"""Contour strain per ACDC diagnostic group, and where the RV EF error comes from (issue 23).

Usage: PYTHONPATH=$PWD nice -n 10 .venv/bin/python Testing/benchmarks/acdc_strain.py track OUT [PATIENT ...]
       PYTHONPATH=$PWD .venv/bin/python Testing/benchmarks/acdc_strain.py measure OUT

``track``: each patient's 2-frame cine (ED, ES) tracked from its ED labels as ``track`` does (``track_frames``, the
default weights and refinement); the ES field and carried labels saved in OUT (patients already there skipped), in
the order given (default 001-100). ``measure``: from OUT, the peak global strain per group (mean, SD), the mean
peak circumferential strain per AHA segment and group, the bullseyes of patients 041 (MINF) and 061 (NOR), the
wall thickening of the manual labels (ES against ED, mean ray thickness, no tracking), and per patient the RV EF
error (from the carried labels as they are, and corrected for the base's descent as ``track`` reports it:
``descent.py``), the same error with the basal slice's ES RV volume taken from the manual labels, and the RV
volume error per slice (base first).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from FSDiffRegLib.defaults import TRACK_REFINE
from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.imaging.cine import Cine
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.outputs.bullseye import save_bullseye
from FSDiffRegLib.pipeline.descent import corrected_volumes
from FSDiffRegLib.pipeline.function import cardiac_function, quality_notes, structure_volumes
from FSDiffRegLib.pipeline.strain import contour_strain, ed_contours
from FSDiffRegLib.pipeline.track import track_frames, zero_field

DATA = Path("../shared/data/ACDC")
GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")
BULLSEYES = ("patient041", "patient061")


def track(out: Path, patients: list[int]) -> None:
    model, about = load_model(None, torch.device("cpu"))
    print(about["name"], flush=True)
    pairs = {int(p.patient[-3:]): p for p in acdc.split(DATA, "train") + acdc.split(DATA, "validation")}
    for number in patients:
        pair = pairs[number]
        target = out / f"{pair.patient}_field.nii.gz"
        if target.exists():
            continue
        start = time.time()
        ed, es = sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving))
        t = track_frames(Cine([ed, es], None), sitk.ReadImage(str(pair.fixed_labels)), 0, model,
                         torch.device("cpu"), TRACK_REFINE)
        sitk.WriteImage(t.labels[1], str(out / f"{pair.patient}_labels.nii.gz"))
        partial = out / f"{pair.patient}_field.tmp.nii.gz"
        sitk.WriteImage(sitk.Cast(t.fields[1], sitk.sitkVectorFloat32), str(partial))
        partial.rename(target)
        print(pair.patient, f"{time.time() - start:.1f}s", flush=True)


def ef(ed_ml: float, es_ml: float) -> float:
    return 100.0 * (ed_ml - es_ml) / ed_ml


def patient_row(out: Path, patient: str) -> dict:
    """Strain, quality notes, RV and LV EF errors and label-based thickening of one tracked patient."""
    pair = acdc.load_pair(DATA / "training" / patient)
    ed = sitk.ReadImage(str(pair.fixed_labels))
    es_labels = sitk.ReadImage(str(pair.moving_labels))
    field = sitk.Cast(sitk.ReadImage(str(out / f"{patient}_field.nii.gz")), sitk.sitkVectorFloat64)
    carried = sitk.ReadImage(str(out / f"{patient}_labels.nii.gz"))
    strain = contour_strain([zero_field(ed), field], ed)
    volumes = [structure_volumes(ed), structure_volumes(carried)]
    rv_corrected = corrected_volumes(volumes, [ed, carried], 0)[0][1]["RV"]
    function = cardiac_function(volumes, 1, strain)
    notes = quality_notes(function, volumes, [zero_field(ed), field], [ed, carried], strain)
    ml = np.prod(ed.GetSpacing()) / 1000
    ed_a, es_a, car_a = (sitk.GetArrayFromImage(x) for x in (ed, es_labels, carried))
    rv_ed, rv_es, rv_tracked = ((a == 1).sum(axis=(1, 2)) * ml for a in (ed_a, es_a, car_a))
    present = np.nonzero(rv_ed + rv_es)[0]
    basal_as_drawn = rv_tracked.copy()
    basal_as_drawn[present[0]] = rv_es[present[0]]  # ACDC stacks start at the base
    thickness = [np.nanmean(np.linalg.norm(c.epi - c.endo, axis=-1)) for c in (ed_contours(ed), ed_contours(es_labels))]
    s = function["strain"]
    return {"patient": patient, "group": acdc.read_info(pair.fixed.parent)["Group"], "strain": s,
            "notes": [n["check"] for n in notes],
            "rv_ef": ef(rv_ed.sum(), rv_es.sum()),
            "rv_error": ef(rv_ed.sum(), rv_tracked.sum()) - ef(rv_ed.sum(), rv_es.sum()),
            "rv_error_descent": ef(rv_ed.sum(), rv_corrected) - ef(rv_ed.sum(), rv_es.sum()),
            "rv_error_basal_as_drawn": ef(rv_ed.sum(), basal_as_drawn.sum()) - ef(rv_ed.sum(), rv_es.sum()),
            "lv_error": ef((ed_a == 3).sum(), (car_a == 3).sum()) - ef((ed_a == 3).sum(), (es_a == 3).sum()),
            "rv_slices": (rv_tracked - rv_es)[present].round(1).tolist(),
            "thickening": 100 * (thickness[1] / thickness[0] - 1)}


def measure(out: Path) -> None:
    rows = [patient_row(out, p.name[:10]) for p in sorted(out.glob("patient*_field.nii.gz"))]
    for r in rows:
        s = r["strain"]
        print(r["patient"], r["group"], s["circumferential_percent"][1], s["radial_percent"][1], r["notes"], flush=True)
        if r["patient"] in BULLSEYES:
            save_bullseye(s["segments"], out / f"bullseye_{r['patient']}_{r['group']}.png")
    print("\n| group | patients | peak global circumferential (%) | endocardial | epicardial | peak global radial (%) "
          "| wall thickening of the manual labels (%) |\n|---|---|---|---|---|---|---|")
    for group in GROUPS:
        members = [r for r in rows if r["group"] == group]
        if not members:
            continue
        cells = []
        for key in ("circumferential_percent", "endocardial_circumferential_percent",
                    "epicardial_circumferential_percent", "radial_percent"):
            values = np.array([r["strain"][key][1] for r in members])
            cells.append(f"{values.mean():+.1f} ({values.std():.1f})")
        thick = np.array([r["thickening"] for r in members])
        print(f"| {group} | {len(members)} | " + " | ".join(cells) + f" | {thick.mean():+.1f} ({thick.std():.1f}) |")
    print("\nmean peak circumferential strain per AHA segment 1-16:")
    for group in GROUPS:
        segments = np.array([[np.nan if x["peak_circumferential_percent"] is None else x["peak_circumferential_percent"]
                              for x in r["strain"]["segments"]] for r in rows if r["group"] == group], float)
        if len(segments):
            print(group, np.round(np.nanmean(segments, 0), 1).tolist())
    print("\npatient group RV_EF_manual RV_EF_error RV_EF_error_descent RV_EF_error_basal_as_drawn LV_EF_error "
          "RV_ES_error_ml_per_slice")
    for r in rows:
        print(r["patient"], r["group"], f"{r['rv_ef']:.1f} {r['rv_error']:+.1f} {r['rv_error_descent']:+.1f} "
              f"{r['rv_error_basal_as_drawn']:+.1f} "
              f"{r['lv_error']:+.1f}", r["rv_slices"])
    for name, subset in (("all", rows), ("training 001-080", [r for r in rows if int(r["patient"][-3:]) <= 80]),
                         ("validation 091-100", [r for r in rows if int(r["patient"][-3:]) > 90])):
        e, d, f, lv = (np.array([r[k] for r in subset])
                       for k in ("rv_error", "rv_error_descent", "rv_error_basal_as_drawn", "lv_error"))
        print(f"{name} (n={len(subset)}): RV EF abs err {np.abs(e).mean():.1f} (bias {e.mean():+.1f}); with the "
              f"base's descent {np.abs(d).mean():.1f} ({d.mean():+.1f}); basal slice "
              f"as drawn {np.abs(f).mean():.1f} ({f.mean():+.1f}); LV EF abs err {np.abs(lv).mean():.1f} "
              f"({lv.mean():+.1f})")


if __name__ == "__main__":
    folder = Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    if sys.argv[1] == "track":
        track(folder, [int(n) for n in sys.argv[3:]] or list(range(1, 101)))
    else:
        measure(folder)
