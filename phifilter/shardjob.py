"""One shard job: the run lifecycle every per-shard command shares, written once.

A command declares a :class:`ShardJob`: which existing files in the output folder are its own
(``owns``), where each input shard's output goes (``output``), the run record an output must
carry to stand for this run (``record``), and how one shard is written (``write``). The runner
does the rest, the same way for every command:

1. :func:`claim`: find the shards, keep this task's share (``--task-index/--num-tasks``,
   :func:`phifilter.scoring.partition.partition_shards`), refuse an output folder holding files
   the command did not write and a ``--stats-json`` that is an input or not ours, before any work.
2. :func:`run_shards`: per shard, in corpus order: an output whose run record matches is
   skipped (its stored outcome still counts in the summary); otherwise the shard's lease
   (:mod:`phifilter.leases`) is taken, the record checked again (another run may have finished
   it meanwhile), the shard written atomically with the record (and the job's outcome) in its
   footer, and the lease given back. A shard whose lease a live run holds is left to that run
   and reported; a job whose shards depend on the ones before them (``ordered``) stops there
   with one error instead. Redone shards carry the reason (``input changed``...).
3. :func:`finish`: the summary's seconds and ``--stats-json``.

``score`` uses :func:`claim` and :func:`finish` around its engines, whose streaming flow
(:mod:`phifilter.scoring.flow`) takes the same leases per shard with row-group checkpoints.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Sequence

from .errors import OutputError

OUTCOME = "outcome"  # the key of a record that holds what the job counted (not compared on reruns)


@dataclass
class Claimed:
    """What :func:`claim` checked: the input specs, every shard, this task's shards, the folder."""

    specs: list
    every: list
    shards: list
    out_dir: object
    task: tuple = (0, 1)

    @property
    def elsewhere(self) -> int:
        """Shards left to the other tasks of a partitioned run."""
        return len(self.every) - len(self.shards)


@dataclass
class Done:
    """One shard's fate: ``status`` "written", "skipped" (its output stood) or "leased" (left to
    the live run writing it); ``outcome``: what the job counted (stored in the record);
    ``redone``: why an existing output was written again; ``holder``: who holds a leased shard."""

    shard: object
    out: object
    status: str
    outcome: dict = field(default_factory=dict)
    redone: str = ""
    holder: str = ""
    seconds: float = 0.0


class ShardJob:
    """A per-shard command. Subclasses set ``what`` and ``command`` and define ``record`` and
    ``write``; the base class decides nothing about the data, only the lifecycle."""

    command = "job"
    what = "outputs"  # in claim messages: "holds x, which phifilter did not write as <what>"
    desc = "shards"  # the progress bar's label
    ordered: str | None = None  # why a shard depends on the ones before it (a leased one stops the run)

    @classmethod
    def owns(cls, path) -> bool:
        """Is this existing file in the output folder one of ours (a record naming the command)?"""
        from .outputs import parquet_record_of

        return parquet_record_of(cls.command)(path)

    def output(self, out_dir, shard):
        from .corpus import output_path

        return output_path(out_dir, shard)

    def record(self, shard) -> dict:
        raise NotImplementedError

    def write(self, shard, out, record: dict) -> dict:
        """Write ``out`` atomically, with ``record`` in its metadata; return the outcome counted."""
        raise NotImplementedError

    def seen(self, done: Done) -> None:
        """Called for every shard in corpus order, once its fate is known (fold it into a summary)."""


def claim(inputs, output_dir, owns, what: str, stats_json=None, task: tuple = (0, 1)) -> Claimed:
    """Find the shards, keep task ``task``'s share and claim the output folder and ``stats_json``."""
    from .corpus import check_output_dir, find_shards
    from .outputs import claim_folder, claim_stats
    from .scoring.partition import partition_shards

    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    every = find_shards(specs)
    shards = partition_shards(every, *task)
    out_dir = check_output_dir(specs, output_dir)
    claim_folder(out_dir, owns, what)
    claim_stats(stats_json, specs, output_dir=out_dir)  # never an input, a shard or a foreign file
    return Claimed(specs, every, shards, out_dir, tuple(task))


def standing(out, wanted: dict) -> tuple[str | None, dict]:
    """(None, stored outcome) when the output at ``out`` was made by this very run's settings;
    else (why it is (re)written: "" when absent, or the stale reason, {})."""
    from .provenance import read_record, stale_reason

    if not out.is_file():
        return "", {}
    existing = read_record(out) or {}
    outcome = existing.pop(OUTCOME, {}) if isinstance(existing, dict) else {}
    reason = stale_reason(existing, wanted)
    return reason, (outcome if reason is None else {})


def run_shards(job: ShardJob, claimed: Claimed, progress: bool = False) -> list[Done]:
    """Write every shard of ``claimed`` that has no standing output, each under its lease."""
    from tqdm import tqdm

    from .leases import LeaseSet

    leases, fates = LeaseSet(), []
    try:
        for shard in tqdm(claimed.shards, unit="shard", desc=job.desc, disable=not progress):
            done = _one(job, shard, job.output(claimed.out_dir, shard), leases)
            job.seen(done)
            fates.append(done)
    finally:
        leases.close()
    return fates


def _one(job: ShardJob, shard, out, leases) -> Done:
    from .leases import Leased, describe

    record = job.record(shard)
    reason, outcome = standing(out, record)
    if reason is None:
        _tidy(out, leases)
        return Done(shard, out, "skipped", outcome)
    try:
        lease = leases.take(out)  # also removes the dead temporaries of this shard
    except Leased as e:
        if job.ordered:
            raise OutputError(f"{out}: being written by another run ({describe(e.holder)}); {job.ordered}, so "
                              "this run cannot go past it: rerun when that run has finished") from None
        return Done(shard, out, "leased", holder=describe(e.holder))
    try:
        again, outcome = standing(out, record)  # finished by another run meanwhile?
        if again is None:
            return Done(shard, out, "skipped", outcome)
        began = time.perf_counter()
        outcome = job.write(shard, out, record)
        return Done(shard, out, "written", outcome, redone=reason if out.is_file() and reason else "",
                    seconds=time.perf_counter() - began)
    finally:
        leases.give_back(lease)


def _tidy(out, leases) -> None:
    """A finished output's dead lease file or dead writer's temporaries (a kill after the rename)
    go, under the shard's lease; a live run's are never touched."""
    from .atomic import shard_temporaries
    from .leases import Leased, lease_path_for

    if not (lease_path_for(out).exists() or shard_temporaries(out)):
        return
    try:
        leases.give_back(leases.take(out))
    except Leased:
        pass


def with_outcome(record: dict, outcome: dict) -> dict:
    """The record to store: what produced the output plus what the job counted in it."""
    return {**record, OUTCOME: outcome}


def finish(summary, stats_json, began: float):
    """Set the run's seconds and write ``--stats-json`` (claimed by :func:`claim`)."""
    summary.seconds = time.perf_counter() - began
    if stats_json is not None:
        from .stats import write_stats

        write_stats(stats_json, summary.stats())
    return summary


def leased_lines(leased: Sequence[tuple[str, str]]) -> list[str]:
    """The summary's lines for shards left to another live run."""
    return [f"left to another run: {name} ({holder}); rerun or `phifilter status` to see it finish"
            for name, holder in leased]
