"""The refinement's options, their defaults and limits, the training of the heart head and of the segmentation
U-Net, and the plausible frame interval of a cine; importable without torch (the Slicer GUI and the command line's
help use it)."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

from .errors import InputError

DEFAULT_STEPS = 0  # refinement steps `register` runs unless told otherwise: none (docs/benchmarks.md)
REFINE_STEPS = 20  # steps of the refinement as an option: the benchmark's refine row unless told otherwise
MAX_STEPS = 5000  # about half an hour on 2 CPU cores (0.3 s a step); more is a typo, not a wish
REFINE_SMOOTHNESS = 6.0  # smoothness weight of the refinement unless told otherwise
REFINE_WINDOW = 13  # NCC window of the refinement, voxels of each level
NETWORK_PASSES = 2  # network runs `register` makes, each on the moving image warped by the runs before (issue 21)
MAX_PASSES = 5
PLAUSIBLE_INTERVAL_MS = (5.0, 200.0)  # a cine's frame interval outside this is a placeholder (a NIfTI's 1 s)


@dataclass(frozen=True)
class RefineOptions:
    """Instance refinement: Adam ``steps`` (0, the default: the network alone; on unseen hearts every refinement
    measured lost Dice in at least one direction: docs/benchmarks.md), the ``smoothness`` weight, the NCC
    ``window`` (odd, voxels), ``diffeomorphic`` (optimise a stationary velocity field: an invertible
    correction; off: the displacement itself, twice as fast, folding six times as often), ``gaussian``
    (Gaussian-smooth each step's correction and the refined flow) and ``heart`` (blur the refined flow away
    from the heart the weights' heart head finds, where they carry one: FSDiffRegLib.model.heart_head; the name
    is the ``--heart`` flag's and metrics.json's), and the network's ``passes`` (each run on the moving image
    warped by the runs before, the flows composed: FSDiffRegLib.pipeline.cascade; 2, the default
    of ``register``: on validation 091-100 better in both directions than one run, and the LV EF error ED -> ES
    halved; docs/benchmarks.md). Checked when made."""

    steps: int = DEFAULT_STEPS
    smoothness: float = REFINE_SMOOTHNESS
    window: int = REFINE_WINDOW
    diffeomorphic: bool = True
    gaussian: bool = True
    heart: bool = True
    passes: int = NETWORK_PASSES

    def __post_init__(self) -> None:
        checked_steps(self.steps)
        checked_passes(self.passes)
        checked_smoothness(self.smoothness)
        if whole(self.window, "the NCC window") < 3 or self.window % 2 == 0:
            raise InputError(f"the NCC window must be an odd number of voxels, at least 3, got {self.window}")


def whole(value: object, name: str) -> int:
    """``value`` as an int, or InputError when it is not a whole number."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)  # type: ignore[arg-type]  # TypeError below when it has no __index__
    except TypeError:
        raise InputError(f"{name} must be a whole number, got {value!r}") from None


def checked_steps(steps: object) -> int:
    """Refinement steps: a whole number from 0 to MAX_STEPS."""
    steps = whole(steps, "refinement steps")
    if steps < 0:
        raise InputError(f"refinement steps must be at least 0, got {steps}")
    if steps > MAX_STEPS:
        raise InputError(f"refinement steps must be at most {MAX_STEPS} (about half an hour on 2 CPU cores; "
                         f"{REFINE_STEPS} is the measured choice), got {steps}")
    return steps


def checked_passes(passes: object) -> int:
    """Network passes: a whole number from 1 to MAX_PASSES."""
    passes = whole(passes, "network passes")
    if not 1 <= passes <= MAX_PASSES:
        raise InputError(f"network passes must be from 1 to {MAX_PASSES}, got {passes}")
    return passes


def checked_smoothness(smoothness: object) -> float:
    """The smoothness weight: a finite number, at least 0."""
    if isinstance(smoothness, bool) or not isinstance(smoothness, (int, float)) or not math.isfinite(smoothness):
        raise InputError(f"the smoothness weight must be a finite number, got {smoothness!r}")
    if smoothness < 0:
        raise InputError(f"the smoothness weight must be at least 0, got {smoothness!r}")
    return float(smoothness)


@dataclass(frozen=True)
class HeartHeadTraining:
    """Training of the head: Adam ``steps`` at ``lr`` on the first ``pairs`` ACDC training pairs."""

    steps: int = 1500
    lr: float = 3e-3
    pairs: int = 24
    seed: int = 0


@dataclass(frozen=True)
class SegmentTraining:
    """Training of the segmentation U-Net (``training.segment_train``): ``epochs`` of AdamW at ``lr`` (poly decay)
    on ``batch`` patches of ``crop`` x ``crop`` pixels of the model grid, validated every ``val_every`` epochs (and
    after the last); ``channels`` per U-Net level (None: ``segment.NETWORK``'s); ``ema``, the decay of an exponential
    moving average of the weights that is validated and kept (0: the weights themselves); ``threads`` for torch."""

    epochs: int = 60
    batch: int = 16
    crop: int = 96  # 144 mm: a quarter of the cost of 128, the heart within it
    val_every: int = 4
    lr: float = 1e-3
    channels: tuple[int, ...] | None = None
    ema: float = 0.999
    threads: int = 2
    seed: int = 0


HEART_HEAD_TRAINING = HeartHeadTraining()
SEGMENT_TRAINING = SegmentTraining()
DEFAULT_REFINE = RefineOptions()
NETWORK_ONLY = RefineOptions(steps=0, passes=1)  # the network alone, one run: what the benchmark compares with
REFINE_OPTION = RefineOptions(steps=REFINE_STEPS, passes=1)  # the default before issue 21: benchmark's refine row
TRACK_REFINE = RefineOptions(steps=20, smoothness=4.0, diffeomorphic=True, gaussian=False, heart=False, passes=1)
"""``track``'s refinement: a later frame fixed and ED moving, the field must contract the heart, which the
training's smoothness holds back (LV EF 9 points too low on validation); chosen on validation
(docs/function-accuracy.md)."""
