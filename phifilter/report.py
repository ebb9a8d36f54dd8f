"""`phifilter report`: a self-contained HTML page about scored shards.

``build_report`` streams scored shards once, reading only the score, text and (optional)
``--by`` columns in record batches, and keeps nothing that grows with the corpus:

* fine histograms (``FINE_BINS`` bins) of documents and estimated tokens per score, overall
  and per ``--by`` value, from which the kept shares at any threshold and the token budget
  curve are read off;
* a few sample documents per score band: the top and bottom ones (bounded heaps) and
  reservoirs per coarse score bin, from which the middle band and the band around the
  threshold are drawn once the median is known. Samples are cut to ``excerpt_chars``.

Tokens are estimated as UTF-8 bytes / 4 (cheap, needs no tokenizer; about right for English
prose and code with BPE tokenizers) and the report says so.

The page has no scripts and fetches nothing: figures are base64 PNG data URIs and the CSS is
inline, so it opens offline and can be mailed around. Every piece of document text goes
through ``html.escape``. The page is built with :mod:`phifilter.htmlpage`, which the ablation
report uses too.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from .corpus import find_input_files, is_text_type, iter_batches, open_parquet, texts_from_array
from .errors import InputError, OutputError
from .histogram import SUMMARY_BINS, UNIT, bin_edges, bin_index, histogram
from .htmlpage import escape, figure_img, html_page, html_table, new_figure

FINE_BINS = 1000  # resolution of kept-share and budget curves (score steps of 0.001)
PLOT_BINS = 20  # bars in the histograms
RESERVOIR_BINS = 20  # coarse score bins holding sample reservoirs
BYTES_PER_TOKEN = 4
log = logging.getLogger(__name__)
BUDGETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 0.9)
OTHER = "(other values)"
MISSING = "(missing)"

def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file under a temporary name and rename it into place."""
    from .atomic import write_text

    return write_text(path, text)


# ---------------------------------------------------------------------------------------------
# streaming statistics


IDENT_COLUMNS = ("id", "path")  # shown beside a sample's "shard row N" when the shard has them


@dataclass
class ReportConfig:
    """Options of `phifilter report`."""

    text_column: str = "text"
    score_column: str = "edu_score"
    by: str | None = None  # column whose values get their own histogram and table row
    threshold: float | None = None  # None: the model's (``model``; default the bundled one)
    model: str | os.PathLike | None = None  # model folder to read the threshold from
    samples_per_band: int = 5
    excerpt_chars: int = 2000  # characters of each sample document kept and shown
    max_by_values: int = 12  # the most frequent values are shown; the rest are pooled
    read_batch_rows: int = 4096
    seed: int = 0
    title: str = "phifilter score report"


@dataclass
class Sample:
    score: float
    text: str
    chars: int
    where: str  # "shard.parquet row 17"
    by_value: str | None = None


@dataclass
class _Group:
    """Fine histograms of one group of documents (all, or one --by value)."""

    docs: np.ndarray = field(default_factory=lambda: np.zeros(FINE_BINS, np.int64))
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(FINE_BINS, np.int64))
    kept_docs: int = 0  # exact counts at the report threshold (not from the bins)
    kept_tokens: int = 0
    score_sum: float = 0.0
    nulls: int = 0

    def add(self, bins: np.ndarray, tokens: np.ndarray, scores: np.ndarray, threshold: float) -> None:
        self.docs += np.bincount(bins, minlength=FINE_BINS)
        self.tokens += np.bincount(bins, weights=tokens, minlength=FINE_BINS).astype(np.int64)
        kept = scores >= threshold
        self.kept_docs += int(kept.sum())
        self.kept_tokens += int(tokens[kept].sum())
        self.score_sum += float(scores.sum())

    @property
    def n(self) -> int:
        return int(self.docs.sum())

    @property
    def total_tokens(self) -> int:
        return int(self.tokens.sum())


