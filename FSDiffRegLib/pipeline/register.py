"""Registering a moving image to a fixed one with a trained FSDiffReg network."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
import SimpleITK as sitk
import torch

from ..defaults import DEFAULT_REFINE, RefineOptions
from ..errors import InputError
from ..events import Report, ignore
from ..imaging.field import apply_field, flow_to_field, resample_field
from ..imaging.imageio import check_image, check_labels
from ..imaging.metrics import jacobian_stats, ncc
from ..imaging.preprocess import PreparedPair, normalized, prepare_pair, resample_to
from ..model.heart_head import HeartHead, blurred_outside, decoder_outputs
from ..model.network import FSDiffRegNet
from ..model.predict import predict
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
    head = model.heart_head if uses_heart_head(model, refine) else None
    heart_probability = head.probability(features + [fixed, moving]) if isinstance(head, HeartHead) else None
    features.clear()
    flow = cascade(model, moving, fixed, flow, refine.passes)
    if refine.steps > 0:
        flow = refine_flow(flow, moving, fixed, score, model.cfg, refine, log)
    if heart_probability is not None:
        flow = blurred_outside(flow, heart_probability)
    return flow[0].float().cpu().numpy()


def uses_heart_head(model: FSDiffRegNet, refine: RefineOptions) -> bool:
    """Whether the refined flow is blurred away from the heart: asked for, refined, and a head at hand."""
    return refine.heart and refine.steps > 0 and model.heart_head is not None


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
        "refine": {**asdict(refine), "heart": uses_heart_head(model, refine)},
        "unfold": unfolded.stats,
    }
    labels = apply_field(moving_labels, field, nearest=True) if moving_labels is not None else None
    return Registration(field, warped, unfolded.jacobian, prepared.grid, metrics, labels)
