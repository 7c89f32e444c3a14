"""Registering a moving image to a fixed one with a trained FSDiffReg network."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from .defaults import DEFAULT_STEPS
from .device import pick_device
from .errors import InputError
from .field import apply_field, flow_to_field, resample_field
from .imageio import atomic_directory, check_image, check_labels, read_image
from .metrics import jacobian_determinant, jacobian_stats, ncc
from .network import FSDiffRegNet
from .preprocess import PreparedPair, normalized, prepare_pair, resample_to
from .refine import refine_flow
from .weights import load_model

OUTPUT_FILES = ("displacement.nii.gz", "warped.nii.gz", "jacobian.nii.gz", "metrics.json")


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
    refine_steps: int = 0,
    smoothness: float | None = None,
    diffeomorphic: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> np.ndarray:
    """The flow (3, D, H, W) in voxels of the network grid, refined when asked."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a)[None, None].to(device, memory_format=torch.channels_last_3d)

    moving, fixed = tensor(prepared.moving), tensor(prepared.fixed)
    with torch.no_grad():
        score, flow = model(moving, fixed, fixed, torch.zeros(1, dtype=torch.long, device=device))
    if refine_steps > 0:
        flow = refine_flow(flow, moving, fixed, score, model.cfg, refine_steps, smoothness, diffeomorphic, log)
    return flow[0].float().cpu().numpy()


def field_metrics(field: sitk.Image, grid: sitk.Image) -> dict[str, float]:
    """Folding % and SD|J| of a field, measured on the heart-centred network grid."""
    jac = sitk.GetArrayFromImage(jacobian_determinant(resample_field(field, grid)))
    return jacobian_stats(jac)


def similarity(fixed: sitk.Image, image: sitk.Image, grid: sitk.Image) -> float:
    """Global NCC of two images on the network grid."""
    a = sitk.GetArrayFromImage(resample_to(normalized(fixed), grid, -1.0))
    b = sitk.GetArrayFromImage(resample_to(normalized(image), grid, -1.0))
    return ncc(a, b)


def register_images(
    fixed: sitk.Image,
    moving: sitk.Image,
    model: FSDiffRegNet,
    device: torch.device,
    moving_labels: sitk.Image | None = None,
    refine_steps: int = 0,
    smoothness: float | None = None,
    diffeomorphic: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> Registration:
    """Register ``moving`` to ``fixed``; every output lies on the fixed image's grid.

    ``refine_steps`` > 0 optimises the prediction on this pair (``smoothness`` weighs
    its regulariser, default the model's lam_phi; ``diffeomorphic`` optimises a
    stationary velocity field instead of the displacement).
    """
    check_image(fixed, "fixed")
    check_image(moving, "moving")
    if moving_labels is not None:
        check_labels(moving_labels, moving, "moving")
    if refine_steps < 0:
        raise InputError(f"refinement steps must be 0 or more, got {refine_steps}")
    start = time.time()
    prepared = prepare_pair(fixed, moving, model.cfg)
    if np.all(prepared.moving == -1.0):
        raise InputError("fixed and moving images do not overlap in physical space")
    flow = predict_flow(model, prepared, device, refine_steps, smoothness, diffeomorphic, log)
    field = resample_field(flow_to_field(flow, prepared.grid), fixed)
    warped = apply_field(moving, field)
    jacobian = jacobian_determinant(field)
    seconds = time.time() - start
    metrics = {
        **field_metrics(field, prepared.grid),
        "ncc_before": similarity(fixed, moving, prepared.grid),
        "ncc_after": similarity(fixed, warped, prepared.grid),
        "seconds": round(seconds, 3),
        "device": str(device),
        "refine_steps": refine_steps,
        "diffeomorphic": diffeomorphic,
    }
    labels = apply_field(moving_labels, field, nearest=True) if moving_labels is not None else None
    return Registration(field, warped, jacobian, prepared.grid, metrics, labels)


def write_outputs(result: Registration, out_dir: str | Path) -> Path:
    """Write every output into ``out_dir`` atomically; returns the folder."""
    with atomic_directory(out_dir) as staging:
        sitk.WriteImage(result.field, str(staging / "displacement.nii.gz"))
        sitk.WriteImage(result.warped, str(staging / "warped.nii.gz"))
        sitk.WriteImage(result.jacobian, str(staging / "jacobian.nii.gz"))
        if result.warped_labels is not None:
            sitk.WriteImage(result.warped_labels, str(staging / "warped_labels.nii.gz"))
        (staging / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
    return Path(out_dir)


def register_files(
    fixed_path: str | Path,
    moving_path: str | Path,
    out_dir: str | Path,
    weights: str | Path | None = None,
    device: str = "auto",
    moving_labels: str | Path | None = None,
    refine_steps: int = DEFAULT_STEPS,
    smoothness: float | None = None,
    diffeomorphic: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> Registration:
    """The ``fsdiffreg register`` command: read, check, register, write atomically."""
    torch_device = pick_device(device)
    log("reading images")
    fixed = read_image(fixed_path, "fixed")
    moving = read_image(moving_path, "moving")
    labels = read_image(moving_labels, "moving labels") if moving_labels else None
    log(f"loading weights on {torch_device}")
    model, about = load_model(weights, torch_device)
    log("registering")
    result = register_images(fixed, moving, model, torch_device, labels, refine_steps, smoothness, diffeomorphic,
                             log)
    result.metrics.update({"weights": about["name"], "weights_sha256": about["sha256"]})
    log("writing outputs")
    write_outputs(result, out_dir)
    return result
