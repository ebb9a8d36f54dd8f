"""Keep the best documents of scored shards: above a score threshold, or the top fraction.

Filtering runs shard by shard with polars' streaming engine, so memory does not grow with the
corpus. ``top_fraction`` is turned into a cut-off with one pass over the score column that
only keeps a fine histogram (2**20 bins), so it is exact to one part in a million; rows that
fall in the boundary bin are kept in corpus order until the requested count is reached, which
makes the kept count exact and the result deterministic.

Each finished output shard is recorded in ``_phifilter_filter.json`` in the output folder
(written atomically), so a rerun with the same settings skips what is done.
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
    _fsync_dir,
    check_output_dir,
    find_shards,
    input_fingerprint,
    open_parquet,
    remove_stale_temporaries,
    temp_path_for,
)
from .errors import InputError, OutputError

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
    score_column: str = "edu_score"

    def __str__(self) -> str:
        share = self.rows_kept / self.rows_in if self.rows_in else 0.0
        bshare = self.bytes_kept / self.bytes_in if self.bytes_in else 0.0
        return (
            f"shards: {self.shards} filtered, {self.shards_skipped} already complete\n"
            f"cut-off {self.score_column} >= {self.threshold:.6g}\n"
            f"kept rows: {self.rows_kept:,} of {self.rows_in:,} ({100 * share:.1f}%)\n"
            f"kept text bytes: {self.bytes_kept:,} of {self.bytes_in:,} ({100 * bshare:.1f}%)"
        )


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


def filter_shards(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    threshold: float | None = None,
    top_fraction: float | None = None,
    score_column: str = "edu_score",
    text_column: str = "text",
    progress: bool = False,
) -> FilterSummary:
    """Write the kept rows of every scored shard to ``output_dir`` (same relative names)."""
    import polars as pl
    from tqdm import tqdm

    if (threshold is None) == (top_fraction is None):
        raise InputError("give exactly one of --threshold or --top-fraction")
    if top_fraction is not None and not 0.0 < top_fraction <= 1.0:
        raise InputError(f"--top-fraction {top_fraction}: must be in (0, 1]")
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    shards = find_shards(specs)
    out_dir = check_output_dir(specs, output_dir)
    OutputLock.check_free(out_dir)  # before the pass over every score column, not after
    for s in shards:
        _check_score_column(s.path, score_column, text_column)

    quota = 0
    if top_fraction is not None:
        cutoff, quota, _ = top_fraction_cutoff([s.path for s in shards], top_fraction, score_column)
        bin_hi = cutoff + 1.0 / BINS
        settings = {"top_fraction": top_fraction, "score_column": score_column}
    else:
        cutoff, bin_hi = float(threshold), float(threshold)
        settings = {"threshold": threshold, "score_column": score_column}

    summary = FilterSummary(threshold=cutoff, score_column=score_column)
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
            out_path = out_dir / shard.name
            score = pl.col(score_column)
            text_bytes = pl.col(text_column).str.len_bytes().fill_null(0)
            fingerprint = input_fingerprint(shard.path)
            # Skip only a shard filtered from this very input (not another file of the same name).
            if key in done and out_path.is_file() and done[key].get("input") == fingerprint:
                stats = done[key]
                summary.shards_skipped += 1
                remaining -= stats.get("boundary_kept", 0)
            else:
                in_boundary = (score >= cutoff) & (score < bin_hi)
                if top_fraction is not None:
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
    return summary


def _read_manifest(folder: Path) -> dict:
    p = folder / MANIFEST
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise OutputError(f"{p}: unreadable filter manifest ({e}); remove it to start over") from None


def _write_manifest(folder: Path, manifest: dict) -> None:
    p = folder / MANIFEST
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
