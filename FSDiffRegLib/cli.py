"""The ``fsdiffreg`` command line: train, register, evaluate, benchmark, demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .benchmark import add_parser as add_benchmark_parser
from .config import Config
from .device import DeviceError, pick_device
from .imageio import InputError
from .refine import DEFAULT_STEPS
from .resources import sample_pair
from .weights import WeightsError

DEFAULT_DATA = Path("../shared/data/ACDC")


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
    from .train import train

    state = train(Path(args.data), Path(args.out), Config.load(args.config), pick_device(args.device),
                  max_minutes=args.max_minutes, train_limit=args.train_limit, val_limit=args.val_limit)
    print(f"stopped at epoch {state.epoch}, step {state.step}; best validation mean Dice {state.best_dice:.4f}")


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
    p.add_argument("--smoothness", type=float, help="smoothness weight of the refinement (default 18)")
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

    add_benchmark_parser(sub)
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
