"""Score histograms: which bin a score falls in, and bin counts (one rule for every command).

Scores lie on a *span* ``(lo, hi)``: [0, 1] for our models and any probability; a foreign
regression's 0-5 or an ensemble's 0-20 otherwise (:func:`phifilter.scorerset.column_span` reads
it from the run record). Bin ``i`` of ``bins`` covers ``[lo + i * w, lo + (i + 1) * w)`` with
``w = (hi - lo) / bins``; the top bin also holds ``hi`` and anything above it.
"""

from __future__ import annotations

import numpy as np

SUMMARY_BINS = 10  # the bars `score` prints and --stats-json records
UNIT = (0.0, 1.0)


def bin_index(scores: np.ndarray, bins: int, span: tuple[float, float] = UNIT) -> np.ndarray:
    """Bin of each score: ``floor((score - lo) / (hi - lo) * bins)``, with ``hi`` (and anything
    above) in the top bin.

    Scores below ``lo`` or NaN are clipped into bin 0, so every score is counted exactly once.
    """
    lo, hi = span
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=lo)
    if (lo, hi) != UNIT:
        scores = (scores - lo) / (hi - lo)
    return np.clip((scores * bins).astype(np.int64), 0, bins - 1)


def bin_edges(bins: int, span: tuple[float, float] = UNIT) -> np.ndarray:
    """The ``bins + 1`` edges of :func:`bin_index`'s bins over ``span``."""
    return np.linspace(span[0], span[1], bins + 1)


def histogram(scores: np.ndarray, bins: int = SUMMARY_BINS, weights: np.ndarray | None = None,
              span: tuple[float, float] = UNIT) -> np.ndarray:
    """int64 counts (or summed ``weights``) per bin of ``scores`` over ``span``."""
    counts = np.bincount(bin_index(scores, bins, span), weights=weights, minlength=bins)
    return counts.astype(np.int64)
