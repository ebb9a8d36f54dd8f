"""Keep the best documents of scored shards: above a score threshold, or the top fraction.

Filtering runs shard by shard with polars' streaming engine, so memory does not grow with the
corpus. ``top_fraction`` is turned into a cut-off with one pass over the score column that
only keeps a fine histogram (2**20 bins), so it is exact to one part in a million; rows that
fall in the boundary bin are kept in corpus order until the requested count is reached, which
makes the kept count exact and the result deterministic.

Each finished output shard is recorded in ``_phifilter_filter.json`` in the output folder
(written atomically) with its run record (``phifilter.provenance``: the input's fingerprint,
the columns and the cut-off), so a rerun with the same settings skips what is done and redoes,
saying why, a shard whose input changed. Rows whose score is NaN or null are never kept; they
are counted and reported, and left out of the ``top_fraction`` base.

Local Parquet goes through polars; JSON Lines, save_to_disk shards and shards in an object
store are streamed through :func:`phifilter.corpus.iter_batches` and written in their own format
by :class:`phifilter.corpus.ShardWriter`, with the same cut-off and the same kept rows.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .atomic import output_error, remove_stale_temporaries, write_atomic, write_text
from .corpus import (
    OutputLock,
    ShardWriter,
    check_output_dir,
    check_text_column,
    find_shards,
    iter_batches,
    open_parquet,
    output_path,
)
from .errors import InputError, OptionError, OutputError
from .formats import PARQUET, detect
from .location import RemotePath, as_location

MANIFEST = "_phifilter_filter.json"
BINS = 1 << 20


@dataclass
class FilterSummary:
    threshold: float
    rows_in: int = 0
    rows_kept: int = 0
    bytes_in: int = 0
    bytes_kept: int = 0
    shards: int = 0
    shards_skipped: int = 0
    rows_unscored: int = 0  # NaN or null scores: never kept
    redone: list = field(default_factory=list)  # reasons earlier outputs were redone
    per_shard: dict = field(default_factory=dict)
    score_column: str = "edu_score"
    tokens_kept: int | None = None  # with --token-budget: tokens of the kept documents
    token_budget: int | None = None
    tokenizer: str | None = None
    seconds: float = 0.0
    sample_by_score: str | None = None  # --sample-by-score LO:HI (phifilter.soft)
    tokens_in: int = 0  # with --sample-by-score: tokens of every document read
    tokens_expected: float = 0.0  # ... and the expected kept tokens, sum of p(score) x tokens

    def __str__(self) -> str:
        from .provenance import describe_redone

        share = self.rows_kept / self.rows_in if self.rows_in else 0.0
        bshare = self.bytes_kept / self.bytes_in if self.bytes_in else 0.0
        redone = describe_redone(self.redone)
        text = (
            f"shards: {self.shards} filtered, {self.shards_skipped} already complete"
            + (f" ({redone})" if redone else "") + "\n"
            + (f"sampled by {self.score_column}: p = clip((score - LO) / (HI - LO), 0, 1), LO:HI = "
               f"{self.sample_by_score}\n" if self.sample_by_score else
               f"cut-off {self.score_column} >= {self.threshold:.6g}\n")
            + f"kept rows: {self.rows_kept:,} of {self.rows_in:,} ({100 * share:.1f}%)\n"
            + (f"dropped {self.rows_unscored:,} rows without a score (NaN or null)\n" if self.rows_unscored else "")
            + f"kept text bytes: {self.bytes_kept:,} of {self.bytes_in:,} ({100 * bshare:.1f}%)"
        )
        if self.sample_by_score and self.tokens_in:
            text += (f"\nexpected token share: {100 * self.tokens_expected / self.tokens_in:.1f}%, kept "
                     f"{100 * self.tokens_kept / self.tokens_in:.1f}% ({self.tokens_kept:,} of {self.tokens_in:,} "
                     f"{self.tokenizer} tokens)")
        elif self.tokens_kept is not None:
            text += f"\nkept tokens: {self.tokens_kept:,} of a budget of {self.token_budget:,} ({self.tokenizer})"
        return text

    def stats(self) -> dict:
        """Machine-readable statistics (``--stats-json``)."""
        return {
            "command": "filter", "cutoff": self.threshold, "seconds": round(self.seconds, 6),
            "shards": {"filtered": self.shards, "skipped": self.shards_skipped, "failed": 0},
            "rows": {"in": self.rows_in, "kept": self.rows_kept},
            "bytes": {"in": self.bytes_in, "kept": self.bytes_kept},
            "tokens": None if self.tokens_kept is None else {"kept": self.tokens_kept, "budget": self.token_budget,
                                                               "tokenizer": self.tokenizer,
                                                               **({"in": self.tokens_in,
                                                                   "expected": round(self.tokens_expected, 3)}
                                                                  if self.sample_by_score else {})},
            "docs_per_second": round(self.rows_in / self.seconds, 3) if self.seconds > 0 else 0.0,
            "rows_unscored": self.rows_unscored, "redone": list(self.redone),
            "per_shard": [{"name": k, **{f: v for f, v in st.items() if f not in ("input", "record")}}
                          for k, st in sorted(self.per_shard.items())],
            "failures": [],
        }


def _check_score_column(path: Path, score_column: str, text_column: str) -> None:
    import pyarrow as pa

    schema = open_parquet(path).schema_arrow
    names = schema.names
    if score_column not in names:
        raise InputError(
            f"{path}: no column '{score_column}'; is it a scored shard? (run `phifilter score` first)"
        )
    t = schema.field(score_column).type
    if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
        raise InputError(f"{path}: score column '{score_column}' has type {t}, expected numbers "
                         "(choose the score column with --score-column)")
    check_text_column(schema, text_column, path)  # present and text: filter measures its bytes


def check_unit_scores(paths: Sequence[Path], score_column: str, option: str) -> None:
    """Refuse scores outside [0, 1] for the rules that bin scores on [0, 1] (--top-fraction,
    --token-budget): a 0-5 regression score or an ensemble's 0-20 would all land in the top bin."""
    import numpy as np

    lo, hi = math.inf, -math.inf
    for p in paths:
        for batch in iter_batches(p, 1 << 16, columns=[score_column]):
            s = batch.column(0).to_numpy(zero_copy_only=False).astype(np.float64)
            s = s[np.isfinite(s)]
            if len(s):
                lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{paths[0].parent if paths else ''}: column '{score_column}' has scores in "
                         f"[{lo:.4g}, {hi:.4g}], outside [0, 1]; {option} works on [0, 1] scores so far: "
                         "use --threshold, --min-bucket or --sample-by-score for this column")


