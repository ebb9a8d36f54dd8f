"""The scoring flow: read -> the model's stages -> write, for a list of shards, each step a thread.

Every engine runs this; it is the only code that writes scored shards. Reading and writing
go through :mod:`phifilter.corpus` only (shard readers, ``ShardWriter``, ``PartialShard``), so
other formats and stores plug in there.

Exactly-once output: a shard is written under a hidden temporary name and renamed when whole.
A shard of more than one read batch is checkpointed batch by batch (``corpus.PartialShard``),
so a rerun after a kill continues inside it. An existing output is kept only when it has the
input's row count *and* its run record (:mod:`phifilter.provenance`: input fingerprint, model
identity, columns) matches this run's; otherwise it is redone and the outcome says why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from .. import provenance
from ..corpus import (
    PartialShard,
    Shard,
    ShardWriter,
    check_text_column,
    completed_rows,
    iter_batches,
    open_parquet,
    output_path,
    texts_from_array,
)
from ..errors import InputError, PhifilterError
from ..leases import Leased, LeaseSet, describe
from ..location import as_location
from ..pipeline import background, stage
from ..shardjob import tidy
from .batch import Batch, ShardEnd, ShardFailed, ShardLeased, ShardSkipped, ShardStart, check_scores, gives_probabilities
from .config import ScoreConfig
from .model import checkpoint_key, model_identity, model_stages
from .summary import ShardOutcome

OnOutcome = Callable[[ShardOutcome], None]


def output_schema(schema: pa.Schema, score_column: str, int_score_column: str | None = None,
                  extra: list | tuple = ()) -> pa.Schema:
    """The output's schema: the input's, plus the float32 score column (and the int8 int score),
    plus a ScorerSet's other columns (``extra``: (name, arrow type) pairs)."""
    out = schema.append(pa.field(score_column, pa.float32()))
    out = out.append(pa.field(int_score_column, pa.int8())) if int_score_column else out
    for name, kind in extra:
        out = out.append(pa.field(name, kind))
    return out


def extra_columns(clf) -> list:
    """The (name, arrow type) of the columns a model writes besides the score (a ScorerSet's)."""
    return list(getattr(clf, "extra_columns", ()) or ())


def wanted_record(clf, shard: Shard, cfg: ScoreConfig, identity: dict | None = None) -> dict:
    """The run record this run writes into ``shard``'s output."""
    return provenance.run_record(shard.path, model=identity if identity is not None else model_identity(clf),
                                 columns={"text": cfg.text_column, "score": cfg.score_column,
                                          **({"int_score": cfg.int_score_column} if cfg.int_score_column else {}),
                                          **({"scores": [n for n, _ in extra_columns(clf)]} if extra_columns(clf) else {})},
                                 command="score")


def existing_scores(out_path: Path, cfg: ScoreConfig) -> np.ndarray:
    """The score column of a finished output (to count a skipped shard into the summary)."""
    parts = [b.column(0).to_numpy(zero_copy_only=False) for b in iter_batches(out_path, 1 << 16, columns=[cfg.score_column])]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def output_state(out_path: Path, cfg: ScoreConfig, expected: int, record: dict) -> str | None:
    """None when the output is complete and current (skip it); else why it is (re)done:
    "" when it is absent or partial, or the stale reason ("input changed", ...)."""
    if completed_rows(out_path, cfg.score_column) != expected:
        return ""
    return provenance.stale_reason(out_path, record)


def skipped_outcome(shard: Shard, out_path: Path, cfg: ScoreConfig, threshold: float, bytes_in: int) -> ShardOutcome:
    """The outcome of a shard whose output was already complete (its scores count in the summary)."""
    start = time.perf_counter()
    outcome = ShardOutcome.of_scores(shard, "skipped", existing_scores(out_path, cfg), threshold, bytes_in=bytes_in)
    outcome.seconds = time.perf_counter() - start
    return outcome


