"""`filter --sample-by-score LO:HI`: keep documents with a probability that rises with their score.

Instead of a hard cut, each document is kept with probability

    p(s) = 0                      for s <= LO (and for a NaN or null score)
    p(s) = (s - LO) / (HI - LO)   for LO < s < HI
    p(s) = 1                      for s >= HI

(``LO == HI`` is a hard cut at LO). The draw is deterministic: a document is kept when
``u < p(s)``, where ``u`` in [0, 1) is the first 52 bits of its text's SHA-256
(:func:`phifilter.hashing.text_hash`), so a rerun, another machine or another shard order keeps
exactly the same documents, and copies of one text share their fate. The summary gives the
expected token share (``sum p_i t_i / sum t_i``, tokens counted with ``--tokenizer``) next
to the share actually kept.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from .errors import OptionError

U_BITS = 52  # exact in a float64


@dataclass(frozen=True)
class SampleCurve:
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.lo:g}:{self.hi:g}"

    def probability(self, scores) -> np.ndarray:
        """p(s) of each score (see the module docstring)."""
        s = np.asarray(scores, np.float64)
        with np.errstate(invalid="ignore"):
            if self.hi == self.lo:
                p = (s >= self.lo).astype(np.float64)
            else:
                p = np.clip((s - self.lo) / (self.hi - self.lo), 0.0, 1.0)
        p[~np.isfinite(s)] = 0.0
        return p


def parse_curve(value: str) -> SampleCurve:
    """'LO:HI' -> SampleCurve; both finite, LO <= HI."""
    lo_text, sep, hi_text = str(value).partition(":")
    try:
        lo, hi = float(lo_text), float(hi_text)
    except ValueError:
        lo = hi = math.nan
    if not sep or not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise OptionError(f"{value!r}: expected LO:HI, two finite scores with LO <= HI (e.g. 0.3:0.8)",
                          "--sample-by-score")
    return SampleCurve(lo, hi)


def draws(texts) -> np.ndarray:
    """Each text's u in [0, 1), from its SHA-256."""
    from .hashing import text_hash

    return np.fromiter((int(text_hash(t)[:U_BITS // 4], 16) / float(1 << U_BITS) for t in texts),
                       dtype=np.float64, count=len(texts))


def shard_sample(path: os.PathLike, curve: SampleCurve, score_column: str, text_column: str, counter) -> dict:
    """One shard: the keep mask and its tokens (all, expected under p, kept)."""
    from .corpus import iter_batches, texts_from_array

    masks, tokens_in, expected, kept = [], 0, 0.0, 0
    for batch in iter_batches(path, 4096, columns=[score_column, text_column]):
        scores = batch.column(0).to_numpy(zero_copy_only=False).astype(np.float64)
        texts = texts_from_array(batch.column(1))
        p = curve.probability(scores)
        keep = draws(texts) < p
        tokens = np.asarray(counter.count(texts), np.int64) if texts else np.zeros(0, np.int64)
        tokens_in += int(tokens.sum())
        expected += float((p * tokens).sum())
        kept += int(tokens[keep].sum())
        masks.append(keep)
    mask = np.concatenate(masks) if masks else np.zeros(0, bool)
    return {"mask": mask, "tokens_in": tokens_in, "tokens_expected": expected, "tokens_kept": kept}
