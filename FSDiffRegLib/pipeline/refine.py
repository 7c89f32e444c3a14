"""Instance refinement: optimise the network's flow on the given pair itself.

Starting from the prediction, a correction of the flow is optimised for N Adam steps with
the training objective's registration terms: the SDG-weighted local NCC (weights from the
network's own diffusion score) and smoothness. It runs coarse to fine, on the images and
weights averaged down to voxels of about 6 x 12 x 12 mm, then 3 x 6 x 6 mm, then
3 x 3 x 3 mm (LEVEL_FACTORS of the 3.15 x 1.5 x 1.5 mm network grid): there a step costs
a small part of one on the network grid, and on the coarse levels the NCC window
(``RefineOptions.window`` voxels) spans enough of the heart to pull large misalignments in.
Each level's correction is interpolated back and added to the flow, which keeps the
network's fine detail. Window, smoothness weight and levels were chosen on the validation
split (docs/method.md, "Instance refinement"). With ``diffeomorphic`` a level optimises a stationary
velocity field instead, whose exponential (scaling and squaring) is composed with the
flow, so an invertible map stays invertible. With ``gaussian`` each step's correction is
smoothed (VELOCITY_SIGMA) before it is applied, and the refined flow at the end (FLOW_SIGMA):
higher Dice at a lower smoothness weight, with less folding and a lower SD|J|.
"""

from __future__ import annotations

import math
import time
from typing import Callable, cast

import torch
import torch.nn.functional as F

from ..defaults import RefineOptions
from ..events import Event, Report, ignore, progress
from ..model.config import Config
from ..model.losses import score_weights, sdg_ncc_loss, smoothness_loss
from ..model.spatial import gaussian_blur, integrate_velocity, upsample_flow, warp
from .adam import Adam

LEVEL_FACTORS = ((2, 8, 8), (1, 4, 4), (1, 2, 2))  # (D, H, W) shrink of each level, coarse to fine
REFINE_LR = 0.2  # coarse voxels per step, Adam
PROGRESS_SECONDS = 10.0  # longest wait between two progress lines
SQUARINGS = 4  # scaling and squaring: a velocity of up to 8 coarse voxels moves under half a voxel a squaring
VELOCITY_SIGMA = (0.0, 1.0, 1.0)  # Gaussian on each step's correction, voxels of its level (D, H, W)
FLOW_SIGMA = (0.5, 1.5, 1.5)  # Gaussian on the refined flow, network voxels: about 1.6, 2.3, 2.3 mm


def level_sizes(size: tuple[int, ...], window: int) -> list[tuple[int, ...]]:
    """Grid size of each level, never fewer voxels along an axis than the NCC window (or the grid)."""
    return [tuple(max(min(n, window), round(n / k)) for n, k in zip(size, factors)) for factors in LEVEL_FACTORS]


def level_steps(steps: int) -> list[int]:
    """The steps split evenly over the levels, the finer ones taking what does not divide."""
    n = len(LEVEL_FACTORS)
    return [steps * (level + 1) // n - steps * level // n for level in range(n)]


def duration(seconds: float) -> str:
    """'42 s', '3 min 5 s' or '2 h 4 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class Progress:
    """Progress events 'refining: 52 of 60 steps done (40 % of the work), about 3 s left' at each tenth of the
    work and at least every PROGRESS_SECONDS. Work counts voxels, so a step on a fine level weighs more than a
    coarse one."""

    def __init__(self, work: list[int], log: Report, clock: Callable[[], float] = time.monotonic):
        self.work, self.log, self.clock = work, log, clock
        self.total, self.done, self.steps = sum(work), 0, 0
        self.start = self.last = clock()
        self.tenths = 0
        log(self.event(""))

    def step(self) -> None:
        """One step done; a line when due."""
        self.done += self.work[self.steps]
        self.steps += 1
        now, tenths = self.clock(), 10 * self.done // self.total
        if tenths == self.tenths and now - self.last < PROGRESS_SECONDS:
            return
        self.tenths, self.last = tenths, now
        left = duration((now - self.start) * (self.total - self.done) / self.done) if self.done < self.total else ""
        self.log(self.event(left))

    def event(self, left: str) -> Event:
        """Where the refinement stands; ``left``: the time it should still take, if known."""
        text = (f"refining: {self.steps} of {len(self.work)} steps done ({100 * self.done // self.total} % of the "
                f"work)" + (f", about {left} left" if left else ""))
        return progress("refining", self.steps, len(self.work), text, self.done / self.total)


def compose(flow: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """The flow of x -> x + step(x) followed by ``flow``: step(x) + flow(x + step(x))."""
    return step + warp(flow, step, padding="border")


def correction(variable: torch.Tensor, options: RefineOptions) -> torch.Tensor:
    """The displacement a level's variable stands for: blurred with ``gaussian``, its exponential when
    ``diffeomorphic``."""
    velocity = gaussian_blur(variable, VELOCITY_SIGMA) if options.gaussian else variable
    return integrate_velocity(velocity, SQUARINGS) if options.diffeomorphic else velocity


def corrected(flow: torch.Tensor, step: torch.Tensor, options: RefineOptions) -> torch.Tensor:
    """``flow`` after ``step``: composed with it when ``diffeomorphic``, else added."""
    return compose(flow, step) if options.diffeomorphic else flow + step


def refine_flow(
    flow: torch.Tensor,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    score: torch.Tensor,
    cfg: Config,
    options: RefineOptions,
    log: Report = ignore,
) -> torch.Tensor:
    """The flow after ``options.steps`` steps, split evenly over the levels."""
    if options.steps == 0:
        return flow
    weights = score_weights(score, cfg.gamma) if cfg.sdg else torch.ones_like(fixed)
    size = tuple(flow.shape[2:])
    levels = list(zip(level_sizes(size, options.window), level_steps(options.steps)))
    progress = Progress([math.prod(coarse) for coarse, n in levels for _ in range(n)], log)
    flow = flow.detach()
    for coarse, steps in levels:
        if steps == 0:
            continue
        m, f, w = (F.adaptive_avg_pool3d(x, cast(tuple[int, int, int], coarse)) for x in (moving, fixed, weights))
        base = upsample_flow(flow, coarse)
        variable = torch.zeros_like(base, requires_grad=True)
        optimizer = Adam([variable], lr=REFINE_LR)  # torch.optim would import torch._dynamo
        for _ in range(steps):
            field = corrected(base, correction(variable, options), options)
            similarity = sdg_ncc_loss(warp(m, field), f, w, options.window)
            # times the batch: each image's gradient is then the one it gets alone (Adam's eps sees its scale)
            loss = field.shape[0] * (cfg.lam * similarity + options.smoothness * smoothness_loss(field))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            progress.step()
        with torch.no_grad():
            flow = corrected(flow, upsample_flow(correction(variable, options), size), options)
    return gaussian_blur(flow, FLOW_SIGMA) if options.gaussian else flow
