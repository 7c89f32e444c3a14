"""Compare ways of adapting the prediction to one pair, on ACDC validation pairs.

Modes: the network only; the former field refinement (Adam on the full-resolution flow,
lr 0.05 voxels); the coarse-to-fine refinement of FSDiffRegLib.pipeline.refine, plain and
diffeomorphic (smoothness 12, no Gaussian); its Gaussian smoothing, each part alone and both
(the default), and the refined flow blurred outside the true heart (labels: an upper bound of
what a heart mask could give); fine-tuning the network's weights on the pair (Adam on the
registration loss, starting from the bundled weights). Prints one Markdown row per mode: mean
Dice (LV, Myo, RV), folding, SD|J|, median seconds per pair (network forward included) and
seconds per optimisation step.

Usage: .venv/bin/python Testing/benchmarks/refine_modes.py [--pairs 5] [--split validation|train] [--threads 1]
       [--modes net,old10,old50,c2f20,c2f40,c2f60,c2f80,c2f160,diffeo80,olddiffeo10,tune3,tune10]
       (also: diffeo60, plain6, stepblur, flowblur, gaussian, heartblur)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from FSDiffRegLib.defaults import RefineOptions
from FSDiffRegLib.evaluation.evaluate import score_field
from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.imaging.field import flow_to_field, resample_field
from FSDiffRegLib.imaging.preprocess import prepare_pair
from FSDiffRegLib.model.heart_head import blurred_outside
from FSDiffRegLib.model.losses import score_weights, sdg_ncc_loss, smoothness_loss
from FSDiffRegLib.model.network import FSDiffRegNet
from FSDiffRegLib.model.predict import predict
from FSDiffRegLib.model.spatial import integrate_velocity, warp
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.pipeline import refine
from FSDiffRegLib.pipeline.refine import refine_flow
from FSDiffRegLib.training.heart_head_train import heart_labels_on_grid

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ACDC"
DEFAULT_MODES = "net,old10,old50,c2f20,c2f40,c2f60,c2f80,c2f160,diffeo80,olddiffeo10,tune3,tune10"
TUNE_LR = 1e-4
# moving, fixed, score, flow, the fixed image's heart (labels > 0) on the network grid
Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
PLAIN = {"smoothness": 12.0, "gaussian": False}  # the refinement before the Gaussian one became the default


def registration_loss(cfg, moving: torch.Tensor, fixed: torch.Tensor, flow: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """The refinement objective: lam * SDG-weighted NCC + lam_phi * smoothness."""
    similarity = sdg_ncc_loss(warp(moving, flow), fixed, weights, cfg.ncc_window)
    return cfg.lam * similarity + cfg.lam_phi * smoothness_loss(flow)


def minimise(parameters: list[torch.Tensor], loss: Callable[[], torch.Tensor], steps: int, lr: float) -> None:
    """``steps`` Adam steps on ``loss()``."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()


def full_resolution_refine(model: FSDiffRegNet, x: Inputs, steps: int, diffeomorphic: bool = False) -> torch.Tensor:
    """The former scheme: Adam (lr 0.05 voxels) on the flow (or a velocity) of the network grid."""
    moving, fixed, score, flow = x
    weights = score_weights(score, model.cfg.gamma)
    to_flow = integrate_velocity if diffeomorphic else (lambda v: v)
    variable = flow.clone().requires_grad_(True)
    minimise([variable], lambda: registration_loss(model.cfg, moving, fixed, to_flow(variable), weights), steps, 0.05)
    with torch.no_grad():
        return to_flow(variable.detach())


def fine_tune(model: FSDiffRegNet, x: Inputs, steps: int) -> torch.Tensor:
    """Adam on a copy of the weights with the training loss's registration terms, then predict again."""
    moving, fixed, _, _ = x
    tuned = copy.deepcopy(model)
    t = torch.zeros(1, dtype=torch.long)

    def loss() -> torch.Tensor:  # predict's pass with gradients: the weights are what is optimised
        score, flow = tuned(moving, fixed, fixed, t)
        return registration_loss(model.cfg, moving, fixed, flow, score_weights(score.detach(), model.cfg.gamma))

    minimise(list(tuned.parameters()), loss, steps, TUNE_LR)
    return predict(tuned, moving, fixed)[1]


def refined(model: FSDiffRegNet, x: Inputs, options: RefineOptions, velocity_sigma: tuple = refine.VELOCITY_SIGMA,
            flow_sigma: tuple = refine.FLOW_SIGMA) -> torch.Tensor:
    """refine_flow with the Gaussian's sigmas replaced (zeros: that part off)."""
    saved = refine.VELOCITY_SIGMA, refine.FLOW_SIGMA
    refine.VELOCITY_SIGMA, refine.FLOW_SIGMA = velocity_sigma, flow_sigma
    try:
        return refine_flow(x[3], x[0], x[1], x[2], model.cfg, options)
    finally:
        refine.VELOCITY_SIGMA, refine.FLOW_SIGMA = saved


