"""Registering a moving image to a fixed one with a trained FSDiffReg network."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, cast

import numpy as np
import SimpleITK as sitk
import torch

from ..defaults import DEFAULT_REFINE, RefineOptions
from ..device import pick_device
from ..errors import InputError
from ..events import Report, ignore, stage
from ..imaging.field import apply_field, flow_to_field, resample_field, write_field
from ..imaging.imageio import check_image, check_labels, read_image, write_image
from ..imaging.metrics import jacobian_stats, ncc
from ..imaging.preprocess import PreparedPair, normalized, prepare_pair, resample_to
from ..model.heart import HeartHead, blurred_outside, decoder_outputs
from ..model.network import FSDiffRegNet
from ..model.predict import predict
from ..model.weights import load_model
from ..outputs.folder import output_folder, write_metrics
from ..outputs.sets import describe, refuse_non_finite
from .cascade import cascade
from .refine import refine_flow
from .unfold import unfold


@dataclass
class Registration:
    """Outputs on the fixed image's grid, plus the network grid and the metrics."""

    field: sitk.Image
    warped: sitk.Image
    jacobian: sitk.Image
    grid: sitk.Image
    metrics: dict
    warped_labels: sitk.Image | None = None


def predict_flow(
    model: FSDiffRegNet,
    prepared: PreparedPair,
    device: torch.device,
    refine: RefineOptions = DEFAULT_REFINE,
    log: Report = ignore,
) -> np.ndarray:
    """The flow (3, D, H, W) in voxels of the network grid: the network's ``refine.passes``
    (FSDiffRegLib.pipeline.cascade), refined when asked."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a)[None, None].to(device, memory_format=torch.channels_last_3d)

    moving, fixed = tensor(prepared.moving), tensor(prepared.fixed)
    with torch.no_grad(), decoder_outputs(model) as features:
        score, flow = predict(model, moving, fixed)
    head = model.heart if uses_heart(model, refine) else None
    heart = head.probability(features + [fixed, moving]) if isinstance(head, HeartHead) else None
    features.clear()
    flow = cascade(model, moving, fixed, flow, refine.passes)
    if refine.steps > 0:
        flow = refine_flow(flow, moving, fixed, score, model.cfg, refine, log)
    if heart is not None:
        flow = blurred_outside(flow, heart)
    return flow[0].float().cpu().numpy()


def uses_heart(model: FSDiffRegNet, refine: RefineOptions) -> bool:
    """Whether the refined flow is blurred away from the heart: asked for, refined, and a head at hand."""
    return refine.heart and refine.steps > 0 and model.heart is not None


def on_grid(image: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """An image's voxels normalised and resampled on the network grid, as NCC compares them."""
    return sitk.GetArrayFromImage(resample_to(normalized(image), grid, -1.0))


def register_images(
    fixed: sitk.Image,
    moving: sitk.Image,
    model: FSDiffRegNet,
    device: torch.device,
    moving_labels: sitk.Image | None = None,
    refine: RefineOptions = DEFAULT_REFINE,
    log: Report = ignore,
) -> Registration:
    """Register ``moving`` to ``fixed``, refining the prediction on this pair as ``refine`` says, with its
    folds removed (FSDiffRegLib.pipeline.unfold; ``metrics["unfold"]`` counts the folded voxels before); every output
    lies on the fixed image's grid."""
    check_image(fixed, "fixed")
    check_image(moving, "moving")
    if moving_labels is not None:
        moving_labels = check_labels(moving_labels, moving, "moving")
    start = time.time()
    prepared = prepare_pair(fixed, moving, model.cfg)
    if np.all(prepared.moving == -1.0):
        raise InputError("fixed and moving images do not overlap in physical space")
    flow = predict_flow(model, prepared, device, refine, log)
    unfolded = unfold(resample_field(flow_to_field(flow, prepared.grid), fixed), prepared.grid)
    field = unfolded.field
    warped = apply_field(moving, field)
    seconds = time.time() - start
    fixed_on_grid = on_grid(fixed, prepared.grid)  # the moving image's is prepared.moving
    metrics = {
        **jacobian_stats(cast(np.ndarray, unfolded.fine_jacobian)),  # field_metrics(field, grid), as measured by unfold
        "ncc_before": ncc(fixed_on_grid, prepared.moving),
        "ncc_after": ncc(fixed_on_grid, on_grid(warped, prepared.grid)),
        "seconds": round(seconds, 3),
        "device": str(device),
        "refine": {**asdict(refine), "heart": uses_heart(model, refine)},
        "unfold": unfolded.stats,
    }
    labels = apply_field(moving_labels, field, nearest=True) if moving_labels is not None else None
    return Registration(field, warped, unfolded.jacobian, prepared.grid, metrics, labels)


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


@dataclass
class Prepared:
    """What a command runs with: the device, the model loaded on it and its description, the inputs read."""

    device: torch.device
    model: FSDiffRegNet
    about: dict
    read: dict

    def record(self, options: dict) -> dict:
        """What metrics.json says of the run's inputs, ``options``, weights and the network's precision (bfloat16
        convolutions or float32: ``load_model``)."""
        return {"inputs": self.read["inputs"], "options": options, "weights": self.about["name"],
                "weights_sha256": self.about["sha256"], "precision": self.about["precision"]}


def prepare(request, reader: Callable, reading: str, log: Report,
            loaded: tuple[FSDiffRegNet, dict] | None = None, read: dict | None = None) -> Prepared:
    """The request's device (checked first), its inputs (``reader(request)``, logged as ``reading``) and the model;
    ``loaded`` is a model already loaded (``load_model``), ``read`` the inputs already read."""
    torch_device = pick_device(request.device)
    if read is None:
        log(stage("reading", reading))
        read = reader(request)
    if loaded is None:
        log(stage("loading", f"loading weights on {torch_device}"))
    model, about = loaded or load_model(request.weights, torch_device)
    return Prepared(torch_device, model, about, read)


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
