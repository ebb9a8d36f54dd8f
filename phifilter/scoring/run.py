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
from ..corpus import (
    check_output_dir,
    check_text_column,
    find_shards,
    open_parquet,
)
from ..devices import parse_devices
from ..errors import InputError, OptionError, PhifilterError
from ..outputs import claim_folder, claim_stats, has_column, parquet_record_of
from ..scorerset import ScorerPlan, plan_models
from .config import ScoreConfig, partition_of
from .model import default_read_batch_rows, ready_model
from .partition import partition_shards
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
    never changed).
    """
    from tqdm import tqdm

    cfg = (config or ScoreConfig()).with_options(**options)
    cfg.check()
    model = plan_models(model, cfg.score_column)
    if isinstance(model, ScorerPlan):  # foreign or several scorers: the first one's column is the primary
        cfg.score_column = model.columns[0]
        if cfg.embeddings:  # the cache holds our embedder's vectors: no foreign scorer reads them
            raise OptionError("--embeddings: an embedding cache serves one phifilter model folder, not foreign "
                              "or several scorers (--model NAME=SPEC); score without it", "--embeddings")
    task = partition_of(cfg)
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    every_shard = find_shards(specs)
    shards = partition_shards(every_shard, *task)
    out_dir = check_output_dir(specs, output_dir)
    # Refuse a folder holding files we did not write (a run record naming score, or the score
    # column of an older phifilter's output), before loading the model.
    claim_folder(out_dir, parquet_record_of("score", legacy=has_column(cfg.score_column)), "scored shards")
    claim_stats(cfg.stats_json, specs, output_dir=out_dir)  # never an input, a shard or a foreign file
    if cfg.on_error == "raise":  # a bad shard fails now, not after loading the model (10-20 s)
        for s in shards:
            check_text_column(open_parquet(s.path).schema_arrow, cfg.text_column, s.path)
    devices = parse_devices(cfg.devices) if cfg.devices else None
    if devices and len(devices) == 1:
        cfg.device = devices[0]
    elif devices and not isinstance(model, EduClassifier):
        cfg.device = "cpu"  # the parent only checks the model; the workers load it on their devices
    clf = ready_model(model, cfg)  # loads the embedder and checks its hashes before any output is written
    if cfg.int_score_column:
        if not hasattr(clf, "int_scores"):
            raise InputError("--int-score-column: this model gives no 0-5 score (it has no int_scores)")
        import numpy as np

        clf.int_scores(np.zeros(1))  # a model without a 0-5 score map fails now, not at the first batch
    if cfg.read_batch_rows is None:
        cfg.read_batch_rows = default_read_batch_rows(clf)
    if cfg.embeddings:
        clf.use_embedding_cache(cfg.embeddings)
    # Check every footer and schema before any work, so a bad shard fails in the first second,
    # not hours into a run.
    failed, total_rows, good = [], 0, []
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
    # No lock on the folder: every shard is written under its own lease (phifilter.leases), so
    # full runs, tasks of any --num-tasks, --devices workers and Ray actors may share an output;
    # a shard another live run is writing is left to it, and only a lease holder deletes a
    # shard's temporaries.
    with tqdm(
        total=total_rows, unit="doc", unit_scale=True, desc="scoring", disable=not progress, smoothing=0.1
    ) as bar, heartbeat(bar, progress):
        start = time.perf_counter()
        done = _engine(cfg, devices)(model, clf, good, out_dir, cfg, on_rows=bar.update)
        seconds = time.perf_counter() - start
    summary = ScoreSummary(threshold=float(clf.threshold), seconds=seconds)
    for outcome in failed + done.outcomes:
        summary.add(outcome)
    if cfg.engine == "ray" or (devices and len(devices) > 1):
        summary.failures.sort()
    summary.task, summary.shards_elsewhere = task, len(every_shard) - len(shards)
    if cfg.stats_json:
        from ..stats import write_stats

        write_stats(cfg.stats_json, summary.stats())
    return summary


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
