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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

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
from .pipeline import background, stage

HISTOGRAM_BINS = 10


@dataclass
class ScoreConfig:
    """Options of `phifilter score` (the defaults suit a CPU; raise batch sizes on a GPU)."""

    text_column: str = "text"
    score_column: str = "edu_score"
    int_score_column: str | None = None  # FineWeb-Edu style: the expected 0-5 score, rounded (int8)
    # rows per Arrow batch read (and per output row group); None: 2048, or 2048 / max_chunks
    # for a chunking model, so a batch holds about as many texts to embed either way
    read_batch_rows: int | None = None
    embed_batch_size: int = 64  # documents per forward pass of the embedder
    max_length: int | None = None  # None: the model's own
    device: str = "auto"
    on_error: str = "raise"  # or "skip": report a bad shard and go on with the rest
    # Embedding cache (`phifilter embed`): documents whose id it holds are not embedded again.
    embeddings: str | None = None
    id_column: str = "id"
    # -- throughput knobs (docs/scaling.md) --
    dtype: str = "auto"  # embedder dtype: auto (float16 on CUDA), float32, float16, bfloat16
    tokens_per_batch: int | None = None  # token budget per forward pass (None: embed_batch_size * max_length)
    quantize: str | None = None  # "int8": dynamic int8 Linear layers (CPU only; scores change slightly)
    num_threads: int | None = None  # torch intra-op threads (None: one per core)
    devices: str | Sequence[str] | None = None  # "cuda:0,cuda:1", "all", "cpu,cpu": one worker process each
    engine: str = "local"  # or "ray"
    ray_address: str | None = None  # join this Ray cluster (None: start a local one)
    pipeline_depth: int = 2  # items queued between two pipeline stages
    tensor_forest: bool | None = None  # forest as tensors on the embedder's device (None: on CUDA only)
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


def output_schema(schema: pa.Schema, score_column: str, int_score_column: str | None = None) -> pa.Schema:
    out = schema.append(pa.field(score_column, pa.float32()))
    return out.append(pa.field(int_score_column, pa.int8())) if int_score_column else out


def _cache_ids(clf: EduClassifier, batch: pa.RecordBatch, id_column: str | None, texts: list[str]):
    """Document ids for the embedding cache, or None when the model has no cache attached."""
    if getattr(clf, "embedding_cache_", None) is None:
        return None
    from .embcache import document_ids

    return document_ids(batch, id_column, texts)


def _read_scores(path: Path, column: str) -> np.ndarray:
    pf = open_parquet(path)
    return pf.read(columns=[column]).column(0).to_numpy(zero_copy_only=False).astype(np.float32)


def load_model(model, cfg: ScoreConfig) -> EduClassifier:
    if isinstance(model, EduClassifier):
        clf = model
    else:
        clf = EduClassifier.load(
            model, device=cfg.device, batch_size=cfg.embed_batch_size, max_length=cfg.max_length,
            embedder_revision=cfg.embedder_revision, embedder_sha256=cfg.embedder_sha256,
        )
    apply_throughput_options(clf, cfg)
    return clf


def apply_throughput_options(clf: EduClassifier, cfg: ScoreConfig) -> None:
    """Set the embedder's speed knobs from the config (they never change which model is used)."""
    emb = getattr(clf, "embedder_", None)
    if emb is None:
        return
    loaded = bool(getattr(emb, "loaded", False))
    wanted = {}
    if cfg.dtype not in (None, "auto") and cfg.dtype != emb.dtype:
        wanted["dtype"] = cfg.dtype
    if cfg.quantize and cfg.quantize != emb.quantize:
        wanted["quantize"] = cfg.quantize
    if wanted and loaded:
        name, value = next(iter(wanted.items()))
        raise PhifilterError(f"--{name} {value}: the embedder is already loaded; pass the model folder instead")
    for name, value in wanted.items():
        setattr(emb, name, value)
    if cfg.tokens_per_batch:
        emb.tokens_per_batch = int(cfg.tokens_per_batch)
    if cfg.num_threads:
        emb.num_threads = int(cfg.num_threads)
        if loaded:
            import torch

            torch.set_num_threads(int(cfg.num_threads))


# ---------------------------------------------------------------------------------------------
# The pipelined scorer. One stream of events runs through all shards, so the model never waits
# at a shard boundary: ("begin", shard) opens an output, ("batch", shard, record batch, ...) is
# scored, ("end", shard) renames the finished output into place, ("fail", shard, message) drops
# a bad shard's partial output (--on-error skip). Each step runs in its own thread.


