"""Draw a seed set: a uniform (optionally stratified) sample of documents from Parquet shards.

One streaming pass over any number of shards, with memory bounded by the sample size:

* Every document (after excerpting, see below) gets a key: a keyed BLAKE2 hash of its text,
  the key being the seed. The sample is the ``n`` documents with the smallest keys (bottom-k
  sampling), kept in a max-heap. Because the hash behaves like a uniform random number, this
  is a uniform sample without replacement; because it depends only on the text and the seed,
  the result does not depend on shard order, batch size or how the corpus is split.
* Identical texts get identical keys, so exact duplicates can never both be drawn: the sample
  is uniform over *distinct* texts.
* With ``stratify_by``, each value of that column keeps its own heap of ``n``; at the end the
  sample size is shared out among the values (``proportional`` to how many documents each
  has, or ``equal``), taking the smallest keys of each, which keeps every share uniform.
* Long documents are cut to at most ``max_chars`` characters at the last line break before the
  limit (the seed set's 2,500-character excerpts were made the same way).
* Documents that overlap an exclusion set (HumanEval, MBPP, ...; see :mod:`phifilter.exclude`)
  are never drawn. The full text is checked, not just the excerpt, and only for documents that
  would otherwise enter the sample, so the check costs little even on a huge corpus.

The output is one Parquet file (written atomically) with the input columns, the text column
holding the excerpt, rows in key order (a deterministic shuffle); an ``id`` column (a hash of
the excerpt) is added when the input has none, so label sets can be joined later.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from .corpus import (
    ShardWriter,
    check_text_column,
    find_input_files,
    input_roots,
    iter_batches,
    open_parquet,
    rows_from_batch,
    texts_from_array,
)
from .errors import InputError, OptionError, OutputError
from .chunking import excerpt
from .hashing import document_id
from .location import absolute, as_location

MAX_STRATA = 10_000
NULL_STRATUM = "(null)"
SHOWN_STRATA = 25  # rows of the per-stratum table printed in the summary


@dataclass
class SampleConfig:
    """Options of `phifilter sample`."""

    n: int = 5000
    text_column: str = "text"
    stratify_by: str | None = None
    allocation: str = "proportional"  # or "equal": the same share for every stratum
    max_chars: int | None = None  # cut longer texts at a line break (None: keep whole)
    seed: int = 0
    exclude: Sequence[str] = ()  # HumanEval/MBPP-like files whose content must not be drawn
    exclude_ngram: int = 13  # tokens in a run shared with an excluded text that disqualifies
    read_batch_rows: int = 2048


@dataclass
class SampleSummary:
    """What a sampling run did; ``str()`` is what the CLI prints."""

    output: str
    shards: int = 0
    rows_read: int = 0
    blank: int = 0  # empty or whitespace-only texts, never drawn
    duplicates: int = 0  # candidates dropped because the same text was already drawn
    excluded: int = 0  # candidates dropped because they overlap the exclusion set
    excerpted: int = 0  # drawn documents cut to max_chars
    drawn: int = 0
    exclusion_items: int = 0
    strata: dict = field(default_factory=dict)  # stratum -> (rows seen, drawn)
    seconds: float = 0.0
    text_bytes: int = 0  # UTF-8 bytes of the texts read
    per_shard: list = field(default_factory=list)  # {"name", "rows", "bytes", "seconds"} per shard read

    def __str__(self) -> str:
        lines = [
            f"sampled {self.drawn:,} of {self.rows_read:,} documents from {self.shards} shard(s) -> {self.output}",
            f"skipped: {self.blank:,} blank, {self.duplicates:,} duplicate, "
            f"{self.excluded:,} overlapping the exclusion set ({self.exclusion_items:,} items)",
            f"excerpted (cut at a line break): {self.excerpted:,}",
        ]
        if self.strata:
            lines.append(f"  {'stratum':<32} {'seen':>10} {'drawn':>7}")
            ranked = sorted(self.strata.items(), key=lambda kv: (-kv[1][0], kv[0]))
            for name, (seen, drawn) in ranked[:SHOWN_STRATA]:
                lines.append(f"  {name[:32]:<32} {seen:>10,} {drawn:>7,}")
            if len(ranked) > SHOWN_STRATA:
                rest = ranked[SHOWN_STRATA:]
                lines.append(f"  {f'({len(rest)} more)':<32} {sum(v[0] for _, v in rest):>10,} "
                             f"{sum(v[1] for _, v in rest):>7,}")
        return "\n".join(lines)


    def stats(self) -> dict:
        """Machine-readable statistics (``--stats-json``)."""
        from .stats import rate

        return {
            "command": "sample", "output": self.output, "seconds": round(self.seconds, 6),
            "shards": {"read": self.shards, "failed": 0},
            "rows": {"in": self.rows_read, "drawn": self.drawn, "blank": self.blank, "duplicates": self.duplicates,
                     "excluded": self.excluded, "excerpted": self.excerpted},
            "bytes": {"in": self.text_bytes}, "exclusion_items": self.exclusion_items,
            "docs_per_second": rate(self.rows_read, self.seconds),
            "strata": {k: {"seen": v[0], "drawn": v[1]} for k, v in sorted(self.strata.items())},
            "per_shard": list(self.per_shard), "failures": [],
        }


def text_key(text: str, seed: int) -> int:
    """The sampling key of a text: 128 bits of BLAKE2b keyed with the seed."""
    digest = hashlib.blake2b(
        text.encode("utf-8", "surrogatepass"), digest_size=16, key=seed.to_bytes(8, "little", signed=True)
    ).digest()
    return int.from_bytes(digest, "big")


class _Reservoir:
    """The ``capacity`` candidates with the smallest keys seen so far (a max-heap on key)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.heap: list[list] = []  # [-key, row payload]; payload filled in per batch
        self.keys: set[int] = set()
        self.seen = 0

    def would_take(self, key: int) -> bool:
        return len(self.heap) < self.capacity or key < -self.heap[0][0]

    def push(self, key: int, entry: list) -> None:
        if len(self.heap) < self.capacity:
            heapq.heappush(self.heap, entry)
        else:
            dropped = heapq.heapreplace(self.heap, entry)
            self.keys.discard(-dropped[0])
        self.keys.add(key)

    def smallest(self, k: int) -> list[list]:
        return heapq.nsmallest(k, self.heap, key=lambda e: -e[0])


