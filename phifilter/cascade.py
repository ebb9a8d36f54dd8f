"""The cascade band: which cheap-scored documents the expensive scorer must also see, for a budget.

A cascade scores every document with the cheap (lexical) scorer and sends only the documents
whose cheap score falls in an "uncertain band" ``[lo, hi]`` to the embedding model. The band is
chosen at training time from out-of-fold scores: of all windows of cheap scores that hold
``share`` of the documents, the one holding the most documents on which the cheap decision and
the full model's decision differ, so that embedding them makes the cascade agree best with
the full model for that cost.

:class:`Cascade` is the model part: it holds the band and the map of the cheap score onto the
combined score's scale (a one-input logistic combiner fitted on the same out-of-fold scores), so
outside the band one threshold serves both kinds of documents.

A cheap score can be confident and wrong on a kind of document the cheap scorer never saw
(licence texts scored by a model trained without any). The novelty rule catches those: a
document whose share of tokens unseen in the cheap scorer's training vocabulary exceeds
``novelty_`` is embedded whatever its cheap score. ``novelty_`` is learned at training time as
the ``1 - novelty_share`` quantile of the out-of-fold unseen shares (each document measured
against the vocabulary of the folds that did not hold it), so about ``novelty_share`` of
documents like the training ones are flagged, and far more of the unfamiliar ones.
"""

from __future__ import annotations

import math

import numpy as np

from .combiner import StackedCombiner, logit
from .errors import ModelError
from .featurizer import params_of

NOVELTY_MEASURE = "unseen_token_share"  # share of a document's tokens not in the lexical vocabulary


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


class Cascade:
    """Where the cheap scorer alone decides, and how its score maps onto the combined scale.

    Parameters
    ----------
    expensive_share : share of documents (of the training set's cheap-score distribution) sent
        to the embedding model.
    cheap : name of the cheap scorer.
    """

    def __init__(self, expensive_share: float = 0.2, cheap: str = "lexical", novelty_share: float | None = None):
        self.expensive_share = expensive_share
        self.cheap = cheap
        self.novelty_share = novelty_share

    def get_params(self, deep: bool = False) -> dict:
        return params_of(self)

    def fit(self, cheap: np.ndarray, full: np.ndarray, y: np.ndarray, threshold: float,
            unseen: np.ndarray | None = None) -> "Cascade":
        """Fit on out-of-fold cheap scores, out-of-fold full-ensemble scores and labels (and,
        for the novelty rule, the out-of-fold unseen-token shares)."""
        if not 0.0 <= self.expensive_share <= 1.0:
            raise ModelError(f"--expensive-share {self.expensive_share}: expected a number in [0, 1]")
        self.mapping_ = StackedCombiner(inputs=(self.cheap,)).fit(cheap, y)
        self.band_ = choose_band(cheap, full, self.expensive_share, self._cheap_threshold(threshold), threshold)
        self.novelty_ = None
        if self.novelty_share is not None:
            if not 0.0 < self.novelty_share < 1.0:
                raise ModelError(f"--novelty-share {self.novelty_share}: expected a number in (0, 1)")
            if unseen is None or len(unseen) != len(cheap):
                raise ModelError("the novelty rule needs the out-of-fold unseen-token share of every document")
            self.novelty_ = round(float(np.quantile(np.asarray(unseen, np.float64), 1.0 - self.novelty_share)), 6)
        return self

    def _cheap_threshold(self, threshold: float) -> float:
        """The raw cheap score whose mapped score is ``threshold`` (the mapping is monotone)."""
        w, b = float(self.mapping_.coef_[0]), self.mapping_.intercept_
        if w <= 0:  # a cheap score that says nothing: its decision is the same everywhere
            return math.inf if self.mapping_.predict(np.array([0.5]))[0] < threshold else -math.inf
        z = (float(logit(np.array([threshold]))[0]) - b) / w
        return float(1.0 / (1.0 + math.exp(-z)))

    @property
    def uses_novelty(self) -> bool:
        return getattr(self, "novelty_", None) is not None

    def in_band(self, cheap: np.ndarray, unseen: np.ndarray | None = None) -> np.ndarray:
        """Documents the embedder must see: cheap score in the band, or (novelty rule) a share
        of unseen tokens above ``novelty_``."""
        mask = in_band(cheap, self.band_)
        if self.uses_novelty:
            if unseen is None:
                raise ModelError("this cascade has a novelty rule: give the documents' unseen-token shares")
            mask |= np.asarray(unseen, np.float64) > self.novelty_
        return mask

    def cheap_decision(self, cheap: np.ndarray) -> np.ndarray:
        """The cheap score on the combined score's scale (float64)."""
        return self.mapping_.predict(cheap)

    def combine(self, cheap: np.ndarray, full: np.ndarray | None, band: np.ndarray) -> np.ndarray:
        """Scores: ``full`` (given for the band's documents only, in order) inside, the mapped cheap score outside."""
        return cascade_scores(self.cheap_decision(cheap), full, band)

    def to_dict(self) -> dict:
        lo, hi = self.band_
        return {"cheap": self.cheap, "expensive_share": self.expensive_share,
                "band": [None if math.isinf(lo) else lo, None if math.isinf(hi) else hi],
                "cheap_mapping": self.mapping_.to_dict(),
                **({"novelty": {"measure": NOVELTY_MEASURE, "share": self.novelty_share,
                                "threshold": self.novelty_}} if self.uses_novelty else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "Cascade":
        try:
            c = cls(expensive_share=float(d["expensive_share"]), cheap=str(d.get("cheap", "lexical")))
            lo, hi = d["band"]
            c.band_ = (math.inf if lo is None else float(lo), -math.inf if hi is None else float(hi))
            c.mapping_ = StackedCombiner.from_dict(d["cheap_mapping"])
            c.novelty_ = None
            if d.get("novelty") is not None:  # absent in models trained before the novelty rule
                nov = d["novelty"]
                if nov.get("measure") != NOVELTY_MEASURE:
                    raise ModelError(f"unknown novelty measure {nov.get('measure')!r} in the cascade; upgrade phifilter")
                c.novelty_share, c.novelty_ = float(nov["share"]), float(nov["threshold"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"cascade in phifilter.json is incomplete ({e!r})") from None
        return c
