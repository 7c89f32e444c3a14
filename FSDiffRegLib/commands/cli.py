"""The ``fsdiffreg`` command line: train, register, track, segment, batch, evaluate, benchmark, demo, devices.

Importing this module loads no torch, SimpleITK or NumPy (``--help`` and the Slicer child
start fast): each sub-command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Callable, NoReturn

from .. import events
from ..defaults import (
    DEFAULT_REFINE,
    MAX_PASSES,
    MAX_STEPS,
    REFINE_OPTION,
    SEGMENT_TRAINING,
    TRACK_REFINE,
    HeartHeadTraining,
    RefineOptions,
    SegmentTraining,
    checked_passes,
    checked_smoothness,
    checked_steps,
)
from ..errors import DeviceError, InputError, OutputError, WeightsError
from ..files import written
from ..resources import sample_pair, weights_path
from .memory import keep_freed_memory

DEFAULT_DATA = Path("../shared/data/ACDC")
WEIGHTS_HELP = "weights file, or a bundled name: weaksup (the default) or paper (the paper's unsupervised losses)"
BENCHMARK_OUT = Path(__file__).resolve().parents[2] / "Testing" / "benchmarks" / "results.md"
METHODS = ("identity", "elastix", "ants", "network", "refine", "ablations")
FUNCTION_METHODS = ("elastix", "ants", "network", "refine")


def _summary(metrics: dict) -> str:
    return (f"folding {metrics['folding_percent']:.4f} %, SD|J| {metrics['sd_jacobian']:.3f}, "
            f"NCC {metrics['ncc_before']:.3f} -> {metrics['ncc_after']:.3f}, "
            f"{metrics['seconds']:.1f} s on {metrics['device']}")


def refine_options(args: argparse.Namespace) -> RefineOptions:
    return RefineOptions(args.refine, args.smoothness, diffeomorphic=args.diffeomorphic, gaussian=args.gaussian,
                         heart=args.heart, passes=args.passes)


def _register(args: argparse.Namespace) -> None:
    from .register_files import RegisterRequest, register_files

    request = RegisterRequest(args.fixed, args.moving, args.out_dir, args.moving_labels, args.weights, args.device,
                              refine_options(args))
    result = register_files(request, log=events.to_stderr)
    out = Path(args.out_dir).resolve()
    if events.wanted():
        events.to_stderr(events.result(f"registered: outputs in {out}", {"out_dir": str(out)}))
    print(f"{_summary(result.metrics)}\noutputs in {out}")


def _track(args: argparse.Namespace) -> None:
    from .track_files import TrackRequest, track_files

    request = TrackRequest(args.cine, args.labels, args.out_dir, args.reference_frame, args.weights, args.device,
                           refine_options(args), args.frame_times_ms)
    tracking = track_files(request, log=events.to_stderr)
    out = Path(args.out_dir).resolve()
    if events.wanted():
        events.to_stderr(events.result(f"tracked: outputs in {out}", {"out_dir": str(out)}))
    print(f"{function_summary(tracking.function)}; {tracking.metrics['seconds']:.1f} s on "
          f"{tracking.metrics['device']}\noutputs in {out}")


def _segment(args: argparse.Namespace) -> None:
    from .segment_file import segment_file

    result = segment_file(args.image, args.out, args.weights, args.device, args.overwrite, log=events.to_stderr)
    volumes = ", ".join(f"{name} {ml:.1f} ml" for name, ml in result["volumes_ml"].items())
    print(f"{volumes}; {result['seconds']:.1f} s on {result['device']}\nlabels in {result['labels']}")


def _batch(args: argparse.Namespace) -> int:
    """1 when a case failed (the summary says which), else 0."""
    from dataclasses import replace

    from .manifest import read_manifest
    from .shards import parse_shard, shard_from_env

    manifest = read_manifest(args.manifest)  # a bad manifest is refused before torch is imported
    given = {name: getattr(args, name) for name in ("smoothness", "diffeomorphic", "gaussian", "heart", "passes")
             if getattr(args, name) is not None}
    if args.refine is not None:
        given["steps"] = args.refine
    if manifest.kind == "track" and given.get("heart"):
        raise InputError("--heart is for register manifests: track registers the heart's region already")
    if manifest.kind == "track" and given.get("passes", 1) != 1:
        raise InputError("--passes is for register manifests: track runs the network once and refines")
    refine = replace(DEFAULT_REFINE if manifest.kind == "register" else TRACK_REFINE, **given)
    shard = parse_shard(args.shard) if args.shard else shard_from_env()
    from .batch import BatchOptions, run_batch, run_local

    runner = run_local
    if args.dask:
        try:
            from .dask_batch import run_dask
        except ImportError:
            raise InputError("--dask needs dask.distributed: pip install 'dask[distributed]'") from None
        runner = partial(run_dask, args.dask)
    failed = run_batch(manifest, args.out_root, BatchOptions(args.weights, args.device, refine), shard, runner,
                       events.to_stderr)
    print(f"{failed} case(s) failed; summary in {Path(args.out_root).resolve()}" if failed else
          f"every case done; summary in {Path(args.out_root).resolve()}")
    return 1 if failed else 0


def function_summary(function: dict) -> str:
    """'ED frame 1, ES frame 12; LV EF 55.2 %, RV EF 48.0 %' (what the labels allow)."""
    parts = [f"ED frame {function['ED_frame']}, ES frame {function['ES_frame']}"]
    parts += [f"{name} EF {function[name]['EF_percent']:.1f} %" for name in ("LV", "RV") if name in function]
    return "; ".join(parts)


def _evaluate_function(args: argparse.Namespace) -> None:
    from ..evaluation.evaluate_function import FunctionEvaluationRequest, main_evaluate_function

    main_evaluate_function(FunctionEvaluationRequest(
        Path(args.data), tuple(args.methods), args.limit, args.strain_groups, Path(args.cines) if args.cines else None,
        args.weights, args.device, refine_options(args)))


def _evaluate(args: argparse.Namespace) -> None:
    from ..device import pick_device
    from ..evaluation.evaluate import evaluate
    from ..model.weights import load_model

    device = pick_device(args.device)
    model, about = load_model(args.weights, device)
    print(f"weights {about['name']} (sha256 {about['sha256'][:12]}), device {device}")
    print(evaluate(Path(args.data), model, device, args.limit, refine_options(args)))


def _demo(args: argparse.Namespace) -> None:
    import SimpleITK as sitk

    from ..outputs.figure import save_figure
    from .register_files import RegisterRequest, register_files

    sample = sample_pair()
    fixed, moving = sample["fixed"], sample["moving"]

    def figure(result, folder: Path) -> None:
        with written(folder / "figure.png"):
            save_figure(sitk.ReadImage(str(fixed)), sitk.ReadImage(str(moving)), result, folder / "figure.png",
                        events.to_stderr)

    request = RegisterRequest(fixed, moving, args.out_dir, sample["moving_labels"], args.weights, args.device)
    result = register_files(request, log=events.to_stderr, also=figure)
    out = Path(args.out_dir).resolve()
    print(f"registered the bundled ACDC sample (patient 091, ES -> ED): {_summary(result.metrics)}")
    picture = f"; figure {out / 'figure.png'}" if (out / "figure.png").is_file() else ""  # none without matplotlib
    print(f"outputs in {out}: displacement.nii.gz warped.nii.gz jacobian.nii.gz warped_labels.nii.gz "
          f"metrics.json{picture}")


def _train(args: argparse.Namespace) -> None:
    from ..device import pick_device
    from ..model.config import Config
    from ..training.train import train

    if not args.out.strip():
        raise InputError("the run folder is empty text: name a folder, e.g. --out runs/first")
    options = {"directions": args.directions, "inverse_consistency": args.inverse_consistency}
    try:
        cfg = replace(Config.load(args.config), **{k: v for k, v in options.items() if v is not None})
    except (ValueError, TypeError) as err:  # not JSON, or not a configuration
        raise InputError(f"configuration {args.config}: {err}") from None
    state = train(Path(args.data), Path(args.out), cfg, pick_device(args.device),
                  max_minutes=args.max_minutes, train_limit=args.train_limit, val_limit=args.val_limit,
                  init_weights=weights_path(args.init_weights) if args.init_weights else None)
    print(f"stopped at epoch {state.epoch}, step {state.step}; best validation mean Dice {state.best_dice:.4f}")


def _train_heart_head(args: argparse.Namespace) -> None:
    from ..training.heart_head_train import make_heart_head

    options = HeartHeadTraining(steps=args.steps, pairs=args.pairs)
    info = make_heart_head(Path(args.data), args.weights, Path(args.out) if args.out else None, options,
                           log=events.to_stderr)
    score = info["validation_heart_dice"]
    print(f"heart head for {info['weights']}: validation heart Dice {score['mean']:.3f} (lowest {score['min']:.3f})")


def _train_segmenter(args: argparse.Namespace) -> None:
    from ..training.segment_train import export, train_segmenter

    if args.export:
        print(export(args.out / "best.pt", args.export))
        return
    options = SegmentTraining(epochs=args.epochs, batch=args.batch, crop=args.crop, val_every=args.val_every,
                              lr=args.lr, channels=args.channels, ema=args.ema, threads=args.threads, seed=args.seed)
    best = train_segmenter(args.data, args.out, options, log=events.to_stderr)
    print(f"best validation mean Dice {best:.4f}: {args.out / 'best.pt'}")


def _benchmark(args: argparse.Namespace) -> None:
    from ..evaluation.benchmark import main_benchmark

    main_benchmark(benchmark_request(args))


def benchmark_request(args: argparse.Namespace):  # -> BenchmarkRequest (its module loads torch)
    from ..evaluation.benchmark import BenchmarkRequest

    return BenchmarkRequest(Path(args.data), args.out, tuple(args.methods), args.split, args.limit, args.direction,
                            refine_options(args), args.weights, tuple(args.ablation_weights), args.device,
                            command_line(args))


def command_line(args: argparse.Namespace) -> str:
    """The ``fsdiffreg benchmark`` command that gives these results (``--out`` left out)."""
    parts = ["fsdiffreg benchmark"]
    for key, value in vars(args).items():
        if key in ("func", "command", "out") or value is None or value is False or value == []:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif key == "methods":
            parts.append(f"{flag} {','.join(value)}")
        elif key == "ablation_weights":
            parts += [f"{flag} {name}={path}" for name, path in value]
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def _devices(args: argparse.Namespace) -> None:
    """One JSON line: torch's version and the devices it can use (the Slicer module asks this)."""
    try:
        from ..device import device_report
    except (ImportError, OSError) as err:
        raise DeviceError(f"torch cannot be imported: {err}") from None
    report = device_report()
    if events.wanted():
        events.to_stderr(events.result("devices found", report))
    print(json.dumps(report))


