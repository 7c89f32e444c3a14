"""The ``fsdiffreg`` command line: train, register, evaluate, benchmark, demo, devices.

Importing this module loads no torch, SimpleITK or NumPy (``--help`` and the Slicer child
start fast): each sub-command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .defaults import DEFAULT_STEPS, REFINE_SMOOTHNESS
from .errors import DeviceError, InputError, WeightsError
from .resources import sample_pair

DEFAULT_DATA = Path("../shared/data/ACDC")
BENCHMARK_OUT = Path(__file__).resolve().parent.parent / "Testing" / "benchmarks" / "results.md"
METHODS = ("identity", "elastix", "ants", "network", "refine", "ablations")


def _say(message: str) -> None:
    print(f"fsdiffreg: {message}", file=sys.stderr, flush=True)


def _summary(metrics: dict) -> str:
    return (f"folding {metrics['folding_percent']:.4f} %, SD|J| {metrics['sd_jacobian']:.3f}, "
            f"NCC {metrics['ncc_before']:.3f} -> {metrics['ncc_after']:.3f}, "
            f"{metrics['seconds']:.1f} s on {metrics['device']}")


def _register(args: argparse.Namespace) -> None:
    from .register import register_files

    result = register_files(args.fixed, args.moving, args.out_dir, args.weights, args.device,
                            args.moving_labels, args.refine, args.smoothness, args.diffeomorphic, log=_say)
    print(f"{_summary(result.metrics)}\noutputs in {Path(args.out_dir).resolve()}")


def _evaluate(args: argparse.Namespace) -> None:
    from .device import pick_device
    from .evaluate import evaluate
    from .weights import load_model

    device = pick_device(args.device)
    model, about = load_model(args.weights, device)
    print(f"weights {about['name']} (sha256 {about['sha256'][:12]}), device {device}")
    print(evaluate(Path(args.data), model, device, args.limit, args.refine))


def _demo(args: argparse.Namespace) -> None:
    import SimpleITK as sitk

    from .figure import save_figure
    from .register import register_files

    sample = sample_pair()
    fixed, moving = sample["fixed"], sample["moving"]
    out = Path(args.out_dir).resolve()
    result = register_files(fixed, moving, out, args.weights, args.device, sample["moving_labels"],
                            log=_say)
    figure = save_figure(sitk.ReadImage(str(fixed)), sitk.ReadImage(str(moving)), result, out / "figure.png")
    print(f"registered the bundled ACDC sample (patient 091, ES -> ED): {_summary(result.metrics)}")
    print(f"outputs in {out}: displacement.nii.gz warped.nii.gz jacobian.nii.gz warped_labels.nii.gz "
          f"metrics.json; figure {figure}")


def _train(args: argparse.Namespace) -> None:
    from .config import Config
    from .device import pick_device
    from .train import train

    state = train(Path(args.data), Path(args.out), Config.load(args.config), pick_device(args.device),
                  max_minutes=args.max_minutes, train_limit=args.train_limit, val_limit=args.val_limit)
    print(f"stopped at epoch {state.epoch}, step {state.step}; best validation mean Dice {state.best_dice:.4f}")


def _benchmark(args: argparse.Namespace) -> None:
    from .benchmark import main_benchmark

    main_benchmark(args)


def _devices(args: argparse.Namespace) -> None:
    """One JSON line: torch's version and the devices it can use (the Slicer module asks this)."""
    try:
        from .device import device_report
    except (ImportError, OSError) as err:
        raise DeviceError(f"torch cannot be imported: {err}") from None
    print(json.dumps(device_report()))


def method_list(text: str) -> list[str]:
    """``benchmark --methods``: comma-separated names from METHODS."""
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(METHODS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown methods {unknown}; choose from {','.join(METHODS)}")
    return chosen


def ablation_item(text: str) -> tuple[str, Path]:
    """``benchmark --ablation-weights``: NAME=PATH."""
    name, sep, path = text.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="ACDC folder (holding training/patientNNN)")
    parser.add_argument("--limit", type=int, help="only the first N validation pairs")
    parser.add_argument("--methods", type=method_list, default=list(METHODS),
                        help=f"comma-separated, from {','.join(METHODS)} (default: all)")
    parser.add_argument("--refine", type=int, default=DEFAULT_STEPS, help="refinement steps of the refine row")
    parser.add_argument("--diffeomorphic", action="store_true", help="the refine row optimises a velocity field")
    parser.add_argument("--weights", help="FSDiffReg weights (default: bundled)")
    parser.add_argument("--ablation-weights", type=ablation_item, action="append", default=[], metavar="NAME=PATH",
                        help="weights of an ablation row (defaults: FDG-off and SDG-off under "
                             "FSDiffRegLib/assets/weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", default=str(BENCHMARK_OUT), help="Markdown file for the table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fsdiffreg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train on ACDC (resumes from OUT's last checkpoint)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="ACDC folder (holding training/patientNNN)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, logs, best weights")
    p.add_argument("--config", default="cpu", help="bundled name (cpu, paper) or a JSON file")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--max-minutes", type=float, help="stop after the epoch that passes this time")
    p.add_argument("--train-limit", type=int, help="use only the first N training pairs")
    p.add_argument("--val-limit", type=int, help="use only the first N validation pairs")
    p.set_defaults(func=_train)

    p = sub.add_parser("register", help="register MOVING to FIXED; outputs on the fixed grid")
    p.add_argument("fixed", help="fixed image (any 3D image SimpleITK reads)")
    p.add_argument("moving", help="moving image")
    p.add_argument("--out-dir", required=True, help="folder for the outputs (written atomically)")
    p.add_argument("--weights", help="weights file (default: the bundled ACDC model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--moving-labels", help="label map of the moving image to warp too")
    p.add_argument("--refine", type=int, default=DEFAULT_STEPS,
                   help=f"instance-refinement steps (default {DEFAULT_STEPS}; 0: network only)")
    p.add_argument("--smoothness", type=float,
                   help=f"smoothness weight of the refinement (default {REFINE_SMOOTHNESS:g})")
    p.add_argument("--diffeomorphic", action="store_true",
                   help="refine a stationary velocity field (scaling and squaring) instead of the displacement")
    p.set_defaults(func=_register)

    p = sub.add_parser("evaluate", help="Table 1 (Dice, folding, SD|J|, time) on the validation split")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="ACDC folder")
    p.add_argument("--weights", help="weights file (default: bundled)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--limit", type=int, help="only the first N validation pairs")
    p.add_argument("--refine", type=int, default=DEFAULT_STEPS, help=f"refinement steps (default {DEFAULT_STEPS})")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("demo", help="register the bundled sample pair and draw a figure")
    p.add_argument("--out-dir", default="fsdiffreg-demo", help="output folder")
    p.add_argument("--weights", help="weights file (default: bundled)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_demo)

    p = sub.add_parser("benchmark", help="identity, elastix, ANTs and FSDiffReg side by side on validation")
    add_benchmark_arguments(p)
    p.set_defaults(func=_benchmark)

    p = sub.add_parser("devices", help="print torch's version and the devices it can use, as one JSON line")
    p.set_defaults(func=_devices)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (InputError, WeightsError, DeviceError, FileNotFoundError) as err:
        print(f"fsdiffreg: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
