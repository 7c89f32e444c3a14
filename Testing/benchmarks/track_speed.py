"""Seconds and peak memory of ``fsdiffreg track`` as the user runs it, beside ``register`` on one pair.

Usage: .venv/bin/python Testing/benchmarks/track_speed.py [--data ../shared/data] [--refine N] [--device cpu]
(each command with its own default refinement unless --refine is given)
Runs each command as its own process (start to outputs written, importing torch included) and
prints seconds per cine, seconds per frame and the process's peak resident memory (wait4). Cases:
the Sunnybrook cines (20 frames, 256 x 256 x 12-13), ACDC-sized 30-frame cines built from the ED and ES
frames of patient 091 (a heart of median size: track registers 56 % of the network grid) and 093 (the
largest validation heart: 76 %), cross-faded over a cycle (the motion is not real, the cost is), and
``register`` of patient 091's ES frame to its ED frame for the per-frame comparison.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

from FSDiffRegLib.imaging import acdc


def run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one ``fsdiffreg`` process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "FSDiffRegLib.commands.cli", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"fsdiffreg {args[0]} failed: {process.stderr.read().decode().strip()}")
    return seconds, usage.ru_maxrss / 1024


def acdc_cine(pair: acdc.AcdcPair, frames: int, folder: Path) -> Path:
    """A ``frames``-frame cine folder: ED cross-faded to ES and back over one cycle."""
    ed, es = sitk.ReadImage(str(pair.fixed), sitk.sitkFloat32), sitk.ReadImage(str(pair.moving), sitk.sitkFloat32)
    for k in range(frames):
        w = 0.5 - 0.5 * math.cos(2 * math.pi * k / frames)
        sitk.WriteImage(ed * (1 - w) + es * w, str(folder / f"frame{k + 1:02d}.nii.gz"))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--refine", help="refinement steps (default: each command's own)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    data = Path(args.data)
    common = ["--device", args.device] + (["--refine", args.refine] if args.refine else [])
    pair = acdc.load_pair(data / "ACDC" / "training" / "patient091")
    largest = acdc.load_pair(data / "ACDC" / "training" / "patient093")
    print("| case | frames | s/cine | s/frame | peak MB |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = []
        for subject in sorted((data / "sunnybrook-cine").glob("SCD*")):
            ed = int(acdc.read_info(subject)["ED"])
            cases.append((subject.name, 20, [str(subject / f"{subject.name}_4d.nii.gz"), "--labels",
                                             str(subject / f"{subject.name}_frame{ed:02d}_gt.nii.gz"),
                                             "--reference-frame", str(ed)]))
        for patient in (pair, largest):
            (tmp / patient.patient).mkdir()
            cases.append((f"ACDC {patient.patient[-3:]}, 30 frames (cross-faded)", 30,
                          [str(acdc_cine(patient, 30, tmp / patient.patient)), "--labels", str(patient.fixed_labels)]))
        for name, frames, cine in cases:
            seconds, mb = run(["track", *cine, "--out-dir", str(tmp / "out"), *common])
            print(f"| track {name} | {frames} | {seconds:.1f} | {seconds / frames:.2f} | {mb:.0f} |", flush=True)
        seconds, mb = run(["register", str(pair.moving), str(pair.fixed), "--out-dir", str(tmp / "pair"), *common])
        print(f"| register ACDC 091 (ES fixed, ED moving) | 1 pair | {seconds:.1f} | {seconds:.2f} | {mb:.0f} |")


if __name__ == "__main__":
    main()
