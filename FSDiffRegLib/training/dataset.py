"""ACDC pairs on the network grid as tensors, cached, with training augmentation."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk
import torch

from ..files import replaced_whole
from ..imaging.acdc import AcdcPair
from ..imaging.preprocess import prepare_pair, resample_to
from ..model.config import Config


@dataclass
class GridPair:
    """One pair on the network grid: images (D, H, W) in [-1, 1] and integer labels."""

    patient: str
    fixed: np.ndarray
    moving: np.ndarray
    fixed_labels: np.ndarray
    moving_labels: np.ndarray


def swapped(item: GridPair) -> GridPair:
    """The pair the other way round: its moving image (and labels) fixed."""
    return GridPair(item.patient, item.moving, item.fixed, item.moving_labels, item.fixed_labels)


def grid_pair(pair: AcdcPair, cfg: Config) -> GridPair:
    """Preprocess one ACDC pair; the heart is located from the images only."""
    fixed, moving = sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving))
    prepared = prepare_pair(fixed, moving, cfg)

    def labels(path: Path) -> np.ndarray:
        on_grid = resample_to(sitk.ReadImage(str(path)), prepared.grid, 0, nearest=True)
        return sitk.GetArrayFromImage(on_grid).astype(np.uint8)

    return GridPair(
        pair.patient, prepared.fixed, prepared.moving, labels(pair.fixed_labels), labels(pair.moving_labels)
    )


def load_grid_pairs(pairs: list[AcdcPair], cfg: Config, cache: Path | None = None) -> list[GridPair]:
    """Preprocess pairs, reading and writing an .npz cache when one is named (written whole, or not at all)."""
    cached = cached_pairs(cache, pairs) if cache is not None and cache.is_file() else None
    if cached is not None:
        return cached
    items = [grid_pair(p, cfg) for p in pairs]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with replaced_whole(cache) as handle:
            np.savez_compressed(
                handle,
                patients=np.array([g.patient for g in items]),
                **{k: np.stack([getattr(g, k) for g in items])  # type: ignore[arg-type]  # numpy's stub: allow_pickle
                   for k in ("fixed", "moving", "fixed_labels", "moving_labels")},
            )
    return items


def cached_pairs(cache: Path, pairs: list[AcdcPair]) -> list[GridPair] | None:
    """The pairs in ``cache``; None when it holds other pairs or cannot be read (they are then made again).
    Arrays only: a cache never runs code (``allow_pickle`` stays off)."""
    try:
        with np.load(cache) as data:  # each data[key] decompresses the whole array: read each once
            names = [str(n) for n in data["patients"]]
            if names != [p.patient for p in pairs]:
                return None
            arrays = [data[k] for k in ("fixed", "moving", "fixed_labels", "moving_labels")]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # damaged, or not our cache
        return None
    return [GridPair(n, *(a[i] for a in arrays)) for i, n in enumerate(names)]


class Sample(NamedTuple):
    """One training sample: images (1, 1, D, H, W) float32 and their labels (1, 1, D, H, W) uint8."""

    moving: torch.Tensor
    fixed: torch.Tensor
    moving_labels: torch.Tensor
    fixed_labels: torch.Tensor


def training_sample(item: GridPair, cfg: Config, rng: np.random.Generator) -> Sample:
    """A pair in the order drawn (``cfg.directions``), cropped at random with in-plane flips (``cfg.augment``);
    labels follow their images."""
    if cfg.directions == "both" and rng.random() < 0.5:
        item = swapped(item)
    arrays = [item.moving, item.fixed, item.moving_labels, item.fixed_labels]
    crop_w, crop_h, crop_d = cfg.train_crop
    starts = [int(rng.integers(0, n - c + 1)) for n, c in zip(item.fixed.shape, (crop_d, crop_h, crop_w))]
    window = tuple(slice(s, s + c) for s, c in zip(starts, (crop_d, crop_h, crop_w)))
    arrays = [a[window] for a in arrays]
    if cfg.augment:
        for axis in (1, 2):
            if rng.random() < 0.5:
                arrays = [np.flip(a, axis) for a in arrays]
    images = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None] for a in arrays[:2]]
    labels = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))[None, None] for a in arrays[2:]]
    return Sample(*images, *labels)
