"""Choosing the torch device: auto (CUDA when present), cpu or cuda."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device that is not available here."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` gives CUDA when available, else the CPU; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for, but CUDA is not available on this machine")
    if name not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)
