"""Several devices on one machine: one worker process per device over a shared list of shards.

The parent holds the output lock, has already checked every shard's schema and removed stale
temporaries. It puts shard numbers on a queue; each worker (a fresh ``spawn`` process: CUDA
cannot be shared across ``fork``) loads the model on its own device, takes whole shards from
the queue and writes each through the same pipeline and ShardWriter as the single-process
scorer: a hidden temporary renamed when complete. So a shard's output exists only when whole,
a killed run resumes exactly like a single-process one, and two workers never write the same
file. Workers report rows and finished shards back; the parent drives the one progress bar.
"""

from __future__ import annotations

import os
import queue as queue_mod
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from .errors import InputError, ModelError, OutputError, PhifilterError

_ERRORS = {cls.__name__: cls for cls in (PhifilterError, InputError, ModelError, OutputError)}


def _model_source(model, clf, tmp_dir: Path):
    """What a worker loads: the model folder (an unsaved classifier is saved to a hidden folder)."""
    from .classifier import EduClassifier

    if not isinstance(model, EduClassifier):
        return str(model) if model is not None else None
    path = getattr(model, "path_", None)
    if path is not None:
        return str(path)
    return str(model.save(tmp_dir))


def _threads_per_worker(devices: Sequence[str]) -> int | None:
    """CPU workers split the cores between them; a GPU worker keeps torch's default."""
    cpu_workers = sum(d == "cpu" for d in devices)
    if not cpu_workers:
        return None
    return max(1, (os.cpu_count() or 1) // cpu_workers)


def _worker(rank, device, model_source, shard_list, out_dir, cfg_dict, tasks, results, threads):
    """Body of one worker process: score the shards it takes from ``tasks``."""
    import numpy as np

    from .score import ScoreConfig, load_model, scored_events, write_scored

    try:
        cfg = ScoreConfig(**cfg_dict)
        cfg.device, cfg.devices, cfg.engine = device, None, "local"
        if threads and not cfg.num_threads:
            cfg.num_threads = threads
        clf = load_model(model_source, cfg)
        clf._check_fitted()
        clf._check_embedder()

        def claimed():
            while True:
                i = tasks.get()
                if i is None:
                    return
                yield shard_list[i]

        def on_shard(kind, shard, out_path, payload):
            if kind == "scored":
                hist = np.minimum((payload * 10).astype(np.int64), 9)
                results.put(("scored", rank, str(shard.path), len(payload),
                             np.bincount(hist, minlength=10).tolist(), int((payload >= clf.threshold).sum())))
            elif kind == "skipped":
                results.put(("skipped", rank, str(shard.path), str(out_path)))
            else:
                results.put(("failed", rank, str(shard.path), payload))

        # Each worker has its own pipeline over the shards it claims; the claim happens in the
        # read thread, one shard ahead at most, so no shard waits on a busy worker for long.
        write_scored(scored_events(clf, claimed(), Path(out_dir), cfg), cfg,
                     on_shard=on_shard, on_rows=lambda n: results.put(("rows", rank, n)))
        results.put(("done", rank))
    except BaseException as e:  # reported to the parent, which stops the others
        name = type(e).__name__ if type(e).__name__ in _ERRORS else "PhifilterError"
        message = str(e) if isinstance(e, PhifilterError) else f"worker on {device}: {type(e).__name__}: {e}"
        results.put(("error", rank, name, message))


def score_on_devices(model, clf, shards, out_dir: Path, cfg, devices: Sequence[str], summary, bar) -> None:
    """Score ``shards`` with one worker process per entry of ``devices`` (see module docstring)."""
    import multiprocessing as mp
    import tempfile

    import numpy as np

    from .score import _read_scores

    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for i in range(len(shards)):
        tasks.put(i)
    workers = min(len(devices), max(1, len(shards)))
    for _ in range(workers):
        tasks.put(None)
    cfg_dict = {k: v for k, v in asdict(cfg).items()}
    threads = _threads_per_worker(devices[:workers])
    with tempfile.TemporaryDirectory(prefix="phifilter-model-") as tmp:
        source = _model_source(model, clf, Path(tmp) / "model")
        procs = [
            ctx.Process(target=_worker, name=f"phifilter-{devices[r]}-{r}",
                        args=(r, devices[r], source, list(shards), str(out_dir), cfg_dict, tasks, results, threads),
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
                    bar.update(msg[2])
                elif kind == "scored":
                    _, _, path, rows, hist, above = msg
                    summary.shards_scored += 1
                    summary.rows_scored += rows
                    summary.histogram += np.asarray(hist, dtype=np.int64)
                    summary.above_threshold += above
                elif kind == "skipped":
                    existing = _read_scores(Path(msg[3]), cfg.score_column)
                    summary.shards_skipped += 1
                    summary.rows_skipped += len(existing)
                    summary.add_scores(existing)
                    bar.update(len(existing))
                elif kind == "failed":
                    summary.failures.append((msg[2], msg[3]))
                elif kind == "done":
                    running.discard(rank)
                elif kind == "error":
                    raise _ERRORS.get(msg[2], PhifilterError)(msg[3])
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(timeout=30)
    summary.failures.sort()