def default_read_batch_rows(clf: EduClassifier) -> int:
    """2048 documents per read batch, fewer for a chunking model (each document may become up
    to ``max_chunks`` texts): batches of similar work, and a progress bar that moves."""
    if clf.chunking == "truncate":
        return 2048
    return max(128, 2048 // max(1, int(clf.max_chunks)))


def checkpoint_key(clf: EduClassifier, shard: Shard, cfg: ScoreConfig) -> dict:
    """What must be unchanged for a rerun to reuse an interrupted run's checkpointed rows."""
    return {
        "input": input_fingerprint(shard.path),
        "text_column": cfg.text_column,
        "score_column": cfg.score_column,
        **({"int_score_column": cfg.int_score_column} if cfg.int_score_column else {}),
        # A classifier that was not loaded from a folder cannot be recognised in another process.
        "forest_sha256": getattr(clf, "forest_sha256_", None) or f"unsaved-{os.getpid()}-{id(clf)}",
        "embedder_sha256": clf.embedder_.hashes,
        "max_length": clf.embedder_.max_length,
    }


def _shard_events(clf: EduClassifier, shards: Sequence[Shard], out_dir: Path, cfg: ScoreConfig, depth: int):
    """Read stage: events for every shard still to do (complete ones give a "skip" event)."""
    for shard in shards:
        out_path = out_dir / shard.name
        try:
            pf = open_parquet(shard.path)
            schema = pf.schema_arrow
            check_text_column(schema, cfg.text_column, shard.path)
            if cfg.score_column in schema.names:
                raise InputError(
                    f"{shard.path}: already has a column '{cfg.score_column}'; "
                    "choose another name with --score-column"
                )
            if cfg.int_score_column and cfg.int_score_column in schema.names:
                raise InputError(f"{shard.path}: already has a column '{cfg.int_score_column}'; "
                                 "choose another name with --int-score-column")
            expected = pf.metadata.num_rows
            out_schema = output_schema(schema, cfg.score_column, cfg.int_score_column)
            if completed_rows(out_path, cfg.score_column) == expected:
                PartialShard(out_path, out_schema, key={}).discard()  # a kill after the rename left it
                yield ("skip", shard, out_path)
                continue
            # A shard of more than one read batch is checkpointed batch by batch; opening the
            # checkpoint here tells the reader where an interrupted run stopped.
            if expected > cfg.read_batch_rows:
                writer = PartialShard(out_path, out_schema, key=checkpoint_key(clf, shard, cfg)).__enter__()
            else:
                writer = ShardWriter(out_path, out_schema)  # opened by the write stage
            yield ("begin", shard, out_path, schema, expected, writer)
            text_index = schema.get_field_index(cfg.text_column)
            for batch in iter_batches(shard.path, cfg.read_batch_rows, parquet_file=pf, skip_rows=writer.rows):
                yield ("batch", shard, batch, texts_from_array(batch.column(text_index)))
        except PhifilterError as e:
            if cfg.on_error == "raise":
                raise
            yield ("fail", shard, str(e).removeprefix(f"{shard.path}: "))
            continue
        yield ("end", shard)


def _tokenise(clf: EduClassifier):
    """Lay documents out as the model reads them (whole, or cut into chunks) and tokenise."""
    from .chunking import layout_documents

    emb = clf.embedder_

    def step(event):
        if event[0] != "batch":
            return event
        _, shard, batch, texts = event
        route = clf.route(texts)  # the model's cheap step: only route.embed's texts are embedded
        if len(route.embed) == 0:
            return ("batch", shard, batch, texts, route, None, None)
        sub = texts if len(route.embed) == len(texts) else [texts[k] for k in route.embed]
        layout = layout_documents(emb, sub, clf.chunking, clf.max_chunks, count=False)
        return ("batch", shard, batch, texts, route, layout, emb.prepare(layout[0]))

    return step


def _embed(clf: EduClassifier):
    emb = clf.embedder_

    def step(event):
        if event[0] != "batch":
            return event
        _, shard, batch, texts, route, layout, plan = event
        return ("batch", shard, batch, texts, route, layout, None if plan is None else emb.run(plan))

    return step


def _tensor_forest(clf: EduClassifier, cfg: ScoreConfig):
    """A TensorForest on the embedder's device when asked for (or by default on CUDA), else None.

    Only for a plain scikit-learn forest classifier head with one row per document and no
    calibration, scored through the stock ``score_doc_embeddings``.
    """
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    device = getattr(clf.embedder_, "resolved_device", None) or "cpu"
    use = cfg.tensor_forest if cfg.tensor_forest is not None else device.startswith("cuda")
    forest = getattr(clf, "forest_", None)
    # one head row per document (truncated, or pooled chunks), no calibration or combiner after
    per_document = clf.doc_mode in ("truncate", "chunk-mean", "chunk-weighted")
    if not (use and per_document and getattr(clf, "calibrator_", None) is None and not clf.has_parts
            and isinstance(forest, (RandomForestClassifier, ExtraTreesClassifier)) and True in list(forest.classes_)):
        return None
    from .tensor_forest import TensorForest

    return TensorForest(forest, True, device=device)


def _forest(clf: EduClassifier, cfg: ScoreConfig | None = None):
    from .chunking import assemble

    tensor = _tensor_forest(clf, cfg) if cfg is not None else None

    def step(event):
        if event[0] != "batch":
            return event
        _, shard, batch, texts, route, layout, X = event
        if not texts:
            return _scored(clf, cfg, shard, batch, np.zeros(0, np.float32))
        E = None if X is None else assemble(clf.embedder_, X, layout, clf.chunking, chunk_tokens=clf.needs_chunk_tokens)
        if tensor is not None:
            scores = tensor.predict_positive(clf.head_input(E)).astype(np.float32)
            scores[route.blank] = 0.0
        else:
            scores = clf.score_routed(route, E)
        return _scored(clf, cfg, shard, batch, scores)

    return step


def _scored(clf: EduClassifier, cfg: ScoreConfig | None, shard, batch, scores: np.ndarray) -> tuple:
    """The batch event the write stage takes: scores, and the int score when asked for."""
    if cfg is not None and cfg.int_score_column:
        return ("batch", shard, batch, scores, clf.int_scores(scores))
    return ("batch", shard, batch, scores)


def scored_events(clf: EduClassifier, shards: Sequence[Shard], out_dir: Path, cfg: ScoreConfig):
    """read -> tokenise -> embed -> forest, each in its own thread; yields events in order.

    The tokenise stage lays documents out (whole, or in chunks) and calls :meth:`Embedder.prepare`,
    the model stage :meth:`Embedder.run`, the head stage pools chunks and calls
    :meth:`EduClassifier.score_doc_embeddings`: ``edu_score`` cut into overlappable steps.
    """
    depth = max(1, int(cfg.pipeline_depth))
    events = background(_shard_events(clf, shards, out_dir, cfg, depth), depth=depth, name="phifilter-read")
    if not _splittable(clf):
        # Cached embeddings: the cache decides per document whether it is embedded at all, so
        # the classifier's whole edu_score runs as one stage (reading and writing still overlap).
        return stage(_whole_model(clf, cfg), events, depth=depth, name="phifilter-model")
    events = stage(_tokenise(clf), events, depth=depth, name="phifilter-tokenise")
    events = stage(_embed(clf), events, depth=depth, name="phifilter-embed")
    return stage(_forest(clf, cfg), events, depth=depth, name="phifilter-forest")


def _splittable(clf: EduClassifier) -> bool:
    """Can edu_score be cut into tokenise / embed / head stages? Yes, unless embeddings come
    from a cache, or a subclass scores documents its own way."""
    return (getattr(clf, "embedding_cache_", None) is None
            and bool(getattr(clf, "staged", False))
            and hasattr(clf.embedder_, "prepare") and hasattr(clf.embedder_, "run"))


def _whole_model(clf: EduClassifier, cfg: ScoreConfig):
    def step(event):
        if event[0] != "batch":
            return event
        _, shard, batch, texts = event
        ids = _cache_ids(clf, batch, cfg.id_column, texts)
        scores = clf.edu_score(texts, ids=ids) if texts else np.zeros(0, np.float32)
        return _scored(clf, cfg, shard, batch, scores)

    return step


def write_scored(events, cfg: ScoreConfig, on_shard=None, on_rows=None, on_resumed=None) -> None:
    """Write stage: appends the score column and writes each shard atomically.

    ``on_shard(kind, shard, out_path, scores_or_message)`` is called once per shard with kind
    "scored", "skipped" or "failed"; ``on_rows(n)`` after every written batch; ``on_resumed(n)``
    with the rows of a shard taken over from an interrupted run's checkpoints (their scores are
    part of the shard's scores).
    """
    writer = None
    current = None  # (shard, out_path, out_schema, expected, [scores])
    try:
        for event in events:
            kind, shard = event[0], event[1]
            if kind == "skip":
                on_shard and on_shard("skipped", shard, event[2], None)
            elif kind == "begin":
                _, _, out_path, schema, expected, writer = event
                out_schema = output_schema(schema, cfg.score_column, cfg.int_score_column)
                if isinstance(writer, ShardWriter):
                    writer.__enter__()
                done = []
                if writer.rows:  # checkpointed rows of an interrupted run
                    done.append(writer.checkpointed_column(cfg.score_column).to_numpy().astype(np.float32))
                    on_resumed and on_resumed(writer.rows)
                    on_rows and on_rows(writer.rows)
                current = (shard, out_path, out_schema, expected, done)
            elif kind == "batch":
                _, _, batch, scores, *ints = event  # ints: the int score column, when asked for
                out_batch = pa.RecordBatch.from_arrays(
                    [*batch.columns, pa.array(scores, pa.float32()), *(pa.array(i, pa.int8()) for i in ints)],
                    schema=current[2],
                )
                writer.write_batch(out_batch)
                current[4].append(scores)
                on_rows and on_rows(out_batch.num_rows)
            elif kind == "end":
                if writer.rows != current[3]:
                    err = InputError(f"{shard.path}: footer says {current[3]} rows but {writer.rows} were read")
                    if cfg.on_error == "raise":
                        raise err
                    writer.__exit__(InputError, err, None)
                    writer = None
                    on_shard and on_shard("failed", shard, current[1], str(err).removeprefix(f"{shard.path}: "))
                    continue
                w, writer = writer, None
                w.__exit__(None, None, None)
                scores = np.concatenate(current[4]) if current[4] else np.zeros(0, np.float32)
                on_shard and on_shard("scored", shard, current[1], scores)
            elif kind == "fail":
                if writer is not None and current is not None and current[0] == shard:
                    w, writer = writer, None
                    w.__exit__(InputError, None, None)  # drops the partial temporary
                on_shard and on_shard("failed", shard, None, event[2])
    except BaseException as e:
        if writer is not None:
            writer.__exit__(type(e), e, None)
        raise


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
    if cfg.engine not in ("local", "ray"):
        raise InputError(f"--engine {cfg.engine}: expected 'local' or 'ray'")
    devices = parse_devices(cfg.devices) if cfg.devices else None
    if devices and len(devices) == 1:
        cfg.device = devices[0]
    elif devices and not isinstance(model, EduClassifier):
        cfg.device = "cpu"  # the parent only checks the model; the workers load it on their devices
    clf = load_model(model, cfg)
    clf.check_fitted()
    clf.check_embedder()  # load the embedder and check its hashes before any output is written
    if cfg.int_score_column:
        clf.int_scores(np.zeros(1))  # a model without a 0-5 score map fails now, not at the first batch
    if cfg.read_batch_rows is None:
        cfg.read_batch_rows = default_read_batch_rows(clf)
    if cfg.embeddings:
        clf.use_embedding_cache(cfg.embeddings)
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
        start = time.perf_counter()
        if cfg.engine == "ray":
            from .engines.ray_engine import score_with_ray

            score_with_ray(model, clf, good, out_dir, cfg, summary, bar)
        elif devices and len(devices) > 1:
            from .multigpu import score_on_devices

            score_on_devices(model, clf, good, out_dir, cfg, devices, summary, bar)
        else:
            resumed = []
            write_scored(scored_events(clf, good, out_dir, cfg), cfg,
                         on_shard=summary_updater(summary, cfg, bar), on_rows=bar.update, on_resumed=resumed.append)
            summary.rows_resumed = sum(resumed)
            summary.rows_scored -= summary.rows_resumed  # counted with their shard's scores
        summary.seconds = time.perf_counter() - start
    return summary


def summary_updater(summary: ScoreSummary, cfg: ScoreConfig, bar=None):
    """on_shard callback that folds one shard's outcome into ``summary``."""

    def on_shard(kind, shard, out_path, payload):
        if kind == "scored":
            summary.shards_scored += 1
            summary.rows_scored += len(payload)
            summary.add_scores(payload)
        elif kind == "skipped":
            existing = _read_scores(out_path, cfg.score_column)
            summary.shards_skipped += 1
            summary.rows_skipped += len(existing)
            summary.add_scores(existing)
            if bar is not None:
                bar.update(len(existing))
        else:
            if cfg.on_error == "raise":
                raise InputError(f"{shard.path}: {payload}")
            summary.failures.append((str(shard.path), payload))

    return on_shard


def parse_devices(devices: str | Sequence[str]) -> list[str]:
    """'cuda:0,cuda:1' / 'all' / 'cpu,cpu' / a list -> checked device names."""
    from .embed import resolve_device

    if isinstance(devices, str):
        if devices.strip().lower() == "all":
            import torch

            count = torch.cuda.device_count()
            if count == 0:
                raise InputError("--devices all: no CUDA device is available here; use --device cpu")
            return [f"cuda:{i}" for i in range(count)]
        devices = [d for d in devices.split(",")]
    names = [d.strip().lower() for d in devices if d.strip()]
    if not names:
        raise InputError("--devices: expected a comma-separated list such as cuda:0,cuda:1, or 'all'")
    checked = []
    for d in names:
        if d == "cuda":
            d = "cuda:0"
        resolve_device(d)
        checked.append(d)
    return checked
