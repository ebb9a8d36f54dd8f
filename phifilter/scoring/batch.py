"""The items that flow through the scoring stages: a :class:`Batch` of documents, and shard markers.

One stream of items runs through all shards, so the model never waits at a shard boundary:
:class:`ShardStart` opens an output, each :class:`Batch` is scored, :class:`ShardEnd` puts the
finished output into place, :class:`ShardSkipped` stands for a shard already complete and
:class:`ShardFailed` drops a bad shard's partial output (``--on-error skip``). Model stages
touch batches only; every other item passes through them unchanged.

The stage protocol (what a model may declare, see :func:`.model.model_stages`): a list of
``(name, fn)`` pairs, each ``fn(batch) -> batch`` run in its own thread, in order. A stage
may set ``batch.work`` (anything it hands the next stage: tokenised features, embeddings),
``batch.tokens`` (tokens read, for the statistics); the last one sets ``batch.scores``
(float32, one per row).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..corpus import Shard


@dataclass
class Batch:
    """Rows of one shard on their way through the model."""

    shard: Shard
    records: pa.RecordBatch  # the input rows, every column, unchanged
    texts: list[str]  # the text column as Python strings (null -> "")
    id_column: str | None = None  # where a model that caches by document id finds the ids
    work: Any = None  # what one model stage hands the next
    tokens: int = 0
    scores: np.ndarray | None = None
    int_scores: np.ndarray | None = None  # --int-score-column: set after the model stages
    columns: dict | None = None  # a ScorerSet's other columns: {name: array}, in its extra_columns order
    embedded: int | None = None  # documents the model sent to its embedder (None: the model does not say)


def check_scores(batch: Batch, unit_interval: bool = True) -> None:
    """Refuse a scored batch holding a score that is not a finite number (in [0, 1] when the
    model's scores are probabilities, ``unit_interval``; a foreign regression or an ensemble's
    0-20 scale is checked for finiteness only), in its score column or any other scorer's
    column: a damaged or crafted model. ModelError, raised before the batch reaches the writer,
    so nothing non-finite is ever published."""
    from ..errors import ModelError

    columns = {"score": batch.scores, **(batch.columns or {})}
    for name, values in columns.items():
        scores = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(scores)
        if unit_interval and name == "score":
            bad |= (scores < 0) | (scores > 1)
        if len(scores) != batch.records.num_rows or bad.any():
            first = int(np.argmax(bad)) if bad.any() else len(scores)
            span = "finite numbers in [0, 1]" if unit_interval and name == "score" else "finite numbers"
            what = (f"{int(bad.sum())} scores that are not {span} (the first: {scores[first]!r})"
                    if bad.any() else f"{len(scores)} scores for {batch.records.num_rows} rows")
            where = "" if name == "score" else f" in column '{name}'"
            raise ModelError(f"{batch.shard.path}: the model gave {what}{where}; this shard was not written. "
                             "The model folder is damaged or was crafted: retrain or restore it")


def gives_probabilities(model) -> bool:
    """Whether a model's (or a scorer set's first member's) scores are probabilities in [0, 1]:
    ours and classifiers are; a regression or an ensemble says otherwise with ``unit_interval``."""
    return bool(getattr(getattr(model, "primary", model), "unit_interval", True))


@dataclass
class ShardStart:
    shard: Shard
    out_path: Path
    schema: pa.Schema  # of the output: the input's plus the score column (and the run record)
    expected_rows: int
    writer: Any  # corpus.ShardWriter (opened by the write stage) or an entered corpus.PartialShard
    redone: str = ""  # why an existing output is replaced ("input changed", ...), or ""
    bytes_in: int = 0
    lease: Any = None  # the shard's leases.ShardLease, given back when the shard is closed


@dataclass
class ShardEnd:
    shard: Shard


@dataclass
class ShardSkipped:
    shard: Shard
    out_path: Path
    bytes_in: int = 0


@dataclass
class ShardLeased:
    """Another live run holds the shard's lease: this run leaves the shard to it."""

    shard: Shard
    message: str


@dataclass
class ShardFailed:
    shard: Shard
    message: str
