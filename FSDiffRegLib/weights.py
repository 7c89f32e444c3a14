"""Saving and safely loading model weights, with SHA256 checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .config import Config
from .errors import WeightsError
from .network import FSDiffRegNet
from .resources import BUNDLED_WEIGHTS


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model: FSDiffRegNet, path: Path, info: dict | None = None) -> str:
    """Write {config, state_dict, info} and a ``.sha256`` file beside it; return the digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": json.loads(model.cfg.to_json()),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": info or {},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    digest = sha256(path)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return digest


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[FSDiffRegNet, dict]:
    """Load weights (default: bundled) into a network in eval mode.

    Checks the ``.sha256`` file beside the weights when there is one, and loads with
    ``weights_only=True`` so a weights file can never run code. Returns the model and
    a description {name, sha256, info}.
    """
    path = Path(path) if path is not None else BUNDLED_WEIGHTS
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    digest = sha256(path)
    expected_file = path.with_name(path.name + ".sha256")
    if expected_file.is_file():
        expected = expected_file.read_text().split()[0]
        if expected != digest:
            raise WeightsError(f"weights file {path.name} is corrupt: SHA256 {digest[:12]}... != {expected[:12]}...")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = FSDiffRegNet(Config.from_dict(payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except Exception as err:  # torch raises many types for a bad file
        raise WeightsError(f"cannot load weights {path}: {type(err).__name__}: {str(err)[:200]}") from None
    model.to(device, memory_format=torch.channels_last_3d).eval()
    return model, {"name": path.name, "sha256": digest, "info": payload.get("info", {})}
