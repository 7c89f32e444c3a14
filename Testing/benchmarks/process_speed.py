"""Seconds of `fsdiffreg register` as a whole process, and of a cohort: a loop of `register` processes, one `batch`,
one `batch --dask local:2` and elastix per pair, each on the same ACDC pairs (issue 24).

Usage: .venv/bin/python Testing/benchmarks/process_speed.py [--tree PATH] [--repeats 7] [--refine N]
                                                            [--pairs 20 | --quick] [--data ACDC] [--skip METHOD ...]
Runs the command line of the source tree PATH (default: this one) as new processes, one after another:
- `register` of the bundled sample (ACDC patient 091, ES onto ED) --repeats times: the median and range, and whether
  torch._dynamo was imported (python -X importtime);
- the first --pairs of the 20 unseen pair-directions (validation patients 091-100, ES onto ED and ED onto ES, in
  that order) by each method: `register` loop (one process per pair), `batch` (one process, a manifest),
  `batch --dask local:2` (a LocalCluster of 2 worker processes), and elastix (its default B-spline map,
  FSDiffRegLib.evaluation.baselines.elastix_field, one process per pair: reading both images, registering, writing its
  displacement field as gzipped NIfTI).
For each method: total seconds, seconds per pair, pairs per minute and its peak resident memory (the largest sum
of resident memory of the method's process tree, dask's scheduler, nannies and workers included, polled every
0.1 s); then the speed-ups of batch over the register loop and over elastix. --quick is 2 pairs and 1 repeat (a
smoke run). Prints numbers and the device; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.1
METHODS = ("register loop", "batch", "batch --dask local:2", "elastix")
ELASTIX_CHILD = """
import sys
import SimpleITK as sitk
from FSDiffRegLib.evaluation.baselines import elastix_field
fixed, moving, out = sys.argv[1:]
sitk.WriteImage(elastix_field(sitk.ReadImage(fixed), sitk.ReadImage(moving)), out, True)
"""


@dataclass
class Measured:
    seconds: float
    peak_mb: float
    stderr: str


def tree_rss(root) -> int:
    """Resident bytes of ``root`` (a psutil.Process) and all its descendants now."""
    import psutil

    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:  # it ended meanwhile
            pass
    return total


def run(tree: Path, command: list[str], importtime: bool = False) -> Measured:
    """Wall seconds of ``python [-X importtime] COMMAND`` with ``tree`` first on the path, the peak resident memory
    of its process tree, and its stderr."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(tree)}
    full = [sys.executable, *(["-X", "importtime"] if importtime else []), *command]
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(full, env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=tree, text=True)
        watched, peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            try:
                peak = max(peak, tree_rss(watched))
            except psutil.Error:
                pass
            time.sleep(POLL_S)
        seconds = time.perf_counter() - start
        err.seek(0)
        stderr = err.read()
    if process.returncode not in (0, 1):
        lines = stderr.strip().splitlines() or ["(no error output)"]
        raise SystemExit(f"{' '.join(command[:3])} failed ({process.returncode}): {lines[-1]}")
    return Measured(seconds, peak / 2**20, stderr)


def cli(*args: str) -> list[str]:
    return ["-m", "FSDiffRegLib.commands.cli", *args]


def single_register(tree: Path, tmp: Path, repeats: int, refine: list[str]) -> None:
    sample = tree / "FSDiffRegLib" / "assets" / "sample"
    times, dynamo = [], False
    for k in range(repeats):
        done = run(tree, cli("register", str(sample / "acdc091_ED.nii.gz"), str(sample / "acdc091_ES.nii.gz"),
                             "--out-dir", str(tmp / f"r{k}"), *refine), importtime=k == 0)
        if k == 0:
            dynamo = any(line.rstrip().endswith("| torch._dynamo") for line in done.stderr.splitlines())
        times.append(done.seconds)
    print(f"register process (sample, {repeats} runs{', ' + ' '.join(refine) if refine else ''}): median "
          f"{statistics.median(times):.2f} s (range {min(times):.2f}-{max(times):.2f}); torch._dynamo imported: "
          f"{'yes' if dynamo else 'no'}", flush=True)


