"""Seconds of a registration as the Slicer module runs it: a new worker process for the run, against
the worker the module keeps between runs.

Usage: .venv/bin/python Testing/benchmarks/worker_speed.py [--repeats 5] [--refine N] [--device cpu]
Registers the bundled sample (ACDC patient 091, ES onto ED) from MRML volumes (slicer-core) to new
output nodes, through FSDiffRegMRML's RegistrationJob: inputs written, the command in the worker,
outputs loaded. "new worker" starts Python and imports torch for the run (what every run cost before
the worker was kept); "kept worker" is a later run in a worker that has run one already. Prints the
median and range of each, and the kept worker's resident memory while idle (Linux).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import slicer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "FSDiffReg"))
from FSDiffRegLib.resources import sample_pair  # noqa: E402
from FSDiffRegMRML.job import RegistrationJob  # noqa: E402
from FSDiffRegMRML.process import RegisterOptions, Worker  # noqa: E402


def load_volume(scene, path: Path):
    """A scalar volume node read by Slicer's own storage node."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise RuntimeError(f"cannot read {path}")
    return node


def seconds(fixed, moving, options: RegisterOptions, worker: Worker | None) -> float:
    """Wall seconds from the job's start to its output nodes."""
    start = time.perf_counter()
    RegistrationJob(fixed, moving, None, options, worker).wait()
    return time.perf_counter() - start


def resident_mb(pid: int) -> float | None:
    """A process's resident memory in MB (Linux /proc); None elsewhere."""
    status = Path(f"/proc/{pid}/status")
    if not status.is_file():
        return None
    line = next(line for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--refine", type=int, help="refinement steps (default: the module's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    options = RegisterOptions(device=args.device)
    if args.refine is not None:
        options.refineSteps = args.refine
    scene = slicer.vtkMRMLScene()
    sample = sample_pair()
    fixed, moving = load_volume(scene, sample["fixed"]), load_volume(scene, sample["moving"])
    kept = Worker(sys.executable)
    seconds(fixed, moving, options, kept)  # the module's first run (its device query imported torch already)
    times: dict[str, list[float]] = {"new worker": [], "kept worker": []}
    for _ in range(args.repeats):  # interleaved, so both see the same machine
        times["new worker"].append(seconds(fixed, moving, options, None))
        times["kept worker"].append(seconds(fixed, moving, options, kept))
    idle = resident_mb(kept.pid)
    kept.stop()
    print(f"sample pair, {options.refineSteps} refinement steps, {args.device}, {args.repeats} runs each")
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.2f} s (range {min(values):.2f}-{max(values):.2f})")
    if idle is not None:
        print(f"kept worker idle: {idle:.0f} MB resident")


if __name__ == "__main__":
    main()
