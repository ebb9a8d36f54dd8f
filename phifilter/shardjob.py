"""One shard job: the run lifecycle every per-shard command shares, written once.

A command declares a :class:`ShardJob`: which existing files in the output folder are its own
(``owns``), where a shard's output goes (``output``), the run record an output must carry to
stand for this run (``record``) and how one shard is written (``write``: the data only). The
runner does the rest the same way for every command (docs/design.md, "One shard job"):

1. :func:`claim`: find the shards, keep this task's share (``--task-index/--num-tasks``),
   refuse an output folder holding files the command did not write and a ``--stats-json``
   that is an input or not ours, before any work;
2. :func:`run_shards`, per shard in corpus order: an output whose record matches is skipped
   (the counts stored with it still count); else the shard's lease (:mod:`phifilter.leases`)
   is taken, the record checked again, the shard written atomically with its record and
   counts, and the lease given back. A shard a live run holds is left to it and reported, or,
   for a job whose shards depend on the ones before them (``ordered``), stops the run with
   one error;
3. :func:`finish`: the run's seconds and ``--stats-json``.

``sample``, ``label`` and ``report`` write one file, not a folder of shards: they claim it
(and ``--stats-json``) with :func:`claim_output` before any work; sample and report end with
:func:`finish`.

``score`` uses :func:`claim` and :func:`finish` around its engines, whose streaming flow
(:mod:`phifilter.scoring.flow`) takes the same leases per shard, with row-group checkpoints.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .errors import OutputError

OUTCOME = "outcome"  # the record's key for what the job counted (stored, never compared)


@dataclass
class Claimed:
    """What :func:`claim` checked: the input specs, every shard, this task's shards, the folder."""

    specs: list
    every: list
    shards: list
    out_dir: object
    task: tuple = (0, 1)


@dataclass
class Done:
    """One shard's fate: ``status`` "written", "skipped" (its output stood) or "leased" (left to
    the live run ``holder``); ``outcome``: what the job counted; ``redone``: why an existing
    output was written again."""

    shard: object
    status: str
    outcome: dict = field(default_factory=dict)
    redone: str = ""
    holder: str = ""
    seconds: float = 0.0


class ShardJob:
    """A per-shard command: the base class runs the lifecycle, the subclass decides the data."""

    command = "job"
    desc = "shards"  # the progress bar's label
    ordered: str | None = None  # why a shard depends on the ones before it (a leased one stops the run)

    @classmethod
    def owns(cls, path) -> bool:
        """Is this existing file in the output folder ours (a run record naming the command)?"""
        from .outputs import parquet_record_of

        return parquet_record_of(cls.command)(path)

    def output(self, out_dir, shard):
        from .corpus import output_path

        return output_path(out_dir, shard)

    def record(self, shard) -> dict:
        raise NotImplementedError

    def write(self, shard, out, record: dict) -> dict:
        """Write ``out`` atomically with ``record`` (and its counts) in its metadata; return the counts."""
        raise NotImplementedError

    def seen(self, done: Done) -> None:
        """Each shard's fate, in corpus order (fold it into the command's summary)."""


def claim(inputs, output_dir, owns, what: str, stats_json=None, task: tuple = (None, None)) -> Claimed:
    """Find the shards, keep task ``task``'s share and claim the output folder and ``stats_json``.

    ``task``: (``--task-index``, ``--num-tasks``), either None for Slurm's array variables, else
    0 of 1 (:func:`phifilter.scoring.partition.task_of`)."""
    from .corpus import check_output_dir, find_shards
    from .outputs import claim_folder, claim_stats
    from .scoring.partition import partition_shards, task_of

    task = task_of(*task)  # an impossible --task-index is refused before anything else
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    every = find_shards(specs)
    out_dir = check_output_dir(specs, output_dir)
    claim_folder(out_dir, owns, what)
    claim_stats(stats_json, specs, output_dir=out_dir)  # never an input, a shard or a foreign file
    return Claimed(specs, every, partition_shards(every, *task), out_dir, tuple(task))