class _Samples:
    """Top-k and bottom-k heaps plus one reservoir (Algorithm R) per coarse score bin."""

    def __init__(self, k: int, excerpt_chars: int, seed: int, span: tuple[float, float] = UNIT):
        self.k, self.span = k, span
        self.excerpt_chars = excerpt_chars
        self.rng = np.random.default_rng(seed)
        self.top: list = []  # min-heap of (score, -order, Sample): the k largest scores
        self.bottom: list = []  # min-heap of (-score, -order, Sample): the k smallest
        self.reservoirs: list[list[Sample]] = [[] for _ in range(RESERVOIR_BINS)]
        self.seen = np.zeros(RESERVOIR_BINS, np.int64)
        self.order = 0
        self.ident: dict = {}

    def _sample(self, texts: pa.Array, i: int, score: float, where: str, by_values) -> Sample:
        text = texts_from_array(texts.slice(i, 1))[0]
        by_value = None if by_values is None else by_values[i]
        for name, column in self.ident.items():  # the row's id / path, when the shard has them
            value = column[i].as_py()
            if value is not None:
                where += f" · {name} {str(value)[:200]}"
        return Sample(float(score), text[: self.excerpt_chars], len(text), where, by_value)

    def add(self, scores: np.ndarray, texts: pa.Array, shard: str, first_row: int, by_values,
            ident: dict | None = None) -> None:
        """``ident``: columns naming each row (:data:`IDENT_COLUMNS` the shard has), shown with a sample."""
        self.ident = ident or {}
        k = self.k
        if k == 0 or len(scores) == 0:
            return
        # Heaps: only rows that can enter are looked at (the rest never become Python strings).
        for heap, sign in ((self.top, 1.0), (self.bottom, -1.0)):
            keyed = sign * scores
            bar = heap[0][0] if len(heap) >= k else -np.inf
            for i in np.flatnonzero(keyed > bar)[np.argsort(-keyed[keyed > bar], kind="stable")][:k]:
                item = (float(keyed[i]), -(self.order + i), None)
                if len(heap) >= k and item[:2] <= heap[0][:2]:
                    continue
                entry = (item[0], item[1], self._sample(texts, i, scores[i], f"{shard} row {first_row + i}", by_values))
                if len(heap) < k:
                    heapq.heappush(heap, entry)
                else:
                    heapq.heapreplace(heap, entry)
        # Reservoirs: row i is the n-th of its bin; it replaces a random slot with probability k/n.
        coarse = bin_index(scores, RESERVOIR_BINS, self.span)
        for b in np.unique(coarse):
            rows = np.flatnonzero(coarse == b)
            nth = self.seen[b] + np.arange(1, len(rows) + 1)
            self.seen[b] += len(rows)
            draws = (self.rng.random(len(rows)) * nth).astype(np.int64)  # uniform in [0, nth)
            reservoir = self.reservoirs[b]
            for i, n, slot in zip(rows, nth, draws):
                if n <= k:
                    reservoir.append(self._sample(texts, i, scores[i], f"{shard} row {first_row + i}", by_values))
                elif slot < k:
                    reservoir[slot] = self._sample(texts, i, scores[i], f"{shard} row {first_row + i}", by_values)
        self.order += len(scores)

    def highest(self) -> list[Sample]:
        return [s for _, _, s in sorted(self.top, key=lambda e: (-e[0], -e[1]))]

    def lowest(self) -> list[Sample]:
        return [s for _, _, s in sorted(self.bottom, key=lambda e: (-e[0], -e[1]))]

    def around(self, score: float, exclude: Iterable[str] = ()) -> list[Sample]:
        """k samples from the reservoirs nearest ``score`` (none of ``exclude``), by score."""
        skip = set(exclude)
        pool = [s for r in self.reservoirs for s in r if s.where not in skip]
        pool.sort(key=lambda s: (abs(s.score - score), s.where))
        return sorted(pool[: self.k], key=lambda s: -s.score)


