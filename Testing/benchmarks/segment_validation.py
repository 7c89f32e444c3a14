"""The segmentation model on ACDC validation (091-100, ED and ES): Dice per structure, frame and group, and the
LV function from ``track --labels auto`` beside ``track`` with the manual labels.

Usage: PYTHONPATH=$PWD .venv/bin/python Testing/benchmarks/segment_validation.py [--data ../shared/data/ACDC]
       [--weights W] [--track] [--refine N] [--device cpu]

Dice: 3D, on each frame's own grid, with and without keeping each structure's largest connected component.
Function (--track, a two-frame cine ED, ES per patient): EF, EDV, ESV and LV mass from track with the ED
frame segmented (auto) and with its manual labels, and from the manual labels of both frames (truth); and
from the model's labels of both frames (segment ED and ES, no registration).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from FSDiffRegLib.commands.track_files import TrackRequest, track_files
from FSDiffRegLib.defaults import TRACK_REFINE, RefineOptions
from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.labels import VALUES
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.pipeline import segment
from FSDiffRegLib.pipeline.function import MYOCARDIUM_DENSITY_G_PER_ML


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return float(2 * np.count_nonzero(a & b) / total) if total else 1.0


def lv(labels: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """LV volume (ml) and myocardial mass (g) of a label array."""
    ml = float(np.prod(spacing)) / 1000.0
    return np.count_nonzero(labels == 3) * ml, np.count_nonzero(labels == 2) * ml * MYOCARDIUM_DENSITY_G_PER_ML


def mean_table(rows: list[dict], key: str, title: str) -> str:
    groups = sorted({r[key] for r in rows})
    lines = [f"| {title} | n | RV | Myo | LV | mean |", "|---|---|---|---|---|---|"]
    for g in groups + ["all"]:
        sel = [r for r in rows if g == "all" or r[key] == g]
        values = [np.mean([r[s] for r in sel]) for s in VALUES]
        lines.append(f"| {g} | {len(sel)} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.3f} |")
    return "\n".join(lines)


def dice_rows(pairs: list[acdc.AcdcPair], data: Path, model: torch.nn.Module, largest: bool) -> list[dict]:
    rows = []
    for pair in pairs:
        group = acdc.read_info(data / "training" / pair.patient)["Group"]
        for frame, image_path, truth_path in (("ED", pair.fixed, pair.fixed_labels),
                                              ("ES", pair.moving, pair.moving_labels)):
            image = sitk.ReadImage(str(image_path), sitk.sitkFloat32)
            start = time.time()
            slices = segment.prepare(image)
            probabilities = segment.predict_probabilities(model, slices, torch.device("cpu"))
            labels = segment.probabilities_to_labels(probabilities, segment.model_grid(image), image)
            if largest:
                labels = segment.keep_largest(labels)
            pred = sitk.GetArrayFromImage(labels)
            truth = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_path)))
            row = {"patient": pair.patient, "frame": frame, "group": group, "seconds": time.time() - start,
                   "pred": pred, "truth": truth, "spacing": image.GetSpacing()}
            row.update({name: dice(pred == v, truth == v) for name, v in VALUES.items()})
            rows.append(row)
    return rows


def function_of(ed: np.ndarray, es: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    edv, mass = lv(ed, spacing)
    esv, _ = lv(es, spacing)
    return {"EF": 100 * (edv - esv) / edv, "EDV": edv, "ESV": esv, "mass": mass}


def tracked_function(pair: acdc.AcdcPair, labels: str, refine: RefineOptions, device: str, loaded,
                     folder: Path) -> dict[str, float]:
    cine = folder / "cine"
    cine.mkdir(exist_ok=True)
    shutil.copy(pair.fixed, cine / "frame1.nii.gz")
    shutil.copy(pair.moving, cine / "frame2.nii.gz")
    out = folder / f"out-{labels if labels == 'auto' else 'manual'}"
    tracking = track_files(TrackRequest(cine, labels, out, 1, None, device, refine), loaded=loaded)
    f = tracking.function
    return {"EF": f["LV"]["EF_percent"], "EDV": f["LV"]["EDV_ml"], "ESV": f["LV"]["ESV_ml"],
            "mass": f["Myo"]["mass_g"]}


def function_table(rows: list[tuple[str, dict[str, dict[str, float]]]], methods: list[str]) -> str:
    """Per patient: truth and each method's EF, EDV, ESV, mass; then mean |difference| to the first method."""
    head = ["patient"] + [f"{m} {q}" for m in methods for q in ("EF", "EDV", "ESV", "mass")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for patient, values in rows:
        lines.append(f"| {patient} | " + " | ".join(f"{values[m][q]:.1f}" for m in methods
                                                     for q in ("EF", "EDV", "ESV", "mass")) + " |")
    base = methods[0]
    for m in methods[1:]:
        ef = [abs(v[m]["EF"] - v[base]["EF"]) for _, v in rows]
        rel = {q: [100 * abs(v[m][q] - v[base][q]) / v[base][q] for _, v in rows] for q in ("EDV", "ESV", "mass")}
        lines.append(f"\n{m} vs {base}: |dEF| mean {np.mean(ef):.1f} max {np.max(ef):.1f} points; "
                     + "; ".join(f"|d{q}| mean {np.mean(r):.1f} % max {np.max(r):.1f} %" for q, r in rel.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ACDC"))
    parser.add_argument("--weights", help="segmentation weights (default: bundled)")
    parser.add_argument("--track", action="store_true", help="also LV function from track, auto vs manual labels")
    parser.add_argument("--refine", type=int, help="track's refinement steps (default: track's own)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    pairs = acdc.split(args.data, "validation")
    model, about = segment.load_segmenter(args.weights, "cpu")
    print(f"weights {about['name']} sha256 {about['sha256'][:12]}...")
    raw = dice_rows(pairs, args.data, model, largest=False)
    rows = dice_rows(pairs, args.data, model, largest=True)
    print(f"\nseconds per frame (CPU, this machine): {np.mean([r['seconds'] for r in rows]):.2f}")
    for title, table in (("without largest component", raw), ("largest component per structure", rows)):
        print(f"\n### Dice, {title}\n\n{mean_table(table, 'frame', 'frame')}")
    print(f"\n### Dice per group (largest component)\n\n{mean_table(rows, 'group', 'group')}")
    print("\n### Dice per frame file (largest component)\n\n| patient | frame | group | RV | Myo | LV |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['patient']} | {r['frame']} | {r['group']} | {r['RV']:.3f} | {r['Myo']:.3f} | {r['LV']:.3f} |")
    by_patient = {}
    for r in rows:
        by_patient.setdefault(r["patient"], {})[r["frame"]] = r
    function = [(p, {"truth": function_of(f["ED"]["truth"], f["ES"]["truth"], f["ED"]["spacing"]),
                     "segment": function_of(f["ED"]["pred"], f["ES"]["pred"], f["ED"]["spacing"])})
                for p, f in by_patient.items()]
    methods = ["truth", "segment"]
    if args.track:
        refine = TRACK_REFINE if args.refine is None else replace(TRACK_REFINE, steps=args.refine)
        loaded = load_model(None, args.device)
        for (_, values), pair in zip(function, pairs):
            with tempfile.TemporaryDirectory() as tmp:
                values["track manual"] = tracked_function(pair, str(pair.fixed_labels), refine, args.device, loaded,
                                                          Path(tmp))
                values["track auto"] = tracked_function(pair, "auto", refine, args.device, loaded, Path(tmp))
        methods += ["track manual", "track auto"]
    print(f"\n### LV function\n\n{function_table(function, methods)}")
    if args.track:
        print(f"\n{function_table(function, ['track manual', 'track auto']).splitlines()[-1]}")


if __name__ == "__main__":
    main()
