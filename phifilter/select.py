"""Keep the best documents of scored shards: above a score threshold, or the top fraction.

Filtering streams shard by shard (:func:`phifilter.corpus.iter_batches` in, the shard's own
format out through :class:`phifilter.corpus.ShardWriter`, locally or on a store), so memory does
not grow with the corpus. ``top_fraction`` is turned into a cut-off with one pass over the score column that
only keeps a fine histogram (2**20 bins), so it is exact to one part in a million; rows that
fall in the boundary bin are kept in corpus order until the requested count is reached, which
makes the kept count exact and the result deterministic.

Each shard is one job of :mod:`phifilter.shardjob`: written under its lease, with its run
record (``phifilter.provenance``: the input's fingerprint, the columns, the rule and the
cut-off) and its counts in its footer, so a rerun with the same settings skips what is done
and redoes, saying why, a shard whose input changed. (Folders filtered before this kept one
``_phifilter_filter.json`` for the folder instead; they are refused, with the fix.) Rows
whose score is NaN or null are never kept; they are counted and reported, and left out of the
``top_fraction`` base. A shard is read twice: its score and text columns to count and decide,
then every column to write the kept rows with the counts in the footer.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .corpus import ShardWriter, check_text_column, iter_batches, open_parquet
from .errors import InputError, OptionError, OutputError
from .location import as_location
from .shardjob import ShardJob, leased_lines

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
    leased: list = field(default_factory=list)  # (shard, holder): left to another live run writing it
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
            + "".join(f"\n{line}" for line in leased_lines(self.leased))
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
            "shards": {"filtered": self.shards, "skipped": self.shards_skipped, "failed": 0,
                       "leased": len(self.leased)},
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

    def add(self, done) -> None:
        """Fold one shard's fate (:class:`phifilter.shardjob.Done`) in."""
        if done.status == "leased":
            self.leased.append((str(done.shard.name), done.holder))
            return
        stats = done.outcome
        if done.status == "skipped":
            self.shards_skipped += 1
        else:
            self.shards += 1
            if done.redone:
                self.redone.append(done.redone)
        for key in ("rows_in", "rows_kept", "bytes_in", "bytes_kept", "rows_unscored", "tokens_in", "tokens_expected"):
            setattr(self, key, getattr(self, key) + stats.get(key, 0))
        if self.tokens_kept is not None:
            self.tokens_kept += stats.get("tokens_kept", 0)
        self.per_shard[str(done.shard.name)] = stats


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

    counts = np.zeros(BINS, dtype=np.int64)
    for p in paths:
        for batch in iter_batches(p, 1 << 16, columns=[score_column]):
            s = batch.column(0).to_numpy(zero_copy_only=False).astype(np.float64)
            s = np.clip(s[~np.isnan(s)], 0.0, 1.0)  # null (nan here) and NaN are not in the base
            counts += np.bincount(np.clip(np.floor(s * BINS).astype(np.int64), 0, BINS - 1), minlength=BINS)
    total = int(counts.sum())
    keep = int(math.floor(fraction * total + 1e-9))
    if keep == 0:
        return 2.0, 0, 0  # above any score
    from_top = np.cumsum(counts[::-1])
    k = int(np.searchsorted(from_top, keep))  # bins taken from the top, the last one partly
    boundary = BINS - 1 - k
    above = int(from_top[k - 1]) if k > 0 else 0
    return boundary / BINS, keep - above, keep


class FilterJob(ShardJob):
    """Filter one shard (:mod:`phifilter.shardjob`): the rule's keep mask, counted, then written.

    The record carries the rule and the cut-off (with ``--top-fraction`` it depends on every
    input); the outcome stored beside it carries the counts, so a skipped shard still counts."""

    command, what, desc = "filter", "filter outputs", "filtering"

    def __init__(self, rule: dict, summary: "FilterSummary"):
        self.__dict__.update(rule)  # score_column, text_column, cutoff, bin_hi, quota, top, cut, counter, curve
        self.summary, self.remaining = summary, self.quota
        if self.top or self.cut is not None:
            rule = "--top-fraction" if self.top else "--token-budget"
            self.ordered = f"{rule} keeps the boundary documents in corpus order across shards"

    def record(self, shard) -> dict:
        from .provenance import fingerprint, run_record

        return run_record(fingerprint(shard.path), columns={"score": self.score_column, "text": self.text_column},
                          command="filter", cutoff=self.cutoff, boundary_hi=self.bin_hi, rule=self.settings)

    def write(self, shard, out, record: dict) -> dict:
        mask, extra, take = self._given_mask(shard)
        return _filter_shard(shard, out, self, record, mask, take, extra)

    def _given_mask(self, shard):
        """(keep mask, extra counts, boundary quota taken) of --sample-by-score and --token-budget."""
        if self.curve is not None:
            from .soft import shard_sample

            sampled = shard_sample(shard.path, self.curve, self.score_column, self.text_column, self.counter)
            return sampled.pop("mask"), sampled, 0
        if self.cut is not None:
            from .token_budget import shard_keep

            mask, kept_tokens, take = shard_keep(shard.path, self.cut, self.remaining, self.score_column,
                                                 self.text_column, self.counter, BINS)
            return mask, {"tokens_kept": kept_tokens}, take
        return None, {}, None

    def seen(self, done) -> None:
        self.remaining -= done.outcome.get("boundary_kept", 0)
        self.summary.add(done)


