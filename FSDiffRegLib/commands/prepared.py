"""What a file command runs with: the device (checked first), the inputs read and the model loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..device import pick_device
from ..events import Report, stage
from ..model.network import FSDiffRegNet
from ..model.weights import load_model


@dataclass
class Prepared:
    """What a command runs with: the device, the model loaded on it and its description, the inputs read."""

    device: torch.device
    model: FSDiffRegNet
    about: dict
    read: dict

    def record(self, options: dict) -> dict:
        """What metrics.json says of the run's inputs, ``options``, weights and the network's precision (bfloat16
        convolutions or float32: ``load_model``)."""
        return {"inputs": self.read["inputs"], "options": options, "weights": self.about["name"],
                "weights_sha256": self.about["sha256"], "precision": self.about["precision"]}


def prepare(request, reader: Callable, reading: str, log: Report,
            loaded: tuple[FSDiffRegNet, dict] | None = None, read: dict | None = None) -> Prepared:
    """The request's device (checked first), its inputs (``reader(request)``, logged as ``reading``) and the model;
    ``loaded`` is a model already loaded (``load_model``), ``read`` the inputs already read."""
    torch_device = pick_device(request.device)
    if read is None:
        log(stage("reading", reading))
        read = reader(request)
    if loaded is None:
        log(stage("loading", f"loading weights on {torch_device}"))
    model, about = loaded or load_model(request.weights, torch_device)
    return Prepared(torch_device, model, about, read)
