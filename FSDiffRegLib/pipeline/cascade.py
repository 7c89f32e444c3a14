"""The network cascaded at test time (issue 21): run again on the moving image warped by its flow so far, the
flows composed. The network, trained to register ES (moving) onto ED (fixed), under-registers: the ED labels it
carries onto ES keep too much of the ED volume (LV EF error -7.8 points on validation, one pass); a second pass
registers what the first left.
"""

from __future__ import annotations

import torch

from ..model.network import FSDiffRegNet
from ..model.predict import predict
from ..model.spatial import warp
from .refine import compose


def cascade(model: FSDiffRegNet, moving: torch.Tensor, fixed: torch.Tensor, flow: torch.Tensor,
            passes: int) -> torch.Tensor:
    """``flow`` (the network's first pass) and ``passes`` - 1 more, each on ``moving`` warped by the flow so far
    (border values outside), composed: u <- u2 + u(p + u2(p))."""
    for _ in range(passes - 1):
        _, step = predict(model, warp(moving, flow, padding="border"), fixed)
        flow = compose(flow, step)
    return flow
