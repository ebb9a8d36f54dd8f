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
        "max_chars": (lambda v: v is None or (_int(v) and v >= 1), "null or a whole number >= 1"),
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


def _fail(meta_file, field: str, value, expected: str) -> ModelError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return ModelError(f"{meta_file}: field '{field}' is {shown}, expected {expected}; "
                      "the model folder is damaged or was edited by hand (retrain or restore it)")


def _apply(meta_file, prefix: str, obj, rules: dict, required: tuple = ()) -> None:
    if not isinstance(obj, dict):
        raise _fail(meta_file, prefix.rstrip("."), obj, "an object")
    for key in required:
        if key not in obj:
            raise _fail(meta_file, prefix + key, None, rules[key][1] + " (the field is missing)")
    for key, (ok, expected) in rules.items():
        if key in obj and not ok(obj[key]):
            raise _fail(meta_file, prefix + key, obj[key], expected)


def check_model_meta(meta: dict, meta_file: Path) -> dict:
    """Raise ModelError naming the first field with a wrong type or range; return ``meta``."""
    top, params, embedder, novelty = _rules()
    _apply(meta_file, "", meta, top)
    if isinstance(meta.get("params"), dict):
        _apply(meta_file, "params.", meta["params"], params)
    if isinstance(meta.get("embedder"), dict):
        _apply(meta_file, "embedder.", meta["embedder"], embedder)
    cascade = meta.get("cascade")
    if isinstance(cascade, dict) and "novelty" in cascade:  # the cascade's novelty rule (format 4, optional)
        _apply(meta_file, "cascade.novelty.", cascade["novelty"], novelty, required=tuple(novelty))
    check_parts(meta, meta_file)
    return meta


# ---------------------------------------------------------------------------------------------
# format 4: scorers, combiner, cascade, score map. Every number finite and in its range, every
# name a plain file name inside the folder, the band ordered, before any part file is opened.

MAX_WEIGHT = 1e6  # a combiner weight or intercept beyond this is no trained value (and could overflow)


def _finite(lo: float = -math.inf, hi: float = math.inf):
    return lambda v: _number(v) and lo <= v <= hi


def _plain_name(v) -> bool:
    return (isinstance(v, str) and v not in ("", ".", "..") and not any(c in v for c in "/\\\0")
            and v == v.strip())


def _numbers(v, ok) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(ok(x) for x in v)


def _combiner_rules() -> dict:
    weight = _finite(-MAX_WEIGHT, MAX_WEIGHT)
    return {
        "kind": (lambda v: v == "logistic", '"logistic"'),
        "inputs": (lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) for x in v),
                   "a list of scorer names"),
        "C": (lambda v: _number(v) and v > 0, "a number > 0"),
        "link": (lambda v: v == "logit", '"logit"'),
        "coef": (lambda v: _numbers(v, weight), f"a list of numbers in [-{MAX_WEIGHT:g}, {MAX_WEIGHT:g}]"),
        "intercept": (weight, f"a number in [-{MAX_WEIGHT:g}, {MAX_WEIGHT:g}]"),
    }


def _check_combiner(meta_file, prefix: str, d, inputs=None) -> None:
    _apply(meta_file, prefix, d, _combiner_rules(), required=("kind", "inputs", "coef", "intercept"))
    if len(d["coef"]) != len(d["inputs"]):
        raise _fail(meta_file, prefix + "coef", d["coef"], f"one weight per input ({len(d['inputs'])})")
    if inputs is not None and set(d["inputs"]) - set(inputs):
        raise _fail(meta_file, prefix + "inputs", d["inputs"], "names of the model's scorers " + ", ".join(inputs))


LEXICAL_PARAMS = {
    "labels": (lambda v: v in ("grades", "binary"), '"grades" or "binary"'),
    "tokenizer": (lambda v: isinstance(v, str), "a tokenizer name"),
    "dim": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    "epoch": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    "lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "wordNgrams": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    "minCount": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    "bucket": (lambda v: _int(v) and v >= 0, "a whole number >= 0"),
    "loss": (lambda v: isinstance(v, str), "a loss name"),
    "positive_threshold": (_number, "a number"),
    "max_chars": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    "random_state": (_int, "a whole number"),
    "thread": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
}