def cohort(tree: Path, data: Path, count: int) -> list[tuple[str, Path, Path]]:
    """The first ``count`` validation pair-directions: (id, fixed, moving)."""
    sys.path.insert(0, str(tree))
    from FSDiffRegLib.imaging import acdc

    cases = [(f"{pair.patient}-{direction}", directed.fixed, directed.moving)
             for pair in acdc.split(data, "validation") for direction in acdc.DIRECTIONS
             for directed in [acdc.directed(pair, direction)]]
    if count > len(cases):
        raise SystemExit(f"--pairs {count}: only {len(cases)} validation pair-directions under {data}")
    return cases[:count]


def commands(method: str, cases: list, tmp: Path, refine: list[str]) -> list[list[str]]:
    """The processes, run one after another, that make up ``method`` on ``cases``."""
    manifest = tmp / "cohort.csv"
    if method == "register loop":
        return [cli("register", str(f), str(m), "--out-dir", str(tmp / "loop" / i), *refine) for i, f, m in cases]
    if method == "batch":
        return [cli("batch", str(manifest), "--out-root", str(tmp / "batch"), *refine)]
    if method == "batch --dask local:2":
        return [cli("batch", str(manifest), "--out-root", str(tmp / "dask"), "--dask", "local:2", *refine)]
    (tmp / "elastix").mkdir(exist_ok=True)
    return [["-c", ELASTIX_CHILD, str(f), str(m), str(tmp / "elastix" / f"{i}.nii.gz")] for i, f, m in cases]


def device_line(tree: Path) -> str:
    """The device `register` picks (auto), and the CPU, as `fsdiffreg devices` and the benchmark report say."""
    sys.path.insert(0, str(tree))
    from FSDiffRegLib.device import pick_device
    from FSDiffRegLib.evaluation.benchmark import environment

    return environment(pick_device("auto"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree whose FSDiffRegLib runs")
    parser.add_argument("--repeats", type=int, default=7, help="single register processes of the sample")
    parser.add_argument("--refine", type=int, help="--refine N for every run (default: the commands' defaults)")
    parser.add_argument("--pairs", type=int, default=20, help="validation pair-directions (0: none)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 pairs, 1 repeat")
    parser.add_argument("--skip", nargs="*", default=[], choices=METHODS, metavar="METHOD",
                        help=f"methods left out, of: {', '.join(METHODS)}")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ACDC")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.repeats = 2, 1
    try:
        import psutil  # noqa: F401  (the peak memory of each method's process tree)
    except ImportError:
        raise SystemExit("process_speed.py needs psutil: pip install psutil (dask[distributed] brings it)") from None
    tree = args.tree.resolve()
    refine = ["--refine", str(args.refine)] if args.refine is not None else []
    print(f"tree {tree}\ndevice {device_line(tree)}", flush=True)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if args.repeats:
            single_register(tree, tmp, args.repeats, refine)
        if not args.pairs:
            return
        cases = cohort(tree, args.data, args.pairs)
        (tmp / "cohort.csv").write_text("id,fixed,moving\n" + "".join(f"{i},{f},{m}\n" for i, f, m in cases))
        sys.path.insert(0, str(tree))
        from FSDiffRegLib.evaluation.baselines import missing

        if "elastix" not in args.skip and missing("elastix"):
            print(f"elastix: left out, {missing('elastix')}")
            args.skip.append("elastix")
        seconds = {}
        for method in (m for m in METHODS if m not in args.skip):
            runs = [run(tree, command) for command in commands(method, cases, tmp, refine)]
            total, n = sum(r.seconds for r in runs), len(cases)
            seconds[method] = total
            print(f"{method}: {n} pairs in {total:.1f} s, {total / n:.2f} s per pair, {60 * n / total:.1f} pairs per "
                  f"minute, peak resident memory {max(r.peak_mb for r in runs):.0f} MB", flush=True)
        for other in ("register loop", "elastix", "batch --dask local:2"):
            if "batch" in seconds and other in seconds:
                print(f"batch against {other}: {seconds[other] / seconds['batch']:.2f}x as fast "
                      f"({other} seconds / batch seconds)")


if __name__ == "__main__":
    main()
