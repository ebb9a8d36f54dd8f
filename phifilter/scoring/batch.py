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


def check_scores(batch: Batch) -> None:
    """Refuse a scored batch holding a score that is not a finite number in [0, 1] (a damaged or
    crafted model): ModelError, raised before the batch reaches the writer, so nothing non-finite
    is ever published."""
    from ..errors import ModelError

    scores = np.asarray(batch.scores, dtype=np.float64)
    bad = ~(np.isfinite(scores) & (scores >= 0) & (scores <= 1))
    if len(scores) != batch.records.num_rows or bad.any():
        first = int(np.argmax(bad)) if bad.any() else len(scores)
        what = (f"{int(bad.sum())} scores that are not finite numbers in [0, 1] (the first: {scores[first]!r})"
                if bad.any() else f"{len(scores)} scores for {batch.records.num_rows} rows")
        raise ModelError(f"{batch.shard.path}: the model gave {what}; this shard was not written. The model "
                         "folder is damaged or was crafted: retrain or restore it")


@dataclass
class ShardStart:
    shard: Shard
    out_path: Path
    schema: pa.Schema  # of the output: the input's plus the score column (and the run record)
    expected_rows: int
    writer: Any  # corpus.ShardWriter (opened by the write stage) or an entered corpus.PartialShard
    redone: str = ""  # why an existing output is replaced ("input changed", ...), or ""
    bytes_in: int = 0


@dataclass
class ShardEnd:
    shard: Shard


@dataclass
class ShardSkipped:
    shard: Shard
    out_path: Path
    bytes_in: int = 0


@dataclass
class ShardFailed:
    shard: Shard
    message: str
