"""Measure label-free heart location against the labels: distance and heart coverage.

Usage: .venv/bin/python Testing/benchmarks/heart_locator.py [--data ../shared/data/ACDC] [--split validation]
Prints, per method, the median/max distance (mm) from the estimated centre to the labelled
heart's centroid and the share of labelled heart voxels (ED and ES) inside the crop.
"""

from __future__ import annotations

import argparse

import numpy as np
import SimpleITK as sitk

from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.imaging.preprocess import heart_grid_centre, image_centre, network_grid, resample_to
from FSDiffRegLib.model.config import Config


def coverage(labels: sitk.Image, grid: sitk.Image) -> float:
    """Share of the labelled heart's volume that lies inside the grid."""
    inside = sitk.GetArrayFromImage(resample_to(labels, grid, 0, nearest=True)) > 0
    total = (sitk.GetArrayViewFromImage(labels) > 0).sum() * np.prod(labels.GetSpacing())
    return inside.sum() * np.prod(grid.GetSpacing()) / max(total, 1e-9)


def centroid(labels: sitk.Image) -> np.ndarray:
    zyx = np.argwhere(sitk.GetArrayViewFromImage(labels) > 0).mean(axis=0)
    return np.array(labels.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[::-1]]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/ACDC")
    parser.add_argument("--split", default="validation")
    args = parser.parse_args()
    cfg = Config()
    rows = {"image centre": [], "frame difference": []}
    for pair in acdc.split(args.data, args.split):
        f, m = sitk.ReadImage(str(pair.fixed)), sitk.ReadImage(str(pair.moving))
        fl, ml = sitk.ReadImage(str(pair.fixed_labels)), sitk.ReadImage(str(pair.moving_labels))
        truth = centroid(fl)
        for name, centre in (("image centre", image_centre(f)), ("frame difference", heart_grid_centre(f, m))):
            grid = network_grid(f, centre, cfg)
            cov = min(coverage(fl, grid), coverage(ml, grid))
            rows[name].append((np.linalg.norm(centre - truth), cov))
    print("| method | median distance mm | max distance mm | mean coverage % | min coverage % |")
    print("|---|---|---|---|---|")
    for name, vals in rows.items():
        d = np.array([v[0] for v in vals])
        c = np.array([v[1] for v in vals]) * 100
        print(f"| {name} | {np.median(d):.1f} | {d.max():.1f} | {c.mean():.2f} | {c.min():.2f} |")


if __name__ == "__main__":
    main()
