"""Saving and safely loading model weights and the heart head beside them, with SHA256 checks."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import WeightsError
from ..files import replaced_whole
from ..resources import weights_path
from .config import Config
from .heart_head import HeartHead
from .network import FSDiffRegNet, native_bf16, use_bf16


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model: FSDiffRegNet, path: Path, info: dict | None = None) -> str:
    """Write {config, state_dict, info} and a ``.sha256`` file beside it; return the digest."""
    payload = {
        "config": json.loads(model.cfg.to_json()),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": info or {},
    }
    return write_with_checksum(payload, path)


def write_with_checksum(payload: dict, path: Path) -> str:
    """``torch.save`` the payload whole (through a new hidden temporary file beside it, never a file already
    there) and a ``.sha256`` file beside it; return the digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_whole(path) as handle:
        torch.save(payload, handle)
    digest = sha256(path)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return digest


def expected_sha256(path: Path) -> str | None:
    """The digest in the ``.sha256`` file beside ``path``, in lower case; None when there is no such file."""
    checksum = path.with_name(path.name + ".sha256")
    if not checksum.is_file():
        return None
    words = checksum.read_bytes().split()
    digest = words[0].decode("ascii", "replace").lower() if words else ""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise WeightsError(f"checksum file {checksum.name} holds no SHA256 checksum (64 hex digits): {checksum}")
    return digest


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_safely(path: Path, what: str = "weights") -> object:
    """``torch.load`` with ``weights_only=True`` (tensors, numbers, strings, lists, dicts: never code); each
    failure said in one line, ``cannot load <what> <path>: ...``."""
    if path.stat().st_size == 0:
        raise WeightsError(f"cannot load {what} {path}: the file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        with open(path, "rb") as handle:
            pickled = zipfile.is_zipfile(path) or handle.read(1) == b"\x80"  # torch's zip, or a bare pickle
        if pickled:
            raise WeightsError(f"cannot load {what} {path}: the file contains code or Python objects that are not "
                               "plain weights, refused for safety") from None
        raise WeightsError(f"cannot load {what} {path}: not a PyTorch weights file") from None
    except Exception as err:  # torch raises many types for a damaged file
        raise WeightsError(f"cannot load {what} {path}: not a PyTorch weights file, or a damaged one "
                           f"({first_line(err)})") from None


def read_payload(path: Path) -> dict:
    """The {config, state_dict, info} dict, read with ``load_safely``; each failure said in one line."""
    payload = load_safely(path)
    if not (isinstance(payload, dict) and {"config", "state_dict"} <= payload.keys()):
        raise WeightsError(f"cannot load weights {path}: not FSDiffReg weights (a dict with 'config' and "
                           "'state_dict')")
    return payload


def few(keys: list[str], shown: int = 3) -> str:
    return ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")


def state_mismatch(expected: dict, given: object) -> str:
    """How ``given`` differs from ``expected`` in keys and shapes, in a few words; '' when it fits."""
    if not isinstance(given, dict):
        return f"the state_dict is a {type(given).__name__}, not a dict of tensors"
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    reshaped = [k for k in expected if k in given and getattr(given[k], "shape", None) != expected[k].shape]
    parts = (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
    return ", ".join(f"{len(keys)} {what} ({few(keys)})" for what, keys in parts if keys)


def load_state(model: torch.nn.Module, state: object, what: str) -> None:
    """Load ``state`` (the state_dict of ``what``, e.g. 'weights w.pt') into ``model``; WeightsError in one
    line when it does not fit."""
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise WeightsError(f"cannot load {what}: they do not fit the network: {mismatch}")
    try:
        model.load_state_dict(state)  # type: ignore[arg-type]  # a mapping: state_mismatch found none else
    except Exception as err:  # e.g. a value that is not a tensor
        raise WeightsError(f"cannot load {what}: {first_line(err)}") from None


def checked_payload(path: Path, read: Callable[[Path], Any] = read_payload) -> tuple[Any, str]:
    """A weights file's payload (``read(path)``, by default ``read_payload``) and its SHA256, checked against the
    ``.sha256`` file beside it when there is one."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    digest = sha256(path)
    expected = expected_sha256(path)
    if expected is not None and expected != digest:
        raise WeightsError(f"weights file {path.name} is corrupt: SHA256 {digest[:12]}... != {expected[:12]}...")
    return read(path), digest


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[FSDiffRegNet, dict]:
    """Load weights (default: bundled) into a network in eval mode.

    Checks the ``.sha256`` file beside the weights when there is one, and loads with
    ``weights_only=True`` so a weights file can never run code. The heart head saved beside
    the weights, when there is one, becomes ``model.heart_head`` (FSDiffRegLib.model.heart_head). With
    FSDIFFREG_BF16 set, on a CPU with native bfloat16, its inference convolutions compute in bfloat16
    (``network.Conv3d``). Returns the model and a description {name, sha256, info, heart, precision}.
    """
    path = weights_path(path)
    payload, digest = checked_payload(path)
    try:
        model = FSDiffRegNet(Config.from_dict(payload["config"]))
    except (TypeError, ValueError, RuntimeError) as err:
        raise WeightsError(f"cannot load weights {path}: invalid configuration: {first_line(err)}") from None
    load_state(model, payload["state_dict"], f"weights {path}")
    model.heart_head = load_heart_head(path, digest)
    model.to(device, memory_format=torch.channels_last_3d).eval()  # type: ignore[call-overload]  # torch's stub omits it
    bf16 = torch.device(device).type == "cpu" and native_bf16()
    use_bf16(model, bf16)
    info = payload.get("info", {})
    return model, {"name": path.name, "sha256": digest, "info": info if isinstance(info, dict) else {},
                   "heart": heart_head_path(path).name if model.heart_head is not None else None,
                   "precision": "bfloat16" if bf16 else "float32"}


def heart_head_path(weights: Path) -> Path:
    """Where the heart head of ``weights`` lies: beside them, ``<stem>_heart.pt``."""
    return weights.with_name(weights.stem + "_heart.pt")


def save_heart_head(head: HeartHead, path: Path, info: dict) -> None:
    """Write {config: {channels}, state_dict, info} and its ``.sha256`` beside it."""
    payload = {"config": {"channels": head.channels},
               "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()}, "info": info}
    write_with_checksum(payload, path)


def load_heart_head(weights: Path, network_sha256: str) -> HeartHead | None:
    """The head saved beside ``weights`` (None when there is none), checked against its checksum and
    against the network it was trained on."""
    path = heart_head_path(weights)
    if not path.is_file():
        return None
    payload, _ = checked_payload(path)
    trained_on = payload.get("info", {}).get("network_sha256")
    if trained_on != network_sha256:
        raise WeightsError(f"heart head {path.name} was trained for other weights than {weights.name} "
                           f"(network SHA256 {str(trained_on)[:12]}... != {network_sha256[:12]}...)")
    try:
        head = HeartHead(list(payload["config"]["channels"]))
        head.load_state_dict(payload["state_dict"])
    except Exception as err:  # a missing key, a shape that does not fit
        raise WeightsError(f"cannot load heart head {path}: {first_line(err)}") from None
    return head.eval()