def top_fraction_cutoff(paths: Sequence[Path], fraction: float, score_column: str) -> tuple[float, int, int]:
    """(lower edge of the boundary bin, rows to keep from that bin, total rows to keep)."""
    import numpy as np
    import polars as pl

    counts = np.zeros(BINS, dtype=np.int64)
    for p in paths:
        if not _polars_reads(p):
            for batch in iter_batches(p, 1 << 16, columns=[score_column]):
                s = batch.column(0).to_numpy(zero_copy_only=False).astype(np.float64)
                s = np.clip(s[~np.isnan(s)], 0.0, 1.0)  # null (nan here) and NaN are not in the base
                np.add.at(counts, np.clip(np.floor(s * BINS).astype(np.int64), 0, BINS - 1), 1)
            continue
        vc = (
            pl.scan_parquet(p)
            .filter(_scored(score_column))
            .select((pl.col(score_column).cast(pl.Float64).clip(0.0, 1.0) * BINS)
                    .floor().cast(pl.Int64).clip(0, BINS - 1).alias("bin"))
            .group_by("bin").len()
            .collect()
        )
        np.add.at(counts, vc["bin"].to_numpy(), vc["len"].to_numpy())
    total = int(counts.sum())
    keep = int(math.floor(fraction * total + 1e-9))
    if keep == 0:
        return 2.0, 0, 0  # above any score
    from_top = np.cumsum(counts[::-1])
    k = int(np.searchsorted(from_top, keep))  # bins taken from the top, the last one partly
    boundary = BINS - 1 - k
    above = int(from_top[k - 1]) if k > 0 else 0
    return boundary / BINS, keep - above, keep


def _scored(score_column: str):
    """Rows with a real score (polars orders NaN above every number, so NaN must be excluded)."""
    import polars as pl

    col = pl.col(score_column).cast(pl.Float64)
    return col.is_not_null() & col.is_not_nan()


def _polars_reads(path) -> bool:
    """Local Parquet: read with polars' streaming engine (the original, fastest path)."""
    fmt = detect(getattr(path, "name", str(path)))
    return not isinstance(path, RemotePath) and (fmt is None or fmt.kind == PARQUET)


