"""An EduClassifier to and from its model folder (the folder format itself is :mod:`phifilter.modelfolder`).

``save_classifier`` writes the parts a fitted classifier has and only their parameters (an SVR
head's folder carries no forest settings); ``load_classifier`` reads formats 1-4 and puts the
parts back. :meth:`EduClassifier.save` and :meth:`EduClassifier.load` call these.
"""

from __future__ import annotations

import os
from pathlib import Path

from .defaults import MAX_LENGTH
from .embed import DEFAULT_EMBEDDER
from .errors import ModelError
from .heads import HEADS, make_head
from .modelfolder import (CALIBRATION_FILE, FORMAT, HEAD_FILE, META_FILE, default_model_path, library_versions,
                          read_model_meta)

FORMAT_3_HEADS = ("ridge", "svr")  # heads written as format 3 (older phifilter versions do not know them)
LEXICAL_NAME = "lexical"  # the lexical scorer's file is lexical.bin
LEXICAL_FILE = LEXICAL_NAME + ".bin"

# Parameters that belong to one part: recorded only when the model has that part.
PART_PARAMS = {
    "forest": ("n_estimators", "max_depth", "min_samples_leaf", "max_features", "class_weight"),
    "logistic": ("C", "class_weight"),
    "lexical": ("lexical_params",),
    "cascade": ("expensive_share", "novelty_share"),
}
FOREST_HEADS = ("forest", "forest-regressor")


def recorded_params(clf) -> dict:
    """The parameters a model folder records: the recipe's choices, and the settings of the parts it has."""
    params = {k: v for k, v in clf.get_params().items() if k not in ("embedder", "cv_folds")}
    has = {"forest": clf.head in FOREST_HEADS, "logistic": clf.head == "logistic",
           "lexical": clf.has_parts, "cascade": getattr(clf, "cascade_", None) is not None}
    drop = {p for part, names in PART_PARAMS.items() if not has[part] for p in names}
    if clf.head == "forest-regressor" or has["logistic"]:
        drop.discard("class_weight")
    if not clf.has_parts:
        drop.add("lexical")
    return {k: v for k, v in params.items() if k not in drop}


def format_version(clf) -> int:
    """The oldest format that describes this model, so older phifilter versions read what they can."""
    if clf.has_parts:
        return 4
    return 3 if clf.featurizer.parts != ["mean"] or clf.head in FORMAT_3_HEADS else 2


def parts_meta(clf) -> dict:
    scorers = [
        {"name": "lexical", "kind": "fasttext", "file": LEXICAL_FILE, "output": "P(score >= positive_threshold)"},
        {"name": "embedding", "kind": "featurizer+head", "head": HEADS[clf.head], "file": HEAD_FILE,
         "featurizer": clf.featurizer.get_params()},
    ]
    out = {"scorers": scorers, "combiner": clf.combiner_.to_dict()}
    if getattr(clf, "cascade_", None) is not None:
        out["cascade"] = clf.cascade_.to_dict()
    return out


def save_classifier(clf, path: str | os.PathLike, metrics: dict | None = None, training_data: dict | None = None,
                    card: str | None = None) -> Path:
    """Write the model folder atomically (a temporary folder renamed into place)."""
    from .modelfolder import dump_skops, now_utc, write_model_folder

    clf.check_fitted()
    calibrated = getattr(clf, "calibrator_", None) is not None
    lexical_entry: dict = {}

    def write_parts(tmp: Path) -> None:
        dump_skops(clf.head_, tmp / HEAD_FILE)
        if calibrated:
            dump_skops(clf.calibrator_, tmp / CALIBRATION_FILE)
        if clf.has_parts:
            # the scorer's own metadata (file, SHA-256, parameters, classes) goes into
            # phifilter.json beside the other parts, not into a second JSON file
            lexical_entry["fasttext"] = clf.lexical_.save(tmp, LEXICAL_NAME)
            (tmp / f"{LEXICAL_NAME}.json").unlink()

    meta = {
        "format": FORMAT,
        "format_version": format_version(clf),
        "head": HEADS[clf.head],
        "doc_mode": clf.doc_mode,
        "calibration": "isotonic" if calibrated else None,
        "params": recorded_params(clf),
        "embedder": {**clf.embedder_info_, "source": embedder_source(clf.embedder)},
        "positive_threshold": clf.positive_threshold,
        "threshold": clf.threshold,
        "n_features": int(clf.n_features_in_),
    }
    if clf.has_parts:
        meta.update(parts_meta(clf))
        lexical_entry = meta["scorers"][0]  # filled by write_parts (the saved file's metadata)
    if getattr(clf, "score_map_", None) is not None:
        meta["int_score_map"] = clf.score_map_
    meta.update({
        "metrics": metrics or getattr(clf, "metrics_", None) or {},
        "training_data": training_data or getattr(clf, "training_data_", None) or {},
        "files": {HEAD_FILE: None, **({CALIBRATION_FILE: None} if calibrated else {})},
        "versions": library_versions(),
        "created": now_utc(),
    })
    return write_model_folder(path, write_parts, meta, card)