@dataclass
class ReportData:
    """Everything the page shows; built by one streaming pass (``collect``)."""

    config: ReportConfig
    threshold: float
    threshold_source: str
    shards: int = 0
    rows: int = 0
    overall: _Group = field(default_factory=_Group)
    groups: dict[str, _Group] = field(default_factory=dict)
    samples: _Samples | None = None
    text_bytes: int = 0  # UTF-8 bytes of the texts read
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(SUMMARY_BINS, np.int64))  # --stats-json's bins
    per_shard: list = field(default_factory=list)  # {"name", "rows", "bytes", "seconds"} per shard (--stats-json)
    span: tuple = UNIT  # (lo, hi) of the score column: the bins cover it (scorerset.column_span)
    span_source: str = ""

    def fine_edges(self) -> np.ndarray:
        return bin_edges(FINE_BINS, self.span)[:-1]

    def kept_curve(self, group: _Group | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(threshold, share of docs kept, share of tokens kept) with threshold at each fine bin edge."""
        g = group or self.overall
        docs = np.cumsum(g.docs[::-1])[::-1] / max(g.n, 1)
        tokens = np.cumsum(g.tokens[::-1])[::-1] / max(g.total_tokens, 1)
        return self.fine_edges(), docs, tokens

    def budget(self, share: float) -> tuple[float, float]:
        """Keeping the best ``share`` of tokens: (score cut-off, share of documents kept)."""
        thresholds, docs, tokens = self.kept_curve()
        # tokens[i] falls as i rises; the highest cut-off that still keeps >= share of tokens
        ok = np.flatnonzero(tokens >= share - 1e-12)
        i = int(ok[-1]) if len(ok) else 0
        return float(thresholds[i]), float(docs[i])

    def median_score(self) -> float:
        lo, hi = self.span
        if self.overall.n == 0:
            return (lo + hi) / 2
        cum = np.cumsum(self.overall.docs)
        return lo + (int(np.searchsorted(cum, self.overall.n / 2)) + 0.5) / FINE_BINS * (hi - lo)


def recorded_threshold(paths, column: str | None = None) -> tuple[float, str] | None:
    """The decision threshold (and name) of the model that scored these shards, from their run
    records; None when no shard records one. Shards scored by models with different thresholds
    are refused: one report, one threshold."""
    from .provenance import read_record

    found: dict[float, tuple[str, str]] = {}
    for path in paths:
        model = (read_record(path) or {}).get("model") or {}
        value, name = model.get("threshold"), model.get("name")
        scorer = ((model.get("options") or {}).get("scorers") or {}).get(column)
        if isinstance(scorer, dict):  # one of several (or a foreign) scorers: the column's own
            value, name = scorer.get("threshold"), f"{scorer.get('kind', 'scorer')} of column {column}"
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found.setdefault(float(value), (str(name or "unnamed model"), str(path)))
    if len(found) > 1:
        (a, (_, pa_)), (b, (_, pb)) = list(found.items())[:2]
        raise InputError(f"{pb}: scored by a model with threshold {b:g}, but {pa_} by one with {a:g}; "
                         "report them separately or give one --threshold")
    if not found:
        return None
    value, (name, _) = next(iter(found.items()))
    return value, f"the decision threshold of the model that scored the shards ({name}), from their run record"


def resolve_threshold(config: ReportConfig, paths=(), span: tuple[float, float, str] = (*UNIT, "[0, 1]")
                      ) -> tuple[float, str]:
    """The report threshold and a phrase saying where it came from: --threshold (in ``span``, the
    range of the score column: :func:`phifilter.scorerset.column_span`), else --model's, else the
    scoring model's (the shards' run records), else the bundled model's."""
    from .classifier import default_model_path, read_model_meta
    from .errors import OptionError

    if config.threshold is not None:
        lo, hi, where = span
        if not lo <= config.threshold <= hi:
            raise OptionError(f"--threshold {config.threshold:g}: column '{config.score_column}' holds scores in "
                              f"[{lo:g}, {hi:g}] ({where}); give a threshold in that range", "--threshold")
        return float(config.threshold), "given with --threshold"
    if config.model is None:
        recorded = recorded_threshold(paths, config.score_column)
        if recorded is not None:
            return recorded
    path = Path(config.model) if config.model is not None else default_model_path()
    meta = read_model_meta(path)
    value = meta.get("threshold")
    if value is None:
        return 0.5, f"0.5: the model {path} records none"
    where = f"the model {path}" if config.model is not None else "the bundled model"
    return float(value), f"the decision threshold of {where} (pass --threshold or --model if the shards were scored by another model)"


