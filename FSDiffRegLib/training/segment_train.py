"""Training the segmentation U-Net of ``segment`` on ACDC 001-090 (ED and ES), selected on 091-100.

Resumable: ``last.pt`` every epoch (model, optimiser, epoch, best score), ``best.pt`` on the validation
mean Dice (3D, per structure, on each frame's own grid, through ``segment.segment_image``), ``log.csv``
one row an epoch. The slices are cached once, on the model grid, in ``cache.npz``.

    fsdiffreg train-segmenter --data ../shared/data/ACDC --out /work/runs/seg_v1
    fsdiffreg train-segmenter --out /work/runs/seg_v1 --export FSDiffRegLib/assets/weights/fsdiffreg_acdc_segment_v2.pt
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from .. import events
from ..defaults import SEGMENT_TRAINING, SegmentTraining
from ..events import Report
from ..files import replaced_whole
from ..imaging import acdc
from ..labels import VALUES
from ..model.weights import write_with_checksum
from ..pipeline import segment

CACHE_SIZE = 224  # cached slices: model grid centre-cropped or padded to 224 x 224 (336 mm; every heart fits)
BN_BATCHES = 40  # training batches that give the averaged weights their batch-norm statistics (as SWA does)
CROP = SEGMENT_TRAINING.crop  # training patch side in pixels of the model grid


def frames(data: Path, which: str) -> list[tuple[str, str, Path, Path]]:
    """(patient, ED or ES, image, labels) of every frame of the split."""
    out = []
    for pair in acdc.split(data, which):
        out.append((pair.patient, "ED", pair.fixed, pair.fixed_labels))
        out.append((pair.patient, "ES", pair.moving, pair.moving_labels))
    return out


def centre_fit(array: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop or zero-pad the last two axes to size x size."""
    out = np.zeros(array.shape[:-2] + (size, size), array.dtype)
    src, dst = [], []
    for n in array.shape[-2:]:
        start = (n - size) // 2
        src.append(slice(max(start, 0), max(start, 0) + min(n, size)))
        dst.append(slice(max(-start, 0), max(-start, 0) + min(n, size)))
    out[..., dst[0], dst[1]] = array[..., src[0], src[1]]
    return out


def build_cache(data: Path, path: Path) -> None:
    """Every training frame's slices and labels on the model grid, fitted to CACHE_SIZE, with each slice's
    heart centre (the volume's label centroid, in pixels)."""
    images, labels, centres = [], [], []
    for _, _, image_path, label_path in frames(data, "train"):
        image = sitk.ReadImage(str(image_path), sitk.sitkFloat32)
        label = sitk.ReadImage(str(label_path), sitk.sitkUInt8)
        label.CopyInformation(image)
        slices = centre_fit(segment.prepare(image), CACHE_SIZE)
        truth = centre_fit(sitk.GetArrayFromImage(segment.to_model_grid(label, sitk.sitkNearestNeighbor)),
                           CACHE_SIZE)
        rows, cols = np.nonzero(truth.max(axis=0))
        centre = (rows.mean(), cols.mean()) if rows.size else ((CACHE_SIZE - 1) / 2,) * 2
        images.append(slices.astype(np.float16))
        labels.append(truth)
        centres.append(np.tile(np.array(centre, np.float32), (slices.shape[0], 1)))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, images=np.concatenate(images), labels=np.concatenate(labels), centres=np.concatenate(centres))
    os.replace(tmp, path)


def augment(images: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor, generator: torch.Generator,
            crop: int = CROP) -> tuple[torch.Tensor, torch.Tensor]:
    """crop x crop patches near the heart (80 %) or anywhere (20 %), rotated (any angle), scaled (0.8-1.25),
    with gamma, contrast, brightness and noise changes. No flips: a mirrored heart is not a heart."""
    n, size = images.shape[0], images.shape[-1]
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    near = rand(n) < 0.8
    centre = torch.where(near[:, None], centres + (rand(n, 2) - 0.5) * 64, rand(n, 2) * (size - crop) + crop / 2)
    centre_norm = (centre + 0.5) / size * 2 - 1  # pixel centre to grid_sample's [-1, 1] (align_corners=False)
    angle = (rand(n) * 2 - 1) * math.pi
    scale = torch.exp((rand(n) * 2 - 1) * math.log(1.25)) * crop / size
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, centre_norm[:, 1]], 1),
                         torch.stack([sin, cos, centre_norm[:, 0]], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, crop, crop], align_corners=False)
    x = F.grid_sample(images[:, None].float(), grid, mode="bilinear", align_corners=False)
    y = F.grid_sample(labels[:, None].float(), grid, mode="nearest", align_corners=False).long()
    gamma = torch.exp((rand(n, 1, 1, 1) * 2 - 1) * math.log(1.5))
    x = x.clamp(0, 1) ** gamma
    x = x * (0.85 + 0.3 * rand(n, 1, 1, 1)) + (rand(n, 1, 1, 1) - 0.5) * 0.2
    x = x + torch.randn(x.shape, generator=generator) * 0.03 * (rand(n, 1, 1, 1) < 0.3)
    return x, y


def dice(pred: np.ndarray, truth: np.ndarray, value: int) -> float:
    a, b = pred == value, truth == value
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def validate(model: torch.nn.Module, frames_: list[tuple[str, str, sitk.Image, np.ndarray]]) -> dict[str, float]:
    """Mean 3D Dice per structure over the frames, on each frame's own grid."""
    model.eval()
    scores: dict[str, list[float]] = {name: [] for name in VALUES}
    for _, _, image, truth in frames_:
        pred = sitk.GetArrayFromImage(segment.segment_image(image, model, "cpu"))
        for name, value in VALUES.items():
            scores[name].append(dice(pred, truth, value))
    return {name: float(np.mean(v)) for name, v in scores.items()}


