"""``fsdiffreg track`` on files: the cine and the reference labels read and checked (or segmented: ``auto``), every
frame tracked (FSDiffRegLib.pipeline.track), the set written whole (FSDiffRegLib.outputs.folder)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..defaults import TRACK_REFINE, RefineOptions
from ..events import Report, ignore, progress
from ..imaging.cine import Cine, join_frames, read_cine, reference_index, with_times
from ..imaging.field import write_field
from ..imaging.imageio import read_image, write_image
from ..model.network import FSDiffRegNet
from ..outputs.bullseye import save_bullseye
from ..outputs.curves import save_curves
from ..outputs.folder import output_folder, write_json, write_metrics, written
from ..outputs.sets import describe, refuse_non_finite
from ..pipeline import segment
from ..pipeline.function import strain_csv, volumes_csv
from ..pipeline.track import Tracking, track_frames
from .prepared import prepare


@dataclass(frozen=True)
class TrackRequest:
    """What ``fsdiffreg track`` is asked: the cine, the labels of its reference frame (1-based), where to
    write, and how to register."""

    cine: str | Path
    labels: str | Path
    out_dir: str | Path
    reference_frame: int = 1
    weights: str | Path | None = None
    device: str = "auto"
    refine: RefineOptions = TRACK_REFINE
    frame_times_ms: tuple[float, ...] | None = None  # instead of the file's


def frame_file(stem: str, frame: int, frames: int) -> str:
    """``field_07.nii.gz``, ``labels_07.nii.gz``: 1-based, zero-padded to the frame count's width (at least 2
    digits)."""
    return f"{stem}_{frame:0{max(2, len(str(frames)))}d}.nii.gz"


def write_tracking(tracking: Tracking, cine: Cine, folder: Path, log: Report) -> None:
    """The output set into ``folder`` (field_NN.nii.gz and labels_NN.nii.gz per frame, labels.nii.gz, volumes.csv,
    function.json, strain.csv; function.png and strain_bullseye.png where matplotlib is installed), each checked
    as written, metrics.json last.

    labels.nii.gz holds every frame's labels as one 4D image; the 3D labels_NN.nii.gz are the same frames for
    readers of 3D images only (Slicer reads a volume sequence from NRRD only).
    """
    n = len(tracking.fields)
    refuse_non_finite({frame_file("field", k, n): image for k, image in enumerate(tracking.fields, start=1)})
    for k, (image, labels) in enumerate(zip(tracking.fields, tracking.labels), start=1):
        write_field(image, folder / frame_file("field", k, n), compression=1)
        write_image(labels, folder / frame_file("labels", k, n), use_compression=True)
        log(progress("writing", k, n, f"writing: {k} of {n} frames written"))
    write_image(join_frames(tracking.labels, cine.times_ms), folder / "labels.nii.gz", use_compression=True)
    with written(folder / "volumes.csv"):
        (folder / "volumes.csv").write_text(volumes_csv(tracking.volumes, cine.times_ms))
    write_json(folder / "function.json", tracking.function)
    with written(folder / "function.png"):
        save_curves(tracking.volumes, tracking.function, cine.times_ms, folder / "function.png", log)
    if tracking.strain is not None:
        with written(folder / "strain.csv"):
            (folder / "strain.csv").write_text(strain_csv(tracking.strain, cine.times_ms))
        with written(folder / "strain_bullseye.png"):
            save_bullseye(tracking.function["strain"]["segments"], folder / "strain_bullseye.png", log)
    write_metrics(folder, tracking.metrics)


def read_inputs(request: TrackRequest, inputs: dict | None = None) -> dict:
    """The request's cine (with the frame times asked), reference frame index and labels read and checked, and the
    inputs as metrics.json names them (``inputs`` where already described)."""
    cine = read_cine(request.cine)
    if request.frame_times_ms is not None:
        cine = with_times(cine, request.frame_times_ms)
    reference = reference_index(cine, request.reference_frame)
    labels = None if segment.is_auto(request.labels) else read_image(request.labels, "labels")
    return {"cine": cine, "reference": reference, "labels": labels, "inputs": inputs or input_records(request)}


def input_records(request: TrackRequest) -> dict:
    """The inputs as metrics.json names them (``outputs.sets.describe``)."""
    return {"cine": describe(request.cine),
            "labels": segment.AUTO if segment.is_auto(request.labels) else describe(request.labels)}


def options_record(request: TrackRequest) -> dict:
    """The options as asked that shape the outputs (metrics.json's ``options``: what ``batch`` resumes by)."""
    times = None if request.frame_times_ms is None else list(request.frame_times_ms)
    return {"refine": asdict(request.refine), "reference_frame": request.reference_frame, "frame_times_ms": times}


def track_files(request: TrackRequest, log: Report = ignore,
                loaded: tuple[FSDiffRegNet, dict] | None = None, read: dict | None = None) -> Tracking:
    """The ``fsdiffreg track`` command: check everything, track, write the set whole or nothing. Labels ``auto``:
    the reference frame segmented first (``segment.auto_labels``), its labels written as AUTO_LABELS.

    ``loaded`` is a model already loaded (``load_model``), ``read`` the inputs already read (``read_inputs``)."""
    auto = segment.is_auto(request.labels)
    inputs = {"cine": request.cine, "labels": None if auto else request.labels, "weights": request.weights}
    with output_folder(request.out_dir, inputs) as staging:
        run = prepare(request, read_inputs, "reading cine", log, loaded, read)
        labels = run.read["labels"]
        if auto:
            labels, record = segment.auto_labels(run.read["cine"].frames[run.read["reference"]], run.device, log)
        tracking = track_frames(run.read["cine"], labels, run.read["reference"], run.model, run.device,
                                request.refine, log)
        tracking.metrics.update(run.record(options_record(request)))
        if auto:
            write_image(labels, staging / segment.AUTO_LABELS, use_compression=True)
            tracking.metrics["labels"] = record
        write_tracking(tracking, run.read["cine"], staging, log)
    return tracking
