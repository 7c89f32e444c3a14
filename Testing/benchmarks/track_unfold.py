"""Where ``track`` removes its folds (issue 21): on the ES frame's grid (as before) or on the heart grid first
(``unfold.unfold_onto``), on the ACDC (ED, ES) pairs as ``fsdiffreg evaluate-function`` tracks them.

Per pair ``track_frames`` runs once (its refinement as ``track``'s); its field on the heart grid is kept and
its folds removed both ways; the LV EF error of the carried ED labels, their mean Dice to the ES labels and the
removal's seconds are compared with the folded field's.

Usage, from the repository root (one thread: the machine is shared):
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python Testing/benchmarks/track_unfold.py \
        --data ../shared/data/ACDC --split train --limit 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk
import torch

from FSDiffRegLib.evaluation.evaluate_function import ejection_fraction
from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.imaging.cine import Cine
from FSDiffRegLib.imaging.field import apply_field, resample_field
from FSDiffRegLib.imaging.metrics import heart_labels_dice
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.pipeline import track
from FSDiffRegLib.pipeline.function import structure_volumes
from FSDiffRegLib.pipeline.unfold import unfold, unfold_onto

WAYS = {
    "folded (no removal)": lambda field, frame: resample_field(field, frame),
    "removed on the ES grid (before)": lambda field, frame: unfold(resample_field(field, frame), field)[0],
    "removed on the heart grid first (unfold_onto)": lambda field, frame: unfold_onto(field, frame)[0],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="validation", choices=("validation", "train"))
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    model, _ = load_model(None, torch.device("cpu"))
    kept: dict = {}

    def keeping(field: sitk.Image, frame: sitk.Image):
        kept["field"] = field
        return unfold_onto(field, frame)

    track.unfold_onto = keeping
    rows: dict[str, list[tuple[float, float, float]]] = {w: [] for w in WAYS}
    for pair in acdc.split(args.data, args.split)[: args.limit]:
        ed, es = sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving))
        ed_labels, es_labels = sitk.ReadImage(str(pair.fixed_labels)), sitk.ReadImage(str(pair.moving_labels))
        track.track_frames(Cine([ed, es], None), ed_labels, 0, model, torch.device("cpu"), track.TRACK_REFINE)
        edv = structure_volumes(ed_labels)["LV"]
        manual = ejection_fraction(edv, structure_volumes(es_labels)["LV"])
        for way, make in WAYS.items():
            start = time.perf_counter()
            field = make(kept["field"], es)
            seconds = time.perf_counter() - start
            carried = apply_field(ed_labels, field, nearest=True)
            error = ejection_fraction(edv, structure_volumes(carried).get("LV", 0.0)) - manual
            dice = heart_labels_dice(sitk.GetArrayFromImage(carried), sitk.GetArrayFromImage(es_labels))["mean"]
            rows[way].append((error, dice, seconds))
            print(f"{pair.patient} {way}: LV EF error {error:+.1f}, Dice {dice:.4f}, {seconds:.1f} s", flush=True)
    print("\n| fold removal | LV EF abs err (pp) | LV EF bias (pp) | Dice mean | s/pair (removal) |")
    print("|---|---|---|---|---|")
    for way, r in rows.items():
        a = np.array(r)
        print(f"| {way} | {np.abs(a[:, 0]).mean():.1f} | {a[:, 0].mean():+.1f} | {a[:, 1].mean():.4f} | "
              f"{np.median(a[:, 2]):.1f} |")


if __name__ == "__main__":
    main()
