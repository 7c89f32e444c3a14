"""Which share of a cohort this process runs: shard K of N (K counted from 0) takes the manifest's cases
K, K + N, K + 2N, ... (0-based, in the manifest's order).

``--shard K/N`` says it; without it, an array job's environment does, so that a job array runs a cohort
with no code. The index K is the task's place in the array, whatever its first id:

- Slurm: (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP of SLURM_ARRAY_TASK_COUNT
  (``--array=0-9`` and ``--array=1-10`` are the same 10 shards);
- SGE / Grid Engine: (SGE_TASK_ID - SGE_TASK_FIRST) / SGE_TASK_STEPSIZE of
  (SGE_TASK_LAST - SGE_TASK_FIRST) / SGE_TASK_STEPSIZE + 1;
- LSF: (LSB_JOBINDEX - 1) / LSB_JOBINDEX_STEP of (LSB_JOBINDEX_END - 1) / LSB_JOBINDEX_STEP + 1 (an LSF
  array counts from 1: ``-J "cohort[1-N]"``);
- PBS (Pro: PBS_ARRAY_INDEX; Torque: PBS_ARRAYID) and Kubernetes indexed Jobs (JOB_COMPLETION_INDEX):
  the index as it is, so count from 0 (``qsub -J 0-9``), with N from FSDIFFREG_SHARD_COUNT (the array's
  size; a Kubernetes Job's ``completions``), as neither tells it.

Imports nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..errors import InputError

COUNT_VARIABLE = "FSDIFFREG_SHARD_COUNT"
T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int  # from 0
    count: int
    source: str  # "--shard", or the scheduler whose environment said it


def parse_shard(text: str) -> Shard:
    """``K/N``: shard K (from 0) of N, or InputError."""
    index, sep, count = text.partition("/")
    if not (sep and index.strip().isdigit() and count.strip().isdigit()):
        raise InputError(f"--shard: expected K/N (shard K of N, K counted from 0), got {text!r}")
    return checked(int(index), int(count), "--shard")


def checked(index: int, count: int, source: str) -> Shard:
    if count < 1:
        raise InputError(f"{source}: the shard count must be at least 1, got {count}")
    if not 0 <= index < count:
        raise InputError(f"{source}: shard {index} of {count} does not exist (shards are 0 to {count - 1}, "
                         "counted from 0)")
    return Shard(index, count, source)


def number(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    """The whole number in ``env[name]`` (``default`` where absent), or InputError naming the variable."""
    text = env.get(name, "").strip()
    if not text and default is not None:
        return default
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{name}={text!r} is not a whole number") from None


def place(env: Mapping[str, str], task: str, first: int, step: int, count: int, scheduler: str) -> Shard:
    """The shard of task id ``env[task]`` in an array of ``count`` ids ``first``, ``first + step``, ..."""
    offset = number(env, task) - first
    if step < 1 or offset % step:
        raise InputError(f"{scheduler}: {task}={env[task]} is not in the array {first}, {first + step}, ...: "
                         "give --shard K/N")
    return checked(offset // step, count, f"{scheduler} ({task}={env[task]})")


def count_from_env(env: Mapping[str, str], scheduler: str) -> int:
    if not env.get(COUNT_VARIABLE, "").strip():
        raise InputError(f"{scheduler} gives the array index but not its size: set {COUNT_VARIABLE}=N (the "
                         "number of array tasks) or give --shard K/N")
    return number(env, COUNT_VARIABLE)


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard an array job's environment gives (module docstring), or None outside an array job."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_TASK_ID", "").strip():
        return place(env, "SLURM_ARRAY_TASK_ID", number(env, "SLURM_ARRAY_TASK_MIN", 0),
                     number(env, "SLURM_ARRAY_TASK_STEP", 1), number(env, "SLURM_ARRAY_TASK_COUNT"), "Slurm")
    if env.get("SGE_TASK_ID", "undefined").strip() not in ("", "undefined"):  # 'undefined' outside an array
        first, step = number(env, "SGE_TASK_FIRST", 1), number(env, "SGE_TASK_STEPSIZE", 1)
        count = (number(env, "SGE_TASK_LAST") - first) // max(step, 1) + 1
        return place(env, "SGE_TASK_ID", first, step, count, "SGE")
    if env.get("LSB_JOBINDEX", "0").strip() not in ("", "0"):  # 0 outside an array
        step = number(env, "LSB_JOBINDEX_STEP", 1)
        count = (number(env, "LSB_JOBINDEX_END") - 1) // max(step, 1) + 1
        return place(env, "LSB_JOBINDEX", 1, step, count, "LSF")
    for task, scheduler in (("PBS_ARRAY_INDEX", "PBS"), ("PBS_ARRAYID", "PBS"),
                            ("JOB_COMPLETION_INDEX", "Kubernetes")):
        if env.get(task, "").strip():
            return place(env, task, 0, 1, count_from_env(env, scheduler), scheduler)
    return None


def take(cases: Sequence[T], shard: Shard | None) -> list[T]:
    """The cases of ``shard``: every N-th from the K-th (all without a shard)."""
    return list(cases) if shard is None else list(cases[shard.index::shard.count])


def summary_name(shard: Shard | None) -> str:
    """``summary.csv``; a shard of several writes its own, ``summary.shard-K-of-N.csv`` (K from 0)."""
    if shard is None or shard.count == 1:
        return "summary.csv"
    return f"summary.shard-{shard.index}-of-{shard.count}.csv"