def _filter_streaming(shard, out_path, score_column: str, text_column: str, cutoff: float, bin_hi: float,
                      remaining: int | None, mask=None) -> dict:
    """Keep rows with score >= bin_hi, plus (top fraction) the first ``remaining`` rows of the
    boundary bin [cutoff, bin_hi) in corpus order; or (threshold) rows with score >= cutoff;
    or (token budget) the rows of ``mask``, a keep flag per row of the shard."""
    import numpy as np
    import pyarrow.compute as pc

    pf = open_parquet(shard.path)
    stats = {"rows_in": 0, "rows_kept": 0, "bytes_in": 0, "bytes_kept": 0, "rows_unscored": 0}
    taken = 0
    with ShardWriter(out_path, pf.schema_arrow) as writer:
        for batch in iter_batches(shard.path, 1 << 14, parquet_file=pf):
            score = batch.column(score_column).to_numpy(zero_copy_only=False).astype(np.float64)
            with np.errstate(invalid="ignore"):  # null scores are nan here and never kept
                if mask is not None:
                    keep = np.asarray(mask[stats["rows_in"]:stats["rows_in"] + batch.num_rows], dtype=bool) & ~np.isnan(score)
                elif remaining is None:
                    keep = score >= cutoff
                else:
                    boundary = (score >= cutoff) & (score < bin_hi)
                    take = np.cumsum(boundary) + taken <= remaining
                    keep = (score >= bin_hi) | (boundary & take)
                    taken += int((boundary & take).sum())
            text_bytes = pc.fill_null(pc.binary_length(batch.column(text_column)), 0).to_numpy(zero_copy_only=False)
            stats["rows_in"] += batch.num_rows
            stats["rows_unscored"] += int(np.isnan(score).sum())
            stats["rows_kept"] += int(keep.sum())
            stats["bytes_in"] += int(text_bytes.sum())
            stats["bytes_kept"] += int(text_bytes[keep].sum())
            writer.write_batch(batch.filter(keep))
    return stats | {"boundary_kept": taken}