def option(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type whose InputError becomes the option's one-line error."""
    def convert(text: str) -> object:
        try:
            return parse(text)
        except InputError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = parse.__name__
    return convert


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"expected a whole number, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"expected a number, got {text!r}") from None


def from_one(text: str, refusal: str) -> int:
    """A whole number, at least 1; below 1 it is refused with ``refusal`` and the value."""
    value = whole_number(text)
    if value < 1:
        raise InputError(f"{refusal}, got {value}")
    return value


@option
def count(text: str) -> int:
    """``--limit`` and the like: a whole number, at least 1."""
    return from_one(text, "must be at least 1")


@option
def frame_number(text: str) -> int:
    """A frame number, counted from 1."""
    return from_one(text, "frames are counted from 1")


@option
def times_ms(text: str) -> tuple[float, ...]:
    """``--frame-times-ms``: comma-separated finite times in ms, each later than the one before, from any
    origin (negative times are before it)."""
    values = tuple(number(part) for part in text.split(","))
    if not math.isfinite(values[-1] - values[0]) or any(b <= a for a, b in zip(values, values[1:])):
        raise InputError(f"must be finite times in ms, each later than the one before, got {text}")
    return values


@option
def minutes(text: str) -> float:
    value = number(text)
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"must be a finite number above 0, got {text}")
    return value


