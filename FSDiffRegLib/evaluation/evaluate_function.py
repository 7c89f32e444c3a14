"""``fsdiffreg evaluate-function``: how well tracking measures the heart's function.

ACDC validation (091-100): the ED labels are carried onto the ES frame (ES fixed, ED moving, the
direction ``track`` registers) and compared with the manual ES labels: Dice per structure, and
the error of the LV and RV ejection fraction and of the LV end-systolic volume computed from the
propagated labels (the RV corrected for the base's descent as ``track`` does: ``descent.py``) against the
same values from the manual labels. FSDiffReg runs through
``track_frames`` on the two-frame cine (ED, ES); elastix and ANTs register the same pair.
With ``--strain-groups``: the global strain at ES of every ACDC patient, averaged per diagnostic
group. With ``--cines``: the Sunnybrook cines tracked whole, their EF and ES frame against the
manual ED/ES labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from ..defaults import TRACK_REFINE, RefineOptions
from ..device import pick_device
from ..events import Report, note, to_stderr
from ..imaging import acdc
from ..imaging.cine import Cine, read_cine
from ..imaging.field import apply_field
from ..imaging.metrics import field_metrics, heart_labels_dice
from ..imaging.preprocess import canonical, network_grid
from ..model.config import Config
from ..model.network import FSDiffRegNet
from ..model.weights import load_model
from ..pipeline.descent import corrected_volumes
from ..pipeline.function import structure_volumes
from ..pipeline.track import labelled_heart_centre, track_frames
from .methods import Method, chosen_methods


@dataclass(frozen=True)
class FunctionEvaluationRequest:
    """What ``fsdiffreg evaluate-function`` measures, with which methods and weights."""

    data: Path  # the ACDC folder
    methods: tuple[str, ...]  # from elastix, ants, network, refine
    limit: int | None = None  # the first validation pairs only
    strain_groups: bool = False  # also the strain at ES per ACDC diagnostic group
    cines: Path | None = None  # also track each cine in this folder
    weights: str | None = None
    device: str = "auto"
    refine: RefineOptions = TRACK_REFINE


def ejection_fraction(edv: float, esv: float) -> float:
    """EF in percent; NaN without an end-diastolic volume."""
    return 100.0 * (edv - esv) / edv if edv > 0 else float("nan")


def model_method(name: str, model: FSDiffRegNet, device: torch.device, refine: RefineOptions) -> Method:
    """FSDiffReg as ``track`` runs it: the field from ES (fixed) to ED (moving), on the cine (ED, ES) with the
    ED frame and its labels as reference."""
    def register(es: sitk.Image, ed: sitk.Image, ed_labels: sitk.Image) -> sitk.Image:
        return track_frames(Cine([ed, es], None), ed_labels, 0, model, device, refine).fields[1]

    return Method(name, register)


def pair_row(method: Method, pair: acdc.AcdcPair) -> dict[str, float]:
    """Dice and function errors of one pair: ED = pair.fixed, ES = pair.moving in ACDC's naming."""
    ed, es = sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving))
    ed_labels, es_labels = sitk.ReadImage(str(pair.fixed_labels)), sitk.ReadImage(str(pair.moving_labels))
    start = time.perf_counter()
    field = method.register(es, ed, ed_labels)  # ES fixed, ED moving: carries the ED labels onto ES
    seconds = time.perf_counter() - start
    propagated = apply_field(ed_labels, field, nearest=True)
    row = heart_labels_dice(sitk.GetArrayFromImage(propagated), sitk.GetArrayFromImage(es_labels))
    row.update(field_metrics(field, network_grid(canonical(es), labelled_heart_centre(ed_labels), Config())))
    es_ml = structure_volumes(es_labels)
    ed_ml, tracked_ml = corrected_volumes([structure_volumes(x) for x in (ed_labels, propagated)],
                                          [ed_labels, propagated], 0)[0]
    for name in ("LV", "RV"):
        manual = ejection_fraction(ed_ml[name], es_ml[name])
        tracked = ejection_fraction(ed_ml[name], tracked_ml.get(name, 0.0))
        row[f"{name}_EF_manual"], row[f"{name}_EF_error"] = manual, tracked - manual
    row["LV_ESV_error"] = tracked_ml.get("LV", 0.0) - es_ml["LV"]
    row["seconds"] = seconds
    return row


