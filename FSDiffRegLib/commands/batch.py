"""``fsdiffreg batch``: a cohort from a manifest (FSDiffRegLib.commands.manifest), each case's set written into
OUT_ROOT/<id>/ as ``register`` or ``track`` writes it (whole or nothing), the model loaded once per process.

- The next case's files are hashed and read on a thread while the current case computes.
- Resume: a case is skipped when OUT_ROOT/<id>/metrics.json (written last, so its set is whole) records
  the same inputs (SHA256), options (metrics.json's ``options``) and weights (SHA256); otherwise it runs
  and its new set replaces the old.
- Shards (FSDiffRegLib.commands.shards): this process runs shard K of N of the manifest's cases.
- ``--dask ADDRESS`` or ``local:N``: the cases run on a dask.distributed cluster whose workers see OUT_ROOT;
  each worker loads the model once (``ModelPlugin``); a lost worker's case runs again on another.
- The summary (``shards.summary_name``) lists every case of the shard, in the manifest's order: id,
  status (pending, done, skipped, failed, interrupted), seconds, folding %, NCC before and after
  (register), LV and RV EF (track) and the error line; rewritten whole (a temporary file renamed over it)
  after every case.
- A failing case is recorded with its error and the batch goes on; the exit status is 0 when every case is
  done or skipped, 1 when any failed, 130 when interrupted (Ctrl-C or SIGTERM: the case under way leaves no
  set, the summary says ``interrupted``).
"""

from __future__ import annotations

import csv
import io
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

from ..defaults import RefineOptions
from ..errors import DeviceError, InputError, OutputError, WeightsError
from ..events import Report, ignore, note, prefixed, progress, stage
from ..files import replaced_whole
from ..outputs.folder import METRICS, interrupts_held, marked
from . import register_files, track_files
from .manifest import Case, Manifest
from .shards import Shard, summary_name

SUMMARY_COLUMNS = ("id", "status", "seconds", "folding_percent", "ncc_before", "ncc_after", "lv_ef_percent",
                   "rv_ef_percent", "error")
EXPECTED_ERRORS = (InputError, OutputError, WeightsError, DeviceError, OSError)
Request = Union[register_files.RegisterRequest, track_files.TrackRequest]


@dataclass(frozen=True)
class BatchOptions:
    """What every case is asked besides its files."""

    weights: str | None
    device: str
    refine: RefineOptions


def request_for(kind: str, case: Case, out_root: Path, options: BatchOptions) -> Request:
    p = case.paths
    if kind == "register":
        return register_files.RegisterRequest(p["fixed"], p["moving"], out_root / case.id, p.get("moving_labels"),
                                        options.weights, options.device, options.refine)
    return track_files.TrackRequest(p["cine"], p["labels"], out_root / case.id, case.reference_frame, options.weights,
                              options.device, options.refine)


def command(request: Request):  # the register_files or track_files module
    return register_files if isinstance(request, register_files.RegisterRequest) else track_files


def error_line(err: BaseException) -> str:
    """One line: our errors' message, any other exception's type and first line."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text if isinstance(err, EXPECTED_ERRORS) else f"{type(err).__name__}: {text}".rstrip(": ")


def fingerprint(request: Request) -> dict | None:
    """The inputs as metrics.json names them; None when one cannot be read (the run says why)."""
    try:
        return command(request).input_records(request)
    except OSError:
        return None


def up_to_date(request: Request, inputs: dict | None, weights_sha256: str) -> bool:
    """Whether the request's out-dir holds a whole set made from these inputs, options and weights."""
    metrics_file = Path(request.out_dir) / METRICS
    if inputs is None or not marked(metrics_file):
        return False
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    recorded = metrics.get("inputs") if isinstance(metrics.get("inputs"), dict) else {}
    options = json.loads(json.dumps(command(request).options_record(request)))
    return ({role: item.get("sha256") for role, item in recorded.items() if isinstance(item, dict)}
            == {role: item["sha256"] for role, item in inputs.items()}
            and metrics.get("options") == options and metrics.get("weights_sha256") == weights_sha256)


def run_case(request: Request, loaded: tuple, read: dict | None, log: Report) -> str | None:
    """Register or track one case into its out-dir; the error line, or None when its set is written."""
    try:
        if isinstance(request, register_files.RegisterRequest):
            register_files.register_files(request, log, loaded=loaded, read=read)
        else:
            track_files.track_files(request, log, loaded=loaded, read=read)
    except Exception as err:  # any case's failure is recorded and the batch goes on
        return error_line(err)
    return None


