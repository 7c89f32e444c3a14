"""Choosing the torch device: auto (CUDA when present), cpu or cuda; what devices exist."""

from __future__ import annotations

import torch

from .errors import DeviceError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` gives CUDA when available, else the CPU; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for, but CUDA is not available on this machine")
    if name not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def device_report() -> dict:
    """torch's version, whether CUDA works, the devices ``pick_device`` accepts and the CUDA cards' names."""
    cuda = torch.cuda.is_available()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {"torch": torch.__version__, "cuda": cuda, "devices": ["cpu", "cuda"] if cuda else ["cpu"],
            "cuda_names": names}
