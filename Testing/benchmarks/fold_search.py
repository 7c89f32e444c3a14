"""The network alone's folding on every ACDC patient 001-100 in both directions, before the fold removal:
where to find the hardest pairs for Testing/test_unfold.py (issue 21). Also whether the removal leaves none.

Usage, from the repository root:
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python Testing/benchmarks/fold_search.py ../shared/data/ACDC
"""

from __future__ import annotations

import sys

import SimpleITK as sitk
import torch

from FSDiffRegLib.defaults import NETWORK_ONLY
from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.pipeline.register import register_images
from FSDiffRegLib.pipeline.unfold import folded_voxels


def main(data: str) -> None:
    model, _ = load_model(None, torch.device("cpu"))
    found = []
    for pair in acdc.split(data, "train") + acdc.split(data, "validation"):
        for way in acdc.DIRECTIONS:
            p = acdc.directed(pair, way)
            fixed, moving = sitk.ReadImage(str(p.fixed)), sitk.ReadImage(str(p.moving))
            result = register_images(fixed, moving, model, torch.device("cpu"), refine=NETWORK_ONLY)
            stats = result.metrics["unfold"]
            left = folded_voxels(result.field, result.grid)[1:]
            found.append((stats["folded_before"] + stats["folded_before_fine"], p.patient, way, stats, left))
            print(p.patient, way, stats, "left", left, flush=True)
    print("\nmost folded (fixed grid + heart grid voxels), network alone:")
    for total, patient, way, stats, left in sorted(found, reverse=True)[:10]:
        print(f"{patient} {way}: {total} ({stats}), left after removal {left}")
    resort = sum(x[3]["scaled_globally"] for x in found)
    print(f"pairs folded before: {sum(t > 0 for t, *_ in found)} of {len(found)}; "
          f"after: {sum(sum(x[4]) > 0 for x in found)}; last resort used: {resort}")


if __name__ == "__main__":
    main(sys.argv[1])