def set_row(case_id: str, status: str, seconds: float, folder: Path, error: str = "") -> dict[str, str]:
    """A summary row; the numbers read from the case's set where it has one."""
    row = {"id": case_id, "status": status, "seconds": f"{seconds:.2f}", "error": error}
    if status not in ("done", "skipped"):
        return row
    metrics = json.loads((folder / METRICS).read_text(encoding="utf-8"))
    folding = metrics.get("folding_percent")
    folding = max(folding) if isinstance(folding, list) else folding
    row["folding_percent"] = f"{folding:.4f}" if folding is not None else ""
    for key in ("ncc_before", "ncc_after"):
        row[key] = f"{metrics[key]:.4f}" if key in metrics else ""
    if (folder / "function.json").is_file():
        function = json.loads((folder / "function.json").read_text(encoding="utf-8"))
        for name in ("LV", "RV"):
            ef = function.get(name, {}).get("EF_percent") if isinstance(function.get(name), dict) else None
            row[f"{name.lower()}_ef_percent"] = f"{ef:.1f}" if isinstance(ef, (int, float)) else ""
    return row


class Summary:
    """The shard's summary CSV, one row per case, rewritten whole after every change."""

    def __init__(self, path: Path, ids: list[str]) -> None:
        self.path = path
        self.rows = {case_id: {"id": case_id, "status": "pending"} for case_id in ids}
        self.write()

    def record(self, row: dict[str, str]) -> None:
        self.rows[row["id"]] = row
        self.write()

    def write(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, SUMMARY_COLUMNS, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows.values())
        with interrupts_held(), replaced_whole(self.path) as handle:
            handle.write(text.getvalue().encode("utf-8"))

    def failed(self) -> int:
        return sum(row["status"] == "failed" for row in self.rows.values())


@dataclass
class PreparedCase:
    """A case made ready on the prefetch thread: skipped, failed before it ran, or read."""

    request: Request
    skip: bool = False
    read: dict | None = None
    error: str | None = None


def prepare(request: Request, weights_sha256: str) -> PreparedCase:
    """Hash the case's inputs; unless its set is up to date, read them."""
    inputs = fingerprint(request)
    if up_to_date(request, inputs, weights_sha256):
        return PreparedCase(request, skip=True)
    try:
        return PreparedCase(request, read=command(request).read_inputs(request, inputs))
    except Exception as err:  # recorded when the case's turn comes
        return PreparedCase(request, error=error_line(err))


def run_local(requests: list[tuple[Case, Request]], options: BatchOptions, summary: Summary, log: Report) -> None:
    """Each case in this process, the model loaded once, the next case read while this one computes."""
    from ..device import pick_device
    from ..model.weights import load_model

    device = pick_device(options.device)
    log(stage("loading", f"loading weights on {device}"))
    loaded = load_model(options.weights, device)
    pool = ThreadPoolExecutor(1, thread_name_prefix="fsdiffreg-prefetch")
    ahead: Future | None = pool.submit(prepare, requests[0][1], loaded[1]["sha256"]) if requests else None
    case = None
    try:
        for number, (case, request) in enumerate(requests):
            start = time.time()
            prepared = ahead.result()  # type: ignore[union-attr]  # submitted for every case
            following = requests[number + 1][1] if number + 1 < len(requests) else None
            ahead = pool.submit(prepare, following, loaded[1]["sha256"]) if following is not None else None
            if prepared.skip:
                row = set_row(case.id, "skipped", time.time() - start, Path(request.out_dir))
            else:
                error = prepared.error or run_case(request, loaded, prepared.read, prefixed(log, case.id))
                row = set_row(case.id, "failed" if error else "done", time.time() - start, Path(request.out_dir),
                              error or "")
            summary.record(row)
            log(progress("cases", number + 1, len(requests), f"case {number + 1} of {len(requests)}, {case.id}: "
                         f"{row['status']} in {row['seconds']} s" + (f": {row['error']}" if row["error"] else "")))
    except KeyboardInterrupt:
        if case is not None and summary.rows[case.id]["status"] == "pending":
            summary.record({"id": case.id, "status": "interrupted"})
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


#: Runs the cases and fills the summary.
Runner = Callable[[list[tuple[Case, Request]], BatchOptions, Summary, Report], None]


def run_batch(manifest: Manifest, out_root: str | Path, options: BatchOptions, shard: Shard | None = None,
              runner: Runner = run_local, log: Report = ignore) -> int:
    """Run the shard's cases of ``manifest`` into ``out_root`` with ``runner`` (``run_local``, or
    ``dask_batch.run_dask`` given its address); the number that failed."""
    from .shards import take

    out_root = Path(out_root).absolute()
    if out_root.exists() and not out_root.is_dir():
        raise OutputError(f"the output root {out_root} is a file: name a folder")
    out_root.mkdir(parents=True, exist_ok=True)
    cases = take(manifest.cases, shard)
    if shard is not None:
        log(note(f"shard {shard.index} of {shard.count} (from {shard.source}, counted from 0): {len(cases)} of "
                 f"{len(manifest.cases)} cases"))
    summary = Summary(out_root / summary_name(shard), [case.id for case in cases])
    requests = [(case, request_for(manifest.kind, case, out_root, options)) for case in cases]
    runner(requests, options, summary, log)
    return summary.failed()
