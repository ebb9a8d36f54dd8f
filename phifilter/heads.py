"""Heads: the small models that turn a featurizer's rows into a score in [0, 1].

Each head wraps one scikit-learn estimator (``estimator_``, the object stored in the model
folder) and gives the scorer one interface: ``fit(X, scores, sample_weight)`` on 0-5 labels,
``score(X)`` in [0, 1] and ``disagreement(X)`` for active learning. Classifier heads predict
P(score >= positive_threshold); regressor heads predict the 0-5 score and report it / 5,
clipped to [0, 1].

| --head | estimator | what it fits |
|---|---|---|
| forest | RandomForestClassifier | P(positive); the phi paper's choice |
| forest-regressor | RandomForestRegressor | the 0-5 score, balanced across the positive threshold |
| logistic | StandardScaler + LogisticRegression | P(positive) |
| ridge | StandardScaler + RidgeCV | the 0-5 score, penalty by leave-one-out |
| svr | StandardScaler + RBF SVR | the 0-5 score |
"""

from __future__ import annotations

import numpy as np

from .errors import ModelError
from .featurizer import params_of

# Ridge penalties the ridge head chooses from by leave-one-out on its own training data.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(1, 5, 13))


class Head:
    """Base of the heads: ``name`` is the --head choice, ``kind`` the name in phifilter.json."""

    name = ""
    kind = ""
    regressor = False

    def get_params(self, deep: bool = False) -> dict:
        return params_of(self)

    def make_estimator(self):  # pragma: no cover - every head defines it
        raise NotImplementedError

    def fit(self, X: np.ndarray, scores: np.ndarray, sample_weight: np.ndarray | None = None) -> "Head":
        """Fit on feature rows and their 0-5 scores."""
        scores = np.asarray(scores, dtype=np.float64)
        est = self.make_estimator()
        if self.regressor:
            self.estimator_ = est.fit(X, scores) if sample_weight is None else self._fit_weighted(est, X, scores, sample_weight)
        else:
            y = scores >= self.positive_threshold
            self.estimator_ = est.fit(X, y) if sample_weight is None else self._fit_weighted(est, X, y, sample_weight)
        return self

    def _fit_weighted(self, est, X, y, w):
        return est.fit(X, y, sample_weight=w)

    @classmethod
    def from_estimator(cls, estimator, **params) -> "Head":
        """A head around an already fitted estimator (read from a model folder)."""
        head = cls(**params)
        head.estimator_ = estimator
        return head

    def score(self, X: np.ndarray) -> np.ndarray:
        """float64 score in [0, 1] per row."""
        if self.regressor:
            return np.clip(self.estimator_.predict(X) / 5.0, 0.0, 1.0)
        return self.estimator_.predict_proba(X)[:, list(self.estimator_.classes_).index(True)]

    def disagreement(self, X: np.ndarray) -> np.ndarray:
        """How unsure the head is per row (higher: more worth a label)."""
        p = self.score(X)
        if self.regressor:  # closeness to the positive label on the 0-5 scale
            centre = min(max(self.positive_threshold / 5.0, 0.0), 1.0)
            return 1.0 - np.abs(p - centre) / max(centre, 1.0 - centre)
        return 1.0 - 2.0 * np.abs(p - 0.5)

    @property
    def n_features_in_(self) -> int:
        return int(self.estimator_.n_features_in_)


class _Scaled:
    """Heads that standardise their inputs first (a Pipeline: weights go to the last step)."""

    def _fit_weighted(self, est, X, y, w):
        return est.fit(X, y, **{f"{est.steps[-1][0]}__sample_weight": w})