def filter_shards(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    threshold: float | None = None,
    top_fraction: float | None = None,
    score_column: str = "edu_score",
    text_column: str = "text",
    progress: bool = False,
    token_budget: int | None = None,
    tokenizer: str | None = None,
    stats_json: str | os.PathLike | None = None,
    min_int_score: int | None = None,
    int_score_column: str = "int_score",
    min_bucket: int | None = None,
    bucket_column: str | None = None,
    sample_by_score: str | None = None,
) -> FilterSummary:
    """Write the kept rows of every scored shard to ``output_dir`` (same relative names).

    Exactly one of ``threshold``, ``top_fraction``, ``token_budget`` (the best documents up
    to that many tokens of ``tokenizer``, default the embedder's: :mod:`phifilter.token_budget`)
    and ``min_int_score`` (FineWeb-Edu style: ``int_score_column`` at least this), ``min_bucket``
    (an ensemble's bucket column, default ``<score_column>_bucket``, at least this:
    :mod:`phifilter.ensemble`) and ``sample_by_score`` ("LO:HI": keep each document with a
    probability rising from 0 at LO to 1 at HI, deterministic by text hash: :mod:`phifilter.soft`).
    """
    import time

    import polars as pl
    from tqdm import tqdm

    began = time.perf_counter()
    ways = (threshold, top_fraction, token_budget, min_int_score, min_bucket, sample_by_score)
    if sum(x is not None for x in ways) > 1 and any(x is not None for x in ways[3:]):
        raise OptionError("give one of --threshold, --top-fraction, --token-budget, --min-int-score, "
                          "--min-bucket or --sample-by-score")
    if min_int_score is not None:
        threshold, score_column = min_int_score, int_score_column
    if min_bucket is not None:
        from .ensemble import BINS as BUCKETS

        if not 0 <= int(min_bucket) < BUCKETS:
            raise OptionError(f"{min_bucket}: a bucket is in 0..{BUCKETS - 1}", "--min-bucket")
        threshold, score_column = int(min_bucket), bucket_column or f"{score_column}_bucket"
    curve = None
    if sample_by_score is not None:
        from .soft import parse_curve

        curve = parse_curve(sample_by_score)
    elif sum(x is not None for x in (threshold, top_fraction, token_budget)) != 1:
        raise InputError("give exactly one of --threshold or --top-fraction or --token-budget")
    if token_budget is not None and int(token_budget) < 1:
        raise InputError(f"--token-budget {token_budget}: must be at least 1")
    if top_fraction is not None and not 0.0 < top_fraction <= 1.0:
        raise InputError(f"--top-fraction {top_fraction}: must be in (0, 1]")
    from .outputs import claim_folder, claim_stats
    from .provenance import fingerprint, run_record, stale_reason

    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    shards = find_shards(specs)
    out_dir = check_output_dir(specs, output_dir)
    from .outputs import has_column

    listed = set((_read_manifest(out_dir).get("shards") or {}) if out_dir.is_dir() else ())
    names = {str(s.name) for s in shards}
    scored = has_column(score_column)

    def ours(p: Path) -> bool:
        rel = str(p.relative_to(out_dir))
        # a shard renamed into place by a run killed before it updated the manifest is ours too
        return p == out_dir / MANIFEST or rel in listed or (rel in names and scored(p))

    claim_folder(out_dir, ours, "filter outputs")
    claim_stats(stats_json, specs, output_dir=out_dir)
    OutputLock.check_free(out_dir)  # before the pass over every score column, not after
    for s in shards:
        _check_score_column(s.path, score_column, text_column)

    quota = 0
    if top_fraction is not None or token_budget is not None:
        check_unit_scores([s.path for s in shards], score_column,
                          "--top-fraction" if top_fraction is not None else "--token-budget")
    if curve is not None:
        from .token_budget import token_counter

        counter = token_counter(tokenizer)
        cutoff, bin_hi = curve.lo, curve.hi
        settings = {"sample_by_score": str(curve), "tokenizer": counter.name, "score_column": score_column}
    elif token_budget is not None:
        from .token_budget import budget_cutoff, shard_keep, token_counter

        counter = token_counter(tokenizer)
        cut = budget_cutoff([s.path for s in shards], int(token_budget), score_column, text_column, counter, BINS)
        cutoff = cut.boundary / BINS if cut.boundary >= 0 else 0.0
        bin_hi, quota = cutoff, cut.boundary_tokens
        settings = {"token_budget": int(token_budget), "tokenizer": counter.name, "score_column": score_column}
    elif top_fraction is not None:
        cutoff, quota, _ = top_fraction_cutoff([s.path for s in shards], top_fraction, score_column)
        bin_hi = cutoff + 1.0 / BINS
        settings = {"top_fraction": top_fraction, "score_column": score_column}
    else:
        if min_int_score is None and min_bucket is None:  # against the range the run record gives the column
            from .scorerset import check_threshold

            check_threshold([s.path for s in shards], score_column, threshold)
        cutoff, bin_hi = float(threshold), float(threshold)
        settings = {"threshold": threshold, "score_column": score_column}

    summary = FilterSummary(threshold=cutoff, score_column=score_column,
                            sample_by_score=str(curve) if curve is not None else None)
    if curve is not None:
        summary.tokens_kept, summary.tokenizer = 0, counter.name
    if token_budget is not None:
        summary.tokens_kept, summary.token_budget, summary.tokenizer = 0, int(token_budget), counter.name
    with OutputLock(out_dir):
        remove_stale_temporaries(out_dir)
        manifest = _read_manifest(out_dir)
        if manifest.get("settings") not in (None, settings):
            raise OutputError(
                f"{out_dir}: was filtered with other settings {manifest['settings']}; "
                "choose an empty output folder"
            )
        manifest["settings"] = settings
        done = manifest.setdefault("shards", {})
        remaining = quota
        for shard in tqdm(shards, unit="shard", desc="filtering", disable=not progress):
            key = str(shard.name)
            out_path = output_path(out_dir, shard)
            score = pl.col(score_column)
            text_bytes = pl.col(text_column).str.len_bytes().fill_null(0)
            # The cut-off is part of the record: with --top-fraction it depends on every input.
            record = run_record(fingerprint(shard.path), columns={"score": score_column, "text": text_column},
                                command="filter", cutoff=cutoff, boundary_hi=bin_hi)
            # Skip only a shard filtered from this very input (not another file of the same name).
            reason = stale_reason(done[key].get("record"), record) if key in done else "new"
            if reason is None and out_path.is_file():
                stats = done[key]
                summary.shards_skipped += 1
                remaining -= stats.get("boundary_kept", 0)
            else:
                if key in done:
                    summary.redone.append(reason if out_path.is_file() else "output missing")
                if not (_polars_reads(shard.path) and _polars_reads(out_path)):
                    mask = kept_tokens = sampled = None
                    if curve is not None:
                        from .soft import shard_sample

                        sampled = shard_sample(shard.path, curve, score_column, text_column, counter)
                        mask = sampled.pop("mask")
                    elif token_budget is not None:
                        mask, kept_tokens, take = shard_keep(shard.path, cut, remaining, score_column, text_column,
                                                             counter, BINS)
                    stats = _filter_streaming(shard, out_path, score_column, text_column, cutoff, bin_hi,
                                              max(0, remaining) if top_fraction is not None else None, mask)
                    stats["record"] = record
                    if sampled is not None:
                        stats.update(sampled)
                    elif mask is not None:
                        stats["boundary_kept"], stats["tokens_kept"] = take, kept_tokens
                else:
                    in_boundary = ((score >= cutoff) & (score < bin_hi) & _scored(score_column)).fill_null(False)
                    kept_tokens = sampled = None
                    if curve is not None:
                        from .soft import shard_sample

                        sampled = shard_sample(shard.path, curve, score_column, text_column, counter)
                        keep, take = pl.lit(pl.Series("keep", sampled.pop("mask"), dtype=pl.Boolean)), 0
                    elif token_budget is not None:
                        mask, kept_tokens, take = shard_keep(shard.path, cut, remaining, score_column, text_column,
                                                             counter, BINS)
                        keep = pl.lit(pl.Series("keep", mask, dtype=pl.Boolean))
                    elif top_fraction is not None:
                        n_boundary = int(pl.scan_parquet(shard.path).select(in_boundary.sum()).collect().item() or 0)
                        take = max(0, min(remaining, n_boundary))
                        keep = (score >= bin_hi) | (in_boundary & (in_boundary.cum_sum() <= take))
                    else:
                        take = 0
                        keep = score >= cutoff
                    keep = (keep & _scored(score_column)).fill_null(False)
                    lf = pl.scan_parquet(shard.path)
                    try:  # reads every column the output needs: a bad one fails here, before writing
                        agg = lf.select(
                            rows_in=pl.len(), rows_kept=keep.sum(), bytes_in=text_bytes.sum(),
                            bytes_kept=pl.when(keep).then(text_bytes).otherwise(0).sum(),
                            rows_unscored=(~_scored(score_column)).fill_null(True).sum(),
                        ).collect().row(0, named=True)
                    except pl.exceptions.PolarsError as e:
                        text = str(e).strip().splitlines()
                        why = text[0] if text else type(e).__name__
                        raise InputError(f"{shard.path}: cannot be read ({why})") from None
                    try:
                        write_atomic(out_path, lambda tmp: lf.filter(keep).sink_parquet(tmp))
                    except pl.exceptions.PolarsError as e:
                        # polars reports I/O failures (a full disk) as ComputeError, not OSError
                        raise _write_error(out_path, e) from None
                    stats = {k: int(v or 0) for k, v in agg.items()} | {"boundary_kept": take, "record": record}
                    if kept_tokens is not None:
                        stats["tokens_kept"] = kept_tokens
                    if sampled is not None:
                        stats.update(sampled)
                remaining -= stats["boundary_kept"]
                done[key] = stats
                try:
                    _write_manifest(out_dir, manifest)
                except OSError as e:
                    raise _write_error(out_dir / MANIFEST, e) from None
                summary.shards += 1
            summary.rows_in += stats["rows_in"]
            summary.rows_kept += stats["rows_kept"]
            summary.bytes_in += stats["bytes_in"]
            summary.bytes_kept += stats["bytes_kept"]
            summary.rows_unscored += stats.get("rows_unscored", 0)
            summary.per_shard[key] = stats
            if summary.tokens_kept is not None:
                summary.tokens_kept += stats.get("tokens_kept", 0)
            summary.tokens_in += stats.get("tokens_in", 0)
            summary.tokens_expected += stats.get("tokens_expected", 0.0)
    summary.seconds = time.perf_counter() - began
    if stats_json is not None:
        from .stats import write_stats

        write_stats(stats_json, summary.stats())
    return summary


def _read_manifest(folder: Path) -> dict:
    p = as_location(folder) / MANIFEST
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise OutputError(f"{p}: unreadable filter manifest ({e}); remove it to start over") from None


def _write_manifest(folder: Path, manifest: dict) -> None:
    write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def _write_error(path: Path, e: Exception) -> OutputError:
    if isinstance(e, OSError):
        return output_error(path, e)
    text = str(e)
    if "No space left" in text or "os error 28" in text:
        import errno

        return output_error(path, OSError(errno.ENOSPC, "No space left on device"))
    return OutputError(f"{path}: cannot write ({text.strip().splitlines()[-1] if text.strip() else type(e).__name__})")
