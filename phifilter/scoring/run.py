"""One scoring run (``score_shards``): check the inputs, claim the outputs, pick an engine,
drive the progress bar, and return the run's ScoreSummary.

Everything that can be refused is refused before the model loads or any output is written:
options, every shard's footer and text column, the output folder and the ``--stats-json``
file (:mod:`phifilter.outputs`). Shards are written under per-shard leases
(:mod:`phifilter.leases`), so any mix of runs, tasks and engines may share the output folder.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Sequence

from ..classifier import EduClassifier
from ..corpus import check_text_column, open_parquet
from ..devices import parse_devices
from ..errors import InputError, OptionError, PhifilterError
from ..outputs import has_column, parquet_record_of
from ..scorerset import ScorerPlan, plan_models
from .config import ScoreConfig, partition_of
from .model import default_read_batch_rows, ready_model
from .summary import ScoreSummary, ShardOutcome


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
    default; or foreign and several scorers: a spec (``fasttext:PATH#LABEL``, a Hugging Face
    folder, an ensemble folder), a ``{column: spec}`` mapping or a list of ``NAME=SPEC``
    (:mod:`phifilter.scorerset`). Keyword ``options`` override fields of :class:`ScoreConfig` (``config`` itself is
    never changed). The run's lifecycle is :mod:`phifilter.shardjob`'s (claim, partition,
    stats); each engine writes its shards through :mod:`.flow`, under per-shard leases.
    """
    from tqdm import tqdm

    from .. import shardjob

    cfg = (config or ScoreConfig()).with_options(**options)
    cfg.check()
    model = plan_models(model, cfg.score_column)
    if isinstance(model, ScorerPlan):  # foreign or several scorers: the first one's column is the primary
        cfg.score_column = model.columns[0]
        if cfg.embeddings:  # the cache holds our embedder's vectors: no foreign scorer reads them
            raise OptionError("--embeddings: an embedding cache serves one phifilter model folder, not foreign "
                              "or several scorers (--model NAME=SPEC); score without it", "--embeddings")
    # Refuse a folder holding files we did not write (a run record naming score, or the score
    # column of an older phifilter's output), before loading the model.
    claimed = shardjob.claim(inputs, output_dir, parquet_record_of("score", legacy=has_column(cfg.score_column)),
                             "scored shards", cfg.stats_json, partition_of(cfg))
    if cfg.on_error == "raise":  # a bad shard fails now, not after loading the model (10-20 s)
        for s in claimed.shards:
            check_text_column(open_parquet(s.path).schema_arrow, cfg.text_column, s.path)
    devices = parse_devices(cfg.devices) if cfg.devices else None
    clf = _ready(model, cfg, devices)
    failed, good, total_rows = _readable(claimed.shards, cfg)
    with tqdm(
        total=total_rows, unit="doc", unit_scale=True, desc="scoring", disable=not progress, smoothing=0.1
    ) as bar, heartbeat(bar, progress):
        began = time.perf_counter()
        done = _engine(cfg, devices)(model, clf, good, claimed.out_dir, cfg, on_rows=bar.update)
    summary = ScoreSummary(threshold=float(clf.threshold))
    for outcome in failed + done.outcomes:
        summary.add(outcome)
    if cfg.engine == "ray" or (devices and len(devices) > 1):
        summary.failures.sort()
    summary.task, summary.shards_elsewhere = claimed.task, len(claimed.every) - len(claimed.shards)
    return shardjob.finish(summary, cfg.stats_json, began)


def _ready(model, cfg: ScoreConfig, devices):
    """The model, loaded and checked (embedder hashes, 0-5 score map) before any output is written."""
    if devices and len(devices) == 1:
        cfg.device = devices[0]
    elif devices and not isinstance(model, EduClassifier):
        cfg.device = "cpu"  # the parent only checks the model; the workers load it on their devices
    clf = ready_model(model, cfg)
    if cfg.int_score_column:
        if not hasattr(clf, "int_scores"):
            raise InputError("--int-score-column: this model gives no 0-5 score (it has no int_scores)")
        import numpy as np

        clf.int_scores(np.zeros(1))  # a model without a 0-5 score map fails now, not at the first batch
    if cfg.read_batch_rows is None:
        cfg.read_batch_rows = default_read_batch_rows(clf)
    if cfg.embeddings:
        clf.use_embedding_cache(cfg.embeddings)
    return clf


def _readable(shards, cfg: ScoreConfig):
    """(failed outcomes, readable shards, their rows): every footer and schema is checked before
    any work, so a bad shard fails in the first second, not hours into a run."""
    failed, good, total_rows = [], [], 0
    for s in shards:
        try:
            pf = open_parquet(s.path)
            check_text_column(pf.schema_arrow, cfg.text_column, s.path)
        except PhifilterError as e:
            if cfg.on_error == "raise":
                raise
            failed.append(ShardOutcome(str(s.path), str(s.name), "failed", message=str(e).removeprefix(f"{s.path}: ")))
            continue
        total_rows += pf.metadata.num_rows
        good.append(s)
    return failed, good, total_rows


@contextmanager
def heartbeat(bar, on: bool, every: float = 1.0):
    """Redraw ``bar`` every ``every`` seconds while the block runs: its elapsed time moves even
    while a batch of slowly embedded documents is still in the model (the count moves per batch)."""
    if not on:
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(every):
            bar.refresh()

    thread = threading.Thread(target=beat, name="phifilter-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _engine(cfg: ScoreConfig, devices):
    """The engine function for these options (imported only when chosen)."""
    if cfg.engine == "ray":
        from .engines.ray import score_with_ray

        return score_with_ray
    if devices and len(devices) > 1:
        from .engines.processes import score_on_devices

        return lambda *args, **kw: score_on_devices(*args[:5], devices, **kw)
    from .engines.local import score_locally

    return score_locally