class ForestHead(Head):
    """Random forest classifier: P(score >= positive_threshold); the spread of its trees' votes is its disagreement."""

    name, kind = "forest", "random_forest_classifier"

    def __init__(self, n_estimators: int = 300, max_depth: int | None = None, min_samples_leaf: int = 3,
                 max_features="sqrt", class_weight: str | None = "balanced_subsample", n_jobs: int | None = -1,
                 random_state: int | None = 0, positive_threshold: int = 3):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.positive_threshold = positive_threshold

    def _forest_params(self) -> dict:
        return dict(n_estimators=self.n_estimators, max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                    max_features=self.max_features, n_jobs=self.n_jobs, random_state=self.random_state)

    def make_estimator(self):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(class_weight=self.class_weight, **self._forest_params())

    def tree_votes(self, X: np.ndarray) -> np.ndarray:
        # trees are fitted on encoded labels: column k is the forest's classes_[k]
        k = list(self.estimator_.classes_).index(True)
        return np.stack([t.predict_proba(X)[:, k] for t in self.estimator_.estimators_])

    def disagreement(self, X: np.ndarray) -> np.ndarray:
        return self.tree_votes(X).std(axis=0)


class ForestRegressorHead(ForestHead):
    """Random forest regressor on the 0-5 score, with sample weights balancing the two sides of the positive threshold."""

    name, kind, regressor = "forest-regressor", "random_forest_regressor", True

    def make_estimator(self):
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(**self._forest_params())

    def fit(self, X, scores, sample_weight=None):
        scores = np.asarray(scores, dtype=np.float64)
        if self.class_weight:  # balance the two sides of the positive threshold, as the classifier does
            y = scores >= self.positive_threshold
            share = y.mean()
            w = np.where(y, 0.5 / max(share, 1e-12), 0.5 / max(1 - share, 1e-12))
            sample_weight = w if sample_weight is None else sample_weight * w
        self.estimator_ = self.make_estimator().fit(X, scores, sample_weight=sample_weight)
        return self

    def tree_votes(self, X: np.ndarray) -> np.ndarray:
        return np.stack([t.predict(X) / 5.0 for t in self.estimator_.estimators_])


class LogisticHead(_Scaled, Head):
    """Standardised logistic regression: P(score >= positive_threshold)."""

    name, kind = "logistic", "logistic_regression"

    def __init__(self, C: float = 0.005, class_weight: str | None = "balanced", positive_threshold: int = 3):
        self.C = C
        self.class_weight = class_weight
        self.positive_threshold = positive_threshold

    def make_estimator(self):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        weight = "balanced" if self.class_weight else None
        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, class_weight=weight, max_iter=5000))


class RidgeHead(_Scaled, Head):
    """Standardised ridge regression on the 0-5 score; the penalty is chosen by leave-one-out."""

    name, kind, regressor = "ridge", "ridge_regression", True

    def __init__(self, alphas: tuple = RIDGE_ALPHAS, positive_threshold: int = 3):
        self.alphas = alphas
        self.positive_threshold = positive_threshold

    def make_estimator(self):
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), RidgeCV(alphas=self.alphas))


class SVRHead(_Scaled, Head):
    """Standardised RBF support-vector regression on the 0-5 score (scikit-learn's default C, epsilon, gamma)."""

    name, kind, regressor = "svr", "support_vector_regression", True

    def __init__(self, positive_threshold: int = 3):
        self.positive_threshold = positive_threshold

    def make_estimator(self):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVR

        return make_pipeline(StandardScaler(), SVR())


HEAD_CLASSES = {cls.name: cls for cls in (ForestHead, ForestRegressorHead, LogisticHead, RidgeHead, SVRHead)}
# --head name -> name recorded in phifilter.json (format 1 only knew the first).
HEADS = {name: cls.kind for name, cls in HEAD_CLASSES.items()}
REGRESSORS = tuple(name for name, cls in HEAD_CLASSES.items() if cls.regressor)


def head_class(name: str) -> type[Head]:
    if name not in HEAD_CLASSES:
        raise ModelError(f"--head {name}: expected one of {', '.join(HEAD_CLASSES)}")
    return HEAD_CLASSES[name]


def make_head(name: str, **params) -> Head:
    """A head of kind ``name`` given the parameters it knows (others in ``params`` are ignored)."""
    cls = head_class(name)
    import inspect

    known = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    return cls(**{k: v for k, v in params.items() if k in known})
