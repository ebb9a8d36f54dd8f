"""Partitioned runs: N independent tasks (a Slurm array, a Kubernetes indexed Job) that together
score every shard exactly once.

Each task gets a fixed, balanced subset of the shards: shards are dealt largest first to the
task with the fewest bytes so far (ties: the lower task index), so every task computes the
same assignment from the same input list, without talking to the others. Tasks write into
one shared output folder; every shard is written under its own lease (:mod:`phifilter.leases`),
so tasks of different ``--num-tasks``, or a full run beside them, never write one shard at once.
"""

from __future__ import annotations

from typing import Sequence

from ..corpus import Shard
from ..location import store_of


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