def save_atomic(payload: dict, path: Path) -> None:
    with replaced_whole(path) as handle:
        torch.save(payload, handle)


def export(checkpoint: Path, out: Path) -> str:
    """The bundled form of a checkpoint (``best.pt``, or ``last.pt`` validated apart): {network, state_dict
    (float16), info}, with its ``.sha256``; the digest."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    info = {"epoch": state["epoch"], "validation_dice": state.get("dice"),
            "validation_dice_mean": state.get("dice_mean"), "spacing_mm": segment.SPACING_MM,
            "data": "ACDC 001-090 ED and ES (CC BY-NC-SA 4.0)"}
    return write_with_checksum({"network": state["network"], "state_dict": half, "info": info}, out)


def training_slices(data: Path, cache: Path, log: Report) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cached training slices, labels and heart centres (``build_cache`` first where there is no cache)."""
    if not cache.is_file():
        log(events.stage("caching", "caching the training slices"))
        build_cache(data, cache)
    arrays = np.load(cache)
    return (torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"]),
            torch.from_numpy(arrays["centres"]))


def validation_frames(data: Path) -> list[tuple[str, str, sitk.Image, np.ndarray]]:
    """(patient, ED or ES, image, labels array) of every validation frame."""
    return [(p, f, sitk.ReadImage(str(i), sitk.sitkFloat32), sitk.GetArrayFromImage(sitk.ReadImage(str(t))))
            for p, f, i, t in frames(data, "validation")]


def resumed(last: Path, model: torch.nn.Module, optimiser: torch.optim.Optimizer,
            averaged: AveragedModel | None) -> tuple[int, float]:
    """Load ``last.pt`` into the model, the optimiser and the average; the next epoch and the best score."""
    state = torch.load(last, map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])
    optimiser.load_state_dict(state["optimiser"])
    if averaged:
        averaged.load_state_dict(state["averaged"])
    return state["epoch"] + 1, state["best"]


def train_segmenter(data: Path, out: Path, options: SegmentTraining = SEGMENT_TRAINING,
                    log: Report = events.ignore) -> float:
    """Train (or resume from ``out/last.pt``) the segmentation U-Net on ACDC at ``data``; the best validation
    mean Dice. ``log`` gets one progress event an epoch."""
    from monai.losses import DiceCELoss  # training only: the library runs without MONAI

    torch.set_num_threads(options.threads)
    out.mkdir(parents=True, exist_ok=True)
    images, labels, centres = training_slices(data, out / "cache.npz", log)
    val = validation_frames(data)

    torch.manual_seed(options.seed)
    network = dict(segment.NETWORK, **({"channels": list(options.channels)} if options.channels else {}))
    model = segment.build_network(network)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(options.ema)) if options.ema else None
    kept = averaged.module if averaged else model
    optimiser = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=1e-4)
    schedule = lambda epoch: (1 - epoch / options.epochs) ** 0.9  # noqa: E731
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    last = out / "last.pt"
    start, best = resumed(last, model, optimiser, averaged) if last.is_file() else (0, -1.0)
    generator = torch.Generator().manual_seed(options.seed * 1000 + start)
    log_csv = out / "log.csv"
    fields = ["epoch", "seconds", "lr", "train_loss"] + [f"dice_{n}" for n in VALUES] + ["dice_mean"]
    if not log_csv.is_file():
        with open(log_csv, "w", newline="") as handle:
            csv.writer(handle).writerow(fields)
    for epoch in range(start, options.epochs):
        began = time.time()
        lr = options.lr * schedule(epoch)
        for group in optimiser.param_groups:
            group["lr"] = lr
        model.train()
        order = torch.randperm(images.shape[0], generator=generator)
        losses = []
        for i in range(0, len(order) - options.batch + 1, options.batch):
            idx = order[i:i + options.batch]
            x, y = augment(images[idx], labels[idx], centres[idx], generator, options.crop)
            optimiser.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimiser.step()
            if averaged:
                averaged.update_parameters(model)
            losses.append(loss.item())
        validated = (epoch + 1) % options.val_every == 0 or epoch + 1 == options.epochs
        if validated and averaged:
            update_bn([augment(images[idx], labels[idx], centres[idx], generator, options.crop)[0]
                       for idx in order[:BN_BATCHES * options.batch].split(options.batch)], kept)
        scores = validate(kept, val) if validated else {n: float("nan") for n in VALUES}
        mean = float(np.mean(list(scores.values())))
        row = [epoch, round(time.time() - began, 1), f"{lr:.6f}", f"{np.mean(losses):.4f}"]
        row += [f"{scores[n]:.4f}" for n in VALUES] + [f"{mean:.4f}"]
        with open(log_csv, "a", newline="") as handle:
            csv.writer(handle).writerow(row)
        if validated and mean > best:
            best = mean
            save_atomic({"network": network, "state_dict": kept.state_dict(), "epoch": epoch,
                         "dice": scores, "dice_mean": mean}, out / "best.pt")
        save_atomic({"network": network, "state_dict": model.state_dict(), "optimiser": optimiser.state_dict(),
                     "epoch": epoch, "best": best, **({"averaged": averaged.state_dict()} if averaged else {})}, last)
        log(events.progress("training", epoch + 1, options.epochs,
                            f"epoch {epoch + 1} of {options.epochs}: loss {np.mean(losses):.4f}, "
                            f"validation mean Dice {mean:.4f}"))
    return best