def _filter_shard(shard, out_path, job: FilterJob, record: dict, mask, take, extra: dict) -> dict:
    """Keep rows with score >= bin_hi, plus (top fraction) the first ``remaining`` rows of the
    boundary bin [cutoff, bin_hi) in corpus order; or (threshold) rows with score >= cutoff;
    or (token budget, sample) the rows of ``mask``. Counted first, then written with the counts."""
    import numpy as np
    import pyarrow.compute as pc

    from .provenance import with_record
    from .shardjob import with_outcome

    pf = open_parquet(shard.path)
    stats = {"rows_in": 0, "rows_kept": 0, "bytes_in": 0, "bytes_kept": 0, "rows_unscored": 0}
    taken, keeps = 0, []
    remaining = max(0, job.remaining) if job.top else None
    for batch in iter_batches(shard.path, 1 << 14, columns=[job.score_column, job.text_column], parquet_file=pf):
        score = batch.column(0).to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(invalid="ignore"):  # null scores are nan here and never kept
            if mask is not None:
                keep = np.asarray(mask[stats["rows_in"]:stats["rows_in"] + batch.num_rows], dtype=bool) & ~np.isnan(score)
            elif remaining is None:
                keep = score >= job.cutoff
            else:
                boundary = (score >= job.cutoff) & (score < job.bin_hi)
                fits = np.cumsum(boundary) + taken <= remaining
                keep = (score >= job.bin_hi) | (boundary & fits)
                taken += int((boundary & fits).sum())
        text_bytes = pc.fill_null(pc.binary_length(batch.column(1)), 0).to_numpy(zero_copy_only=False)
        stats["rows_in"] += batch.num_rows
        stats["rows_unscored"] += int(np.isnan(score).sum())
        stats["rows_kept"] += int(keep.sum())
        stats["bytes_in"] += int(text_bytes.sum())
        stats["bytes_kept"] += int(text_bytes[keep].sum())
        keeps.append(keep)
    stats |= {"boundary_kept": take if take is not None else taken, **extra}
    keep = np.concatenate(keeps) if keeps else np.zeros(0, bool)
    with ShardWriter(out_path, with_record(pf.schema_arrow, with_outcome(record, stats))) as writer:
        done = 0
        for batch in iter_batches(shard.path, 1 << 14, parquet_file=pf):
            writer.write_batch(batch.filter(keep[done:done + batch.num_rows]))
            done += batch.num_rows
    return stats


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
    task_index: int | None = None,
    num_tasks: int | None = None,
) -> FilterSummary:
    """Write the kept rows of every scored shard to ``output_dir`` (same relative names).

    Exactly one of ``threshold``, ``top_fraction``, ``token_budget`` (the best documents up
    to that many tokens of ``tokenizer``, default the embedder's: :mod:`phifilter.token_budget`)
    and ``min_int_score`` (FineWeb-Edu style: ``int_score_column`` at least this), ``min_bucket``
    (an ensemble's bucket column, default ``<score_column>_bucket``, at least this:
    :mod:`phifilter.ensemble`) and ``sample_by_score`` ("LO:HI": keep each document with a
    probability rising from 0 at LO to 1 at HI, deterministic by text hash: :mod:`phifilter.soft`).
    Each shard is a :class:`FilterJob` run by :mod:`phifilter.shardjob` (leases, skip or redo by
    run record). ``task_index``/``num_tasks``: write only this task's share of the shards
    (``--task-index/--num-tasks``; None: Slurm's array variables, else every shard); checks and
    the cut-off still read every shard, so all tasks filter alike. ``--top-fraction`` and
    ``--token-budget`` keep their boundary documents in corpus order across shards, so they run
    as one task.
    """
    import time

    from . import shardjob
    from .scoring.partition import task_of

    began = time.perf_counter()
    threshold, score_column, curve = _rule_of(threshold, top_fraction, token_budget, min_int_score,
                                              int_score_column, min_bucket, bucket_column, sample_by_score,
                                              score_column)
    _refuse_old_manifest(output_dir)
    task = task_of(task_index, num_tasks)
    if task[1] > 1 and (top_fraction is not None or token_budget is not None):
        rule = "--top-fraction" if top_fraction is not None else "--token-budget"
        raise OptionError(f"{rule} keeps the boundary documents in corpus order across shards, so it runs as one "
                          f"task (here task {task[0]} of {task[1]}); drop --task-index/--num-tasks "
                          "(and unset SLURM_ARRAY_TASK_*), or partition a --threshold run", "--num-tasks")
    claimed = shardjob.claim(inputs, output_dir, FilterJob.owns, "filter outputs", stats_json, task)
    paths = [s.path for s in claimed.every]  # checks and cut-off over every shard: each task filters alike
    for p in paths:
        _check_score_column(p, score_column, text_column)
    if top_fraction is not None or token_budget is not None:
        check_unit_scores(paths, score_column, "--top-fraction" if top_fraction is not None else "--token-budget")
    elif curve is None and min_int_score is None and min_bucket is None:  # --threshold: in the column's recorded range
        from .scorerset import check_threshold

        check_threshold(paths, score_column, threshold)
    rule = _cutoff_of(paths, threshold, top_fraction, token_budget, tokenizer, curve, score_column, text_column)
    summary = FilterSummary(threshold=rule["cutoff"], score_column=score_column,
                            sample_by_score=str(curve) if curve is not None else None)
    if rule["counter"] is not None:
        summary.tokens_kept, summary.tokenizer = 0, rule["counter"].name
        summary.token_budget = int(token_budget) if token_budget is not None else None
    shardjob.run_shards(FilterJob(rule, summary), claimed, progress)
    return shardjob.finish(summary, stats_json, began)