def _check_schema(path: Path, schema: pa.Schema, cfg: ReportConfig) -> None:
    names = schema.names
    if cfg.score_column not in names:
        raise InputError(
            f"{path}: no column '{cfg.score_column}'; is it a scored shard? "
            "(run `phifilter score` first, or name the column with --score-column)"
        )
    t = schema.field(cfg.score_column).type
    if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
        raise InputError(f"{path}: column '{cfg.score_column}' has type {t}, expected numbers")
    if cfg.text_column not in names:
        raise InputError(f"{path}: no column '{cfg.text_column}'; columns are: {', '.join(names)} "
                         "(choose one with --text-column)")
    if not is_text_type(schema.field(cfg.text_column).type):
        raise InputError(f"{path}: column '{cfg.text_column}' has type "
                         f"{schema.field(cfg.text_column).type}, expected strings")
    if cfg.by is not None and cfg.by not in names:
        raise InputError(f"{path}: no column '{cfg.by}' for --by; columns are: {', '.join(names)}")


def _by_strings(array: pa.Array) -> list[str]:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return [MISSING if v is None else str(v) for v in array.to_pylist()]


def collect(inputs, config: ReportConfig | None = None, progress: bool = False) -> ReportData:
    """One streaming pass over scored shards; memory stays bounded whatever their size."""
    import pyarrow.compute as pc
    from tqdm import tqdm

    cfg = config or ReportConfig()
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    shards = find_input_files(specs)
    files = []
    for s in shards:
        pf = open_parquet(s.path)
        _check_schema(s.path, pf.schema_arrow, cfg)
        files.append((s, pf))
    from .scorerset import column_span

    *span, span_source = column_span([s.path for s in shards], cfg.score_column)
    span = tuple(span)
    threshold, source = resolve_threshold(cfg, [s.path for s in shards], (*span, span_source))
    data = ReportData(cfg, threshold, source, shards=len(shards), span=span, span_source=span_source)
    log.info("report on %d shard(s), threshold %g (%s)", len(shards), threshold, source)
    data.samples = _Samples(cfg.samples_per_band, cfg.excerpt_chars, cfg.seed, span)
    base = [cfg.score_column, cfg.text_column] + ([cfg.by] if cfg.by and cfg.by not in (cfg.score_column, cfg.text_column) else [])
    total = sum(pf.metadata.num_rows for _, pf in files)
    by_counts: dict[str, int] = {}
    with tqdm(total=total, unit="doc", desc="report", disable=not progress) as bar:
        for shard, pf in files:
            row, shard_bytes, shard_began = 0, 0, time.perf_counter()
            ident = [c for c in IDENT_COLUMNS if c in pf.schema_arrow.names and c not in base]
            for batch in iter_batches(shard.path, cfg.read_batch_rows, columns=base + ident, parquet_file=pf):
                score_arr = batch.column(cfg.score_column)
                nulls = score_arr.null_count
                scores = score_arr.to_numpy(zero_copy_only=False).astype(np.float64)
                # A null or NaN score (a failed row) counts as 0, as `phifilter filter` treats it.
                scores = np.clip(np.nan_to_num(scores, nan=0.0), *span)
                texts = batch.column(cfg.text_column)
                if pa.types.is_dictionary(texts.type):
                    texts = texts.dictionary_decode()
                tokens = pc.fill_null(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False).astype(np.int64)
                shard_bytes += int(tokens.sum())
                tokens = (tokens + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN
                data.histogram += histogram(scores, span=span)
                bins = bin_index(scores, FINE_BINS, span)
                data.overall.add(bins, tokens, scores, threshold)
                data.overall.nulls += nulls
                by_values = None
                if cfg.by:
                    by_values = _by_strings(batch.column(cfg.by))
                    values = np.array(by_values, dtype=object)
                    for value in dict.fromkeys(by_values):
                        mask = values == value
                        if value not in data.groups:
                            data.groups[value] = _Group()
                        data.groups[value].add(bins[mask], tokens[mask], scores[mask], threshold)
                        by_counts[value] = by_counts.get(value, 0) + int(mask.sum())
                data.samples.add(scores, texts, str(shard.name), row, by_values,
                                 {c: batch.column(c) for c in ident})
                row += batch.num_rows
                data.rows += batch.num_rows
                bar.update(batch.num_rows)
            data.text_bytes += shard_bytes
            data.per_shard.append({"name": str(shard.name), "rows": row, "bytes": shard_bytes,
                                   "seconds": round(time.perf_counter() - shard_began, 6)})
    if len(data.groups) > cfg.max_by_values:
        # Keep the most frequent values; pool the rest so the page stays readable.
        keep = sorted(by_counts, key=lambda v: (-by_counts[v], v))[: cfg.max_by_values]
        pooled = _Group()
        for value in [v for v in data.groups if v not in keep]:
            g = data.groups.pop(value)
            pooled.docs += g.docs
            pooled.tokens += g.tokens
            pooled.kept_docs += g.kept_docs
            pooled.kept_tokens += g.kept_tokens
            pooled.score_sum += g.score_sum
        data.groups = {v: data.groups[v] for v in keep}
        data.groups[OTHER] = pooled
    else:
        data.groups = dict(sorted(data.groups.items(), key=lambda kv: (-kv[1].n, kv[0])))
    return data


# ---------------------------------------------------------------------------------------------
# figures


def _coarse(counts: np.ndarray) -> np.ndarray:
    return counts.reshape(PLOT_BINS, FINE_BINS // PLOT_BINS).sum(axis=1)


def histogram_figure(data: ReportData):
    fig = new_figure()
    ax = fig.add_subplot()
    edges = bin_edges(PLOT_BINS, data.span)
    ax.bar(edges[:-1], _coarse(data.overall.docs), width=edges[1] - edges[0], align="edge", color="#4c72b0",
           edgecolor="white")
    ax.axvline(data.threshold, color="#c44e52", linestyle="--", label=f"threshold {data.threshold:g}")
    ax.set_xlim(*data.span)
    ax.set_xlabel(data.config.score_column)
    ax.set_ylabel("documents")
    ax.set_title("Score distribution, all documents")
    ax.legend()
    return fig


def by_histograms_figure(data: ReportData):
    groups = list(data.groups.items())
    cols = min(3, len(groups))
    rows = (len(groups) + cols - 1) // cols
    fig = new_figure(3.4 * cols, 2.4 * rows + 0.3)
    edges = bin_edges(PLOT_BINS, data.span)
    for i, (value, g) in enumerate(groups):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.bar(edges[:-1], _coarse(g.docs), width=edges[1] - edges[0], align="edge", color="#55a868",
               edgecolor="white")
        ax.axvline(data.threshold, color="#c44e52", linestyle="--")
        ax.set_xlim(*data.span)
        label = value if len(value) <= 32 else value[:31] + "…"
        ax.set_title(f"{label} ({g.n:,})", fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"Score distribution by {data.config.by}", fontsize=11)
    return fig


def kept_share_figure(data: ReportData):
    thresholds, docs, tokens = data.kept_curve()
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot(thresholds, 100 * docs, label="documents kept", color="#4c72b0")
    ax.plot(thresholds, 100 * tokens, label="tokens kept (est.)", color="#dd8452")
    ax.axvline(data.threshold, color="#c44e52", linestyle="--", label=f"threshold {data.threshold:g}")
    ax.set_xlim(*data.span)
    ax.set_ylim(0, 101)
    ax.set_xlabel(f"threshold on {data.config.score_column} (keep score >= threshold)")
    ax.set_ylabel("% kept")
    ax.set_title("What a threshold keeps")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def budget_figure(data: ReportData):
    thresholds, docs, tokens = data.kept_curve()
    # Walk from the highest cut-off down: x = share of tokens kept, y = the cut-off that gives it.
    order = np.arange(FINE_BINS)[::-1]
    x = 100 * tokens[order]
    fig = new_figure()
    ax = fig.add_subplot()
    ax.step(x, thresholds[order], where="post", color="#8172b2", label="score cut-off")
    ax.set_xlabel("keep the best X% of tokens")
    ax.set_ylabel(f"{data.config.score_column} cut-off")
    ax.set_xlim(0, 100)
    ax.set_ylim(*data.span)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.step(x, 100 * docs[order], where="post", color="#64b5cd", linestyle=":", label="% of documents kept")
    ax2.set_ylabel("% of documents kept")
    ax2.set_ylim(0, 101)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper right")
    ax.set_title("Token budget: the cut-off that keeps the best X% of tokens")
    return fig


# ---------------------------------------------------------------------------------------------
# the page


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def _samples_html(title: str, note: str, samples: list[Sample], by: str | None) -> str:
    parts = [f"<h3>{escape(title)}</h3><p class=\"note\">{escape(note)}</p>"]
    if not samples:
        parts.append("<p class=\"note\">(no documents)</p>")
    for s in samples:
        meta = f"{s.where}" + (f" · {by}={s.by_value}" if by else "") + f" · {s.chars:,} chars"
        cut = f"\n… ({s.chars - len(s.text):,} more characters)" if s.chars > len(s.text) else ""
        # The first line that says something (not a lone '#' or quote) labels the document.
        lines = [ln.strip() for ln in s.text.splitlines()]
        first = next((ln for ln in lines if sum(c.isalnum() for c in ln) >= 3), "")[:90]
        opened = " open" if s is samples[0] else ""
        parts.append(
            f"<details class=\"doc\"{opened}><summary><span class=\"score\">{s.score:.3f}</span> · {escape(meta)} · "
            f"{escape(first)}</summary><pre>{escape(s.text + cut)}</pre></details>"
        )
    return "\n".join(parts)


def render_html(data: ReportData) -> str:
    cfg = data.config
    o = data.overall
    t = data.threshold
    out = [f"<h1>{escape(cfg.title)}</h1>",
           f"<p class=\"lead\">{data.rows:,} documents in {data.shards} shard(s), scored in column "
           f"<code>{escape(cfg.score_column)}</code>. Generated {escape(datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} "
           f"by phifilter {escape(_version())}.</p>"]
    if data.rows == 0:
        out.append("<p>The shards hold no documents.</p>")
        return html_page(cfg.title, "\n".join(out))
    mean = o.score_sum / o.n
    out.append("<div class=\"cards\">" + "".join(
        f"<div class=\"card\">{escape(label)}<b>{escape(value)}</b></div>" for label, value in [
            ("threshold", f"{t:g}"),
            ("documents kept", f"{o.kept_docs:,} ({_pct(o.kept_docs, o.n)})"),
            ("tokens kept (est.)", f"{o.kept_tokens:,} ({_pct(o.kept_tokens, o.total_tokens)})"),
            ("mean score", f"{mean:.3f}"),
            ("median score", f"{data.median_score():.3f}"),
        ]) + "</div>")
    out.append(f"<p class=\"note\">Threshold {t:g}: {escape(data.threshold_source)}. Documents with a score at or "
               f"above it are kept, as by <code>phifilter filter --threshold {t:g}</code>. Tokens are estimated "
               f"as UTF-8 bytes / {BYTES_PER_TOKEN} (no tokenizer is run); real BPE counts differ by "
               "10-30% but the shares are close." +
               (f" {o.nulls:,} rows had no score and count as 0." if o.nulls else "") + "</p>")

    out.append("<h2>Score distribution</h2>")
    out.append(figure_img(histogram_figure(data), "histogram of scores"))
    if cfg.by and data.groups:
        out.append(f"<h2>By {escape(cfg.by)}</h2>")
        out.append(figure_img(by_histograms_figure(data), f"histograms of scores by {cfg.by}"))
        rows = [[value, f"{g.n:,}", f"{g.score_sum / g.n:.3f}" if g.n else "n/a",
                 f"{g.kept_docs:,} ({_pct(g.kept_docs, g.n)})", f"{g.total_tokens:,}",
                 f"{g.kept_tokens:,} ({_pct(g.kept_tokens, g.total_tokens)})"]
                for value, g in data.groups.items()]
        out.append(html_table([cfg.by, "documents", "mean score", f"kept at {t:g}", "tokens (est.)",
                               "tokens kept"], rows))

    out.append("<h2>Kept share against the threshold</h2>")
    out.append(figure_img(kept_share_figure(data), "kept share of documents and tokens against the threshold"))
    thresholds, docs, tokens = data.kept_curve()
    rows = []
    lo, hi = data.span
    for cut in sorted({round(lo + k * (hi - lo) / 10, 3) for k in range(1, 10)} | {round(t, 3)}):
        i = min(max(int(round((cut - lo) / (hi - lo) * FINE_BINS)), 0), FINE_BINS - 1)
        rows.append([f"{cut:g}" + (" (report threshold)" if abs(cut - t) < 1e-9 else ""),
                     f"{100 * docs[i]:.1f}%", f"{100 * tokens[i]:.1f}%"])
    out.append(html_table(["score >=", "documents kept", "tokens kept (est.)"], rows))
    out.append(f"<p class=\"note\">Read from histograms with {FINE_BINS} bins over [{lo:g}, {hi:g}] "
               f"({escape(data.span_source)}; exact to 1/{FINE_BINS} of that range).</p>")

    out.append("<h2>Token budget</h2>")
    out.append("<p>To train on the best X% of the tokens, cut at the score below; "
               "<code>phifilter filter --threshold</code> with that value keeps them.</p>")
    out.append(figure_img(budget_figure(data), "token budget curve"))
    rows = []
    for share in BUDGETS:
        cut, doc_share = data.budget(share)
        rows.append([f"{100 * share:g}%", f"{cut:.3f}", f"{100 * doc_share:.1f}%",
                     f"{int(round(share * o.total_tokens)):,}"])
    out.append(html_table(["best tokens", "score cut-off", "documents kept", "tokens (est.)"], rows))

    out.append("<h2>Sample documents</h2>")
    s = data.samples
    k = cfg.samples_per_band
    median = data.median_score()
    top, bottom = s.highest(), s.lowest()
    near_threshold = s.around(t, exclude=[x.where for x in top + bottom])
    middle = s.around(median, exclude=[x.where for x in top + bottom + near_threshold])
    out.append(_samples_html("Top", f"the {k} highest-scoring documents", top, cfg.by))
    out.append(_samples_html("Around the threshold", f"{k} documents drawn at random near {t:g}", near_threshold, cfg.by))
    out.append(_samples_html("Middle", f"{k} other documents drawn at random near the median score {median:.3f}",
                             middle, cfg.by))
    out.append(_samples_html("Bottom", f"the {k} lowest-scoring documents", bottom, cfg.by))
    out.append(f"<p class=\"note\">Samples show at most {cfg.excerpt_chars:,} characters; random draws use seed "
               f"{cfg.seed}.</p>")
    return html_page(cfg.title, "\n".join(out))


def _version() -> str:
    from . import __version__

    return __version__


@dataclass
class ReportSummary:
    """What `phifilter report` wrote; ``str()`` is the line the CLI prints."""

    path: Path
    rows: int
    shards: int
    threshold: float
    kept_docs: int
    kept_tokens: int
    total_tokens: int
    seconds: float = 0.0
    text_bytes: int = 0
    histogram: list = field(default_factory=list)  # SUMMARY_BINS counts
    per_shard: list = field(default_factory=list)
    span: tuple = UNIT  # the range the histogram's bins cover

    def stats(self) -> dict:
        """Machine-readable statistics (``--stats-json``)."""
        from .stats import rate

        return {
            "command": "report", "output": str(self.path), "seconds": round(self.seconds, 6),
            "shards": {"read": self.shards, "failed": 0},
            "rows": {"in": self.rows, "kept": self.kept_docs}, "bytes": {"in": self.text_bytes},
            "tokens": {"estimated": self.total_tokens, "kept_estimated": self.kept_tokens,
                       "bytes_per_token": BYTES_PER_TOKEN},
            "threshold": self.threshold, "docs_per_second": rate(self.rows, self.seconds),
            "histogram": {"bins": SUMMARY_BINS, "edges": [round(float(e), 9) for e in bin_edges(SUMMARY_BINS, self.span)],
                          "counts": [int(c) for c in self.histogram]},
            "per_shard": list(self.per_shard), "failures": [],
        }

    def __str__(self) -> str:
        return (f"report written to {self.path}: {self.rows:,} documents in {self.shards} shard(s); "
                f"at threshold {self.threshold:g} {self.kept_docs:,} kept ({_pct(self.kept_docs, self.rows)}), "
                f"{_pct(self.kept_tokens, self.total_tokens)} of the estimated tokens")


def build_report(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    config: ReportConfig | None = None,
    progress: bool = False,
    stats_json: str | os.PathLike | None = None,
) -> ReportSummary:
    """Stream scored shards and write a self-contained HTML report to ``output``.

    ``stats_json``: also write the run's statistics there (:meth:`ReportSummary.stats`).

    Example::

        from phifilter import build_report, ReportConfig
        build_report("data/scored/", "report.html", ReportConfig(by="source"))
    """
    from .outputs import REPORT_MARK, is_report_file
    from .shardjob import claim_output, finish

    cfg = config or ReportConfig()
    from .location import as_location

    output = as_location(output)
    if output.is_dir():
        raise OutputError(f"{output}: is a folder; give the report's file name, e.g. {output / 'report.html'}")
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    for shard in find_input_files(specs):
        if shard.path.resolve() == output.resolve():
            raise OutputError(f"{output}: is one of the input shards; choose another -o file")
    # not an input, not into an input folder, not a file we did not write; writable; before the data pass
    claim_output(output, "a report", specs, is_report_file, stats_json=stats_json)
    try:  # a core dependency; checked before the data pass in case an install lost it
        import matplotlib  # noqa: F401
    except ImportError:
        raise OutputError("the report needs matplotlib, which is not installed: pip install matplotlib") from None
    began = time.perf_counter()
    data = collect(specs, cfg, progress=progress)
    page = render_html(data).replace("<!DOCTYPE html>\n", f"<!DOCTYPE html>\n{REPORT_MARK}\n", 1)
    write_text_atomic(output, page)
    log.info("wrote %s (%d bytes)", output, len(page.encode()))
    o = data.overall
    summary = ReportSummary(output, data.rows, data.shards, data.threshold, o.kept_docs, o.kept_tokens, o.total_tokens,
                            text_bytes=data.text_bytes, histogram=[int(c) for c in data.histogram],
                            per_shard=data.per_shard, span=data.span)
    return finish(summary, stats_json, began)
