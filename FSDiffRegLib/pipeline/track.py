"""Tracking a whole cardiac cycle: every frame registered to the reference (ED) frame, the ED labels
carried onto each frame, and the heart's function measured from them (the RV volume corrected for the
base's descent along the long axis, which tracking within the slices misses: ``descent.py``).

Each frame is the fixed image and the reference frame the moving one, so every frame's field
maps straight to the reference and no error accumulates along the cycle. All frames share one
network grid: the box of the heart-centred grid that holds the labelled heart and HEART_BOX_MARGIN_MM
around it (about half the grid, so half the cost; validation Dice as on the whole grid), the field
fading to zero over TAPER_MM at the box's sides and zero beyond. The network runs on batches of
frames (on a GPU; one at a time is fastest on a CPU) and the refinement optimises every frame at
once, each frame's correction the one it would get alone (``refine.refine_flow``), at half the
cost per frame on a CPU.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import cast

import numpy as np
import SimpleITK as sitk
import torch

from ..defaults import TRACK_REFINE, RefineOptions
from ..errors import InputError
from ..events import Report, ignore, progress
from ..imaging.cine import Cine, check_cine_labels
from ..imaging.field import apply_field, flow_to_field
from ..imaging.metrics import field_metrics, jacobian_stats
from ..imaging.preprocess import canonical, network_grid, normalized, resample_to
from ..model.network import FSDiffRegNet
from ..model.predict import predict
from .descent import corrected_volumes
from .function import cardiac_function, check_structures, quality_notes, structure_volumes
from .refine import refine_flow
from .strain import Strain, contour_strain
from .unfold import unfold_onto

HEART_BOX_MARGIN_MM = 18.0  # context registered around the labelled heart
TAPER_MM = 9.0  # band inside the box's sides over which the field fades to zero
NETWORK_BATCH = {"cpu": 1, "cuda": 8}  # frames per network pass (2-core CPU: 1.12 s a frame alone, 1.44 in fours)


@dataclass
class Tracking:
    """Per frame: the field (frame -> reference, on the frame grid) and the propagated labels; then the
    volumes, the function and the run record."""

    fields: list[sitk.Image]
    labels: list[sitk.Image]
    volumes: list[dict[str, float]]
    function: dict
    metrics: dict = field(default_factory=dict)
    strain: Strain | None = None


def labelled_heart_centre(labels: sitk.Image) -> np.ndarray:
    """Physical centroid of the labelled heart (every label above 0)."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(labels > 0, sitk.sitkUInt8))
    return np.array(stats.GetCentroid(1))


