"""Print the network's forward time at 128 x 128 x 32 and a full `register` on the sample pair.

Usage: .venv/bin/python Testing/benchmarks/speed.py [--device cpu] [--refine N] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import SimpleITK as sitk
import torch

from FSDiffRegLib.defaults import RefineOptions
from FSDiffRegLib.device import pick_device
from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.network import FSDiffRegNet, parameter_count
from FSDiffRegLib.model.predict import predict
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.pipeline.register import register_images
from FSDiffRegLib.resources import BUNDLED_WEIGHTS, SAMPLE


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--refine", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = pick_device(args.device)
    model = load_model(None, device)[0] if BUNDLED_WEIGHTS.is_file() else FSDiffRegNet(Config()).to(device).eval()
    x = torch.randn(1, 1, 32, 128, 128, device=device).contiguous(memory_format=torch.channels_last_3d)
    forward = timed(lambda: predict(model, x, x), args.repeats)
    fixed = sitk.ReadImage(str(SAMPLE / "acdc091_ED.nii.gz"))
    moving = sitk.ReadImage(str(SAMPLE / "acdc091_ES.nii.gz"))
    full = timed(lambda: register_images(fixed, moving, model, device, refine=RefineOptions(args.refine)), args.repeats)
    print(f"device {device}, {torch.get_num_threads()} threads, {parameter_count(model)} parameters")
    print(f"forward pass 128x128x32: median {forward:.3f} s")
    print(f"register (sample pair, refine {args.refine}): median {full:.3f} s")


if __name__ == "__main__":
    main()
