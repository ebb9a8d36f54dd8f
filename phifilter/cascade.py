"""Cascade: the cheap scorer decides where it is sure; only its uncertain band goes to the embedder.

At training time the band is chosen on out-of-fold scores for a stated budget
(``expensive_share``: the share of documents the embedding model may see): among all bands of
consecutive cheap scores holding that share, the one whose outside disagrees least with the full
ensemble's keep/drop decision (ties: the smallest squared score difference). Outside the band
the cheap score is mapped onto the combined score's scale by a one-input logistic combiner fitted
on the same out-of-fold scores, so one threshold serves both kinds of documents.
"""

from __future__ import annotations

import math

import numpy as np

from .combiner import StackedCombiner
from .errors import ModelError
from .featurizer import params_of


def choose_band(cheap: np.ndarray, cheap_mapped: np.ndarray, full: np.ndarray, threshold: float,
                share: float) -> tuple[float, float]:
    """(lo, hi) on the cheap score: the band of ``share`` of the documents that, sent to the full
    ensemble, leaves the fewest decisions (score >= threshold) changed outside it."""
    cheap = np.asarray(cheap, np.float64)
    n = len(cheap)
    k = min(n, max(0, int(math.ceil(share * n - 1e-9))))
    if k == 0:
        return math.inf, -math.inf  # an empty band: nothing is embedded
    order = np.argsort(cheap, kind="stable")
    wrong = ((np.asarray(cheap_mapped)[order] >= threshold) != (np.asarray(full)[order] >= threshold)).astype(np.float64)
    sq = (np.asarray(cheap_mapped)[order] - np.asarray(full)[order]) ** 2
    cw, cs = np.concatenate([[0.0], np.cumsum(wrong)]), np.concatenate([[0.0], np.cumsum(sq)])
    starts = np.arange(n - k + 1)
    outside_wrong = cw[-1] - (cw[starts + k] - cw[starts])
    outside_sq = cs[-1] - (cs[starts + k] - cs[starts])
    best = int(np.lexsort((outside_sq, outside_wrong))[0])
    return float(cheap[order[best]]), float(cheap[order[best + k - 1]])


class Cascade:
    """Where the cheap scorer alone decides, and how its score maps onto the combined scale.

    Parameters
    ----------
    expensive_share : share of documents (of the training set's cheap-score distribution) sent
        to the embedding model.
    cheap : name of the cheap scorer.
    """

    def __init__(self, expensive_share: float = 0.2, cheap: str = "lexical"):
        self.expensive_share = expensive_share
        self.cheap = cheap

    def get_params(self, deep: bool = False) -> dict:
        return params_of(self)

    def fit(self, cheap: np.ndarray, full: np.ndarray, y: np.ndarray, threshold: float) -> "Cascade":
        """Fit on out-of-fold cheap scores, out-of-fold full-ensemble scores and labels."""
        if not 0.0 <= self.expensive_share <= 1.0:
            raise ModelError(f"--expensive-share {self.expensive_share}: expected a number in [0, 1]")
        self.mapping_ = StackedCombiner(inputs=(self.cheap,)).fit(cheap, y)
        self.band_ = choose_band(cheap, self.mapping_.predict(cheap), full, threshold, self.expensive_share)
        return self

    def in_band(self, cheap: np.ndarray) -> np.ndarray:
        lo, hi = self.band_
        cheap = np.asarray(cheap, np.float64)
        return (cheap >= lo) & (cheap <= hi)

    def cheap_decision(self, cheap: np.ndarray) -> np.ndarray:
        """The cheap score on the combined score's scale (float64)."""
        return self.mapping_.predict(cheap)

    def combine(self, cheap: np.ndarray, full: np.ndarray | None, band: np.ndarray) -> np.ndarray:
        """Scores: ``full`` (given for the band's documents only, in order) inside, the mapped cheap score outside."""
        out = self.cheap_decision(cheap)
        if full is not None and band.any():
            out[band] = full
        return out

    def to_dict(self) -> dict:
        lo, hi = self.band_
        return {"cheap": self.cheap, "expensive_share": self.expensive_share,
                "band": [None if math.isinf(lo) else lo, None if math.isinf(hi) else hi],
                "cheap_mapping": self.mapping_.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Cascade":
        try:
            c = cls(expensive_share=float(d["expensive_share"]), cheap=str(d.get("cheap", "lexical")))
            lo, hi = d["band"]
            c.band_ = (math.inf if lo is None else float(lo), -math.inf if hi is None else float(hi))
            c.mapping_ = StackedCombiner.from_dict(d["cheap_mapping"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"cascade in phifilter.json is incomplete ({e!r})") from None
        return c