def claim_output(output, what: str, inputs, is_ours, stats_json=None, others=()) -> None:
    """:func:`claim` for a command that writes one file (sample, label, report): the file ``output``
    (a foreign file there, an input or one of ``others`` refused) and ``stats_json`` (never an
    input, the output, one of ``others`` or a file that is not run statistics), before any work."""
    from .outputs import claim_file, claim_stats

    claim_file(output, what, inputs=inputs, is_ours=is_ours, others=list(others))
    claim_stats(stats_json, inputs, others=[output, *others])


def standing(out, wanted: dict) -> tuple[str | None, dict]:
    """(None, stored counts) when the output ``out`` was made with this run's record; else
    (why it is written: "" when absent, else the stale reason, {})."""
    from .provenance import read_record, stale_reason

    if not out.is_file():
        return "", {}
    existing = read_record(out) or {}
    outcome = existing.pop(OUTCOME, {})
    reason = stale_reason(existing, wanted)
    return reason, (outcome if reason is None else {})


def with_outcome(record: dict, outcome: dict) -> dict:
    """The record to store: what produced the output, plus what the job counted in it."""
    return {**record, OUTCOME: outcome}


def run_shards(job: ShardJob, claimed: Claimed, progress: bool = False) -> None:
    """Write every shard of ``claimed`` that has no standing output, each under its lease."""
    from tqdm import tqdm

    from .leases import LeaseSet

    leases = LeaseSet()
    try:
        for shard in tqdm(claimed.shards, unit="shard", desc=job.desc, disable=not progress):
            job.seen(_one(job, shard, job.output(claimed.out_dir, shard), leases))
    finally:
        leases.close()


def _one(job: ShardJob, shard, out, leases) -> Done:
    from .leases import Leased, describe

    record = job.record(shard)
    reason, outcome = standing(out, record)
    if reason is None:
        tidy(out, leases)
        return Done(shard, "skipped", outcome)
    try:
        lease = leases.take(out)  # also removes the dead temporaries of this shard
    except Leased as e:
        if job.ordered:
            raise OutputError(f"{out}: being written by another run ({describe(e.holder)}); {job.ordered}, so "
                              "this run cannot go past it: rerun when that run has finished") from None
        return Done(shard, "leased", holder=describe(e.holder))
    try:
        again, outcome = standing(out, record)  # finished by another run meanwhile?
        if again is None:
            return Done(shard, "skipped", outcome)
        began = time.perf_counter()
        outcome = job.write(shard, out, record)
        return Done(shard, "written", outcome, redone=reason, seconds=time.perf_counter() - began)
    finally:
        leases.give_back(lease)


def tidy(out, leases) -> None:
    """A finished output's leftovers (a dead lease, a dead writer's temporaries, score's
    checkpoint folder: a kill after the rename) go, under the shard's lease; a live run's
    files are never touched."""
    from .atomic import shard_temporaries
    from .corpus import PartialShard, partial_dir_for
    from .leases import Leased, lease_path_for

    if not (lease_path_for(out).exists() or shard_temporaries(out) or partial_dir_for(out).is_dir()):
        return
    try:
        lease = leases.take(out)  # taking it deletes the dead temporaries
    except Leased:
        return
    try:
        PartialShard(out, None, key={}).discard()
    finally:
        leases.give_back(lease)


def finish(summary, stats_json, began: float):
    """Set the run's seconds and write ``--stats-json`` (claimed by :func:`claim`)."""
    summary.seconds = time.perf_counter() - began
    if stats_json is not None:
        from .stats import write_stats

        write_stats(stats_json, summary.stats())
    return summary


def leased_lines(leased) -> list[str]:
    """The summary's lines for shards left to another live run: (name, holder) pairs."""
    return [f"left to another run: {name} ({holder}); rerun or `phifilter status` to see it finish"
            for name, holder in leased]
