"""The cascade band: which cheap-scored documents the expensive scorer must also see, for a budget.

A cascade scores every document with the cheap (lexical) scorer and sends only the documents
whose cheap score falls in an "uncertain band" ``[lo, hi]`` to the embedding model. The band is
chosen at training time from out-of-fold scores: of all windows of cheap scores that hold
``share`` of the documents, the one holding the most documents on which the cheap decision and
the full model's decision differ, so that embedding them makes the cascade agree best with
the full model for that cost.
"""

from __future__ import annotations

import numpy as np


def choose_band(cheap: np.ndarray, full: np.ndarray, share: float, cheap_threshold: float,
                full_threshold: float) -> tuple[float, float]:
    """The band ``(lo, hi)`` of cheap scores holding about ``share`` of the documents.

    ``cheap`` and ``full`` are the cheap scorer's and the full model's (out-of-fold) scores of
    the same documents; a document is "kept" when its score reaches the scorer's threshold.
    Outside the band the cascade keeps the cheap decision, inside it the full model's, so the
    band is the window (in cheap-score order) with the most disagreements. ``share`` 0 gives an
    empty band ``(inf, -inf)``, 1 the whole range.
    """
    cheap = np.asarray(cheap, dtype=np.float64)
    full = np.asarray(full, dtype=np.float64)
    if cheap.shape != full.shape or cheap.ndim != 1:
        raise ValueError("cheap and full must be 1-D arrays of the same length")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1, not {share}")
    n = len(cheap)
    width = int(round(share * n))
    if width == 0 or n == 0:
        return float("inf"), float("-inf")
    order = np.argsort(cheap, kind="stable")
    c = cheap[order]
    disagree = ((c >= cheap_threshold) != (full[order] >= full_threshold)).astype(np.int64)
    window = np.convolve(disagree, np.ones(width, dtype=np.int64), mode="valid")  # n - width + 1 sums
    # ties: the window nearest the cheap threshold (where a cheap decision is least sure)
    centre = np.abs((c[:n - width + 1] + c[width - 1:]) / 2 - cheap_threshold)
    start = int(np.lexsort((centre, -window))[0])
    return float(c[start]), float(c[start + width - 1])


def in_band(cheap: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """Mask of the documents the expensive scorer must see."""
    cheap = np.asarray(cheap, dtype=np.float64)
    return (cheap >= band[0]) & (cheap <= band[1])


def cascade_scores(cheap_score: np.ndarray, full_score: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """The cascade's score: ``full_score`` inside the band, ``cheap_score`` outside.

    Both must be on one scale (e.g. both probabilities of "score >= 3"): a model folder keeps a
    combiner for the cheap score alone for the documents outside the band. ``full_score`` may
    hold values for the masked documents only (``len == mask.sum()``).
    """
    out = np.asarray(cheap_score, dtype=np.float64).copy()
    if full_score is not None:
        full_score = np.asarray(full_score, dtype=np.float64)
        out[mask] = full_score if len(full_score) == int(mask.sum()) else full_score[mask]
    return out
