"""Partitioned runs: N independent tasks (a Slurm array, a Kubernetes indexed Job) that together
score every shard exactly once.

Each task gets a fixed, balanced subset of the shards: shards are dealt largest first to the
task with the fewest bytes so far (ties: the lower task index), so every task computes the
same assignment from the same input list, without talking to the others. Tasks write into
one shared output folder; every shard is written under its own lease (:mod:`phifilter.leases`),
so tasks of different ``--num-tasks``, or a full run beside them, never write one shard at once.
"""

from __future__ import annotations

import os
from typing import Sequence

from ..corpus import Shard
from ..errors import InputError, OptionError
from ..location import store_of


def task_of(index: int | None = None, count: int | None = None, environ=os.environ) -> tuple[int, int]:
    """(task index, number of tasks) of ``--task-index/--num-tasks``: the options, else Slurm's
    array variables, else (0, 1); an impossible pair is an OptionError naming the option."""
    if index is None and environ.get("SLURM_ARRAY_TASK_ID", "").strip():
        index = _env_int(environ, "SLURM_ARRAY_TASK_ID")
        # Arrays may start at 1 (--array=1-8): count from the array's first index.
        index -= _env_int(environ, "SLURM_ARRAY_TASK_MIN") if environ.get("SLURM_ARRAY_TASK_MIN", "").strip() else 0
    if count is None and environ.get("SLURM_ARRAY_TASK_COUNT", "").strip():
        count = _env_int(environ, "SLURM_ARRAY_TASK_COUNT")
    index = 0 if index is None else int(index)
    count = 1 if count is None else int(count)
    if count < 1:
        raise OptionError(f"--num-tasks {count}: must be at least 1", "--num-tasks")
    if not 0 <= index < count:
        raise OptionError(f"--task-index {index}: must be in 0..{count - 1} for --num-tasks {count}", "--task-index")
    return index, count


def _env_int(environ, name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise InputError(f"${name}={environ[name]!r}: expected an integer") from None


def assign(shards: Sequence[Shard], count: int) -> list[int]:
    """Task index of each shard (same order as ``shards``): balanced by file size."""
    sizes = [store_of(s.path).stat(s.path).size for s in shards]
    order = sorted(range(len(shards)), key=lambda i: (-sizes[i], str(shards[i].name)))
    load = [0] * count
    owner = [0] * len(shards)
    for i in order:
        task = min(range(count), key=lambda t: (load[t], t))
        owner[i] = task
        load[task] += sizes[i]
    return owner


def partition_shards(shards: Sequence[Shard], index: int, count: int) -> list[Shard]:
    """The shards task ``index`` of ``count`` scores (all of them when ``count`` is 1)."""
    if count == 1:
        return list(shards)
    owner = assign(shards, count)
    return [s for s, t in zip(shards, owner) if t == index]
