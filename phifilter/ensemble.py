"""Ensembles of scorers, the Nemotron-CC way: percentile buckets of each member, combined.

``phifilter ensemble REF -o DIR --member NAME=SPEC ...`` scores a reference sample with every
member and keeps, per member, its 21 percentiles (0, 5, ..., 100 %). A document's score under
member *m* then falls in bucket ``b_m`` in 0..19 (the number of inner percentiles q5..q95 at or
below it) and gets a continuous position ``f_m = b_m + (x - q_b) / (q_{b+1} - q_b)``, the fraction
clipped to [0, 1 - 1e-5] (0 where the bin has no width). The ensemble's float score is
``max_m f_m`` (``--combine max``, Nemotron-CC's choice) or ``mean_m f_m`` (``--combine mean``),
in [0, 20); its bucket is ``min(19, floor(score))``, so with ``max`` it is the largest member
bucket. ``score --model NAME=DIR`` writes the float as NAME and the bucket as ``NAME_bucket``
(int8); ``filter --min-bucket B --score-column NAME`` keeps buckets >= B.

The folder holds ``ensemble.json`` (checked field by field on load: every number finite, the
percentiles non-decreasing, the combine rule known) and a README card. Members are stored by
spec (absolute paths) with their file hashes; a member whose files changed since the fit is
refused (refit the ensemble).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, ModelError, OptionError

FORMAT = "phifilter-ensemble"
FORMAT_VERSION = 1
BINS = 20
COMBINE = ("max", "mean")
TOP_FRACTION = 1 - 1e-5  # a float score stays below its bucket's upper integer, even in float32
META = "ensemble.json"


def member_positions(scores: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """``f_m`` (see the module docstring) of each score, float64 in [0, 20)."""
    q = np.asarray(quantiles, np.float64)
    x = np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf)
    b = np.searchsorted(q[1:BINS], x, side="right")  # 0..19
    lo, hi = q[b], q[b + 1]
    width = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(width > 0, (x - lo) / np.where(width > 0, width, 1.0), 0.0)
    return b + np.clip(np.nan_to_num(frac, nan=0.0, neginf=0.0, posinf=TOP_FRACTION), 0.0, TOP_FRACTION)


def combine(positions: Sequence[np.ndarray], how: str) -> np.ndarray:
    """The ensemble's float score (float32) from the members' positions."""
    stack = np.vstack([np.asarray(p, np.float64) for p in positions])
    out = stack.max(axis=0) if how == "max" else stack.mean(axis=0)
    return out.astype(np.float32)


def buckets(scores: np.ndarray) -> np.ndarray:
    """The 0-19 bucket of each ensemble score: ``min(19, floor(score))`` (int8)."""
    s = np.nan_to_num(np.asarray(scores, np.float64), nan=0.0)
    return np.clip(np.floor(s), 0, BINS - 1).astype(np.int8)


def check_meta(meta, path: Path) -> dict:
    """Every field of ``ensemble.json``, checked; the ModelError names the field and the file."""
    def bad(what: str) -> ModelError:
        return ModelError(f"{path}: {what}; refit the ensemble (phifilter ensemble) or restore the file")

    if not isinstance(meta, dict):
        raise bad("expected a JSON object")
    if meta.get("format") != FORMAT:
        raise bad(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad(f"format_version must be a positive integer, not {version!r}")
    if version > FORMAT_VERSION:
        raise ModelError(f"{path}: ensemble format {version} is newer than this phifilter reads "
                         f"({FORMAT_VERSION}); upgrade phifilter")
    if meta.get("combine") not in COMBINE:
        raise bad(f"combine must be one of {', '.join(COMBINE)}, not {meta.get('combine')!r}")
    if meta.get("bins") != BINS:
        raise bad(f"bins must be {BINS}, not {meta.get('bins')!r}")
    members = meta.get("members")
    if not isinstance(members, list) or not 1 <= len(members) <= 64:
        raise bad("members must be a list of 1 to 64 scorers")
    from .scorer import NAME

    names = set()
    for i, m in enumerate(members):
        if not isinstance(m, dict):
            raise bad(f"members[{i}] must be an object")
        name = m.get("name")
        if not isinstance(name, str) or not NAME.match(name) or name in names:
            raise bad(f"members[{i}].name must be a unique column-like name, not {name!r}")
        names.add(name)
        if m.get("spec") is not None and not isinstance(m.get("spec"), str):
            raise bad(f"members[{i}].spec must be a string (or null: the bundled model)")
        q = m.get("quantiles")
        if (not isinstance(q, list) or len(q) != BINS + 1
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in q)):
            raise bad(f"members[{i}].quantiles must be {BINS + 1} finite numbers")
        if any(b < a for a, b in zip(q, q[1:])):
            raise bad(f"members[{i}].quantiles must not decrease")
        files = m.get("files")
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise bad(f"members[{i}].files must map file names to SHA-256 hashes")
    return meta


class EnsembleScorer:
    """A fitted ensemble (see the module docstring), a scorer like any other."""

    kind = "ensemble"
    threshold = BINS / 2  # bucket 10 and above: the better half of the reference sample
    unit_interval = False  # scores on [0, BINS), not probabilities
    scale = (0.0, float(BINS))

    def __init__(self, folder: Path, meta: dict, members: list):
        self.folder, self.meta, self.members = Path(folder), meta, members
        self.how = meta["combine"]

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, cfg, load_member) -> "EnsembleScorer":
        """Read and check ``ensemble.json``, then ``load_member(spec, cfg)`` each member (their
        files are checked by :meth:`load`)."""
        from .foreign import read_json_object

        folder = Path(folder)
        path = folder / META
        meta = read_json_object(path, f"is {folder} an ensemble folder (phifilter ensemble)?",
                                "refit the ensemble or restore the file")
        check_meta(meta, path)
        members = [load_member(m["spec"], cfg) for m in meta["members"]]
        return cls(folder, meta, members)

    def load(self) -> "EnsembleScorer":
        """Load every member and check its files against the hashes recorded at fit time."""
        from .scorer import check_member, member_identity

        for m, member in zip(self.meta["members"], self.members):
            check_member(member)
            files = member_identity(member)["files"]
            if files != m["files"]:
                raise ModelError(f"{self.folder / META}: member {m['name']!r} ({m['spec']}) has other files than "
                                 "when the ensemble was fitted; refit the ensemble (phifilter ensemble)")
        return self

    def positions(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [member_positions(member.edu_score(texts), m["quantiles"])
                for m, member in zip(self.meta["members"], self.members)]

    def edu_score(self, texts: Sequence[str]) -> np.ndarray:
        """The ensemble's float score in [0, 20) (bucket = its integer part)."""
        if not len(texts):
            return np.zeros(0, np.float32)
        return combine(self.positions(texts), self.how)

    def buckets(self, scores: np.ndarray) -> np.ndarray:
        return buckets(scores)

    def int_scores(self, scores: np.ndarray) -> np.ndarray:
        return buckets(scores)

    def scoring_identity(self) -> dict:
        from .hashing import sha256_file

        files = {META: sha256_file(self.folder / META)}
        for m in self.meta["members"]:
            files.update({f"{m['name']}/{k}": v for k, v in m["files"].items()})
        return {"kind": self.kind, "files": files, "options": {"combine": self.how}}


