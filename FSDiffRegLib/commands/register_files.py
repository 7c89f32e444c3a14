"""``fsdiffreg register`` on files: the request read and checked, the pair registered (FSDiffRegLib.pipeline.register),
the set written whole (FSDiffRegLib.outputs.folder)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..defaults import DEFAULT_REFINE, RefineOptions
from ..errors import InputError
from ..events import Report, ignore, stage
from ..imaging.field import write_field
from ..imaging.imageio import read_image, write_image
from ..model.network import FSDiffRegNet
from ..outputs.folder import output_folder, write_metrics
from ..outputs.sets import describe, refuse_non_finite
from ..pipeline.register import Registration, register_images
from .prepared import prepare


def write_files(result: Registration, folder: Path) -> None:
    """The set's files into ``folder``, each read back whole, metrics.json last; a non-finite image is refused."""
    images = {"displacement.nii.gz": result.field, "warped.nii.gz": result.warped, "jacobian.nii.gz": result.jacobian}
    if result.warped_labels is not None:
        images["warped_labels.nii.gz"] = result.warped_labels
    refuse_non_finite(images)
    write_field(images.pop("displacement.nii.gz"), folder / "displacement.nii.gz")
    for name, image in images.items():
        write_image(image, folder / name)
    write_metrics(folder, result.metrics)


def write_outputs(result: Registration, out_dir: str | Path) -> Path:
    """Write the set into ``out_dir`` whole (FSDiffRegLib.outputs.folder); returns the folder."""
    with output_folder(out_dir) as staging:
        write_files(result, staging)
    return Path(out_dir)


@dataclass(frozen=True)
class RegisterRequest:
    """What ``fsdiffreg register`` is asked: the images (and moving labels), where to write, how to register."""

    fixed: str | Path
    moving: str | Path
    out_dir: str | Path
    moving_labels: str | Path | None = None
    weights: str | Path | None = None
    device: str = "auto"
    refine: RefineOptions = DEFAULT_REFINE


def read_inputs(request: RegisterRequest, inputs: dict | None = None) -> dict:
    """The request's images read and checked, and the inputs as metrics.json names them (``describe``; ``inputs``
    where already described)."""
    fixed = read_image(request.fixed, "fixed")
    moving = read_image(request.moving, "moving")
    if os.path.samefile(request.fixed, request.moving):
        raise InputError(f"the fixed and moving images are the same file, {request.moving}: give two frames, "
                         "e.g. ED as fixed and ES as moving")
    labels = read_image(request.moving_labels, "moving labels") if request.moving_labels else None
    return {"fixed": fixed, "moving": moving, "moving_labels": labels, "inputs": inputs or input_records(request)}


def input_records(request: RegisterRequest) -> dict:
    """The inputs as metrics.json names them (``describe``)."""
    inputs = {"fixed": describe(request.fixed), "moving": describe(request.moving)}
    if request.moving_labels:
        inputs["moving_labels"] = describe(request.moving_labels)
    return inputs


def options_record(request: RegisterRequest) -> dict:
    """The options as asked that shape the outputs (metrics.json's ``options``: what ``batch`` resumes by)."""
    return {"refine": asdict(request.refine)}


def register_paths(request: RegisterRequest, log: Report = ignore,
                   loaded: tuple[FSDiffRegNet, dict] | None = None, read: dict | None = None) -> Registration:
    """Read, check and register the request's files; the metrics name the inputs. Writes nothing.

    ``loaded`` is a model already loaded (``load_model``), ``read`` the inputs already read (``read_inputs``)."""
    run = prepare(request, read_inputs, "reading images", log, loaded, read)
    log(stage("registering"))
    result = register_images(run.read["fixed"], run.read["moving"], run.model, run.device, run.read["moving_labels"],
                             request.refine, log)
    result.metrics.update(run.record(options_record(request)))
    return result


def register_files(
    request: RegisterRequest,
    log: Report = ignore,
    also: Callable[[Registration, Path], None] | None = None,
    loaded: tuple[FSDiffRegNet, dict] | None = None,
    read: dict | None = None,
) -> Registration:
    """The ``fsdiffreg register`` command: check the out-dir, register, write the set whole.

    ``also(result, folder)`` writes more files into the set (the demo's figure); ``loaded`` and ``read`` as
    ``register_paths``'.
    """
    inputs = {"fixed image": request.fixed, "moving image": request.moving, "moving labels": request.moving_labels,
              "weights": request.weights}
    with output_folder(request.out_dir, inputs) as staging:
        result = register_paths(request, log, loaded, read)
        log(stage("writing", "writing outputs"))
        write_files(result, staging)
        if also is not None:
            also(result, staging)
    return result