@option
def weight(text: str) -> float:
    """A loss weight: a finite number, at least 0."""
    value = number(text)
    if not math.isfinite(value) or value < 0:
        raise InputError(f"must be a finite number of at least 0, got {text}")
    return value


@option
def steps(text: str) -> int:
    return checked_steps(whole_number(text))


@option
def smoothness(text: str) -> float:
    return checked_smoothness(number(text))


@option
def passes(text: str) -> int:
    return checked_passes(whole_number(text))


@option
def channel_list(text: str) -> tuple[int, ...]:
    """``--channels``: comma-separated whole numbers, each at least 1."""
    return tuple(from_one(part, "channels must be at least 1") for part in text.split(","))


def add_refine_arguments(parser: argparse.ArgumentParser, defaults: RefineOptions = DEFAULT_REFINE) -> None:
    """--refine, --smoothness, --[no-]diffeomorphic, --[no-]gaussian, --[no-]heart: the RefineOptions of a
    sub-command, ``defaults`` unless given."""
    parser.add_argument("--refine", type=steps, default=defaults.steps, metavar="N",
                        help=f"instance-refinement steps, 0 to {MAX_STEPS} (default {defaults.steps}; 0: network only)")
    parser.add_argument("--smoothness", type=smoothness, default=defaults.smoothness, metavar="S",
                        help=f"smoothness weight of the refinement, finite and at least 0 "
                             f"(default {defaults.smoothness:g})")
    parser.add_argument("--diffeomorphic", action=argparse.BooleanOptionalAction, default=defaults.diffeomorphic,
                        help="refine a stationary velocity field (scaling and squaring) instead of the displacement "
                             f"(default: {'on' if defaults.diffeomorphic else 'off'})")
    parser.add_argument("--gaussian", action=argparse.BooleanOptionalAction, default=defaults.gaussian,
                        help="Gaussian-smooth each refinement step's correction and the refined flow "
                             f"(default: {'on' if defaults.gaussian else 'off'})")
    if not defaults.heart:  # track: its grid is the heart's region already, and one network pass
        parser.set_defaults(heart=False, passes=defaults.passes)
        return
    parser.add_argument("--heart", action=argparse.BooleanOptionalAction, default=True,
                        help="blur the refined flow away from the heart that the weights' heart head finds "
                             "(default: on, where the weights carry one)")
    parser.add_argument("--passes", type=passes, default=defaults.passes, metavar="N",
                        help=f"network runs, each on the moving image warped by the runs before, 1 to {MAX_PASSES} "
                             f"(default {defaults.passes})")