def read_items(clf, shards: Iterable[Shard], out_dir: Path, cfg: ScoreConfig, leases: LeaseSet | None = None) -> Iterator:
    """Read stage: shard markers and batches for every shard (a complete one gives ShardSkipped,
    one whose lease another live run holds ShardLeased)."""
    identity = model_identity(clf)
    leases = leases if leases is not None else LeaseSet()
    for shard in shards:
        out_path = output_path(out_dir, shard, cfg.output_format)
        try:
            pf = open_parquet(shard.path)
            schema = check_input_schema(pf, shard, cfg, extra_columns(clf))
            expected = pf.metadata.num_rows
            record = wanted_record(clf, shard, cfg, identity)
            out_schema = provenance.with_record(output_schema(schema, cfg.score_column, cfg.int_score_column,
                                                              extra_columns(clf)), record)
            redone = output_state(out_path, cfg, expected, record)
            if redone is None:
                tidy(out_path, leases)  # a finished shard's leftovers, under its lease
                yield ShardSkipped(shard, out_path, bytes_in=record["input"]["size"])
                continue
            try:
                lease = leases.take(out_path)  # also deletes the dead temporaries of this shard
            except Leased as e:
                yield ShardLeased(shard, describe(e.holder))
                continue
            redone = output_state(out_path, cfg, expected, record)  # finished by another run meanwhile?
            if redone is None:
                leases.give_back(lease)
                yield ShardSkipped(shard, out_path, bytes_in=record["input"]["size"])
                continue
            writer = _open_writer(clf, shard, cfg, out_path, out_schema, expected, lease, leases)
            yield ShardStart(shard, out_path, out_schema, expected, writer, redone=redone,
                             bytes_in=record["input"]["size"], lease=lease)
            text_index = schema.get_field_index(cfg.text_column)
            for records in iter_batches(shard.path, cfg.read_batch_rows, parquet_file=pf, skip_rows=writer.rows):
                yield Batch(shard, records, texts_from_array(records.column(text_index)), id_column=cfg.id_column)
        except PhifilterError as e:
            if cfg.on_error == "raise":
                raise
            yield ShardFailed(shard, str(e).removeprefix(f"{shard.path}: "))
            continue
        yield ShardEnd(shard)


def check_input_schema(pf, shard: Shard, cfg: ScoreConfig, extra=()) -> pa.Schema:
    """The input's schema, after checking its text column and that the score columns (and the
    `extra` columns of further scorers) are new."""
    schema = pf.schema_arrow
    check_text_column(schema, cfg.text_column, shard.path)
    if cfg.score_column in schema.names:
        raise InputError(f"{shard.path}: already has a column '{cfg.score_column}'; choose another name with --score-column")
    if cfg.int_score_column and cfg.int_score_column in schema.names:
        raise InputError(f"{shard.path}: already has a column '{cfg.int_score_column}'; "
                         "choose another name with --int-score-column")
    for name, _ in extra:
        if name in schema.names:
            raise InputError(f"{shard.path}: already has a column '{name}'; name the scorer otherwise "
                             "(--model NAME=SPEC)")
    return schema


def _open_writer(clf, shard, cfg, out_path, out_schema, expected, lease, leases):
    """A shard of more than one read batch is checkpointed batch by batch; opening the checkpoint
    here tells the reader where an interrupted run stopped. The lease goes back on a failure."""
    try:
        if expected > cfg.read_batch_rows:
            return PartialShard(out_path, out_schema, key=checkpoint_key(clf, shard, cfg)).__enter__()
        return ShardWriter(out_path, out_schema)  # opened by the write stage
    except BaseException:
        leases.give_back(lease)
        raise


def _on_batches(fn: Callable[[Batch], Batch]) -> Callable:
    """A model stage as a pipeline step: batches go through ``fn``, shard markers pass by."""

    def step(item):
        return fn(item) if isinstance(item, Batch) else item

    return step


def scored_items(clf, shards: Iterable[Shard], out_dir: Path, cfg: ScoreConfig, leases: LeaseSet | None = None) -> Iterator:
    """read -> each of the model's stages, every one in its own thread; yields items in order."""
    depth = max(1, int(cfg.pipeline_depth))
    items = background(read_items(clf, shards, out_dir, cfg, leases), depth=depth, name="phifilter-read")
    for name, fn in model_stages(clf, cfg):
        items = stage(_on_batches(fn), items, depth=depth, name=f"phifilter-{name}")
    if cfg.int_score_column:  # the expected 0-5 score, rounded: a lookup in the model's score map
        def int_scores(batch: Batch) -> Batch:
            batch.int_scores = clf.int_scores(batch.scores)
            return batch

        items = stage(_on_batches(int_scores), items, depth=depth, name="phifilter-int-score")
    return items


class _OpenShard:
    """The write stage's state for the shard being written."""

    def __init__(self, start: ShardStart, cfg: ScoreConfig):
        self.start = start
        self.writer = start.writer
        self.began = time.perf_counter()
        self.scores: list[np.ndarray] = []
        self.tokens = 0
        self.resumed = 0
        self.embedded = self.embedded_of = 0  # documents embedded, of documents whose count the model gave
        if isinstance(self.writer, ShardWriter):
            self.writer.__enter__()
        if self.writer.rows:  # checkpointed rows of an interrupted run
            self.resumed = self.writer.rows
            self.scores.append(self.writer.checkpointed_column(cfg.score_column).to_numpy().astype(np.float32))


