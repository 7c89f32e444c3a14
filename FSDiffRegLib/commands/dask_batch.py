"""``fsdiffreg batch --dask``: the cases as tasks of a dask.distributed cluster (FSDiffRegLib.commands.batch)."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import cast

import dask
from distributed import Client, LocalCluster, as_completed, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from ..errors import InputError
from ..events import Report, ignore, progress
from ..outputs.folder import clear_left
from .batch import BatchOptions, Case, Request, Summary, error_line, fingerprint, run_case, set_row, up_to_date
from .memory import keep_freed_memory

PLUGIN = "fsdiffreg-model"


class ModelPlugin(WorkerPlugin):
    """A dask worker plugin: the model loaded once on each worker, torch given the worker's share of the cores."""

    name = PLUGIN

    def __init__(self, weights: str | None, device: str, threads: int | None) -> None:
        self.weights, self.device, self.threads = weights, device, threads
        self.loaded: tuple | None = None

    def setup(self, worker: object) -> None:
        import torch

        from ..device import pick_device
        from ..model.weights import load_model

        keep_freed_memory()
        if self.threads:
            torch.set_num_threads(self.threads)
        self.loaded = load_model(self.weights, pick_device(self.device))

    def teardown(self, worker: object) -> None:
        self.loaded = None


def run_on_worker(request: Request) -> tuple[float, str | None]:
    """A dask task: one case with the worker's model; its seconds and error line."""
    start = time.time()
    loaded = cast(ModelPlugin, get_worker().plugins[PLUGIN]).loaded
    assert loaded is not None  # the plugin's setup loaded it before any task
    error = run_case(request, loaded, None, ignore)
    return time.time() - start, error


def dask_client(address: str, scratch: str) -> tuple[Client, int | None]:
    """A client of the cluster at ``address``, or of a new LocalCluster of N worker processes for ``local:N``
    (their scratch space in the folder ``scratch``); and the torch threads of each worker (its share of the
    cores where the cluster is local)."""
    if address.startswith("local:"):
        workers = address.partition(":")[2]
        if not workers.isdigit() or int(workers) < 1:
            raise InputError(f"--dask local:N needs N, the number of worker processes, at least 1; got {address!r}")
        with dask.config.set({"temporary-directory": scratch}):  # the scheduler's scratch space too
            cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                   dashboard_address=None, local_directory=scratch)
        return Client(cluster), max(1, (os.cpu_count() or 1) // int(workers))
    return Client(address), None


def run_dask(address: str, requests: list[tuple[Case, Request]], options: BatchOptions, summary: Summary,
             log: Report) -> None:
    """Each case a dask task (a worker that dies mid-case has its case run again elsewhere); the summary here."""
    from ..model.weights import sha256, weights_path

    weights_sha256 = sha256(weights_path(options.weights))
    scratch = tempfile.mkdtemp(prefix="fsdiffreg-dask-")  # removed whole however the batch ends (dask's own is not)
    futures = {}
    try:
        client, threads = dask_client(address, scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    try:
        plugin = ModelPlugin(options.weights, options.device, threads)
        register = getattr(client, "register_plugin", None) or client.register_worker_plugin  # type: ignore[attr-defined]
        register(plugin, name=PLUGIN)  # register_plugin from distributed 2023.9, register_worker_plugin before
        for case, request in requests:
            if up_to_date(request, fingerprint(request), weights_sha256):
                summary.record(set_row(case.id, "skipped", 0.0, Path(request.out_dir)))
                continue
            futures[client.submit(run_on_worker, request, key=f"fsdiffreg-{case.id}-{secrets.token_hex(4)}",
                                  pure=False)] = (case, request)
        for done, future in enumerate(as_completed(futures), 1):
            case, request = futures[future]
            try:
                seconds, error = future.result()
            except Exception as err:  # the case's workers died (dask's allowed failures) or the cluster went
                seconds, error = 0.0, error_line(err)
            row = set_row(case.id, "failed" if error else "done", seconds, Path(request.out_dir), error or "")
            summary.record(row)
            log(progress("cases", done, len(futures), f"case {done} of {len(futures)}, {case.id}: {row['status']} in "
                         f"{row['seconds']} s" + (f": {row['error']}" if error else "")))
    except KeyboardInterrupt:
        for future, (case, _) in futures.items():
            if not future.done():
                summary.record({"id": case.id, "status": "interrupted"})
        raise
    finally:
        client.cancel(list(futures))
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
        for root in {Path(request.out_dir).parent for _, request in futures.values()}:
            clear_left(root)  # the cases their stopped workers left half-written (not one a live run holds)
        shutil.rmtree(scratch, ignore_errors=True)