def add_segment_training_arguments(parser: argparse.ArgumentParser) -> None:
    """``train-segmenter``'s options: the SegmentTraining fields (its defaults), the data, the run folder, --export."""
    p, d = parser, SEGMENT_TRAINING
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ACDC folder (holding training/patientNNN)")
    p.add_argument("--out", type=Path, required=True, help="run folder: cache.npz, last.pt, best.pt, log.csv")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--crop", type=int, default=d.crop, help="training patch side in pixels of the model grid")
    p.add_argument("--val-every", type=int, default=d.val_every, metavar="N",
                   help="validate every N epochs (and the last)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--channels", type=channel_list, default=d.channels,
                   metavar="C1,C2,...", help="U-Net channels per level (default: segment.NETWORK's)")
    p.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help="validate and keep an exponential moving average of the weights (0: the weights themselves)")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--export", type=Path, metavar="WEIGHTS", help="write OUT's best.pt as bundled weights, and stop")


def methods_from(names: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated method names, each one of ``names``."""
    def method_list(text: str) -> list[str]:
        chosen = [m.strip() for m in text.split(",") if m.strip()]
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown methods {unknown}; choose from {','.join(names)}")
        if not chosen:
            raise argparse.ArgumentTypeError(f"name at least one method from {','.join(names)}")
        return chosen

    return method_list


def ablation_item(text: str) -> tuple[str, Path]:
    """``benchmark --ablation-weights``: NAME=PATH."""
    name, sep, path = text.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="ACDC folder (holding training/patientNNN)")
    parser.add_argument("--split", choices=("validation", "train"), default="validation",
                        help="ACDC patients 091-100 (default) or 001-090 (seen in training: a check against "
                             "choosing settings on validation alone)")
    parser.add_argument("--limit", type=count, metavar="N", help="only the first N pairs of the split")
    parser.add_argument("--direction", choices=("es-ed", "ed-es", "both"), default="es-ed",
                        help="es-ed: ES moving onto ED fixed (default, the paper's); ed-es: ED labels carried onto ES "
                             "(with the LV EF error); both")
    parser.add_argument("--methods", type=methods_from(METHODS), default=list(METHODS),
                        help=f"comma-separated, from {','.join(METHODS)} (default: all)")
    add_refine_arguments(parser, REFINE_OPTION)
    parser.add_argument("--weights", help=WEIGHTS_HELP)
    parser.add_argument("--ablation-weights", type=ablation_item, action="append", default=[], metavar="NAME=PATH",
                        help="weights of an ablation row (defaults: FDG-off and SDG-off under "
                             "FSDiffRegLib/assets/weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", default=str(BENCHMARK_OUT), help="Markdown file for the table")


SIGNED_LISTS = ("--frame-times-ms",)  # options whose value may start with a minus sign and hold commas
NEGATIVE = re.compile(r"-\.?\d")  # a value starting with a negative number; no option starts so


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: 'fsdiffreg register: error: argument --refine: ...', and which takes
    '--frame-times-ms -10,20,50' (argparse takes '-10,20,50' for an option: it is no single number)."""

    def error(self, message: str) -> NoReturn:
        if events.wanted():
            print(events.line(events.error(message)), file=sys.stderr, flush=True)
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(  # type: ignore[override]  # argparse's overloads, taken as one
            self, args: Sequence[str] | None = None,
            namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        return super().parse_known_args(joined(sys.argv[1:] if args is None else list(args)), namespace)


def joined(args: list[str]) -> list[str]:
    """``args`` with each option of SIGNED_LISTS and a negative value after it joined: '--frame-times-ms=-10,20'."""
    out: list[str] = []
    for arg in args:
        if out and out[-1] in SIGNED_LISTS and NEGATIVE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fsdiffreg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train on ACDC (resumes from OUT's last checkpoint)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="ACDC folder (holding training/patientNNN)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, logs, best weights")
    p.add_argument("--config", default="cpu", help="bundled name (cpu, paper) or a JSON file")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--max-minutes", type=minutes, help="stop after the epoch that passes this time")
    p.add_argument("--train-limit", type=count, metavar="N", help="use only the first N training pairs")
    p.add_argument("--val-limit", type=count, metavar="N", help="use only the first N validation pairs")
    p.add_argument("--init-weights", metavar="W", help="start a new run from these weights (fine-tuning): a file "
                                                       "or a bundled name (weaksup, paper); --config must match them")
    p.add_argument("--directions", choices=("both", "one"),
                   help="both: each sample's fixed/moving order drawn at random every step (ES->ED and ED->ES), "
                        "validated both ways; one: ES onto ED only (default: the configuration's, both)")
    p.add_argument("--inverse-consistency", type=weight, metavar="W",
                   help="weight of the inverse-consistency term: every pair trained in both orders, their flows "
                        "composed pushed to the identity (default: the configuration's, 0: off)")
    p.set_defaults(func=_train)

    p = sub.add_parser("train-heart", help="train the heart head of a network's weights (the refinement blurs "
                                           "the field away from the heart it finds)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="ACDC folder (holding training/patientNNN)")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--out", help="the head's file (default: beside the weights, <name>_heart.pt, where "
                                 "register finds it); an existing file is refused")
    p.add_argument("--steps", type=count, default=HeartHeadTraining.steps, metavar="N", help="Adam steps")
    p.add_argument("--pairs", type=count, default=HeartHeadTraining.pairs, metavar="N",
                   help="the first N ACDC training pairs")
    p.set_defaults(func=_train_heart_head)

    p = sub.add_parser("train-segmenter", help="train the segmentation U-Net of segment on ACDC 001-090 (ED and ES), "
                                               "selected on 091-100; resumes from OUT's last.pt (needs MONAI)")
    add_segment_training_arguments(p)
    p.set_defaults(func=_train_segmenter)

    p = sub.add_parser("register", help="register MOVING to FIXED; outputs on the fixed grid")
    p.add_argument("fixed", help="fixed image (any 3D image SimpleITK reads)")
    p.add_argument("moving", help="moving image")
    p.add_argument("--out-dir", required=True,
                   help="folder for the outputs: new, empty or a previous run's; its contents are replaced whole")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--moving-labels", help="label map of the moving image to warp too")
    add_refine_arguments(p)
    p.set_defaults(func=_register)

    p = sub.add_parser("track", help="register every frame of a cine to its ED frame; volumes, EF and strain")
    p.add_argument("cine", help="a 4D image (x, y, z, t), a folder of 3D frame files or a DICOM cine folder "
                                "(one series, or a series per slice)")
    p.add_argument("--labels", required=True,
                   help="label map of the reference frame (1 RV, 2 Myo, 3 LV as ACDC), or 'auto': the reference frame "
                        "segmented by the bundled model (written as reference_labels_auto.nii.gz; a file named auto: "
                        "./auto)")
    p.add_argument("--out-dir", required=True,
                   help="folder for the outputs: new, empty or a previous run's; its contents are replaced whole")
    p.add_argument("--reference-frame", type=frame_number, default=1, metavar="N",
                   help="the frame the labels belong to, counted from 1 (default 1)")
    p.add_argument("--frame-times-ms", type=times_ms, metavar="T1,T2,...",
                   help="the time of each frame in ms, increasing, from any origin (e.g. -10,20,50); default: from "
                        "a 4D NIfTI's header where plausible")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_refine_arguments(p, TRACK_REFINE)
    p.set_defaults(func=_track)

    p = sub.add_parser("segment", help="RV, Myo and LV labels (1, 2, 3 as ACDC) of a 3D short-axis frame")
    p.add_argument("image", help="a 3D short-axis frame, slices along its third axis (any 3D image SimpleITK reads)")
    p.add_argument("--out", required=True, help="the labels file to write (.nii.gz), on the image's grid")
    p.add_argument("--overwrite", action="store_true", help="replace the labels file when it exists")
    p.add_argument("--weights", help="segmentation weights file (default: the bundled model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_segment)

    p = sub.add_parser("batch", help="register or track every case of a CSV manifest; resumable, sharded, or on "
                                     "a dask cluster (docs/cohorts.md)")
    p.add_argument("manifest", help="CSV with a header: id,fixed,moving[,moving_labels] (register) or "
                                    "id,cine,labels[,reference_frame] (track); paths relative to its folder")
    p.add_argument("--out-root", required=True, help="each case's set into OUT_ROOT/<id>/; the summary CSV beside")
    p.add_argument("--shard", metavar="K/N", help="run shard K of N (K from 0): cases K, K+N, ...; default: from "
                                                  "a Slurm, SGE, LSF, PBS or Kubernetes array job's environment")
    p.add_argument("--dask", metavar="ADDRESS", help="run the cases on the dask.distributed scheduler at ADDRESS, "
                                                     "or on a local cluster of N worker processes: local:N")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--refine", type=steps, metavar="N", help="refinement steps (default: register's or track's)")
    p.add_argument("--smoothness", type=smoothness, metavar="S", help="refinement smoothness weight (default: "
                                                                      "register's or track's)")
    for flag in ("diffeomorphic", "gaussian", "heart"):
        p.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None,
                       help=f"as register's --{flag}" + (" (register manifests)" if flag == "heart" else ""))
    p.add_argument("--passes", type=passes, metavar="N", help="network runs, as register's --passes (register "
                                                              "manifests)")
    p.set_defaults(func=_batch)

    p = sub.add_parser("evaluate", help="Table 1 (Dice, folding, SD|J|, time) on the validation split")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="ACDC folder")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--limit", type=count, metavar="N", help="only the first N validation pairs")
    add_refine_arguments(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("evaluate-function",
                       help="ED labels carried onto ES on validation: Dice, EF and ESV errors; strain; cines")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="ACDC folder")
    p.add_argument("--methods", type=methods_from(FUNCTION_METHODS), default=list(FUNCTION_METHODS),
                   help=f"comma-separated, from {','.join(FUNCTION_METHODS)} (default all; elastix and ANTs "
                        "where installed)")
    p.add_argument("--limit", type=count, metavar="N", help="only the first N validation pairs")
    p.add_argument("--strain-groups", action="store_true",
                   help="also: strain at ES of all 100 ACDC patients, per diagnostic group (refined)")
    p.add_argument("--cines", help="also: track each cine in this folder (Sunnybrook layout) and check EF and ES")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_refine_arguments(p, TRACK_REFINE)
    p.set_defaults(func=_evaluate_function)

    p = sub.add_parser("demo", help="register the bundled sample pair and draw a figure")
    p.add_argument("--out-dir", default="fsdiffreg-demo", help="output folder (as register's)")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_demo)

    p = sub.add_parser("benchmark", help="identity, elastix, ANTs and FSDiffReg side by side on validation")
    add_benchmark_arguments(p)
    p.set_defaults(func=_benchmark)

    p = sub.add_parser("devices", help="print torch's version and the devices it can use, as one JSON line")
    p.set_defaults(func=_devices)
    return parser


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command: 0 when it succeeds (batch: 1 when a case failed), 2 with one error line, 130 when interrupted
    (Ctrl-C or a terminate signal; what the run had begun to write is removed)."""
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("fsdiffreg: interrupted", file=sys.stderr, flush=True)
        return 130
    except (InputError, WeightsError, DeviceError, OutputError, OSError) as err:
        events.to_stderr(events.error(str(err)))
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
