"""Training on several processes launched by torchrun: the process group, this rank and its device.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/PORT, which ``env://`` reads).
Without them every function here acts as the only process of a group of one.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from ..errors import DeviceError

# rank 0 alone preprocesses the data, validates and writes checkpoints while the others wait
TIMEOUT = timedelta(minutes=60)
T = TypeVar("T")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group (NCCL on CUDA, gloo on the CPU); return this rank's device.

    A CUDA device becomes ``cuda:LOCAL_RANK``. With one process nothing is done.
    """
    if world_size() == 1:
        return device
    if device.type == "cuda":
        if local_rank() >= torch.cuda.device_count():
            raise DeviceError(f"LOCAL_RANK {local_rank()} has no GPU: this node has {torch.cuda.device_count()}; "
                              "start at most that many processes per node")
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return device


def cleanup() -> None:
    """Leave the process group (when one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the ranks (a copy; ``values`` itself is left alone)."""
    values = values.detach().clone()
    if world_size() > 1:
        dist.all_reduce(values)  # summed: gloo has no average
        values /= world_size()
    return values