def allocate(n: int, available: dict[str, int], weights: dict[str, float]) -> dict[str, int]:
    """Share ``n`` among strata in proportion to ``weights``, never beyond ``available``.

    Largest-remainder rounding (ties by name, so it is deterministic); a stratum that runs out
    passes what it cannot take to the others.
    """
    alloc = {s: 0 for s in available}
    remaining = min(n, sum(available.values()))
    while remaining > 0:
        active = [s for s in available if alloc[s] < available[s] and weights.get(s, 0) > 0]
        if not active:
            active = [s for s in available if alloc[s] < available[s]]
            weights = {s: 1.0 for s in active}
        total = sum(weights[s] for s in active)
        quota = {s: remaining * weights[s] / total for s in active}
        give = {s: math.floor(q) for s, q in quota.items()}
        leftover = remaining - sum(give.values())
        for s in sorted(active, key=lambda s: (-(quota[s] - give[s]), s))[:leftover]:
            give[s] += 1
        for s in active:
            take = min(give[s], available[s] - alloc[s])
            alloc[s] += take
            remaining -= take
    return alloc


def remove_stale_temporary(output: Path) -> None:
    """Delete the temporary that a killed run left for ``output`` (only if its process is gone).

    :class:`~phifilter.corpus.ShardWriter` names it ``.<name>.tmp-<pid>``; a live writer's
    temporary is left alone. No lock is held here, so on a store (where no pid can be checked)
    none is removed: a store's temporaries carry a random token, and a rerun's publish does not
    need them gone.
    """
    from .atomic import TMP_MARK, remove_stale_siblings

    remove_stale_siblings(output, marks=(TMP_MARK,), locked=False)