def acdc_table(rows: dict[str, list[dict[str, float]]]) -> str:
    """Markdown: Dice, mean absolute (and mean signed) EF and ESV errors, seconds per pair."""
    header = ["method", "Dice LV", "Dice Myo", "Dice RV", "Dice mean", "LV EF abs err (pp)", "LV EF bias (pp)",
              "RV EF abs err (pp)", "LV ESV abs err (ml)", "abs(J)<=0 %", "SD abs(J)", "s/pair"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in rows.items():
        def mean(key: str, f: Callable[[float], float] = float, r: list[dict[str, float]] = r) -> float:
            return float(np.mean([f(x[key]) for x in r]))

        cells = [f"{mean(k):.3f}" for k in ("LV", "Myo", "RV", "mean")]
        cells += [f"{mean('LV_EF_error', abs):.1f}", f"{mean('LV_EF_error'):+.1f}", f"{mean('RV_EF_error', abs):.1f}",
                  f"{mean('LV_ESV_error', abs):.1f}", f"{mean('folding_percent'):.4f}", f"{mean('sd_jacobian'):.3f}",
                  f"{np.median([x['seconds'] for x in r]):.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def strain_groups(data: Path, model: FSDiffRegNet, device: torch.device, refine: RefineOptions,
                  log: Report) -> str:
    """Markdown: mean (SD) global radial and circumferential strain at ES per ACDC diagnostic group."""
    by_group: dict[str, list[tuple[float, float]]] = {}
    for pair in acdc.split(data, "train") + acdc.split(data, "validation"):
        group = acdc.read_info(pair.fixed.parent).get("Group", "?")
        ed, es = sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving))
        tracking = track_frames(Cine([ed, es], None), sitk.ReadImage(str(pair.fixed_labels)), 0, model, device,
                                refine)
        strain = tracking.function["strain"]
        by_group.setdefault(group, []).append((strain["radial_percent"][1], strain["circumferential_percent"][1]))
        log(note(f"{pair.patient} {group}: radial {strain['radial_percent'][1]:+.1f} %, "
            f"circumferential {strain['circumferential_percent'][1]:+.1f} %"))
    lines = ["| group | patients | radial strain at ES (%) | circumferential strain at ES (%) |", "|---|---|---|---|"]
    for group, values in sorted(by_group.items()):
        a = np.array(values)
        lines.append(f"| {group} | {len(a)} | {a[:, 0].mean():+.1f} ({a[:, 0].std():.1f}) | "
                     f"{a[:, 1].mean():+.1f} ({a[:, 1].std():.1f}) |")
    return "\n".join(lines)


def cine_rows(folder: Path, model: FSDiffRegNet, device: torch.device, refine: RefineOptions) -> str:
    """Markdown: each cine under ``folder`` (ACDC layout: Info.cfg, <id>_4d.nii.gz, ED/ES frames with _gt)
    tracked whole from its ED frame; LV EF against the manual labels' and the ES frame found."""
    lines = ["| cine | frames | ES labelled | ES found | LV EF manual (%) | LV EF tracked (%) | s/cine | s/frame |",
             "|---|---|---|---|---|---|---|---|"]
    for subject in sorted(p for p in folder.iterdir() if (p / "Info.cfg").is_file()):
        info = acdc.read_info(subject)
        ed, es = int(info["ED"]), int(info["ES"])
        cine = read_cine(subject / f"{subject.name}_4d.nii.gz")
        labels = {k: sitk.ReadImage(str(subject / f"{subject.name}_frame{k:02d}_gt.nii.gz")) for k in (ed, es)}
        start = time.perf_counter()
        tracking = track_frames(cine, labels[ed], ed - 1, model, device, refine)
        seconds = time.perf_counter() - start
        manual = ejection_fraction(*(structure_volumes(labels[k])["LV"] for k in (ed, es)))
        n = len(cine.frames)
        lines.append(f"| {subject.name} | {n} | {es} | {tracking.function['ES_frame']} | {manual:.1f} | "
                     f"{tracking.function['LV']['EF_percent']:.1f} | {seconds:.0f} | {seconds / n:.2f} |")
    return "\n".join(lines)


def main_evaluate_function(request: FunctionEvaluationRequest) -> None:
    """Print the tables the request asks for."""
    device, refine = pick_device(request.device), request.refine
    model, about = load_model(request.weights, device)
    print(f"weights {about['name']} (sha256 {about['sha256'][:12]}), device {device}\n")
    methods, skipped = chosen_methods(request.methods, refine,
                                      lambda name, refine: model_method(name, model, device, refine))
    pairs = acdc.split(request.data, "validation")[: request.limit]
    rows: dict[str, list[dict[str, float]]] = {m.name: [] for m in methods}
    for pair in pairs:
        for method in methods:
            rows[method.name].append(pair_row(method, pair))
            r = rows[method.name][-1]
            to_stderr(note(f"{pair.patient} {method.name}: Dice {r['mean']:.3f}, "
                           f"LV EF error {r['LV_EF_error']:+.1f} pp"))
    print(f"ED labels carried onto ES (ES fixed, ED moving), ACDC {pairs[0].patient}-{pairs[-1].patient}; "
          f"manual LV EF mean {np.mean([r['LV_EF_manual'] for r in next(iter(rows.values()))]):.1f} %\n")
    print(acdc_table(rows))
    for reason in skipped:
        print(f"Skipped: {reason}.")
    if request.strain_groups:
        print("\n" + strain_groups(request.data, model, device, refine, to_stderr))
    if request.cines:
        print("\n" + cine_rows(request.cines, model, device, refine))
