"""``fsdiffreg benchmark``: every method side by side on ACDC pairs (validation, or training), scored alike.

Methods: identity; elastix B-spline (default parameter map); ANTs SyN (``SyNOnly``);
FSDiffReg without and with instance refinement; the FDG-off and SDG-off ablations where
their weights exist. Each method gets the fixed and moving images as read (``--direction``:
ES onto ED, the paper's, ED onto ES, or both) and returns a displacement field on the fixed
grid. Scoring is the same for all: the moving labels are warped through the field (nearest
neighbour) and compared with the fixed labels; folding and SD|J| are measured on the pair's
heart-centred 128 x 128 x 32 grid (1.5 x 1.5 x 3.15 mm), folding also on the fixed grid; ED onto
ES also gives the LV ejection fraction of the carried ED labels against the manual one. Every
FSDiffReg row is compared with the network alone: the paired difference of mean Dice per
direction with its bootstrap 95 % interval, wins and losses (``evaluate.paired_bootstrap``).

Seconds: wall clock from the two images in memory to the field (for FSDiffReg, the
whole ``register``: preprocessing, network, refinement, field on the fixed grid). Each
method first runs once, untimed, on the first pair, so library loading is not counted.

Peak MB: the process's peak resident memory while the method runs, minus its resident
memory just before (libraries already loaded and the model's weights are not counted);
the largest over the pairs. Linux resets the peak (VmHWM) when 5 is written to
/proc/self/clear_refs; freed heap is first returned to the system (malloc_trim) so that a
method cannot reuse pages another one freed. C++ allocations (ITK, elastix, ANTs) count.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..defaults import DEFAULT_REFINE, NETWORK_ONLY, RefineOptions
from ..device import pick_device
from ..errors import InputError
from ..events import Report, ignore, note, to_stderr
from ..files import replaced_whole
from ..imaging import acdc
from ..imaging.preprocess import heart_grid_centre, network_grid
from ..model.config import Config
from ..model.weights import load_model
from ..pipeline.register import register_images
from ..resources import WEIGHTS
from .evaluate import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    markdown_table,
    paired_bootstrap,
    score_field,
    summarize,
)
from .methods import Method, chosen_methods

ABLATIONS = {
    "FDG-off": WEIGHTS / "fsdiffreg_acdc_cpu_fdg_off.pt",
    "SDG-off": WEIGHTS / "fsdiffreg_acdc_cpu_sdg_off.pt",
}
VERSIONS = ("torch", "SimpleITK", "itk-elastix", "antspyx")


@dataclass(frozen=True)
class BenchmarkRequest:
    """What to compare, on which pairs, and where the report goes (``fsdiffreg benchmark``'s options)."""

    data: Path  # the ACDC folder
    out: str  # the Markdown report
    methods: tuple[str, ...]  # from identity, elastix, ants, network, refine, ablations
    split: str = "validation"
    limit: int | None = None  # the first pairs of the split only
    direction: str = "es-ed"  # es-ed, ed-es or both
    refine: RefineOptions = DEFAULT_REFINE
    weights: str | None = None
    ablation_weights: tuple[tuple[str, Path], ...] = ()  # (name, path): an ablation row's weights
    device: str = "auto"
    command: str = ""  # the command that asks for this, shown in the report


class PeakMemory:
    """Peak resident memory (MB) of this process inside a ``with`` block, above its size on entry."""

    mb = float("nan")

    def __enter__(self) -> PeakMemory:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self.start: int | None = status_kb("VmRSS")
        except OSError:  # not Linux: the peak is not measured
            self.start = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.start is not None:
            self.mb = (status_kb("VmHWM") - self.start) / 1024


def status_kb(key: str) -> int:
    """A kB entry of /proc/self/status, e.g. VmRSS or VmHWM."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


def model_method(name: str, weights: str | Path | None, device: torch.device,
                 refine: RefineOptions = NETWORK_ONLY) -> Method:
    """FSDiffReg with the given weights, as ``register`` runs it."""
    model, _ = load_model(weights, device)
    method = Method(name, lambda fixed, moving, moving_labels: sitk.Image())

    def run(fixed: sitk.Image, moving: sitk.Image, moving_labels: sitk.Image) -> sitk.Image:
        result = register_images(fixed, moving, model, device, refine=refine)
        method.last = result.metrics["unfold"]
        return result.field

    method.register = run
    return method


def build_methods(request: BenchmarkRequest, device: torch.device) -> tuple[list[Method], list[str]]:
    """The methods asked for, in table order, and a note for each one that cannot run here.

    An ablation whose default weights are absent is skipped; one given explicitly must load.
    """
    methods, skipped = chosen_methods(request.methods, request.refine,
                                      lambda name, refine: model_method(name, request.weights, device, refine))
    if "ablations" in request.methods:
        explicit = dict(request.ablation_weights)
        for name, path in {**ABLATIONS, **explicit}.items():
            if name in explicit or path.is_file():
                methods.append(model_method(f"FSDiffReg {name} (network)", path, device))
            else:
                skipped.append(f"FSDiffReg {name}: no weights at {os.path.relpath(path)}")
    return methods, skipped


def run_method(method: Method, fixed: sitk.Image, moving: sitk.Image,
               moving_labels: sitk.Image) -> tuple[sitk.Image, float, float]:
    """The method's field, its wall-clock seconds and its peak memory in MB."""
    with PeakMemory() as peak:
        start = time.perf_counter()
        field = method.register(fixed, moving, moving_labels)
        seconds = time.perf_counter() - start
    return field, seconds, peak.mb


def directions(which: str) -> list[str]:
    """``--direction``: 'es-ed', 'ed-es' or 'both' -> the directions in order."""
    return list(acdc.DIRECTIONS) if which == "both" else [which]


Rows = dict[str, list[dict[str, float]]]


def benchmark(pairs: list[acdc.AcdcPair], methods: list[Method], log: Report = ignore,
              ways: tuple[str, ...] = ("es-ed",)) -> tuple[Rows, list[tuple[str, str]]]:
    """One row per pair and direction for each method: Dice, folding (heart and fixed grid; FSDiffReg also before
    its fold removal), SD|J|, LV EF error (ED onto ES), seconds, peak MB; and the (patient, direction) of each row."""
    rows: Rows = {m.name: [] for m in methods}
    cases = []
    for index, (pair, way) in enumerate((p, w) for p in pairs for w in ways):
        pair = acdc.directed(pair, way)
        cases.append((pair.patient, acdc.DIRECTIONS[way]))
        fixed, moving = sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving))
        moving_labels, fixed_labels = (sitk.ReadImage(str(p)) for p in (pair.moving_labels, pair.fixed_labels))
        grid = network_grid(fixed, heart_grid_centre(fixed, moving), Config())
        for method in methods:
            if index == 0:
                method.register(fixed, moving, moving_labels)  # warm-up, untimed
            result, seconds, mb = run_method(method, fixed, moving, moving_labels)
            row = {**score_field(result, grid, moving_labels, fixed_labels, carried_ef=way == "ed-es"),
                   "seconds": seconds, "peak_mb": mb}
            row.update({f"unfold_{k}": float(v) for k, v in method.last.items()})
            rows[method.name].append(row)
            log(note(f"{pair.patient} {acdc.DIRECTIONS[way]} {method.name}: Dice mean {row['mean']:.3f}, "
                     f"folding {row['folding_percent']:.3f} % ({row['folding_fixed_percent']:.3f} % on the fixed "
                     f"grid), {seconds:.1f} s, {mb:.0f} MB"))
    return rows, cases