def _output_schema(shards, cfg: SampleConfig) -> pa.Schema:
    schemas = []
    for shard in shards:
        schema = open_parquet(shard.path).schema_arrow
        check_text_column(schema, cfg.text_column, shard.path)
        if cfg.stratify_by and cfg.stratify_by not in schema.names:
            raise InputError(
                f"{shard.path}: no column '{cfg.stratify_by}' to stratify by; columns are: {', '.join(schema.names)}"
            )
        schemas.append(schema.remove_metadata())
    try:
        schema = pa.unify_schemas(schemas)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(f"shards disagree on column types ({str(e).splitlines()[0]}); sample them separately") from None
    if "id" not in schema.names:
        schema = pa.schema([pa.field("id", pa.string())] + list(schema))
    from .provenance import RECORD_FORMAT, with_record

    return with_record(schema, {"format": RECORD_FORMAT, "command": "sample"})  # marks the file as ours


def _is_legacy_sample(path) -> bool:
    """A sample written before samples carried a run record: Parquet whose first column is ``id``."""
    from .outputs import has_column

    try:
        return has_column("id")(path) and open_parquet(path).schema_arrow.names[0] == "id"
    except (InputError, OSError):
        return False


def _check_output(inputs: Sequence[str], shards, output: Path) -> None:
    if output.suffix != ".parquet":
        raise OutputError(f"{output}: the sample is one Parquet file; give a name ending in .parquet")
    out = output.resolve()
    if any(out == s.path.resolve() for s in shards):
        raise OutputError(f"{output}: is one of the input shards; choose another --output")
    for spec in inputs:  # a later run of the same glob must not pick the sample up as a shard
        spec = os.fspath(spec)
        if any(c in "*?[" for c in spec) and glob.fnmatch.fnmatch(str(out), absolute(spec)):
            raise OutputError(f"{output}: matches the input pattern {spec}; write it elsewhere")
    for root, recursive in input_roots(inputs):
        if not recursive:
            continue
        root = root.resolve()
        if root in out.parents:
            raise OutputError(
                f"{output}: lies inside the input folder {root}, so a later run would read it as a shard; "
                "write it elsewhere"
            )


def sample_shards(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    config: SampleConfig | None = None,
    progress: bool = True,
    stats_json: str | os.PathLike | None = None,
) -> SampleSummary:
    """Write a sample of ``config.n`` documents from ``inputs`` to the Parquet file ``output``.

    ``stats_json``: also write the run's statistics there (:meth:`SampleSummary.stats`).
    """
    import time

    from .exclude import load_exclusions

    cfg = config or SampleConfig()
    _check_config(cfg)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [os.fspath(i) for i in inputs]
    shards = find_input_files(inputs)
    output = as_location(output)
    _check_output(inputs, shards, output)
    from .outputs import parquet_record_of
    from .shardjob import claim_output, finish

    claim_output(output, "a sample", inputs, parquet_record_of("sample", legacy=_is_legacy_sample), stats_json)
    schema = _output_schema(shards, cfg)
    exclusions = load_exclusions(cfg.exclude, ngram=cfg.exclude_ngram) if cfg.exclude else None

    summary = SampleSummary(output=str(output), shards=len(shards))
    began = time.perf_counter()
    summary.exclusion_items = len(exclusions) if exclusions else 0
    reservoirs = _read_shards(shards, cfg, exclusions, summary, progress)
    chosen = _draw(reservoirs, cfg, summary)
    rows = [e[1] for e in chosen]
    # Rows without an id (no such column, or a null) get a hash of their excerpt.
    fill_id = pa.types.is_string(schema.field("id").type) or pa.types.is_large_string(schema.field("id").type)
    for row in rows:
        if fill_id and row.get("id") is None:
            row["id"] = document_id(row[cfg.text_column])
    summary.excerpted = sum(1 for e in chosen if e[2])
    summary.drawn = len(rows)
    if not rows:
        raise InputError(f"{', '.join(inputs)}: no documents to sample (all blank, duplicate or excluded)")
    table = pa.Table.from_pylist(rows, schema=schema)
    remove_stale_temporary(output)
    with ShardWriter(output, schema) as writer:
        for b in table.to_batches(max_chunksize=cfg.read_batch_rows):
            writer.write_batch(b)
    return finish(summary, stats_json, began)  # its seconds, and --stats-json (claimed above, before any work)


