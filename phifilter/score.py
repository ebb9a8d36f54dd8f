"""The streaming scorer: Parquet shards in, the same shards plus ``edu_score`` out.

For every input shard an output shard of the same relative name is written with every input
row, in order, every input column unchanged, plus a float32 score column. Record batches are
read in a background thread while the previous batch is embedded, so memory stays bounded by
the batch size whatever the shard or corpus size.

Exactly-once output: a shard is written under a hidden temporary name and renamed when whole;
a rerun skips shards whose output exists with the input's row count, and redoes the others.
A shard of more than one read batch is checkpointed batch by batch (corpus.PartialShard), so
a rerun after a kill continues inside it instead of embedding its finished rows again.
A lock file keeps two runs from writing the same output folder.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from .classifier import EduClassifier
from .corpus import (
    OutputLock,
    PartialShard,
    Shard,
    ShardWriter,
    check_output_dir,
    check_text_column,
    completed_rows,
    find_shards,
    input_fingerprint,
    iter_batches,
    open_parquet,
    remove_stale_temporaries,
    texts_from_array,
)
from .errors import InputError, PhifilterError

HISTOGRAM_BINS = 10


@dataclass
class ScoreConfig:
    """Options of `phifilter score` (the defaults suit a CPU; raise batch sizes on a GPU)."""

    text_column: str = "text"
    score_column: str = "edu_score"
    read_batch_rows: int = 2048  # rows per Arrow batch read (and per output row group)
    embed_batch_size: int = 64  # documents per forward pass of the embedder
    max_length: int | None = None  # None: the model's own
    device: str = "auto"
    on_error: str = "raise"  # or "skip": report a bad shard and go on with the rest
    embedder_revision: str | None = None  # hub revision to load the embedder at (default: the model's)
    embedder_sha256: dict | None = None  # {file: sha256} the embedder's files must match


@dataclass
class ScoreSummary:
    """What a scoring run did; ``str()`` gives the text the CLI prints at the end."""

    threshold: float
    shards_scored: int = 0
    shards_skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    rows_scored: int = 0
    rows_skipped: int = 0
    rows_resumed: int = 0  # rows of partly scored shards taken from an interrupted run's checkpoints
    seconds: float = 0.0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(HISTOGRAM_BINS, dtype=np.int64))
    above_threshold: int = 0  # rows with a score >= threshold (exact, not from the bins)

    @property
    def rows(self) -> int:
        return self.rows_scored + self.rows_skipped + self.rows_resumed

    @property
    def docs_per_second(self) -> float:
        return self.rows_scored / self.seconds if self.seconds > 0 else 0.0

    def add_scores(self, scores: np.ndarray) -> None:
        idx = np.minimum((scores * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
        self.histogram += np.bincount(idx, minlength=HISTOGRAM_BINS)
        self.above_threshold += int((scores >= self.threshold).sum())

    def __str__(self) -> str:
        lines = [
            f"shards: {self.shards_scored} scored, {self.shards_skipped} already complete, "
            f"{len(self.failures)} failed",
            f"rows: {self.rows:,} ({self.rows_scored:,} scored in {self.seconds:.1f} s, "
            f"{self.docs_per_second:,.1f} docs/s"
            + (f", {self.rows_resumed:,} resumed from checkpoints" if self.rows_resumed else "") + ")",
        ]
        total = int(self.histogram.sum())
        if total:
            lines.append("edu_score histogram:")
            peak = max(int(self.histogram.max()), 1)
            for i, count in enumerate(self.histogram):
                bar = "#" * int(round(30 * count / peak))
                lines.append(f"  {i / HISTOGRAM_BINS:.1f}-{(i + 1) / HISTOGRAM_BINS:.1f} {bar:<30} {count:,}")
            lines.append(
                f"above threshold {self.threshold:g}: {self.above_threshold:,} of {total:,} "
                f"({100 * self.above_threshold / total:.1f}%)"
            )
        for path, error in self.failures:
            lines.append(f"failed: {path}: {error}")
        return "\n".join(lines)


def _prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """Run ``it`` in a thread, ``depth`` items ahead (Arrow decoding releases the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker():
        try:
            for item in it:
                if stop.is_set():
                    return
                q.put((True, item))
            q.put((True, done))
        except BaseException as e:  # re-raised in the consumer
            q.put((False, e))

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a worker waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)


def output_schema(schema: pa.Schema, score_column: str) -> pa.Schema:
    return schema.append(pa.field(score_column, pa.float32()))