def check_lexical_meta(meta, meta_file, prefix: str = "") -> None:
    """The lexical scorer's metadata (in ``phifilter.json`` under ``prefix``, or its own ``.json``):
    ModelError naming the first wrong field."""
    rules = {
        "format": (lambda v: v == "phifilter-lexical", '"phifilter-lexical"'),
        "format_version": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
        "file": (_plain_name, "a plain file name inside the model folder"),
        "sha256": (lambda v: isinstance(v, str) and len(v) == 64 and set(v) <= _HEX64, "a SHA-256 in hex"),
        "size_bytes": (lambda v: _int(v) and v >= 0, "a whole number >= 0"),
        "params": (lambda v: isinstance(v, dict), "an object"),
        "classes": (lambda v: isinstance(v, list) and len(v) >= 2 and all(isinstance(c, str) for c in v),
                    "a list of at least two class names"),
    }
    _apply(meta_file, prefix, meta, rules, required=("format", "file", "sha256", "params", "classes"))
    _apply(meta_file, prefix + "params.", meta["params"], LEXICAL_PARAMS)


def _check_scorers(meta_file, scorers) -> list[str]:
    if not isinstance(scorers, list) or not scorers:
        raise _fail(meta_file, "scorers", scorers, "a list of scorer objects")
    rules = {
        "name": (lambda v: isinstance(v, str) and v != "", "a name"),
        "kind": (lambda v: isinstance(v, str), "a scorer kind"),
        "file": (_plain_name, "a plain file name inside the model folder"),
        "head": (_str_or_none, "a head name"),
        "output": (_str_or_none, "a description"),
        "featurizer": (lambda v: v is None or isinstance(v, dict), "an object"),
    }
    names = []
    for i, s in enumerate(scorers):
        _apply(meta_file, f"scorers[{i}].", s, rules, required=("name", "kind"))
        names.append(s["name"])
        if s["kind"] == "fasttext":
            check_lexical_meta(s.get("fasttext"), meta_file, f"scorers[{i}].fasttext.")
    if len(set(names)) != len(names):
        raise _fail(meta_file, "scorers", names, "scorers with distinct names")
    return names


def _check_cascade(meta_file, c, names) -> None:
    rules = {
        "cheap": (lambda v: v in names, "the name of one of the scorers " + ", ".join(names)),
        "expensive_share": (_finite(0, 1), "a number in [0, 1]"),
        "band": (lambda v: isinstance(v, list) and len(v) == 2 and (v == [None, None] or all(_finite(0, 1)(x) for x in v)),
                 "[low, high], two numbers in [0, 1] (or [null, null]: an empty band)"),
    }
    _apply(meta_file, "cascade.", c, rules, required=("cheap", "expensive_share", "band", "cheap_mapping"))
    lo, hi = c["band"]
    if lo is not None and lo > hi:
        raise _fail(meta_file, "cascade.band", c["band"], "[low, high] with low <= high")
    _check_combiner(meta_file, "cascade.cheap_mapping.", c["cheap_mapping"], [c["cheap"]])


def _check_score_map(meta_file, m) -> None:
    rules = {
        "edu_score": (lambda v: _numbers(v, _finite(0, 1)), "a list of numbers in [0, 1]"),
        "expected_score": (lambda v: _numbers(v, _finite(0, 5)), "a list of numbers in [0, 5]"),
    }
    _apply(meta_file, "int_score_map.", m, rules, required=("edu_score", "expected_score"))
    x, y = m["edu_score"], m["expected_score"]
    if len(x) != len(y):
        raise _fail(meta_file, "int_score_map.expected_score", f"{len(y)} values",
                    f"one value per edu_score breakpoint ({len(x)})")
    if any(b < a for a, b in zip(x, x[1:])):
        raise _fail(meta_file, "int_score_map.edu_score", x, "breakpoints in increasing order")


def check_parts(meta: dict, meta_file) -> None:
    """The format-4 fields (scorers, combiner, cascade, int_score_map) and the ``files`` names."""
    for name in meta.get("files") or {}:
        if not _plain_name(name):
            raise _fail(meta_file, "files", name, "plain file names inside the model folder")
    names = None
    if meta.get("scorers") is not None:
        names = _check_scorers(meta_file, meta["scorers"])
        _check_combiner(meta_file, "combiner.", meta.get("combiner"), names)
    elif meta.get("combiner") is not None:
        _check_combiner(meta_file, "combiner.", meta["combiner"])
    if meta.get("cascade") is not None:
        _check_cascade(meta_file, meta["cascade"], names or ["lexical"])
    if meta.get("int_score_map") is not None:
        _check_score_map(meta_file, meta["int_score_map"])