def comparison(rows: Rows, cases: list[tuple[str, str]], reference: str = "FSDiffReg (network)") -> str:
    """Markdown: each FSDiffReg row against ``reference`` per direction: mean Dice, paired difference with its
    bootstrap 95 % interval, wins/losses, folding, LV EF error (ED onto ES)."""
    header = ["method", "direction", "Dice mean", "difference vs network [95 % CI]", "wins/losses",
              "folded pairs before removal", "folded pairs delivered", "LV EF abs err (pp)", "LV EF bias (pp)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in rows.items():
        if not name.startswith("FSDiffReg") or "ablation" in name:
            continue
        for way in dict.fromkeys(w for _, w in cases):
            mine = [x for x, (_, w) in zip(r, cases) if w == way]
            ref = [x for x, (_, w) in zip(rows.get(reference, r), cases) if w == way]
            b = paired_bootstrap([x["mean"] for x in mine], [x["mean"] for x in ref])
            before = sum(x.get("unfold_folded_before", 0) + x.get("unfold_folded_before_fine", 0) > 0 for x in mine)
            after = sum(x["folding_percent"] + x["folding_fixed_percent"] > 0 for x in mine)
            ef = [x["LV_EF_error"] for x in mine if "LV_EF_error" in x]
            cells = [name, way, f"{np.mean([x['mean'] for x in mine]):.4f}",
                     f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]", f"{b['wins']}/{b['losses']}",
                     f"{before} of {len(mine)}", f"{after} of {len(mine)}",
                     f"{np.mean(np.abs(ef)):.1f}" if ef else "-", f"{np.mean(ef):+.1f}" if ef else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def folding_per_pair(rows: Rows, cases: list[tuple[str, str]]) -> str:
    """Markdown: per pair and direction, each FSDiffReg row's folded voxels before the fold removal (fixed grid /
    heart grid) and the delivered field's folding % (fixed grid / heart grid)."""
    names = [n for n in rows if n.startswith("FSDiffReg")]
    header = ["pair"] + [f"{n}: folded voxels before / delivered %" for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (patient, way) in enumerate(cases):
        cells = [f"{patient} {way}"]
        for n in names:
            x = rows[n][i]
            cells.append(f"{x.get('unfold_folded_before', 0):.0f} / {x.get('unfold_folded_before_fine', 0):.0f}; "
                         f"{x['folding_fixed_percent']:.4f} / {x['folding_percent']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def environment(device: torch.device) -> str:
    """Device, CPU, threads and library versions, for the report."""
    versions = []
    for package in VERSIONS:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    threads = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
               if k in os.environ]
    return "; ".join([f"{device}: {cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}",
                      *threads, ", ".join(versions)])


def report(rows: Rows, cases: list[tuple[str, str]], pairs: list[acdc.AcdcPair], skipped: list[str],
           request: BenchmarkRequest, device: torch.device) -> str:
    """The Markdown report: what ran, where, a table per direction, the comparison with the network alone,
    the folding per pair and what was skipped."""
    ways = dict.fromkeys(w for _, w in cases)
    lines = [
        f"# FSDiffReg benchmark on the ACDC {request.split} split",
        "",
        f"Pairs: {len(pairs)} ({pairs[0].patient} to {pairs[-1].patient}; {', '.join(ways)}; ES->ED: ED fixed, "
        f"ES moving; ED->ES: ES fixed, ED moving), run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"Command: `{request.command}`",
        f"Machine: {environment(device)}.",
    ]
    for way in ways:
        picked = {name: summarize([x for x, (_, w) in zip(r, cases) if w == way]) for name, r in rows.items()}
        lines += ["", f"## {way}", "", markdown_table(picked)]
    lines += [
        "",
        "Dice: mean (SD) over pairs of the moving labels warped onto the fixed grid. abs(J)<=0 % and SD abs(J): "
        "the field's Jacobian determinant on the heart-centred 128 x 128 x 32 grid, mean over pairs. "
        "s/pair: wall clock from images in memory to the field, after one untimed warm-up run. "
        "peak MB: largest over pairs of the process's peak resident memory during the method above its "
        "resident memory before it.",
    ]
    if any(name.startswith("FSDiffReg") for name in rows):
        lines += ["", "## Against the network alone", "", comparison(rows, cases), "",
                  f"Paired difference of mean Dice, percentile bootstrap over pairs ({BOOTSTRAP_RESAMPLES} "
                  f"resamples, seed {BOOTSTRAP_SEED}); a fold: det J <= 0 on the fixed grid or the heart grid; LV EF "
                  "error: ED onto ES, the carried ED labels' EF minus the manual labels' EF.",
                  "", "## Folding per pair", "", folding_per_pair(rows, cases)]
    lines += [f"Skipped: {note}." for note in skipped]
    return "\n".join(lines) + "\n"


def report_path(text: str) -> Path:
    """``--out``, checked before the benchmark runs (for an hour or more) so that its table is not lost."""
    if not text.strip():
        raise InputError("--out is empty text: name a Markdown file")
    out = Path(text).resolve()
    if out.is_dir():
        raise InputError(f"--out {out} is a folder: name a Markdown file")
    existing = next(folder for folder in out.parents if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {out}: {existing} is not a writable folder")
    return out


def main_benchmark(request: BenchmarkRequest) -> None:
    """Run the benchmark, print the report and write it to ``request.out``."""
    out = report_path(request.out)
    pairs = acdc.split(request.data, request.split)[: request.limit]
    device = pick_device(request.device)
    methods, skipped = build_methods(request, device)
    rows, cases = benchmark(pairs, methods, to_stderr,
                            tuple(directions(request.direction)))
    text = report(rows, cases, pairs, skipped, request, device)
    print(text, end="")
    out.parent.mkdir(parents=True, exist_ok=True)
    with replaced_whole(out) as handle:  # a reader never sees half a report
        handle.write(text.encode("utf-8"))

