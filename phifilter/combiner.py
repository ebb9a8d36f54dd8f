"""StackedCombiner: a logistic regression over the scorers' scores, fitted on their out-of-fold scores.

Each scorer of a model (the lexical scorer, the embedding featurizer + head) gives one score in
[0, 1] per document. The combiner sees their logits side by side and predicts P(positive).
It is fitted on out-of-fold scores, so it learns how far to trust each scorer on documents the
scorer never saw, not on its training fit. Its few numbers live in ``phifilter.json`` (no
file, nothing to unpickle) and prediction is one dot product, computed here with numpy the same
way at training and at scoring.
"""

from __future__ import annotations

import numpy as np

from .errors import ModelError
from .featurizer import params_of

EPS = 1e-4  # scores are clipped to [EPS, 1 - EPS] before the logit: a 0 or 1 would be infinite


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


class StackedCombiner:
    """P(positive) = sigmoid(sum_i coef_i * logit(score_i) + intercept).

    Parameters
    ----------
    inputs : names of the scores it combines, in column order (e.g. ("lexical", "embedding")).
    C : inverse L2 regularisation of the logistic regression.
    """

    def __init__(self, inputs: tuple = ("lexical", "embedding"), C: float = 1.0):
        self.inputs = inputs
        self.C = C

    def get_params(self, deep: bool = False) -> dict:
        return params_of(self)

    def _columns(self, S) -> np.ndarray:
        S = np.asarray(S, dtype=np.float64)
        S = S.reshape(-1, 1) if S.ndim == 1 else S
        if S.shape[1] != len(self.inputs):
            raise ModelError(f"combiner of {', '.join(self.inputs)} got {S.shape[1]} score columns")
        return logit(S)

    def fit(self, S, y) -> "StackedCombiner":
        """Fit on out-of-fold scores ``S`` ([n, len(inputs)]) and binary labels ``y``."""
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=self.C, max_iter=1000).fit(self._columns(S), np.asarray(y, bool))
        self.coef_ = np.asarray(lr.coef_[0], dtype=np.float64)
        self.intercept_ = float(lr.intercept_[0])
        return self

    def predict(self, S) -> np.ndarray:
        """float64 P(positive) per row."""
        z = self._columns(S) @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        return {"kind": "logistic", "inputs": list(self.inputs), "C": self.C, "link": "logit",
                "coef": [float(c) for c in self.coef_], "intercept": float(self.intercept_)}

    @classmethod
    def from_dict(cls, d: dict) -> "StackedCombiner":
        if not isinstance(d, dict) or d.get("kind") != "logistic" or d.get("link", "logit") != "logit":
            raise ModelError(f"unknown combiner {d!r}; upgrade phifilter")
        c = cls(inputs=tuple(d["inputs"]), C=float(d.get("C", 1.0)))
        c.coef_ = np.asarray(d["coef"], dtype=np.float64)
        c.intercept_ = float(d["intercept"])
        if len(c.coef_) != len(c.inputs):
            raise ModelError(f"combiner has {len(c.coef_)} weights for {len(c.inputs)} inputs")
        return c