def reference_texts(inputs, text_column: str, limit: int) -> list[str]:
    """Up to ``limit`` texts of the reference shards, in corpus order."""
    from .corpus import check_text_column, find_shards, iter_batches, open_parquet, texts_from_array

    texts: list[str] = []
    for shard in find_shards(inputs):
        check_text_column(open_parquet(shard.path).schema_arrow, text_column, shard.path)
        for batch in iter_batches(shard.path, 4096, columns=[text_column]):
            texts.extend(texts_from_array(batch.column(0)))
            if len(texts) >= limit:
                return texts[:limit]
    return texts


def fit_ensemble(inputs, output_dir: str | os.PathLike, members: Sequence[tuple], combine_rule: str = "max",
                 text_column: str = "text", sample: int = 10_000) -> dict:
    """Fit the ensemble of ``members`` (``(name, spec, loaded scorer)``; the CLI loads them with
    :func:`phifilter.scorerset.build_ensemble`) on ``inputs`` and save it to ``output_dir``.
    Returns the saved ``ensemble.json`` as a dict."""
    from .atomic import replace_folder
    from .scorer import member_identity

    if combine_rule not in COMBINE:
        raise OptionError(f"--combine {combine_rule}: expected one of {', '.join(COMBINE)}", "--combine")
    out = Path(output_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / META).is_file())):
        raise InputError(f"{out}: exists and is not an ensemble folder; choose a new or empty folder")
    texts = reference_texts([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs),
                            text_column, int(sample))
    if len(texts) < BINS:
        raise InputError(f"{inputs}: only {len(texts)} reference documents; percentile bins need at least {BINS}")
    entries = []
    for name, spec, member in members:
        scores = np.asarray(member.edu_score(texts), np.float64)
        q = np.quantile(scores, np.linspace(0, 1, BINS + 1))
        entries.append({"name": name, "spec": _absolute_spec(spec), "files": member_identity(member)["files"],
                        "quantiles": [round(float(v), 9) for v in np.maximum.accumulate(q)]})
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "combine": combine_rule, "bins": BINS,
            "members": entries, "reference": {"documents": len(texts), "text_column": text_column}}
    check_meta(meta, out / META)

    def write(tmp: Path) -> None:
        (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_card(meta), encoding="utf-8")

    replace_folder(out, write)
    return meta


def _absolute_spec(spec: str) -> str | None:
    """The spec with its path made absolute (the ensemble may be used from another folder)."""
    from .foreign import FASTTEXT_PREFIX, parse_spec

    parsed = parse_spec(spec)
    if parsed.path is None:
        return None
    path = os.path.abspath(parsed.path)
    if parsed.kind == "fasttext":
        return f"{FASTTEXT_PREFIX}{path}#{parsed.label}"
    if parsed.kind == "hf":
        return f"hf:{path}" + (f"#{parsed.label}" if parsed.label else "")
    return path


def _card(meta: dict) -> str:
    lines = [f"# phifilter ensemble ({meta['combine']} of {len(meta['members'])} members)", "",
             f"Fitted on {meta['reference']['documents']} reference documents. Score: the {meta['combine']} of "
             "each member's percentile position (0-20); bucket = its integer part (0-19).", "",
             "| member | spec | q5 | q50 | q95 |", "|---|---|---|---|---|"]
    for m in meta["members"]:
        q = m["quantiles"]
        lines.append(f"| {m['name']} | `{m['spec'] or 'bundled'}` | {q[1]:.4g} | {q[10]:.4g} | {q[19]:.4g} |")
    return "\n".join(lines) + "\n"
