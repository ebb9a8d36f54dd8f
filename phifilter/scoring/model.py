"""The model as the scorer sees it: loading it, its speed knobs, the stages it declares, its identity.

The flow never looks inside a model. A model that can be cut into steps declares them with
``scoring_stages(tensor_forest=...)`` (see :mod:`.batch` for the protocol); any other object
with ``edu_score(texts)`` and a ``threshold`` is scored in one stage. A model object that is
not an EduClassifier also gives ``scoring_identity()`` (what its outputs' run records and
checkpoints name it by).
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from ..classifier import EduClassifier
from ..corpus import Shard
from ..provenance import fingerprint
from ..errors import OptionError
from .config import ScoreConfig

Stage = tuple[str, Callable]


def load_model(model, cfg: ScoreConfig) -> EduClassifier:
    """A model folder, a fitted classifier or None (the bundled model), with ``cfg``'s knobs set;
    a :class:`~phifilter.scorerset.ScorerPlan` (several or foreign scorers) gives a ScorerSet."""
    load_scorers = getattr(model, "load_scorers", None)
    if load_scorers is not None:  # a ScorerPlan
        return load_scorers(cfg)
    if model is not None and not isinstance(model, (str, os.PathLike)):
        clf = model  # a fitted EduClassifier, or any model object with edu_score (see module docstring)
    else:
        clf = EduClassifier.load(
            model, device=cfg.device, batch_size=cfg.embed_batch_size, max_length=cfg.max_length,
            embedder_revision=cfg.embedder_revision, embedder_sha256=cfg.embedder_sha256,
        )
    apply_throughput_options(clf, cfg)
    return clf


def ready_model(model, cfg: ScoreConfig) -> EduClassifier:
    """:func:`load_model`, then check it is fitted and its embedder is the one it was trained with
    (this loads the embedder), so no output is written by a model that cannot score."""
    clf = load_model(model, cfg)
    if isinstance(clf, EduClassifier):
        clf.check_fitted()
        clf.check_embedder()
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
        raise OptionError(f"--{name} {value}: the embedder is already loaded; pass the model folder instead", f"--{name}")
    for name, value in wanted.items():
        setattr(emb, name, value)
    if cfg.tokens_per_batch:
        emb.tokens_per_batch = int(cfg.tokens_per_batch)
    if cfg.num_threads:
        emb.num_threads = int(cfg.num_threads)
        if loaded:
            import torch

            torch.set_num_threads(int(cfg.num_threads))


def default_read_batch_rows(clf) -> int:
    """2048 documents per read batch, fewer for a chunking model (each document may become up
    to ``max_chunks`` texts): batches of similar work, and a progress bar that moves."""
    if getattr(clf, "chunking", "truncate") == "truncate":
        return 2048
    return max(128, 2048 // max(1, int(clf.max_chunks)))


def model_stages(model, cfg: ScoreConfig) -> list[Stage]:
    """The stages the model declares, or one stage calling its ``edu_score``."""
    declare = getattr(model, "scoring_stages", None)
    if declare is not None:
        return list(declare(tensor_forest=cfg.tensor_forest))

    def whole(batch):
        batch.scores = np.asarray(model.edu_score(batch.texts), np.float32) if batch.texts else np.zeros(0, np.float32)
        return batch

    return [("model", whole)]


def splits_into_stages(model) -> bool:
    """Does the model run as several threaded stages (True) or as one edu_score call?"""
    return [name for name, _ in model_stages(model, ScoreConfig(tensor_forest=False))] != ["model"]


def model_key(clf) -> dict:
    """Who scores: the model's and the embedder's file hashes and the options that change scores.

    A model that is not an EduClassifier names itself with ``scoring_identity()`` (a JSON-able
    dict that changes whenever its scores would)."""
    own = getattr(clf, "scoring_identity", None)
    if own is not None:
        return dict(own())
    emb = clf.embedder_
    return {
        # A classifier that was not loaded from a folder cannot be recognised in another process.
        # "forest_sha256" (and "forest" below) are the names earlier runs wrote into checkpoints
        # and run records; renaming them would make every existing output look stale.
        "forest_sha256": getattr(clf, "model_sha256_", None) or f"unsaved-{os.getpid()}-{id(clf)}",
        "embedder_sha256": emb.hashes,
        "max_length": emb.max_length,
        # how much of a document the embedder reads is in phifilter.json, not in a hashed file
        **({"max_chars": clf.max_chars} if getattr(clf, "max_chars", None) is not None else {}),
    }


def checkpoint_key(clf, shard: Shard, cfg: ScoreConfig) -> dict:
    """What must be unchanged for a rerun to reuse an interrupted run's checkpointed rows."""
    return {
        "input": fingerprint(shard.path),
        "text_column": cfg.text_column,
        "score_column": cfg.score_column,
        **({"int_score_column": cfg.int_score_column} if cfg.int_score_column else {}),
        **model_key(clf),  # forest_sha256, embedder_sha256, max_length for an EduClassifier
    }


def model_identity(clf) -> dict:
    """The model part of an output's run record (:mod:`phifilter.provenance`)."""
    from ..provenance import model_identity as identity

    own = getattr(clf, "run_identity", None)
    if own is not None:  # a ScorerSet: every member's files and options
        return own()
    key = model_key(clf)
    emb = getattr(clf, "embedder_", None)
    if emb is None or "forest_sha256" not in key:
        out = identity(None, **key)
    else:
        files = {"forest": key["forest_sha256"], **{f"embedder/{k}": v for k, v in key["embedder_sha256"].items()}}
        out = identity(files, max_length=key["max_length"], doc_mode=getattr(clf, "doc_mode", None),
                       max_chunks=getattr(clf, "max_chunks", None), dtype=getattr(emb, "dtype", None),
                       quantize=getattr(emb, "quantize", None),
                       **({"max_chars": key["max_chars"]} if "max_chars" in key else {}))
    # what `report` reads to apply the scoring model's own threshold (issue 23)
    threshold = getattr(clf, "threshold", None)
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        out["threshold"] = float(threshold)
    out["name"] = model_name(clf)
    return out


def model_name(clf) -> str:
    """How a run record names the scoring model, from its content (so moving the folder changes
    nothing): the bundled default, else the first hex digits of its files' hash, else its class."""
    own = getattr(clf, "model_sha256_", None)
    if not own:
        return type(clf).__name__
    from ..modelfolder import default_model_path, models_id, read_model_meta

    try:
        bundled = models_id(read_model_meta(default_model_path())) == own
    except Exception:  # a damaged install must not stop scoring with another model
        bundled = False
    return "the bundled default model" if bundled else f"model {str(own)[:12]}"
