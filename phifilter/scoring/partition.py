"""Partitioned runs: N independent tasks (a Slurm array, a Kubernetes indexed Job) that together
score every shard exactly once.

Each task gets a fixed, balanced subset of the shards: shards are dealt largest first to the
task with the fewest bytes so far (ties: the lower task index), so every task computes the
same assignment from the same input list, without talking to the others. Tasks write into
one shared output folder; each holds a lock of its own name, and shards never overlap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..atomic import TMP_MARK, remove_stale_siblings, remove_stale_temporaries
from ..corpus import LOCK_NAME, Shard, output_path, partial_dir_for
from ..location import RemotePath, as_location


def assign(shards: Sequence[Shard], count: int) -> list[int]:
    """Task index of each shard (same order as ``shards``): balanced by file size."""
    sizes = [s.path.size() if isinstance(s.path, RemotePath) else os.stat(s.path).st_size for s in shards]
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


def task_lock_name(index: int, count: int) -> str:
    """The lock file of one task (a run of all shards keeps the plain lock name)."""
    return LOCK_NAME if count == 1 else f"{LOCK_NAME}.task-{index}-of-{count}"


def remove_task_temporaries(out_dir: Path, shards: Sequence[Shard], output_format: str | None = None) -> None:
    """Delete the temporaries a killed earlier run of this task left beside its own outputs."""
    for s in shards:
        out_path = output_path(as_location(out_dir), s, output_format)
        # on a store no pid can be checked: our task lock says that no writer of these is live
        remove_stale_siblings(out_path, marks=(TMP_MARK,))
        # its chunk temporaries; the manifest's chunks are kept for resuming
        remove_stale_temporaries(partial_dir_for(out_path))