def write_items(items: Iterable, cfg: ScoreConfig, threshold: float, on_outcome: OnOutcome,
                on_rows: Callable[[int], None] | None = None, unit_interval: bool = True) -> None:
    """Write stage: appends the score column, writes each shard atomically, reports each shard's
    :class:`ShardOutcome` through ``on_outcome`` and written rows through ``on_rows``."""
    current: _OpenShard | None = None

    def close(exc: BaseException | None) -> None:
        nonlocal current
        shard, current = current, None
        try:
            if exc is None:
                shard.writer.__exit__(None, None, None)
            else:
                shard.writer.__exit__(type(exc), exc, None)
        finally:
            if shard.start.lease is not None:  # given back only once the output is in place (or dropped)
                shard.start.lease.release()

    try:
        for item in items:
            if isinstance(item, Batch):
                check_scores(item, unit_interval)  # nothing non-finite (or out of [0, 1]) is ever written
                ints = [] if item.int_scores is None else [pa.array(item.int_scores, pa.int8())]
                fields = list(current.start.schema)[item.records.num_columns + 1 + len(ints):]
                extra = [pa.array(item.columns[f.name], f.type) for f in fields]
                out = pa.RecordBatch.from_arrays([*item.records.columns, pa.array(item.scores, pa.float32()), *ints,
                                                  *extra],
                                                 schema=current.start.schema)
                current.writer.write_batch(out)
                current.scores.append(item.scores)
                current.tokens += item.tokens
                if item.embedded is not None:
                    current.embedded += int(item.embedded)
                    current.embedded_of += out.num_rows
                on_rows and on_rows(out.num_rows)
            elif isinstance(item, ShardStart):
                current = _OpenShard(item, cfg)
                if current.resumed and on_rows:
                    on_rows(current.resumed)
            elif isinstance(item, ShardEnd):
                start, shard = current.start, item.shard
                if current.writer.rows != start.expected_rows:
                    err = InputError(f"{shard.path}: footer says {start.expected_rows} rows but "
                                     f"{current.writer.rows} were read")
                    if cfg.on_error == "raise":
                        raise err
                    close(err)
                    on_outcome(_failed(shard, str(err).removeprefix(f"{shard.path}: ")))
                    continue
                done = current
                close(None)
                scores = np.concatenate(done.scores) if done.scores else np.zeros(0, np.float32)
                on_outcome(ShardOutcome.of_scores(
                    shard, "scored", scores, threshold, resumed=done.resumed, redone=start.redone,
                    seconds=time.perf_counter() - done.began, bytes_in=start.bytes_in, tokens=done.tokens,
                    embedded=done.embedded, embedded_of=done.embedded_of))
            elif isinstance(item, ShardSkipped):
                outcome = skipped_outcome(item.shard, item.out_path, cfg, threshold, item.bytes_in)
                on_outcome(outcome)
                on_rows and on_rows(outcome.rows)
            elif isinstance(item, ShardLeased):
                on_outcome(ShardOutcome(str(item.shard.path), str(item.shard.name), "leased", message=item.message))
            elif isinstance(item, ShardFailed):
                if current is not None and current.start.shard == item.shard:
                    close(InputError(item.message))  # drops the partial temporary
                if cfg.on_error == "raise":
                    raise InputError(f"{item.shard.path}: {item.message}")
                on_outcome(_failed(item.shard, item.message))
    except BaseException as e:
        if current is not None:
            close(e)
        raise


def _failed(shard: Shard, message: str) -> ShardOutcome:
    return ShardOutcome(str(shard.path), str(shard.name), "failed", message=message)


def score_shard_list(clf, shards: Iterable[Shard], out_dir: Path, cfg: ScoreConfig, on_outcome: OnOutcome,
                     on_rows: Callable[[int], None] | None = None) -> None:
    """Score ``shards`` into ``out_dir`` with ``clf`` (a ready model): the whole flow, one call.

    Whatever happens (a full disk, a bad shard, Ctrl-C), every stage thread has stopped when
    this returns or raises: closing the last stage stops the chain from the end. A thread left
    running inside torch or Arrow when the interpreter exits aborts the process ("terminate
    called without an active exception") instead of ending with the clean error.
    """
    leases = LeaseSet()  # every shard is written under its lease (phifilter.leases)
    items = scored_items(clf, shards, as_location(out_dir), cfg, leases)
    try:
        write_items(items, cfg, float(clf.threshold), on_outcome, on_rows, gives_probabilities(clf))
    finally:
        items.close()
        leases.close()  # whatever the read stage took for shards it never started
