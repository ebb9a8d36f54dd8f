"""`phifilter suggest`: the documents most worth sending to the LLM next (active learning).

Every document of the shards is scored; the ``n`` wanted are the ones the head is least
sure of (a forest: the spread of its trees' votes; other heads: closeness to the decision
point) plus a random share drawn uniformly from the rest, so the next labels also cover what
the model is sure, and maybe wrong, about. One pass, memory bounded by ``n`` rows: a heap keeps the
most disputed rows and a second heap the rows with the smallest random keys. The same
inputs and ``seed`` give the same file.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .corpus import check_text_column, find_input_files, iter_batches, open_parquet, rows_from_batch, texts_from_array
from .location import as_location
from .errors import InputError, OptionError


@dataclass
class SuggestConfig:
    """Options of `phifilter suggest`."""

    n: int = 500  # documents to pick
    random_share: float = 0.1  # share of n drawn at random instead of by disagreement
    seed: int = 0  # of the random share
    text_column: str = "text"
    read_batch_rows: int = 2048
    device: str = "auto"


@dataclass
class SuggestSummary:
    rows_seen: int = 0
    picked_disagreement: int = 0
    picked_random: int = 0
    output: str = ""

    def __str__(self) -> str:
        return (f"read {self.rows_seen:,} documents; wrote {self.picked_disagreement + self.picked_random:,} to "
                f"{self.output} ({self.picked_disagreement:,} most disputed, {self.picked_random:,} random)")


def suggest(model, inputs, output, config: SuggestConfig | None = None, progress: bool = False,
            **options) -> SuggestSummary:
    """Write ``output`` (Parquet): the chosen rows with every input column plus ``edu_score``,
    ``disagreement``, ``suggest_reason`` ('disagreement' or 'random'), ``source_shard`` and ``source_row``.
    ``options`` (n=..., seed=...) override fields of ``config``."""
    from tqdm import tqdm

    from .classifier import EduClassifier
    from .featurizer import blank_mask

    cfg = dataclasses.replace(config or SuggestConfig(), **options)
    if not 0 <= cfg.random_share <= 1:
        raise OptionError(f"--random-share {cfg.random_share}: expected a number in [0, 1]")
    text_column = cfg.text_column
    out, shards = _check_paths(inputs, output, text_column)
    clf = model if isinstance(model, EduClassifier) else EduClassifier.load(model, device=cfg.device)
    clf.check_embedder()
    n_random = int(round(cfg.n * cfg.random_share))
    picks = _Picks(cfg.n, cfg.n - n_random)
    rng = np.random.default_rng(cfg.seed)
    summary = SuggestSummary(output=str(out))
    schema = None
    with tqdm(unit="doc", desc="suggesting", disable=not progress) as bar:
        for shard in shards:
            for batch in iter_batches(shard.path, cfg.read_batch_rows):
                texts = texts_from_array(batch.column(batch.schema.get_field_index(text_column)))
                E = clf.embed_documents(texts)
                score = clf.score_texts_embedded(texts, E)
                spread = clf.disagreement(E)
                spread[blank_mask(texts)] = -1.0  # blank documents are not worth a label
                keys = rng.random(len(texts))
                rows = rows_from_batch(batch)
                schema = schema or batch.schema
                for i, row in enumerate(rows):
                    row.update(edu_score=float(score[i]), disagreement=float(spread[i]),
                               source_shard=str(shard.name), source_row=int(summary.rows_seen + i))
                    picks.offer(row, float(spread[i]), float(keys[i]))
                summary.rows_seen += len(rows)
                bar.update(len(rows))
    top, extra = picks.chosen(n_random)
    summary.picked_disagreement, summary.picked_random = len(top), len(extra)
    if schema is None:
        raise InputError("the inputs hold no rows")
    _write(out, schema, [dict(row, suggest_reason="disagreement") for row in top]
           + [dict(row, suggest_reason="random") for row in extra])
    return summary


def _check_paths(inputs, output, text_column: str):
    """(the output location, the input shards), once the output is claimed and every input has
    the text column: checked before the model loads (10-20 s)."""
    from .outputs import claim_file

    out = as_location(output)  # a local path or a URL (written through ShardWriter either way)
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    shards = find_input_files(specs)
    if any(s.path.resolve() == out.resolve() for s in shards):
        raise InputError(f"{out}: the output may not be one of the inputs")
    claim_file(out, "the suggestions", inputs=specs)  # not into an input folder; writable
    for s in shards:
        check_text_column(open_parquet(s.path).schema_arrow, text_column, s.path)
    return out, shards


class _Picks:
    """In one pass: the ``n_disputed`` rows the model's parts disagree on most, and the ``n`` rows
    with the smallest random keys (the random picks are drawn from them, leaving out the disputed)."""

    def __init__(self, n: int, n_disputed: int):
        self.n, self.n_disputed = n, n_disputed
        self.disputed: list = []  # min-heap of (disagreement, -order, row): the n_disputed largest
        self.randoms: list = []  # min-heap of (-key, order, row): the n smallest random keys
        self.order = 0

    def offer(self, row: dict, spread: float, key: float) -> None:
        item = (spread, -self.order, row)
        if len(self.disputed) < self.n_disputed:
            heapq.heappush(self.disputed, item)
        elif self.n_disputed and item[:2] > self.disputed[0][:2]:
            heapq.heapreplace(self.disputed, item)
        r_item = (-key, self.order, row)
        if len(self.randoms) < self.n:
            heapq.heappush(self.randoms, r_item)
        elif r_item[:2] > self.randoms[0][:2]:
            heapq.heapreplace(self.randoms, r_item)
        self.order += 1

    def chosen(self, n_random: int) -> tuple[list[dict], list[dict]]:
        """(the disputed rows, most disputed first; up to ``n_random`` other rows, by random key)."""
        top = sorted(self.disputed, key=lambda t: (-t[0], -t[1]))
        taken = {-t[1] for t in top}
        extra = [t for t in sorted(self.randoms, key=lambda t: (-t[0], t[1])) if t[1] not in taken][:n_random]
        return [t[2] for t in top], [t[2] for t in extra]


def _write(out, schema: pa.Schema, picked: list[dict]) -> None:
    """The picked rows with the input columns and the added ones, as one Parquet file."""
    from .corpus import ShardWriter

    added = [pa.field("edu_score", pa.float32()), pa.field("disagreement", pa.float32()),
             pa.field("source_shard", pa.string()), pa.field("source_row", pa.int64()),
             pa.field("suggest_reason", pa.string())]
    names = {f.name for f in added}
    out_schema = pa.schema([f for f in schema if f.name not in names] + added)
    try:
        table = pa.Table.from_pylist(picked, schema=out_schema)
    except (pa.ArrowException, KeyError) as e:
        raise InputError(f"the input shards have different columns, cannot write one file ({e})") from None
    with ShardWriter(out, out_schema) as writer:
        for b in table.to_batches():
            writer.write_batch(b)