def score_table_batches(
    clf: EduClassifier,
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    text_column: str,
    score_column: str,
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Append the score column to each batch (the core loop, shared by every engine)."""
    out_schema = output_schema(schema, score_column)
    text_index = schema.get_field_index(text_column)
    for batch in batches:
        texts = texts_from_array(batch.column(text_index))
        scores = clf.edu_score(texts) if texts else np.zeros(0, np.float32)
        yield pa.RecordBatch.from_arrays([*batch.columns, pa.array(scores, pa.float32())], schema=out_schema), scores


def _read_scores(path: Path, column: str) -> np.ndarray:
    pf = open_parquet(path)
    return pf.read(columns=[column]).column(0).to_numpy(zero_copy_only=False).astype(np.float32)


def checkpoint_key(clf: EduClassifier, shard: Shard, cfg: ScoreConfig) -> dict:
    """What must be unchanged for a rerun to reuse an interrupted run's checkpointed rows."""
    return {
        "input": input_fingerprint(shard.path),
        "text_column": cfg.text_column,
        "score_column": cfg.score_column,
        # A classifier that was not loaded from a folder cannot be recognised in another process.
        "forest_sha256": getattr(clf, "forest_sha256_", None) or f"unsaved-{os.getpid()}-{id(clf)}",
        "embedder_sha256": clf.embedder_.hashes,
        "max_length": clf.embedder_.max_length,
    }


def score_shard(clf: EduClassifier, shard: Shard, out_path: Path, cfg: ScoreConfig, on_rows=None,
                on_resumed=None) -> np.ndarray | None:
    """Score one shard into ``out_path``; returns its scores, or None if it was already complete.

    ``on_rows(n)`` is called as rows are scored, ``on_resumed(n)`` once with the rows taken
    from an interrupted run's checkpoints (they are part of the returned scores).
    """
    pf = open_parquet(shard.path)
    schema = pf.schema_arrow
    check_text_column(schema, cfg.text_column, shard.path)
    if cfg.score_column in schema.names:
        raise InputError(
            f"{shard.path}: already has a column '{cfg.score_column}'; "
            "choose another name with --score-column"
        )
    expected = pf.metadata.num_rows
    out_schema = output_schema(schema, cfg.score_column)
    if completed_rows(out_path, cfg.score_column) == expected:
        PartialShard(out_path, out_schema, key={}).discard()  # a kill after the rename left it
        return None
    if expected > cfg.read_batch_rows:
        writer = PartialShard(out_path, out_schema, key=checkpoint_key(clf, shard, cfg))
    else:
        writer = ShardWriter(out_path, out_schema)
    collected = []
    with writer:
        if writer.rows:
            resumed = writer.checkpointed_column(cfg.score_column)
            collected.append(resumed.to_numpy().astype(np.float32))
            if on_resumed:
                on_resumed(writer.rows)
            if on_rows:
                on_rows(writer.rows)
        batches = _prefetch(iter_batches(shard.path, cfg.read_batch_rows, parquet_file=pf, skip_rows=writer.rows))
        for out_batch, scores in score_table_batches(clf, batches, schema, cfg.text_column, cfg.score_column):
            writer.write_batch(out_batch)
            collected.append(scores)
            if on_rows:
                on_rows(out_batch.num_rows)
        if writer.rows != expected:
            raise InputError(f"{shard.path}: footer says {expected} rows but {writer.rows} were read")
    return np.concatenate(collected) if collected else np.zeros(0, np.float32)


def load_model(model, cfg: ScoreConfig) -> EduClassifier:
    if isinstance(model, EduClassifier):
        return model
    return EduClassifier.load(
        model, device=cfg.device, batch_size=cfg.embed_batch_size, max_length=cfg.max_length,
        embedder_revision=cfg.embedder_revision, embedder_sha256=cfg.embedder_sha256,
    )


def score_shards(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    model: str | os.PathLike | EduClassifier | None = None,
    config: ScoreConfig | None = None,
    progress: bool = False,
    **options,
) -> ScoreSummary:
    """Score every shard under ``inputs`` into ``output_dir`` (resumable, atomic per shard).

    ``model`` is a model folder, a fitted :class:`EduClassifier`, or None for the bundled
    default. Keyword ``options`` override fields of :class:`ScoreConfig`.
    """
    from tqdm import tqdm

    cfg = config or ScoreConfig()
    for key, value in options.items():
        if not hasattr(cfg, key):
            raise TypeError(f"score_shards() got an unexpected option {key!r}")
        setattr(cfg, key, value)
    if cfg.on_error not in ("raise", "skip"):
        raise InputError(f"--on-error {cfg.on_error}: expected 'raise' or 'skip'")
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    shards = find_shards(specs)
    out_dir = check_output_dir(specs, output_dir)
    OutputLock.check_free(out_dir)  # another run writing here: say so now, not after loading the model
    clf = load_model(model, cfg)
    clf._check_fitted()
    clf._check_embedder()  # load the embedder and check its hashes before any output is written
    summary = ScoreSummary(threshold=float(clf.threshold))
    # Check every footer and schema before any work, so a bad shard fails in the first second,
    # not hours into a run.
    total_rows, good = 0, []
    for s in shards:
        try:
            pf = open_parquet(s.path)
            check_text_column(pf.schema_arrow, cfg.text_column, s.path)
        except PhifilterError as e:
            if cfg.on_error == "raise":
                raise
            summary.failures.append((str(s.path), str(e).removeprefix(f"{s.path}: ")))
            continue
        total_rows += pf.metadata.num_rows
        good.append(s)
    with OutputLock(out_dir), tqdm(
        total=total_rows, unit="doc", unit_scale=True, desc="scoring", disable=not progress, smoothing=0.1
    ) as bar:
        remove_stale_temporaries(out_dir)
        for shard in good:
            out_path = out_dir / shard.name
            start = time.perf_counter()
            resumed = []
            try:
                scores = score_shard(clf, shard, out_path, cfg, on_rows=bar.update, on_resumed=resumed.append)
            except PhifilterError as e:
                if cfg.on_error == "raise":
                    raise
                summary.failures.append((str(shard.path), str(e).removeprefix(f"{shard.path}: ")))
                continue
            if scores is None:
                existing = _read_scores(out_path, cfg.score_column)
                summary.shards_skipped += 1
                summary.rows_skipped += len(existing)
                summary.add_scores(existing)
                bar.update(len(existing))
            else:
                summary.seconds += time.perf_counter() - start
                summary.shards_scored += 1
                summary.rows_resumed += sum(resumed)
                summary.rows_scored += len(scores) - sum(resumed)
                summary.add_scores(scores)
    return summary
