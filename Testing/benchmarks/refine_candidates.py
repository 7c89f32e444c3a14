"""Refinement candidates against the network alone, on ACDC pairs in both directions (issue 21).

The network runs once per pair and direction; each candidate then finishes its flow as ``register`` does
(``refine_flow``, the heart blur where asked), the field goes onto the fixed grid, its folds are removed
(``unfold``) and it is scored as ``fsdiffreg benchmark`` scores (``evaluate.score_field``; the report's
tables are the benchmark's). ``Dice raw``: the mean Dice before the fold removal. Candidates:

- network: the network alone; flip: the network's flow averaged with its flow on both images mirrored
  left-right (test-time flip averaging);
- swapped: the network run on the pair swapped (the fixed image as moving), its flow inverted
  (``inverse.invert_flow``): alone, or averaged with the direct flow (displacements averaged; with the flips);
- cascaded: the network run again on the moving image warped by its flow, the flows composed (twice, three times);
- heart grid first: the folds removed on the network grid first, then on both (``unfold.unfold_onto``, as track).
- refine options as ``RefineOptions`` name them (steps, smoothness, Gaussian, heart);
- ``coarse``: the refinement on the two coarse levels only (the fine level's detail left to the network);
- ``--weights W`` (repeatable): other weights (a fine-tune's ``best.pt``) run alone and cascaded twice, beside the
  bundled weights' candidates: the tables then hold them against the bundled network alone and against the
  default (the bundled network cascaded twice, candidate 14), paired.

Usage, from the repository root (one thread: the machine is shared):
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python Testing/benchmarks/refine_candidates.py \
        --data ../shared/data/ACDC --split validation --out Testing/benchmarks/candidates_validation.md
A fine-tune against the bundled weights (the network alone and the default, both directions):
    ... refine_candidates.py --data ../shared/data/ACDC --only 1,14 --weights runs/NAME/best.pt --out OUT.md
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from FSDiffRegLib.defaults import DEFAULT_REFINE, NETWORK_ONLY, TRACK_REFINE, RefineOptions
from FSDiffRegLib.evaluation.benchmark import comparison, folding_per_pair
from FSDiffRegLib.evaluation.evaluate import markdown_table, score_field, summarize
from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.imaging.field import apply_field, flow_to_field, resample_field
from FSDiffRegLib.imaging.metrics import heart_labels_dice
from FSDiffRegLib.imaging.preprocess import heart_grid_centre, network_grid, prepare_pair
from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.heart_head import blurred_outside, decoder_outputs
from FSDiffRegLib.model.inverse import invert_flow
from FSDiffRegLib.model.predict import predict
from FSDiffRegLib.model.spatial import warp
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.pipeline import refine
from FSDiffRegLib.pipeline.unfold import unfold, unfold_onto

CANDIDATES: dict[str, tuple[RefineOptions, bool]] = {  # name: (options, coarse levels only)
    "FSDiffReg (network)": (NETWORK_ONLY, False),
    "FSDiffReg (network, flip-averaged)": (NETWORK_ONLY, False),
    "FSDiffReg (+refine 20, SVF, Gaussian, heart: the old default)": (RefineOptions(steps=20), False),
    "FSDiffReg (+refine 20, SVF, no Gaussian, no heart)": (RefineOptions(steps=20, gaussian=False, heart=False), False),
    "FSDiffReg (+refine 6, SVF, Gaussian, heart)": (RefineOptions(steps=6), False),
    "FSDiffReg (+refine 14 coarse levels only, SVF, no Gaussian, no heart)":
        (RefineOptions(steps=14, gaussian=False, heart=False), True),
    "FSDiffReg (+refine 20, SVF, Gaussian, no heart)": (RefineOptions(steps=20, heart=False), False),
    "FSDiffReg (+refine 20, SVF, no Gaussian, heart)": (RefineOptions(steps=20, gaussian=False), False),
    "FSDiffReg (+refine 20, smoothness 2, SVF, Gaussian, heart)": (RefineOptions(steps=20, smoothness=2.0), False),
    "FSDiffReg (+refine 20, smoothness 4, SVF, no Gaussian, no heart: track's)": (TRACK_REFINE, False),
    "FSDiffReg (network on the swapped pair, inverted)": (NETWORK_ONLY, False),
    "FSDiffReg (network averaged with the swapped pair's inverse)": (NETWORK_ONLY, False),
    "FSDiffReg (network flip-averaged, averaged with the swapped pair's flip-averaged inverse)": (NETWORK_ONLY, False),
    "FSDiffReg (network cascaded twice)": (NETWORK_ONLY, False),
    "FSDiffReg (network cascaded three times)": (NETWORK_ONLY, False),
    "FSDiffReg (network, folds removed on the heart grid first)": (NETWORK_ONLY, False),
    "FSDiffReg (network cascaded twice, folds removed on the heart grid first)": (NETWORK_ONLY, False),
}


DEFAULT = "FSDiffReg (network cascaded twice)"  # register's default since issue 21
OTHER_RUNS = ("network", "network cascaded twice")  # what other weights (--weights) are run as


@contextmanager
def coarse_levels(only: bool):
    """The refinement on its two coarse levels alone while inside, when ``only``."""
    factors = refine.LEVEL_FACTORS
    refine.LEVEL_FACTORS = factors[:2] if only else factors
    try:
        yield
    finally:
        refine.LEVEL_FACTORS = factors


def flip_averaged(model, moving: torch.Tensor, fixed: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``flow`` averaged with the network's flow on both images mirrored along W, mirrored back."""
    _, mirrored = predict(model, moving.flip(-1), fixed.flip(-1))
    back = mirrored.flip(-1) * torch.tensor([1.0, 1.0, -1.0]).view(1, 3, 1, 1, 1)
    return (flow + back) / 2


