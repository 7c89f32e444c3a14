"""Shard arithmetic of ``fsdiffreg batch``: --shard K/N and each scheduler's array environment."""

from __future__ import annotations

import pytest

from FSDiffRegLib.commands.shards import Shard, parse_shard, shard_from_env, summary_name, take
from FSDiffRegLib.errors import InputError


def shard(env: dict[str, str]) -> tuple[int, int]:
    found = shard_from_env(env)
    assert found is not None
    return found.index, found.count


def test_parse_shard_counts_from_zero() -> None:
    assert parse_shard("0/4") == Shard(0, 4, "--shard")
    assert parse_shard("3/4").index == 3
    for bad, words in (("4/4", "shard 4 of 4 does not exist"), ("1/0", "at least 1"), ("1", "expected K/N"),
                       ("a/3", "expected K/N"), ("-1/3", "expected K/N")):
        with pytest.raises(InputError, match=words):
            parse_shard(bad)


def test_take_every_nth_case_and_the_shards_cover_the_cohort_once() -> None:
    cases = list(range(10))
    shards = [take(cases, Shard(k, 3, "--shard")) for k in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert take(cases, None) == cases


def test_slurm_from_zero_or_one_and_with_a_step() -> None:
    assert shard({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "10"}) == (0, 10)
    assert shard({"SLURM_ARRAY_TASK_ID": "10", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "10"}) == (9, 10)
    assert shard({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2",
                  "SLURM_ARRAY_TASK_COUNT": "5"}) == (2, 5)
    with pytest.raises(InputError, match="SLURM_ARRAY_TASK_ID=5 is not in the array 0, 2, ...: give --shard"):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2",
                        "SLURM_ARRAY_TASK_COUNT": "5"})
    with pytest.raises(InputError, match="shard 7 of 3 does not exist"):  # --array=0,1,7: not a range
        shard_from_env({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "3"})


def test_sge_lsf_pbs_kubernetes() -> None:
    assert shard({"SGE_TASK_ID": "1", "SGE_TASK_FIRST": "1", "SGE_TASK_LAST": "8", "SGE_TASK_STEPSIZE": "1"}) == (0, 8)
    assert shard({"SGE_TASK_ID": "7", "SGE_TASK_FIRST": "1", "SGE_TASK_LAST": "9", "SGE_TASK_STEPSIZE": "2"}) == (3, 5)
    assert shard({"LSB_JOBINDEX": "4", "LSB_JOBINDEX_END": "6"}) == (3, 6)
    assert shard({"PBS_ARRAY_INDEX": "2", "FSDIFFREG_SHARD_COUNT": "3"}) == (2, 3)
    assert shard({"PBS_ARRAYID": "0", "FSDIFFREG_SHARD_COUNT": "3"}) == (0, 3)
    assert shard({"JOB_COMPLETION_INDEX": "4", "FSDIFFREG_SHARD_COUNT": "5"}) == (4, 5)
    with pytest.raises(InputError, match="Kubernetes gives the array index but not its size: set "
                                         "FSDIFFREG_SHARD_COUNT"):
        shard_from_env({"JOB_COMPLETION_INDEX": "4"})
    with pytest.raises(InputError, match="FSDIFFREG_SHARD_COUNT='five' is not a whole number"):
        shard_from_env({"PBS_ARRAY_INDEX": "1", "FSDIFFREG_SHARD_COUNT": "five"})


def test_outside_an_array_job_no_shard() -> None:
    assert shard_from_env({}) is None
    assert shard_from_env({"SGE_TASK_ID": "undefined", "LSB_JOBINDEX": "0", "SLURM_JOB_ID": "12"}) is None


def test_each_shard_writes_its_own_summary() -> None:
    assert summary_name(None) == "summary.csv"
    assert summary_name(Shard(0, 1, "--shard")) == "summary.csv"
    assert summary_name(Shard(2, 4, "Slurm")) == "summary.shard-2-of-4.csv"