def load_classifier(cls, path: str | os.PathLike | None = None, embedder: str | os.PathLike | None = None,
                    device: str = "auto", batch_size: int = 64, max_length: int | None = None,
                    embedder_revision: str | None = None, embedder_sha256: dict[str, str] | None = None):
    """Load a model folder (None: the bundled default) as a fitted ``cls``; see :meth:`EduClassifier.load`."""
    from .modelfolder import load_skops, models_id
    from .location import local_folder

    path = local_folder(path) if path is not None else default_model_path()  # a URL: a cached copy
    meta = read_model_meta(path)
    estimator = load_skops(path, meta, HEAD_FILE)
    calibrator = load_skops(path, meta, CALIBRATION_FILE) if meta.get("calibration") else None
    params = dict(meta.get("params") or {})
    info = meta.get("embedder") or {}
    params.update(
        embedder=embedder if embedder is not None else info.get("source"),
        device=device,
        batch_size=batch_size,
        max_length=max_length or info.get("max_length") or params.get("max_length", MAX_LENGTH),
    )
    head_names = {v: k for k, v in HEADS.items()}
    if meta.get("head") not in head_names:
        raise ModelError(f"{path}: unknown head '{meta.get('head')}' in {META_FILE}; upgrade phifilter")
    params.setdefault("head", head_names[meta["head"]])
    params.setdefault("doc_mode", meta.get("doc_mode") or "truncate")
    params.setdefault("threshold", meta.get("threshold", 0.5))
    params.setdefault("lexical", None)  # folders written before the recipe record the part choices
    known = set(cls().get_params())
    clf = cls(**{k: v for k, v in params.items() if k in known})
    clf.check_options()
    fresh = make_head(clf.head, **clf.get_params())
    head = type(fresh).from_estimator(estimator, **fresh.get_params())
    clf.embedding_head_, clf.head_ = head, head.estimator_
    clf.calibrator_ = calibrator
    clf.n_features_in_ = int(meta.get("n_features") or estimator.n_features_in_)  # the embedding dimension
    if clf.featurizer.width(clf.n_features_in_) != estimator.n_features_in_:
        raise ModelError(f"{path}: {META_FILE} says {clf.n_features_in_} features (--features {clf.features}), "
                         f"the head has {estimator.n_features_in_}")
    if info.get("dim") is not None and int(info["dim"]) != clf.n_features_in_:
        raise ModelError(f"{path}: embedder dimension {info['dim']} does not match the head's {clf.n_features_in_} features")
    clf.lexical_ = clf.combiner_ = clf.cascade_ = None
    if int(meta.get("format_version", 0)) >= 4 and meta.get("scorers"):
        load_parts(clf, path, meta)
    clf.score_map_ = meta.get("int_score_map")
    clf.embedder_ = clf.make_embedder()
    clf.embedder_.revision = embedder_revision or info.get("revision")
    clf.embedder_.sha256 = dict(embedder_sha256) if embedder_sha256 else None
    clf.embedder_info_ = info
    clf.metrics_ = meta.get("metrics") or {}
    clf.training_data_ = meta.get("training_data") or {}
    clf.path_ = path
    # Identifies the scoring model across processes (checkpoint keys): the hashes of its files.
    clf.model_sha256_ = models_id(meta)
    return clf


def load_parts(clf, path: Path, meta: dict) -> None:
    """The lexical scorer, combiner and cascade of a format-4 folder, onto ``clf``."""
    from .cascade import Cascade
    from .combiner import StackedCombiner
    from .lexical import LexicalScorer
    from .modelfolder import checked_file

    kinds = {s.get("name"): s for s in meta["scorers"] if isinstance(s, dict)}
    if set(kinds) != {"lexical", "embedding"} or kinds["lexical"].get("kind") != "fasttext":
        raise ModelError(f"{path}: unknown scorers {sorted(kinds)} in {META_FILE}; upgrade phifilter")
    entry = kinds["lexical"]
    checked_file(path, meta, entry.get("file", LEXICAL_FILE))
    if not isinstance(entry.get("fasttext"), dict):
        raise ModelError(f"{path}: {META_FILE} has no metadata for the lexical scorer")
    clf.lexical_ = LexicalScorer.load(path, entry["fasttext"])
    clf.combiner_ = StackedCombiner.from_dict(meta.get("combiner"))
    clf.cascade_ = Cascade.from_dict(meta["cascade"]) if meta.get("cascade") else None


def embedder_source(embedder) -> str | None:
    """What a model folder records as the embedder's source (None: the default MiniLM)."""
    if embedder is None:
        return None
    if not isinstance(embedder, (str, os.PathLike)):
        embedder = getattr(embedder, "source", None) or embedder.model
    if embedder is None or str(embedder) == DEFAULT_EMBEDDER:
        return None
    return str(embedder)