def swapped_inverse(model, moving: torch.Tensor, fixed: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """The network's flow for the pair swapped (the fixed image as moving), flip-averaged where asked, inverted:
    a flow for the pair as given from the direction the network knows when it is given the other one."""
    _, flow = predict(model, fixed, moving)
    if flip:
        flow = flip_averaged(model, fixed, moving, flow)
    return invert_flow(flow)


def cascaded(model, moving: torch.Tensor, fixed: torch.Tensor, flows: list[torch.Tensor], times: int) -> torch.Tensor:
    """The network run again on the moving image warped by the flow so far, ``times`` runs in all, composed:
    u <- u2 + u(p + u2(p)) (a recursive cascade at test time); ``flows`` holds the runs so far (extended)."""
    while len(flows) < times:
        _, step = predict(model, warp(moving, flows[-1], padding="border"), fixed)
        flows.append(refine.compose(flows[-1], step))
    return flows[times - 1]


def other_weights(model, m: torch.Tensor, f: torch.Tensor, twice: bool) -> torch.Tensor:
    """Other weights' flow for the pair on the bundled network's grid: alone, or cascaded twice."""
    _, flow = predict(model, m, f)
    return cascaded(model, m, f, [flow], 2) if twice else flow


def test_time(name: str, model, moving: torch.Tensor, fixed: torch.Tensor, flow: torch.Tensor,
              cache: dict) -> torch.Tensor:
    """A candidate's flow made at test time from the network's outputs alone (no refinement); ``cache`` keeps
    what candidates of one case share."""
    if "cascaded" in name:
        return cascaded(model, moving, fixed, cache.setdefault("cascade", [flow]), 2 if "twice" in name else 3)
    flip = "flip" in name
    direct = flip_averaged(model, moving, fixed, flow) if flip else flow
    if "swapped" not in name:
        return direct
    if ("swapped", flip) not in cache:
        cache["swapped", flip] = swapped_inverse(model, moving, fixed, flip)
    inverse = cache["swapped", flip]
    return inverse if "inverted" in name else (direct + inverse) / 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="validation", choices=("validation", "train"))
    parser.add_argument("--limit", type=int)
    parser.add_argument("--only", help="comma-separated candidate numbers (1-based) to run")
    parser.add_argument("--weights", action="append", default=[],
                        help="other weights, run alone and cascaded twice (repeatable)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    names = list(CANDIDATES)
    if args.only:
        names = [names[int(i) - 1] for i in args.only.split(",")]
    model, about = load_model(None, torch.device("cpu"))
    others = {f"{Path(w).parent.name}/{Path(w).name}": load_model(w, torch.device("cpu"))[0] for w in args.weights}
    names += [f"FSDiffReg ({label}: {run})" for label in others for run in OTHER_RUNS]
    if any((o.cfg.grid_size, o.cfg.grid_spacing) != (model.cfg.grid_size, model.cfg.grid_spacing)
           for o in others.values()):
        raise SystemExit("--weights: other weights must share the bundled network's grid (size and spacing)")
    pairs = acdc.split(args.data, args.split)[: args.limit]
    rows: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    cases = []
    for pair in pairs:
        for way in acdc.DIRECTIONS:
            p = acdc.directed(pair, way)
            cases.append((p.patient, acdc.DIRECTIONS[way]))
            fixed, moving = sitk.ReadImage(str(p.fixed)), sitk.ReadImage(str(p.moving))
            moving_labels, fixed_labels = sitk.ReadImage(str(p.moving_labels)), sitk.ReadImage(str(p.fixed_labels))
            grid = network_grid(fixed, heart_grid_centre(fixed, moving), Config())
            prepared = prepare_pair(fixed, moving, model.cfg)
            m, f = (torch.from_numpy(a)[None, None] for a in (prepared.moving, prepared.fixed))
            with torch.no_grad(), decoder_outputs(model) as features:
                score, flow = predict(model, m, f)
            heart = model.heart_head.probability(features + [f, m])
            cache: dict = {}
            for name in names:
                options, coarse = CANDIDATES.get(name, (NETWORK_ONLY, False))
                if name not in CANDIDATES:  # other weights: their own network, alone or cascaded twice
                    other = others[name[len("FSDiffReg ("):name.rindex(": ")]]
                    out = other_weights(other, m, f, name.endswith("cascaded twice)"))
                elif any(word in name for word in ("flip", "swapped", "cascaded")):
                    out = test_time(name, model, m, f, flow, cache)
                else:
                    with coarse_levels(coarse):
                        out = refine.refine_flow(flow, m, f, score, model.cfg, options)
                    out = blurred_outside(out, heart) if options.heart and options.steps > 0 else out
                on_grid = flow_to_field(out[0].float().numpy(), prepared.grid)
                raw = resample_field(on_grid, fixed)
                unfolded = unfold_onto(on_grid, fixed) if "heart grid first" in name else unfold(raw, on_grid)
                delivered, stats = unfolded.field, unfolded.stats
                row = score_field(delivered, grid, moving_labels, fixed_labels, carried_ef=way == "ed-es")
                warped = sitk.GetArrayFromImage(apply_field(moving_labels, raw, nearest=True))
                row["mean_raw"] = heart_labels_dice(warped, sitk.GetArrayFromImage(fixed_labels))["mean"]
                row.update({f"unfold_{k}": float(v) for k, v in stats.items()})
                rows[name].append(row)
                print(f"{p.patient} {acdc.DIRECTIONS[way]} {name}: Dice {row['mean']:.4f} (raw {row['mean_raw']:.4f}), "
                      f"folded before {stats['folded_before']}/{stats['folded_before_fine']}, "
                      f"EF err {row.get('LV_EF_error', float('nan')):+.1f}", file=sys.stderr, flush=True)
    lines = [f"# Refinement candidates on the ACDC {args.split} split, both directions", "",
             f"Weights {about['name']}; default refinement {DEFAULT_REFINE}.",
             f"Command: `PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python Testing/benchmarks/refine_candidates.py "
             f"{' '.join(sys.argv[1:])}`", ""]
    for way in acdc.DIRECTIONS.values():
        picked = {n: summarize([x for x, (_, w) in zip(r, cases) if w == way]) for n, r in rows.items()}
        raw = {n: np.mean([x["mean_raw"] for x, (_, w) in zip(r, cases) if w == way]) for n, r in rows.items()}
        lines += [f"## {way}", "", markdown_table(picked), "",
                  "Dice mean before the fold removal: " + "; ".join(f"{n} {v:.4f}" for n, v in raw.items()), ""]
    lines += ["## Against the network alone", "", comparison(rows, cases), ""]
    if DEFAULT in rows:
        lines += ["## Against the default (the network cascaded twice)", "",
                  comparison(rows, cases, reference=DEFAULT), ""]
    lines += ["## Folding per pair", "", folding_per_pair(rows, cases)]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
