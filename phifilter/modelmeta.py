"""Check every field of a model folder's ``phifilter.json`` before anything uses it.

A hand-edited or damaged ``phifilter.json`` (``"threshold": "abc"``, ``"max_chunks": -3``)
must be one clear ``ModelError`` naming the file and the field, not a traceback deep inside
scoring. Unknown extra fields are allowed (newer minor versions may add some); known fields
must have the right type and range. A field that is absent keeps its old default.
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import ModelError

_HEX64 = set("0123456789abcdef")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str_or_none(v) -> bool:
    return v is None or isinstance(v, str)


def _sha_map(v) -> bool:
    return isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(d, str) and len(d) == 64 and set(d) <= _HEX64 for k, d in v.items())


def _rules():
    from .chunking import DOC_MODES

    top = {
        "format_version": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
        "head": (lambda v: isinstance(v, str), "a head name"),
        "doc_mode": (lambda v: v is None or v in DOC_MODES, "one of " + ", ".join(DOC_MODES)),
        "calibration": (lambda v: v in (None, "isotonic"), "null or \"isotonic\""),
        "params": (lambda v: v is None or isinstance(v, dict), "an object"),
        "embedder": (lambda v: v is None or isinstance(v, dict), "an object"),
        "positive_threshold": (_number, "a number"),
        "threshold": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        "n_features": (lambda v: v is None or (_int(v) and v > 0), "a whole number > 0"),
        "metrics": (lambda v: v is None or isinstance(v, dict), "an object"),
        "training_data": (lambda v: v is None or isinstance(v, dict), "an object"),
        "files": (_sha_map, "an object of file name -> SHA-256"),
    }
    params = {
        "threshold": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        "positive_threshold": (_number, "a number"),
        "max_length": (lambda v: _int(v) and v >= 8, "a whole number >= 8"),
        "max_chunks": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
        "batch_size": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
        "n_estimators": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
        "min_samples_leaf": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
        "max_depth": (lambda v: v is None or (_int(v) and v >= 1), "null or a whole number >= 1"),
        "random_state": (lambda v: v is None or _int(v), "null or a whole number"),
        "n_jobs": (lambda v: v is None or _int(v), "null or a whole number"),
        "C": (lambda v: _number(v) and v > 0, "a number > 0"),
        "doc_mode": (lambda v: v in DOC_MODES, "one of " + ", ".join(DOC_MODES)),
        "head": (lambda v: isinstance(v, str), "a head name"),
        "features": (lambda v: v is None or isinstance(v, str), "parts joined by '+'"),
        "calibrate": (lambda v: isinstance(v, bool), "true or false"),
        "device": (lambda v: isinstance(v, str), "a device name"),
    }
    embedder = {
        "name": (_str_or_none, "a name"),
        "revision": (_str_or_none, "null or a revision"),
        "source": (_str_or_none, "null or a name or folder"),
        "dim": (lambda v: v is None or (_int(v) and v > 0), "a whole number > 0"),
        "max_length": (lambda v: v is None or (_int(v) and v >= 8), "a whole number >= 8"),
        "sha256": (lambda v: v is None or _sha_map(v), "an object of file name -> SHA-256"),
    }
    novelty = {  # the cascade's novelty rule (phifilter.cascade)
        "measure": (lambda v: v == "unseen_token_share", "\"unseen_token_share\""),
        "share": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
        "threshold": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    }
    return top, params, embedder, novelty


def check_model_meta(meta: dict, meta_file: Path) -> dict:
    """Raise ModelError naming the first field with a wrong type or range; return ``meta``."""
    top, params, embedder, novelty = _rules()
    checks = [("", meta, top)]
    if isinstance(meta.get("params"), dict):
        checks.append(("params.", meta["params"], params))
    if isinstance(meta.get("embedder"), dict):
        checks.append(("embedder.", meta["embedder"], embedder))
    cascade = meta.get("cascade")
    if isinstance(cascade, dict) and "novelty" in cascade:
        if not isinstance(cascade["novelty"], dict):
            raise ModelError(f"{meta_file}: field 'cascade.novelty' is {cascade['novelty']!r}, expected an object; "
                             "the model folder is damaged or was edited by hand (retrain or restore it)")
        missing = [k for k in novelty if k not in cascade["novelty"]]
        if missing:
            raise ModelError(f"{meta_file}: field 'cascade.novelty' lacks {', '.join(missing)}; "
                             "the model folder is damaged or was edited by hand (retrain or restore it)")
        checks.append(("cascade.novelty.", cascade["novelty"], novelty))
    for prefix, obj, rules in checks:
        for key, (ok, expected) in rules.items():
            if key in obj and not ok(obj[key]):
                raise ModelError(f"{meta_file}: field '{prefix}{key}' is {obj[key]!r}, expected {expected}; "
                                 "the model folder is damaged or was edited by hand (retrain or restore it)")
    return meta
