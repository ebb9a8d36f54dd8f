"""Score histograms: which bin a score in [0, 1] falls in, and bin counts (one rule for every command)."""

from __future__ import annotations

import numpy as np

SUMMARY_BINS = 10  # the bars `score` prints and --stats-json records


def bin_index(scores: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each score: ``floor(score * bins)``, with 1.0 (and anything above) in the top bin.

    Scores below 0 or NaN are clipped into bin 0, so every score is counted exactly once.
    """
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    return np.clip((scores * bins).astype(np.int64), 0, bins - 1)


def histogram(scores: np.ndarray, bins: int = SUMMARY_BINS, weights: np.ndarray | None = None) -> np.ndarray:
    """int64 counts (or summed ``weights``) per bin of ``scores``."""
    counts = np.bincount(bin_index(scores, bins), weights=weights, minlength=bins)
    return counts.astype(np.int64)
