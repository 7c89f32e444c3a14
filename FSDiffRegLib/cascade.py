"""The network cascaded at test time (issue 21): run again on the moving image warped by its flow so far, the
flows composed. The network, trained to register ES (moving) onto ED (fixed), under-registers: the ED labels it
carries onto ES keep too much of the ED volume (LV EF error -7.8 points on validation, one pass); a second pass
registers what the first left.
"""

from __future__ import annotations

import torch

from .network import FSDiffRegNet
from .refine import compose
from .spatial import warp


def cascade(model: FSDiffRegNet, moving: torch.Tensor, fixed: torch.Tensor, flow: torch.Tensor,
            passes: int) -> torch.Tensor:
    """``flow`` (the network's first pass) and ``passes`` - 1 more, each on ``moving`` warped by the flow so far
    (border values outside), composed: u <- u2 + u(p + u2(p))."""
    t = torch.zeros(fixed.shape[0], dtype=torch.long, device=fixed.device)
    with torch.no_grad():
        for _ in range(passes - 1):
            _, step = model(warp(moving, flow, padding="border"), fixed, fixed, t)
            flow = compose(flow, step)
    return flow
