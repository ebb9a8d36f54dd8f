"""Several devices on one machine (``--devices``): one worker process per device over a shared list of shards.

The parent holds the output lock, has already checked every shard's schema and removed stale
temporaries. It puts shard numbers on a queue; each worker (a fresh ``spawn`` process: CUDA
cannot be shared across ``fork``) loads the model on its own device, takes whole shards from
the queue and runs the same flow as the local engine, so a shard's output exists only when
whole, a killed run resumes exactly like a single-process one, and two workers never write the
same file. Workers send back written rows and each shard's ShardOutcome; the parent folds them
into one ScoreSummary and drives the one progress bar.
"""

from __future__ import annotations

import os
import queue as queue_mod
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ...errors import ERROR_CLASSES as ERRORS
from ...errors import PhifilterError
from ..summary import ScoreSummary



def model_source(model, tmp_dir: Path):
    """What a worker loads: the model folder (an unsaved classifier is saved to a hidden folder)."""
    from ...classifier import EduClassifier

    if not isinstance(model, EduClassifier):
        return str(model) if model is not None else None
    path = getattr(model, "path_", None)
    if path is not None:
        return str(path)
    return str(model.save(tmp_dir))


def threads_per_worker(devices: Sequence[str]) -> int | None:
    """CPU workers split the cores between them; a GPU worker keeps torch's default."""
    cpu_workers = sum(d == "cpu" for d in devices)
    if not cpu_workers:
        return None
    return max(1, (os.cpu_count() or 1) // cpu_workers)


def worker(rank, device, source, shard_list, out_dir, cfg, tasks, results, threads):
    """Body of one worker process: score the shards it takes from ``tasks``."""
    from ..flow import score_shard_list
    from ..model import ready_model

    try:
        cfg = replace(cfg, device=device, devices=None, engine="local",
                      num_threads=cfg.num_threads or threads)
        clf = ready_model(source, cfg)

        def claimed():
            while True:
                i = tasks.get()
                if i is None:
                    return
                yield shard_list[i]

        # Each worker has its own pipeline over the shards it claims; the claim happens in the
        # read thread, one shard ahead at most, so no shard waits on a busy worker for long.
        score_shard_list(clf, claimed(), Path(out_dir), cfg,
                         on_outcome=lambda o: results.put(("outcome", rank, o)),
                         on_rows=lambda n: results.put(("rows", rank, n)))
        results.put(("done", rank))
    except BaseException as e:  # reported to the parent, which stops the others
        name = type(e).__name__ if type(e).__name__ in ERRORS else "PhifilterError"
        message = str(e) if isinstance(e, PhifilterError) else f"worker on {device}: {type(e).__name__}: {e}"
        results.put(("error", rank, name, message))


def score_on_devices(model, clf, shards, out_dir: Path, cfg, devices: Sequence[str], on_rows=None) -> ScoreSummary:
    """Score ``shards`` with one worker process per entry of ``devices`` (see module docstring)."""
    import multiprocessing as mp
    import tempfile

    summary = ScoreSummary(threshold=float(clf.threshold))
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for i in range(len(shards)):
        tasks.put(i)
    workers = min(len(devices), max(1, len(shards)))
    for _ in range(workers):
        tasks.put(None)
    threads = threads_per_worker(devices[:workers])
    with tempfile.TemporaryDirectory(prefix="phifilter-model-") as tmp:
        source = model_source(model, Path(tmp) / "model")
        procs = [
            ctx.Process(target=worker, name=f"phifilter-{devices[r]}-{r}",
                        args=(r, devices[r], source, list(shards), str(out_dir), cfg, tasks, results, threads),
                        daemon=False)  # non-daemonic: joblib may start threads/processes inside
            for r in range(workers)
        ]
        for p in procs:
            p.start()
        try:
            running = set(range(workers))
            while running:
                try:
                    msg = results.get(timeout=1.0)
                except queue_mod.Empty:
                    dead = [r for r in running if not procs[r].is_alive() and procs[r].exitcode not in (0, None)]
                    if dead:
                        r = dead[0]
                        raise PhifilterError(
                            f"worker on {devices[r]} died (exit code {procs[r].exitcode}); "
                            "finished shards are kept, rerun to resume"
                        )
                    continue
                kind, rank = msg[0], msg[1]
                if kind == "rows":
                    on_rows and on_rows(msg[2])
                elif kind == "outcome":
                    summary.add(msg[2])
                elif kind == "done":
                    running.discard(rank)
                elif kind == "error":
                    raise ERRORS.get(msg[2], PhifilterError)(msg[3])
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(timeout=30)
    return summary