def modes(model: FSDiffRegNet) -> dict[str, tuple[str, int, Callable[[Inputs], torch.Tensor]]]:
    """name -> (description, optimisation steps, function of the inputs returning the flow)."""
    table: dict[str, tuple[str, int, Callable[[Inputs], torch.Tensor]]] = {"net": ("network only", 0, lambda x: x[3])}
    for n in (10, 50):
        table[f"old{n}"] = (f"full-resolution refinement, {n} steps", n,
                            lambda x, n=n: full_resolution_refine(model, x, n))
        table[f"olddiffeo{n}"] = (f"full-resolution diffeomorphic, {n} steps", n,
                                  lambda x, n=n: full_resolution_refine(model, x, n, True))
    for n in (20, 40, 60, 80, 160):
        table[f"c2f{n}"] = (f"coarse-to-fine refinement, {n} steps", n,
                            lambda x, n=n: refine_flow(x[3], x[0], x[1], x[2], model.cfg,
                                                       RefineOptions(n, diffeomorphic=False, **PLAIN)))
        table[f"diffeo{n}"] = (f"coarse-to-fine diffeomorphic, {n} steps", n,
                               lambda x, n=n: refine_flow(x[3], x[0], x[1], x[2], model.cfg,
                                                          RefineOptions(n, diffeomorphic=True, **PLAIN)))
    off = (0.0, 0.0, 0.0)
    gaussian = {
        "plain6": ("SVF 60 steps, smoothness 6, no Gaussian", RefineOptions(60, 6.0, gaussian=False), {}),
        "stepblur": ("SVF 60 steps, smoothness 12, each step's correction blurred", RefineOptions(60, 12.0),
                     {"flow_sigma": off}),
        "flowblur": ("SVF 60 steps, smoothness 12, the refined flow blurred", RefineOptions(60, 12.0),
                     {"velocity_sigma": off}),
        "gaussian": ("SVF 60 steps, smoothness 6, both blurred (the default before the heart head)", RefineOptions(60),
                     {}),
    }
    for key, (description, options, sigmas) in gaussian.items():
        table[key] = (description, 60, lambda x, o=options, s=sigmas: refined(model, x, o, **s))
    table["heartblur"] = ("SVF 60 steps, smoothness 12, blurred outside the true heart (uses labels)", 60,
                          lambda x: blurred_outside(refined(model, x, RefineOptions(60, **PLAIN)), x[4]))
    for n in (3, 10):
        table[f"tune{n}"] = (f"network fine-tuning, {n} steps (lr {TUNE_LR:g})", n,
                             lambda x, n=n: fine_tune(model, x, n))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="ACDC folder (holding training/patientNNN)")
    parser.add_argument("--pairs", type=int, default=5, help="first N pairs of the split")
    parser.add_argument("--split", choices=("validation", "train"), default="validation")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--modes", default=DEFAULT_MODES, help="comma-separated, from: " + DEFAULT_MODES)
    args = parser.parse_args()
    if not (Path(args.data) / "training").is_dir():
        sys.exit(f"ACDC data not found at {args.data}: pass --data (a folder holding training/patientNNN)")
    torch.set_num_threads(args.threads)
    model = load_model(None, "cpu")[0]
    table = modes(model)
    chosen = args.modes.split(",")
    unknown = [m for m in chosen if m not in table]
    if unknown:
        sys.exit(f"unknown modes {unknown}; choose from {', '.join(table)}")
    pairs = acdc.split(args.data, args.split)[: args.pairs]
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in chosen}
    for pair in pairs:
        fixed, moving = sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving))
        labels, fixed_labels = sitk.ReadImage(str(pair.moving_labels)), sitk.ReadImage(str(pair.fixed_labels))
        prepared = prepare_pair(fixed, moving, model.cfg)
        m, f = (torch.from_numpy(a)[None, None].contiguous(memory_format=torch.channels_last_3d)
                for a in (prepared.moving, prepared.fixed))
        heart = heart_labels_on_grid(fixed_labels, prepared.grid)
        predict(model, m, f)  # warm-up
        start = time.perf_counter()
        score, flow = predict(model, m, f)
        network_seconds = time.perf_counter() - start
        for name in chosen:
            start = time.perf_counter()
            result = table[name][2]((m, f, score, flow, heart))
            seconds = time.perf_counter() - start
            field = resample_field(flow_to_field(result[0].detach().numpy(), prepared.grid), fixed)
            row = score_field(field, prepared.grid, labels, sitk.GetArrayFromImage(fixed_labels))
            rows[name].append({**row, "seconds": network_seconds + seconds, "method_seconds": seconds})
            print(f"{pair.patient} {name}: Dice {row['mean']:.3f}, {seconds:.2f} s", file=sys.stderr, flush=True)
    print(f"{len(pairs)} {args.split} pairs from {pairs[0].patient}; torch threads {torch.get_num_threads()}")
    print("| mode | Dice mean (sd) | abs(J)<=0 % | SD abs(J) | s/pair median | s/step |")
    print("|---|---|---|---|---|---|")
    for name in chosen:
        description, steps, _ = table[name]
        r = rows[name]
        dice = [x["mean"] for x in r]
        per_step = statistics.median(x["method_seconds"] for x in r) / steps if steps else float("nan")
        print(f"| {description} | {np.mean(dice):.3f} ({np.std(dice):.3f}) "
              f"| {np.mean([x['folding_percent'] for x in r]):.4f} | {np.mean([x['sd_jacobian'] for x in r]):.3f} "
              f"| {statistics.median(x['seconds'] for x in r):.2f} | "
              + ("-" if np.isnan(per_step) else f"{per_step:.3f}") + " |")


if __name__ == "__main__":
    main()
