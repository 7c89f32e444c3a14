"""Seconds of `fsdiffreg register` as a whole process, and of `fsdiffreg batch` against a loop of such processes.

Usage: .venv/bin/python Testing/benchmarks/process_speed.py [--tree PATH] [--repeats 3] [--refine N]
                                                            [--pairs N --data ACDC]
Runs the command line of the source tree PATH (default: this one) as new processes, one after another:
`register` of the bundled sample (ACDC patient 091, ES onto ED) --repeats times, printing the median and
range, and whether torch._dynamo was imported (python -X importtime). With --pairs, also the first N ACDC
validation pairs as one `batch`, one `batch --dask local:2` and N `register` processes: seconds, seconds
per pair, pairs per minute and the peak resident memory of the largest process so far (dask's workers
not counted). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(tree: Path, args: list[str], importtime: bool = False) -> tuple[float, str]:
    """Wall seconds of ``python -m FSDiffRegLib.commands.cli ARGS`` with ``tree`` first on the path, and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "FSDiffRegLib.commands.cli", *args]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tree)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args[:1])} failed: {done.stderr.strip().splitlines()[-1]}")
    return seconds, done.stderr


def peak_mb() -> float:
    """Peak resident memory of the largest child process so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree whose FSDiffRegLib runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--refine", type=int, help="--refine N for every run (default: the commands' defaults)")
    parser.add_argument("--pairs", type=int, help="also batch vs a loop of register on the first N validation pairs")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ACDC")
    args = parser.parse_args()
    tree = args.tree.resolve()
    refine = ["--refine", str(args.refine)] if args.refine is not None else []
    sample = tree / "FSDiffRegLib" / "assets" / "sample"
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for k in range(args.repeats):
            seconds, err = run(tree, ["register", str(sample / "acdc091_ED.nii.gz"), str(sample / "acdc091_ES.nii.gz"),
                                      "--out-dir", f"{tmp}/r{k}", *refine], importtime=k == 0)
            if k == 0:
                dynamo = any(line.rstrip().endswith("| torch._dynamo") for line in err.splitlines())
            times.append(seconds)
        print(f"tree {tree}: register process (sample{', refine ' + str(args.refine) if refine else ''}): median "
              f"{statistics.median(times):.2f} s (range {min(times):.2f}-{max(times):.2f}, {args.repeats} runs); "
              f"torch._dynamo imported: {'yes' if dynamo else 'no'}")
        if args.pairs:
            sys.path.insert(0, str(tree))
            from FSDiffRegLib.imaging import acdc

            pairs = acdc.split(args.data, "validation")[:args.pairs]
            manifest = Path(tmp) / "cohort.csv"
            manifest.write_text("id,fixed,moving\n" + "".join(f"{p.patient},{p.fixed},{p.moving}\n" for p in pairs))
            for name, commands in (
                    ("batch", [["batch", str(manifest), "--out-root", f"{tmp}/batch", *refine]]),
                    ("batch --dask local:2", [["batch", str(manifest), "--out-root", f"{tmp}/dask", "--dask", "local:2",
                                               *refine]]),
                    ("register loop", [["register", str(p.fixed), str(p.moving), "--out-dir", f"{tmp}/loop/{p.patient}",
                                        *refine] for p in pairs])):
                seconds = sum(run(tree, c)[0] for c in commands)
                print(f"{name}: {len(pairs)} pairs in {seconds:.1f} s, {seconds / len(pairs):.2f} s per pair, "
                      f"{60 * len(pairs) / seconds:.1f} pairs per minute; peak memory so far {peak_mb():.0f} MB")
            shutil.rmtree(f"{tmp}/batch", ignore_errors=True)


if __name__ == "__main__":
    main()