def _rule_of(threshold, top_fraction, token_budget, min_int_score, int_score_column, min_bucket, bucket_column,
             sample_by_score, score_column):
    """Check the rule options: (threshold, score column, sample curve) of the one rule given."""
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
        raise OptionError("give exactly one of --threshold or --top-fraction or --token-budget")
    if token_budget is not None and int(token_budget) < 1:
        raise OptionError(f"{token_budget}: must be at least 1", "--token-budget")
    if top_fraction is not None and not 0.0 < top_fraction <= 1.0:
        raise OptionError(f"{top_fraction}: must be in (0, 1]", "--top-fraction")
    return threshold, score_column, curve


def _cutoff_of(paths, threshold, top_fraction, token_budget, tokenizer, curve, score_column, text_column) -> dict:
    """The cut-off of the rule over every input (one pass for --top-fraction and --token-budget)."""
    rule = {"score_column": score_column, "text_column": text_column, "quota": 0, "top": top_fraction is not None,
            "cut": None, "counter": None, "curve": curve}
    if curve is not None or token_budget is not None:
        from .token_budget import token_counter

        rule["counter"] = token_counter(tokenizer)
    if curve is not None:
        cutoff, bin_hi = curve.lo, curve.hi
        settings = {"sample_by_score": str(curve), "tokenizer": rule["counter"].name}
    elif token_budget is not None:
        from .token_budget import budget_cutoff

        cut = rule["cut"] = budget_cutoff(paths, int(token_budget), score_column, text_column, rule["counter"], BINS)
        cutoff = cut.boundary / BINS if cut.boundary >= 0 else 0.0
        bin_hi, rule["quota"] = cutoff, cut.boundary_tokens
        settings = {"token_budget": int(token_budget), "tokenizer": rule["counter"].name}
    elif top_fraction is not None:
        cutoff, rule["quota"], _ = top_fraction_cutoff(paths, top_fraction, score_column)
        bin_hi = cutoff + 1.0 / BINS
        settings = {"top_fraction": top_fraction}
    else:
        cutoff, bin_hi = float(threshold), float(threshold)
        settings = {"threshold": threshold}
    return rule | {"cutoff": cutoff, "bin_hi": bin_hi, "settings": settings | {"score_column": score_column}}


def _refuse_old_manifest(output_dir) -> None:
    """A folder filtered before the shard job (one ``_phifilter_filter.json`` for the folder)."""
    old = as_location(output_dir) / MANIFEST
    if old.exists():
        why = "whose records are not per shard; filter into a new output folder (nothing was changed)"
        raise OutputError(f"{old}: this folder was filtered by an older phifilter, {why}")