def heart_box(labels: sitk.Image, grid: sitk.Image, multiple: int) -> tuple[slice, ...]:
    """(D, H, W) slices of ``grid`` around the labelled heart plus HEART_BOX_MARGIN_MM, each side a multiple of
    ``multiple`` voxels (or the grid's side), centred on the heart where the grid allows."""
    inside = np.argwhere(sitk.GetArrayFromImage(resample_to(labels, grid, 0, nearest=True)) > 0)
    if not len(inside):
        box = " x ".join(f"{n * mm:.0f}" for n, mm in zip(grid.GetSize(), grid.GetSpacing()))
        raise InputError(f"ED labels have no voxel within the {box} mm box around their centre: is it one heart?")
    size = np.array(grid.GetSize()[::-1])
    margin = np.ceil(HEART_BOX_MARGIN_MM / np.array(grid.GetSpacing()[::-1])).astype(int)
    low, high = inside.min(axis=0) - margin, inside.max(axis=0) + 1 + margin
    side = np.minimum(-(-(high - low) // multiple) * multiple, size)
    start = np.clip((low + high - side) // 2, 0, size - side)
    return tuple(slice(int(a), int(a + n)) for a, n in zip(start, side))


def region_grid(grid: sitk.Image, region: tuple[slice, ...]) -> sitk.Image:
    """The part of ``grid`` that ``region`` (D, H, W slices) covers, as a grid of its own."""
    return sitk.RegionOfInterest(grid, [r.stop - r.start for r in region[::-1]], [r.start for r in region[::-1]])


def taper(region: tuple[slice, ...], grid: sitk.Image) -> torch.Tensor:
    """(1, 1, D, H, W) weights on ``region``: 1, falling linearly to 0 over TAPER_MM towards each side of the
    region that lies inside ``grid`` (beyond the grid's own sides the field stops as it always has)."""
    weights = torch.ones(1, 1, *(r.stop - r.start for r in region))
    for axis, (r, n, mm) in enumerate(zip(region, grid.GetSize()[::-1], grid.GetSpacing()[::-1])):
        band = max(1, round(TAPER_MM / mm))
        ramp = torch.ones(r.stop - r.start)
        rising = torch.arange(band, dtype=torch.float32) / band
        if r.start > 0:
            ramp[:band] = torch.minimum(ramp[:band], rising)
        if r.stop < n:
            ramp[-band:] = torch.minimum(ramp[-band:], rising.flip(0))
        shape = [1] * 5
        shape[axis + 2] = -1
        weights = weights * ramp.view(shape)
    return weights


def frames_on_grid(frames: list[sitk.Image], grid: sitk.Image) -> torch.Tensor:
    """The frames, each normalised to [-1, 1], on the network grid: (N, 1, D, H, W)."""
    arrays = [sitk.GetArrayFromImage(resample_to(normalized(f), grid, -1.0)) for f in frames]
    return torch.from_numpy(np.stack(arrays))[:, None]


def predict_flows(
    model: FSDiffRegNet,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    refine: RefineOptions,
    log: Report,
) -> torch.Tensor:
    """Flows (N, 3, D, H, W) from ``moving`` (1, 1, D, H, W) to each of ``fixed`` (N, 1, D, H, W)."""
    flows, scores = [], []
    n, batch = fixed.shape[0], NETWORK_BATCH.get(fixed.device.type, 1)
    with torch.no_grad():
        for start in range(0, n, batch):
            f = fixed[start:start + batch]
            m = moving.expand(f.shape[0], -1, -1, -1, -1)
            score, flow = predict(model, m, f)
            flows.append(flow)
            scores.append(score)
            log(progress("network", start + f.shape[0], n, f"network: {start + f.shape[0]} of {n} frames registered"))
    flow, score = torch.cat(flows), torch.cat(scores)
    if refine.steps > 0:
        flow = refine_flow(flow, moving.expand(n, -1, -1, -1, -1), fixed, score, model.cfg, refine, log)
    return flow.float().cpu()


def track_frames(
    cine: Cine,
    labels: sitk.Image,
    reference: int,
    model: FSDiffRegNet,
    device: torch.device,
    refine: RefineOptions = TRACK_REFINE,
    log: Report = ignore,
) -> Tracking:
    """Register every frame of ``cine`` to frame index ``reference`` (0-based) whose labels are ``labels``."""
    labels = check_cine_labels(labels, cine)
    start = time.time()
    frames = cine.frames
    others = [i for i in range(len(frames)) if i != reference]
    whole = network_grid(canonical(frames[reference]), labelled_heart_centre(labels), model.cfg)
    region = heart_box(labels, whole, model.cfg.grid_multiple)
    check_structures(labels, "ED")
    grid = region_grid(whole, region)
    moving = frames_on_grid([frames[reference]], grid).to(device)
    fixed = frames_on_grid([frames[i] for i in others], grid).to(device)
    predicted = predict_flows(model, moving, fixed, refine, log) * taper(region, whole)
    flows = dict(zip(others, predicted.numpy()))
    fields, warped, unfolded, quality = [], [], [], []
    for i, frame in enumerate(frames):
        if i == reference:
            fields.append(zero_field(frame))
            warped.append(labels)
            unfolded.append({"folded_before": 0, "folded_before_fine": 0})
            quality.append(field_metrics(fields[-1], grid))
        else:
            done = unfold_onto(flow_to_field(flows[i], grid), frame)
            fields.append(done.field)
            unfolded.append(done.stats)
            quality.append(jacobian_stats(cast(np.ndarray, done.fine_jacobian)))  # field_metrics, as unfold measured
            warped.append(apply_field(labels, fields[-1], nearest=True))
    volumes, descent = corrected_volumes([structure_volumes(w) for w in warped], warped, reference)
    strain = contour_strain(fields, labels)
    function = cardiac_function(volumes, reference + 1, strain)
    if "RV" in function:
        function["RV"]["base_descent_mm"] = round(descent[function["ES_frame"] - 1], 1)
    function["quality"] = quality_notes(function, volumes, fields, warped, strain)
    metrics = {
        "seconds": round(time.time() - start, 3),
        "device": str(device),
        "refine": asdict(refine),
        "frames": len(frames),
        "reference_frame": reference + 1,
        "network_grid": list(grid.GetSize()),
        "folding_percent": [q["folding_percent"] for q in quality],
        "sd_jacobian": [q["sd_jacobian"] for q in quality],
        "folded_before_unfold": [[s["folded_before"], s["folded_before_fine"]] for s in unfolded],
    }
    return Tracking(fields, warped, volumes, function, metrics, strain)


def zero_field(frame: sitk.Image) -> sitk.Image:
    """The identity as a displacement field on ``frame``'s grid."""
    zero = sitk.Image(frame.GetSize(), sitk.sitkVectorFloat64, 3)
    zero.CopyInformation(frame)
    return zero