def _check_config(cfg: SampleConfig) -> None:
    if cfg.n < 1:
        raise OptionError("-n must be at least 1")
    if cfg.allocation not in ("proportional", "equal"):
        raise OptionError(f"--allocation must be 'proportional' or 'equal', not '{cfg.allocation}'")
    if cfg.max_chars is not None and cfg.max_chars < 1:
        raise OptionError("--max-chars must be at least 1")


def _read_shards(shards, cfg: SampleConfig, exclusions, summary: SampleSummary, progress: bool) -> dict:
    """One pass over every shard: {stratum: reservoir of the documents with the smallest keys}."""
    import time

    from tqdm.auto import tqdm

    reservoirs: dict[str, _Reservoir] = {}
    total_rows = sum(open_parquet(s.path).metadata.num_rows for s in shards)
    bar = tqdm(total=total_rows, unit="doc", desc="sampling", disable=not progress)
    try:
        for shard in shards:
            shard_began, rows_before, bytes_before = time.perf_counter(), summary.rows_read, summary.text_bytes
            for batch in iter_batches(shard.path, batch_size=cfg.read_batch_rows):
                _sample_batch(batch, cfg, reservoirs, exclusions, summary)
                bar.update(batch.num_rows)
            summary.per_shard.append({"name": str(shard.name), "rows": summary.rows_read - rows_before,
                                      "bytes": summary.text_bytes - bytes_before,
                                      "seconds": round(time.perf_counter() - shard_began, 6)})
    finally:
        bar.close()
    return reservoirs


def _draw(reservoirs: dict, cfg: SampleConfig, summary: SampleSummary) -> list[list]:
    """Each stratum's share of ``cfg.n`` from its reservoir, in key order, a text in two strata once."""
    available = {s: len(r.heap) for s, r in reservoirs.items()}
    weights = {s: (float(r.seen) if cfg.allocation == "proportional" else 1.0) for s, r in reservoirs.items()}
    shares = allocate(cfg.n, available, weights)
    chosen = []
    for s, r in reservoirs.items():
        chosen.extend(r.smallest(shares[s]))
        if cfg.stratify_by:
            summary.strata[s] = (r.seen, shares[s])
    chosen.sort(key=lambda e: -e[0])
    unique = []
    for e in chosen:  # the same text in two strata: keep it once
        if unique and unique[-1][0] == e[0]:
            summary.duplicates += 1
        else:
            unique.append(e)
    return unique


def _sample_batch(batch: pa.RecordBatch, cfg: SampleConfig, reservoirs: dict, exclusions, summary: SampleSummary) -> None:
    texts = texts_from_array(batch.column(cfg.text_column))
    summary.text_bytes += sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    if cfg.stratify_by:
        strata = [NULL_STRATUM if v is None else str(v) for v in batch.column(cfg.stratify_by).to_pylist()]
    else:
        strata = None
    taken: list[tuple[int, list, str]] = []  # (row, heap entry, excerpt): payloads still to fill
    for i, text in enumerate(texts):
        summary.rows_read += 1
        if not text.strip():
            summary.blank += 1
            continue
        stratum = strata[i] if strata else ""
        res = reservoirs.get(stratum)
        if res is None:
            if len(reservoirs) >= MAX_STRATA:
                raise InputError(
                    f"column '{cfg.stratify_by}' has more than {MAX_STRATA:,} distinct values; "
                    "stratify by a coarser column"
                )
            res = reservoirs[stratum] = _Reservoir(cfg.n)
        res.seen += 1
        short = excerpt(text, cfg.max_chars)
        key = text_key(short, cfg.seed)
        if not res.would_take(key):
            continue
        if key in res.keys:
            summary.duplicates += 1
            continue
        if exclusions is not None and exclusions.matches(text):
            summary.excluded += 1
            continue
        entry = [-key, None, len(short) < len(text)]
        res.push(key, entry)
        taken.append((i, entry, short))
    if not taken:
        return
    # Materialise only the rows that entered a heap in this batch (most of a big corpus never does).
    rows = rows_from_batch(batch.take(pa.array([i for i, _, _ in taken], type=pa.int64())))
    for row, (_, entry, short) in zip(rows, taken):
        row[cfg.text_column] = short
        entry[1] = row
