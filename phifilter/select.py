"""Keep the best documents of scored shards: above a score threshold, or the top fraction.

Filtering runs shard by shard with polars' streaming engine, so memory does not grow with the
corpus. ``top_fraction`` is turned into a cut-off with one pass over the score column that
only keeps a fine histogram (2**20 bins), so it is exact to one part in a million; rows that
fall in the boundary bin are kept in corpus order until the requested count is reached, which
makes the kept count exact and the result deterministic.

Each finished output shard is recorded in ``_phifilter_filter.json`` in the output folder
(written atomically), so a rerun with the same settings skips what is done.

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

from .corpus import (
    OutputLock,
    ShardWriter,
    _fsync_dir,
    check_output_dir,
    find_shards,
    input_fingerprint,
    iter_batches,
    open_parquet,
    output_path,
    remove_stale_temporaries,
    temp_path_for,
    write_remote_atomically,
)
from .errors import InputError, OutputError
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
    per_shard: dict = field(default_factory=dict)
    tokens_kept: int | None = None  # with --token-budget: tokens of the kept documents
    token_budget: int | None = None
    tokenizer: str | None = None
    seconds: float = 0.0

    def __str__(self) -> str:
        share = self.rows_kept / self.rows_in if self.rows_in else 0.0
        bshare = self.bytes_kept / self.bytes_in if self.bytes_in else 0.0
        text = (
            f"shards: {self.shards} filtered, {self.shards_skipped} already complete\n"
            f"cut-off edu_score >= {self.threshold:.6g}\n"
            f"kept rows: {self.rows_kept:,} of {self.rows_in:,} ({100 * share:.1f}%)\n"
            f"kept text bytes: {self.bytes_kept:,} of {self.bytes_in:,} ({100 * bshare:.1f}%)"
        )
        if self.tokens_kept is not None:
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
                                                               "tokenizer": self.tokenizer},
            "docs_per_second": round(self.rows_in / self.seconds, 3) if self.seconds > 0 else 0.0,
            "per_shard": [{"name": k, **{f: v for f, v in st.items() if f != "input"}}
                          for k, st in sorted(self.per_shard.items())],
            "failures": [],
        }


def _check_score_column(path: Path, score_column: str, text_column: str) -> None:
    names = open_parquet(path).schema_arrow.names
    if score_column not in names:
        raise InputError(
            f"{path}: no column '{score_column}'; is it a scored shard? (run `phifilter score` first)"
        )
    if text_column not in names:
        raise InputError(f"{path}: no column '{text_column}'; columns are: {', '.join(names)}")


def top_fraction_cutoff(paths: Sequence[Path], fraction: float, score_column: str) -> tuple[float, int, int]:
    """(lower edge of the boundary bin, rows to keep from that bin, total rows to keep)."""
    import numpy as np
    import polars as pl

    counts = np.zeros(BINS, dtype=np.int64)
    for p in paths:
        if not _polars_reads(p):
            for batch in iter_batches(p, 1 << 16, columns=[score_column]):
                s = batch.column(0).to_numpy(zero_copy_only=False).astype(np.float64)
                s = np.clip(np.nan_to_num(s, nan=0.0), 0.0, 1.0)  # null (nan here) and nan count as 0
                np.add.at(counts, np.clip(np.floor(s * BINS).astype(np.int64), 0, BINS - 1), 1)
            continue
        vc = (
            pl.scan_parquet(p)
            .select((pl.col(score_column).fill_null(0.0).fill_nan(0.0).clip(0.0, 1.0) * BINS)
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
    stats = {"rows_in": 0, "rows_kept": 0, "bytes_in": 0, "bytes_kept": 0}
    taken = 0
    with ShardWriter(out_path, pf.schema_arrow) as writer:
        for batch in iter_batches(shard.path, 1 << 14, parquet_file=pf):
            score = batch.column(score_column).to_numpy(zero_copy_only=False).astype(np.float64)
            with np.errstate(invalid="ignore"):  # null scores are nan here and never kept
                if mask is not None:
                    keep = np.asarray(mask[stats["rows_in"]:stats["rows_in"] + batch.num_rows], dtype=bool)
                elif remaining is None:
                    keep = score >= cutoff
                else:
                    boundary = (score >= cutoff) & (score < bin_hi)
                    take = np.cumsum(boundary) + taken <= remaining
                    keep = (score >= bin_hi) | (boundary & take)
                    taken += int((boundary & take).sum())
            text_bytes = pc.fill_null(pc.binary_length(batch.column(text_column)), 0).to_numpy(zero_copy_only=False)
            stats["rows_in"] += batch.num_rows
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
) -> FilterSummary:
    """Write the kept rows of every scored shard to ``output_dir`` (same relative names).

    Exactly one of ``threshold``, ``top_fraction`` and ``token_budget`` (the best documents up
    to that many tokens of ``tokenizer``, default the embedder's: :mod:`phifilter.token_budget`).
    """
    import time

    import polars as pl
    from tqdm import tqdm

    began = time.perf_counter()
    if sum(x is not None for x in (threshold, top_fraction, token_budget)) != 1:
        raise InputError("give exactly one of --threshold, --top-fraction or --token-budget")
    if token_budget is not None and int(token_budget) < 1:
        raise InputError(f"--token-budget {token_budget}: must be at least 1")
    if top_fraction is not None and not 0.0 < top_fraction <= 1.0:
        raise InputError(f"--top-fraction {top_fraction}: must be in (0, 1]")
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    shards = find_shards(specs)
    out_dir = check_output_dir(specs, output_dir)
    OutputLock.check_free(out_dir)  # before the pass over every score column, not after
    for s in shards:
        _check_score_column(s.path, score_column, text_column)

    quota = 0
    if token_budget is not None:
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
        cutoff, bin_hi = float(threshold), float(threshold)
        settings = {"threshold": threshold, "score_column": score_column}

    summary = FilterSummary(threshold=cutoff)
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
            fingerprint = input_fingerprint(shard.path)
            # Skip only a shard filtered from this very input (not another file of the same name).
            if key in done and out_path.is_file() and done[key].get("input") == fingerprint:
                stats = done[key]
                summary.shards_skipped += 1
                remaining -= stats.get("boundary_kept", 0)
            elif not (_polars_reads(shard.path) and _polars_reads(out_path)):
                mask = kept_tokens = None
                if token_budget is not None:
                    mask, kept_tokens, take = shard_keep(shard.path, cut, remaining, score_column, text_column,
                                                         counter, BINS)
                stats = _filter_streaming(shard, out_path, score_column, text_column, cutoff, bin_hi,
                                          max(0, remaining) if top_fraction is not None else None, mask)
                stats["input"] = fingerprint
                if mask is not None:
                    stats["boundary_kept"], stats["tokens_kept"] = take, kept_tokens
                remaining -= stats["boundary_kept"]
                done[key] = stats
                try:
                    _write_manifest(out_dir, manifest)
                except OSError as e:
                    raise _write_error(out_dir / MANIFEST, e) from None
                summary.shards += 1
            else:
                in_boundary = (score >= cutoff) & (score < bin_hi)
                kept_tokens = None
                if token_budget is not None:
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
                keep = keep.fill_null(False)
                lf = pl.scan_parquet(shard.path)
                agg = lf.select(
                    rows_in=pl.len(), rows_kept=keep.sum(), bytes_in=text_bytes.sum(),
                    bytes_kept=pl.when(keep).then(text_bytes).otherwise(0).sum(),
                ).collect().row(0, named=True)
                out_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = temp_path_for(out_path)
                try:
                    lf.filter(keep).sink_parquet(tmp)
                    with open(tmp, "rb") as f:
                        os.fsync(f.fileno())
                    os.replace(tmp, out_path)
                    _fsync_dir(out_path.parent)
                except (OSError, pl.exceptions.PolarsError) as e:
                    # polars reports I/O failures (a full disk) as ComputeError, not OSError
                    tmp.unlink(missing_ok=True)
                    raise _write_error(out_path, e) from None
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
                stats = {k: int(v or 0) for k, v in agg.items()} | {"boundary_kept": take, "input": fingerprint}
                if kept_tokens is not None:
                    stats["tokens_kept"] = kept_tokens
                remaining -= take
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
            summary.per_shard[key] = stats
            if summary.tokens_kept is not None:
                summary.tokens_kept += stats.get("tokens_kept", 0)
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
    p = folder / MANIFEST
    if isinstance(p, RemotePath):
        write_remote_atomically(p, json.dumps(manifest, indent=1, sort_keys=True).encode())
        return
    tmp = temp_path_for(p)
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(manifest, indent=1, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_error(path: Path, e: Exception) -> OutputError:
    from .corpus import output_error

    if isinstance(e, OSError):
        return output_error(path, e)
    text = str(e)
    if "No space left" in text or "os error 28" in text:
        import errno

        return output_error(path, OSError(errno.ENOSPC, "No space left on device"))
    return OutputError(f"{path}: cannot write ({text.strip().splitlines()[-1] if text.strip() else type(e).__name__})")
