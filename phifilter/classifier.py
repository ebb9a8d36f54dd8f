"""EduClassifier: an embedder plus a random forest that predicts "high educational value".

A scikit-learn style estimator: the constructor only stores its arguments, ``fit`` does the
work and returns ``self``, learned attributes end in ``_``. A fitted classifier is saved as a
folder::

    model/
      forest.skops       the head (random forest, forest regressor or logistic regression),
                         serialised with skops (no pickle); the name is kept from format 1
      calibration.skops  optional isotonic calibration of the head's scores
      phifilter.json     embedder identity and hashes, document mode, thresholds, metrics, versions
      README.md          the model card

How a document becomes the head's input is ``doc_mode`` (see :mod:`phifilter.chunking`):
``truncate`` reads the first ``max_length`` tokens; ``chunk-mean`` / ``chunk-weighted``
average the embeddings of up to ``max_chunks`` chunks; ``chunk-score-mean`` /
``chunk-score-max`` score every chunk and combine the scores.

Loading refuses a folder whose ``forest.skops`` hash differs from the one recorded in
``phifilter.json``, a forest holding types outside :data:`TRUSTED_TYPES`, and (at first use)
an embedder whose dimension or file hashes differ from the ones the forest was trained on.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Sequence

import numpy as np

from .chunking import DocEmbeddings, chunking_of, embed_documents, quantize
from .embed import DEFAULT_EMBEDDER, Embedder
from .embed import _sha256 as _sha256_file  # one file-hash helper for the package
from .errors import ModelError

FORMAT = "phifilter-model"
FORMAT_VERSION = 3  # 2: head, doc_mode, calibration; 3: features. Older folders still load
# Parts of a document's feature vector (``features="mean+first"``); all but "mean" need a
# chunk-mean / chunk-weighted doc_mode. "length": log tokens, log chunks, tail cut (3 numbers).
FEATURE_PARTS = ("mean", "first", "max", "length")
FOREST_FILE = "forest.skops"
CALIBRATION_FILE = "calibration.skops"
# --head name -> name recorded in phifilter.json (format 1 only knew the first).
HEADS = {
    "forest": "random_forest_classifier",
    "forest-regressor": "random_forest_regressor",
    "logistic": "logistic_regression",
    "ridge": "ridge_regression",
    "svr": "support_vector_regression",
}
# Heads that regress the 0-5 score (edu_score = prediction / 5, clipped to [0, 1]).
REGRESSORS = ("forest-regressor", "ridge", "svr")
# Heads written as format 3 (older phifilter versions do not know them).
FORMAT_3_HEADS = ("ridge", "svr")
# Ridge penalties the ridge head chooses from by leave-one-out on its own training data.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(1, 5, 13))
META_FILE = "phifilter.json"
CARD_FILE = "README.md"
# Types a model folder may contain beyond the ones skops trusts by default. Anything else in a
# head or calibration file is refused at load time, so a crafted file cannot run code.
# (LogisticRegression, StandardScaler, Pipeline and IsotonicRegression are trusted by skops.)
TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("phifilter", "scikit-learn", "numpy", "skops", "torch", "sentence-transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


class EduClassifier:
    """Embed documents, then predict P(educational score >= positive_threshold) with a head.

    Parameters
    ----------
    embedder : hub name, local folder, ``mean-pool:FOLDER`` (any transformers model, see
        :mod:`phifilter.hf_embed`), an embedder object, or None for all-MiniLM-L6-v2.
    head : 'forest' (random forest classifier), 'forest-regressor' (random forest on the 0-5
        score, edu_score = prediction / 5), 'logistic' (scaled logistic regression) or 'ridge'
        (scaled ridge regression on the 0-5 score, penalty chosen from :data:`RIDGE_ALPHAS` by
        leave-one-out on the training data) or 'svr' (scaled RBF support-vector regression on the
        0-5 score, scikit-learn's default C, epsilon and gamma); for both, edu_score =
        prediction / 5, clipped to [0, 1].
    doc_mode : one of :data:`phifilter.chunking.DOC_MODES`; max_chunks caps chunks per document.
    features : what the head sees per document in the chunk-mean / chunk-weighted modes: parts of
        :data:`FEATURE_PARTS` joined by '+', e.g. 'mean' (default), 'mean+first', 'mean+first+length'.
    calibrate : fit isotonic calibration on out-of-fold scores (done by ``train``).
    C : inverse regularisation of the logistic head.
    n_estimators, max_depth, min_samples_leaf, max_features, class_weight :
        passed to the random forest (class_weight also sets the logistic head's weights and,
        when 'balanced*', balanced sample weights for the regressor).
    positive_threshold : label scores (0-5) at or above this count as positive.
    threshold : decision threshold on ``edu_score`` for "keep" (used by summaries and filter).
    max_length, device, batch_size : embedder settings when ``embedder`` is not an Embedder.
    n_jobs, random_state : as in scikit-learn.
    """

    def __init__(
        self,
        embedder: str | os.PathLike | Embedder | None = None,
        n_estimators: int = 300,
        max_depth: int | None = None,
        min_samples_leaf: int = 3,
        max_features: str | float | int = "sqrt",
        class_weight: str | None = "balanced_subsample",
        positive_threshold: int = 3,
        threshold: float = 0.5,
        max_length: int = 256,
        device: str = "auto",
        batch_size: int = 64,
        n_jobs: int | None = -1,
        random_state: int | None = 0,
        head: str = "forest",
        doc_mode: str = "truncate",
        max_chunks: int = 8,
        calibrate: bool = False,
        C: float = 0.005,
        features: str = "mean",
    ):
        self.embedder = embedder
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.positive_threshold = positive_threshold
        self.threshold = threshold
        self.max_length = max_length
        self.device = device
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.head = head
        self.doc_mode = doc_mode
        self.max_chunks = max_chunks
        self.calibrate = calibrate
        self.C = C
        self.features = features

    # -- construction -----------------------------------------------------------------------

    def get_params(self, deep: bool = False) -> dict:
        names = (
            "embedder n_estimators max_depth min_samples_leaf max_features class_weight "
            "positive_threshold threshold max_length device batch_size n_jobs random_state "
            "head doc_mode max_chunks calibrate C features"
        ).split()
        return {n: getattr(self, n) for n in names}

    def _make_embedder(self):
        if self.embedder is not None and not isinstance(self.embedder, (str, os.PathLike)):
            return self.embedder  # an Embedder, or anything with the same interface
        from .hf_embed import make_embedder

        return make_embedder(self.embedder, device=self.device, max_length=self.max_length,
                             batch_size=self.batch_size)

    def _check_options(self) -> None:
        if self.head not in HEADS:
            raise ModelError(f"--head {self.head}: expected one of {', '.join(HEADS)}")
        chunking_of(self.doc_mode)
        parts = self.feature_parts
        unknown = [p for p in parts if p not in FEATURE_PARTS]
        if unknown or not parts or len(set(parts)) != len(parts):
            raise ModelError(f"--features {self.features}: expected distinct parts of {', '.join(FEATURE_PARTS)} "
                             "joined by '+', e.g. mean+first")
        if parts != ["mean"] and self.doc_mode not in ("chunk-mean", "chunk-weighted"):
            raise ModelError(f"--features {self.features} needs --doc-mode chunk-mean or chunk-weighted "
                             f"(not {self.doc_mode}): the other modes have one vector per chunk or document")

    @property
    def feature_parts(self) -> list[str]:
        return [p.strip() for p in str(self.features or "mean").split("+")]

    def head_width(self, dim: int) -> int:
        """Columns the head sees for ``dim``-dimensional embeddings."""
        return sum(3 if p == "length" else dim for p in self.feature_parts)

    def _make_head(self):
        """A fresh, unfitted scikit-learn estimator for ``head``."""
        self._check_options()
        if self.head == "logistic":
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            weight = "balanced" if self.class_weight else None
            return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, class_weight=weight, max_iter=5000))
        if self.head == "ridge":
            from sklearn.linear_model import RidgeCV
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            return make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
        if self.head == "svr":
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler
            from sklearn.svm import SVR

            return make_pipeline(StandardScaler(), SVR())
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        common = dict(n_estimators=self.n_estimators, max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                      max_features=self.max_features, n_jobs=self.n_jobs, random_state=self.random_state)
        if self.head == "forest-regressor":
            return RandomForestRegressor(**common)
        return RandomForestClassifier(class_weight=self.class_weight, **common)

    _make_forest = _make_head  # the name train.py used before heads

    def binarize(self, scores: Sequence[float]) -> np.ndarray:
        return np.asarray(scores, dtype=np.float64) >= self.positive_threshold

    # -- features ---------------------------------------------------------------------------

    @property
    def chunking(self) -> str:
        return chunking_of(self.doc_mode)

    def embed_documents(self, texts: Sequence[str], progress: bool = False, count: bool = True) -> DocEmbeddings:
        """Embed ``texts`` the way ``doc_mode`` needs (truncated, or one row per chunk);
        ``count=False`` skips the token statistics truncation does not need."""
        embedder = getattr(self, "embedder_", None) or self._make_embedder()
        return embed_documents(embedder, list(texts), self.chunking, self.max_chunks, progress=progress, count=count,
                               chunk_tokens=count or self.needs_chunk_tokens)

    @property
    def needs_chunk_tokens(self) -> bool:
        """Whether scoring needs each chunk's token count (token-weighted pooling does)."""
        return self.doc_mode == "chunk-weighted"

    def _as_doc_embeddings(self, X) -> DocEmbeddings:
        if isinstance(X, DocEmbeddings):
            if X.chunking != self.chunking:
                raise ModelError(f"embeddings were made by '{X.chunking}' but doc_mode {self.doc_mode} needs '{self.chunking}'")
            return X
        X = quantize(np.asarray(X, dtype=np.float32))
        n = len(X)
        return DocEmbeddings(X, np.arange(n, dtype=np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
                             "truncate", np.zeros(n, bool))

    def _head_input(self, E: DocEmbeddings) -> np.ndarray:
        """Rows the head sees: one per document, or one per chunk for the chunk-score modes."""
        if self.doc_mode.startswith("chunk-score") or self.doc_mode == "truncate":
            return E.vectors
        make = {"mean": lambda: E.pooled(weighted=self.doc_mode == "chunk-weighted"), "first": E.first_chunk,
                "max": E.max_pooled, "length": E.length_features}
        parts = [make[p]() for p in self.feature_parts]
        return parts[0] if len(parts) == 1 else np.hstack(parts)

    def _row_scores(self, head, X: np.ndarray) -> np.ndarray:
        if self.head in REGRESSORS:
            return np.clip(head.predict(X) / 5.0, 0.0, 1.0)
        return head.predict_proba(X)[:, list(head.classes_).index(True)]

    # -- fitting ----------------------------------------------------------------------------

    def fit_head(self, E, scores: Sequence[float]):
        """Fit a fresh head on document embeddings and 0-5 scores; returns the fitted estimator."""
        E = self._as_doc_embeddings(E)
        scores = np.asarray(scores, dtype=np.float64)
        y = self.binarize(scores)
        X = self._head_input(E)
        weights = None
        if self.doc_mode.startswith("chunk-score"):  # each document counts once, however many chunks
            weights = 1.0 / np.maximum(E.chunks_per_doc, 1)[E.doc]
            scores, y = scores[E.doc], y[E.doc]
        head = self._make_head()
        if self.head in ("ridge", "svr"):  # the 0-5 score as is: the ordinal labels are the point
            if weights is None:
                return head.fit(X, scores)
            return head.fit(X, scores, **{f"{head.steps[-1][0]}__sample_weight": weights})
        if self.head == "forest-regressor":
            if self.class_weight:  # balance the two sides of the positive threshold, as the classifier does
                share = y.mean()
                w = np.where(y, 0.5 / max(share, 1e-12), 0.5 / max(1 - share, 1e-12))
                weights = w if weights is None else weights * w
            return head.fit(X, scores, sample_weight=weights)
        if weights is None:
            return head.fit(X, y)
        if self.head == "logistic":
            return head.fit(X, y, logisticregression__sample_weight=weights)
        return head.fit(X, y, sample_weight=weights)

    def raw_scores(self, E, head=None) -> np.ndarray:
        """Uncalibrated float64 score per document from a fitted head (default: this model's)."""
        E = self._as_doc_embeddings(E)
        head = head if head is not None else self.head_
        if E.n_docs == 0:
            return np.zeros(0)
        rows = self._row_scores(head, self._head_input(E))
        if self.doc_mode.startswith("chunk-score"):
            return E.reduce_scores(rows, "max" if self.doc_mode.endswith("max") else "mean")
        return rows

    def fit(self, texts: Sequence[str], scores: Sequence[float], embeddings=None):
        """Fit on documents and their 0-5 scores (precomputed ``embeddings`` skip the embedder:
        a :class:`DocEmbeddings`, or an array with one truncated embedding per document)."""
        self._check_options()
        self.embedder_ = self._make_embedder()
        E = self.embed_documents(texts) if embeddings is None else self._as_doc_embeddings(embeddings)
        y = self.binarize(scores)
        if y.all() or not y.any():
            raise ModelError(
                f"all {len(y)} training labels fall on one side of --positive-threshold "
                f"{self.positive_threshold}; the classifier needs both classes"
            )
        self.head_ = self.fit_head(E, scores)
        self.forest_ = self.head_  # older name, kept for callers of format 1
        self.calibrator_ = None
        self.embedder_info_ = self.embedder_.describe()
        self.n_features_in_ = E.vectors.shape[1]
        return self

    def fit_calibration(self, raw: np.ndarray, y: np.ndarray):
        """Isotonic map from raw head scores to P(positive), fitted on out-of-fold scores."""
        self.calibrator_ = make_calibrator(raw, y)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise ModelError("this EduClassifier is not fitted; call fit() or EduClassifier.load()")

    # -- prediction -------------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One embedding per text (chunk modes: the mean of its chunks)."""
        self._check_fitted()
        self._check_embedder()
        E = self.embed_documents(texts, count=False)
        return E.vectors if E.chunking == "truncate" else E.pooled()

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """[n, 2] probabilities of (low, high) educational value."""
        p = self.edu_score(texts).astype(np.float64)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.edu_score(texts) >= self.threshold

    def edu_score(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> np.ndarray:
        """float32 edu_score per text; empty or blank texts score 0.

        With an embedding cache attached (:meth:`use_embedding_cache`) and ``ids`` given, texts
        whose id is in the cache are not embedded again.
        """
        texts = list(texts)
        self._check_fitted()
        self._check_embedder()
        cache = getattr(self, "embedding_cache_", None)
        if cache is not None and ids is not None:
            E = self.doc_embeddings_from_cache(cache, texts, ids)
        else:
            E = self.embed_documents(texts, count=False)
        return self.score_doc_embeddings(E, _empty_mask(texts))

    def score_doc_embeddings(self, E, empty: np.ndarray | None = None) -> np.ndarray:
        """Scores (calibrated when the model has a calibration) from precomputed embeddings."""
        self._check_fitted()
        E = self._as_doc_embeddings(E)
        if E.n_docs == 0:
            return np.zeros(0, dtype=np.float32)
        p = self.raw_scores(E)
        if getattr(self, "calibrator_", None) is not None:
            p = self.calibrator_.predict(p)
        p = p.astype(np.float32)
        if empty is not None:
            p[np.asarray(empty, dtype=bool)] = 0.0
        return p

    def score_embeddings(self, X: np.ndarray, empty: np.ndarray | None = None) -> np.ndarray:
        """Scores from one precomputed embedding per document (rows flagged ``empty`` get 0)."""
        return self.score_doc_embeddings(X, empty)

    def disagreement(self, E) -> np.ndarray:
        """How unsure the model is per document: the spread of its trees' votes (forests), or
        closeness to 0.5 (logistic). Higher means more worth labelling."""
        self._check_fitted()
        E = self._as_doc_embeddings(E)
        X = self._head_input(E)
        if self.head == "logistic":
            p = self._row_scores(self.head_, X)
            rows = 1.0 - 2.0 * np.abs(p - 0.5)
        elif self.head in ("ridge", "svr"):  # closeness to the positive label on the 0-5 scale
            centre = min(max(self.positive_threshold / 5.0, 0.0), 1.0)
            p = self._row_scores(self.head_, X)
            rows = 1.0 - np.abs(p - centre) / max(centre, 1.0 - centre)
        else:
            if self.head == "forest-regressor":
                votes = np.stack([t.predict(X) / 5.0 for t in self.head_.estimators_])
            else:
                # trees are fitted on encoded labels: column k is the forest's classes_[k]
                k = list(self.head_.classes_).index(True)
                votes = np.stack([t.predict_proba(X)[:, k] for t in self.head_.estimators_])
            rows = votes.std(axis=0)
        if self.doc_mode.startswith("chunk-score"):
            return E.reduce_scores(rows, "mean")
        return rows

    # -- scoring stages (phifilter.scoring asks the model for them) --------------------------

    def scoring_stages(self, tensor_forest: bool | None = None) -> list:
        """:meth:`edu_score` cut into steps `phifilter score` runs in threads of their own.

        Returns ``[(name, fn), ...]``, each ``fn(batch) -> batch`` (the protocol is described in
        :mod:`phifilter.scoring.batch`): "tokenise" lays documents out (whole, or in chunks) and
        calls :meth:`Embedder.prepare`, "embed" :meth:`Embedder.run`, "head" pools chunks and
        scores. One "model" stage instead when embeddings come from a cache (the cache decides
        per document whether it is embedded at all) or a subclass scores its own way.
        ``tensor_forest``: walk the forest as tensors on the embedder's device (None: on CUDA).
        """
        if not self._splits_into_stages():
            return [("model", self._score_whole_batch)]
        from .chunking import assemble, layout_documents

        emb = self.embedder_
        tensor = self._tensor_head(tensor_forest)

        def tokenise(batch):
            layout = layout_documents(emb, batch.texts, self.chunking, self.max_chunks, count=False)
            plan = emb.prepare(layout[0])
            batch.work, batch.tokens = (layout, plan), plan.tokens
            return batch

        def embed(batch):
            layout, plan = batch.work
            batch.work = (layout, emb.run(plan))
            return batch

        def head(batch):
            (layout, X), batch.work = batch.work, None
            if not batch.texts:
                batch.scores = np.zeros(0, np.float32)
                return batch
            E = assemble(emb, X, layout, self.chunking, chunk_tokens=self.needs_chunk_tokens)
            if tensor is not None:
                batch.scores = tensor.predict_positive(self._head_input(E)).astype(np.float32)
                batch.scores[_empty_mask(batch.texts)] = 0.0
            else:
                batch.scores = self.score_doc_embeddings(E, _empty_mask(batch.texts))
            return batch

        return [("tokenise", tokenise), ("embed", embed), ("head", head)]

    def _splits_into_stages(self) -> bool:
        return (getattr(self, "embedding_cache_", None) is None
                and type(self).edu_score is EduClassifier.edu_score
                and hasattr(self.embedder_, "prepare") and hasattr(self.embedder_, "run"))

    def _score_whole_batch(self, batch):
        ids = None
        if getattr(self, "embedding_cache_", None) is not None:
            from .embcache import document_ids

            ids = document_ids(batch.records, batch.id_column, batch.texts)
        batch.scores = self.edu_score(batch.texts, ids=ids) if batch.texts else np.zeros(0, np.float32)
        return batch

    def _tensor_head(self, wanted: bool | None):
        """A TensorForest on the embedder's device when wanted (None: on CUDA only), else None.

        Only for a plain scikit-learn forest classifier head with one row per document and no
        calibration, scored through the stock ``score_doc_embeddings``.
        """
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

        device = getattr(self.embedder_, "_device", None) or "cpu"
        use = wanted if wanted is not None else device.startswith("cuda")
        plain = (type(self).score_doc_embeddings is EduClassifier.score_doc_embeddings
                 and type(self).raw_scores is EduClassifier.raw_scores)
        forest = getattr(self, "forest_", None)
        # one head row per document (truncated, or pooled chunks) and no calibration to apply after
        per_document = self.doc_mode in ("truncate", "chunk-mean", "chunk-weighted")
        if not (use and plain and per_document and getattr(self, "calibrator_", None) is None
                and isinstance(forest, (RandomForestClassifier, ExtraTreesClassifier)) and True in list(forest.classes_)):
            return None
        from .tensor_forest import TensorForest

        return TensorForest(forest, True, device=device)

    # -- embedding cache --------------------------------------------------------------------

    def embedding_identity(self) -> dict:
        from .embcache import identity

        return identity(self.embedder_, self.chunking, self.max_chunks)

    def use_embedding_cache(self, cache) -> "EduClassifier":
        """Read embeddings from an :class:`~phifilter.embcache.EmbeddingCache` (or its folder) by id."""
        from .embcache import EmbeddingCache

        self._check_fitted()
        self._check_embedder()
        if not isinstance(cache, EmbeddingCache):
            cache = EmbeddingCache.open(cache)
        cache.check(self.embedding_identity(), "this model")
        self.embedding_cache_ = cache
        return self

    def doc_embeddings_from_cache(self, cache, texts: Sequence[str], ids: Sequence[str]) -> DocEmbeddings:
        """Cached embeddings for the ids found; the rest are embedded from their texts."""
        from .embcache import merge

        found, missing = cache.lookup(list(ids), list(texts))
        if not missing:
            return found
        fresh = self.embed_documents([texts[k] for k in missing], count=False)
        if found is None:
            return fresh
        present = [k for k in range(len(ids)) if k not in set(missing)]
        return merge(len(ids), [(present, found), (missing, fresh)])

    # -- embedder check ---------------------------------------------------------------------

    def _check_embedder(self) -> None:
        if getattr(self, "_embedder_checked", False):
            return
        info = getattr(self, "embedder_info_", {}) or {}
        dim = self.embedder_.dim
        if dim != self.n_features_in_:
            raise ModelError(
                f"embedder {self.embedder_.name} gives {dim}-dimensional embeddings but the forest "
                f"was trained on {self.n_features_in_}; use the embedder the model was trained with "
                f"({info.get('name', 'unknown')})"
            )
        want = info.get("sha256") or {}
        got = self.embedder_.hashes
        for name, digest in want.items():
            if name in got and got[name] != digest:
                raise ModelError(
                    f"embedder {self.embedder_.name}: {name} has SHA-256 {got[name][:16]}… but the model "
                    f"was trained with {digest[:16]}…; scores would be meaningless"
                )
        self._embedder_checked = True

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, metrics: dict | None = None, training_data: dict | None = None,
             card: str | None = None) -> Path:
        """Write the model folder atomically (a temporary folder renamed into place)."""
        import shutil

        import skops.io as sio

        from .corpus import output_error, remove_stale_siblings

        self._check_fitted()
        path = Path(path)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_siblings(path)  # what a killed save left: .<name>.tmp-<pid>, .<name>.old-<pid>
            tmp.mkdir()
        except OSError as e:
            raise output_error(path, e) from None
        try:
            files = {FOREST_FILE: self.head_}
            if getattr(self, "calibrator_", None) is not None:
                files[CALIBRATION_FILE] = self.calibrator_
            for name, estimator in files.items():
                sio.dump(estimator, tmp / name)
                _make_zip_reproducible(tmp / name)
            params = {k: v for k, v in self.get_params().items() if k != "embedder"}
            meta = {
                "format": FORMAT,
                "format_version": self._format_version(),
                "head": HEADS[self.head],
                "doc_mode": self.doc_mode,
                "calibration": "isotonic" if CALIBRATION_FILE in files else None,
                "params": params,
                "embedder": {**self.embedder_info_, "source": _embedder_source(self.embedder)},
                "positive_threshold": self.positive_threshold,
                "threshold": self.threshold,
                "n_features": int(self.n_features_in_),
                "metrics": metrics or getattr(self, "metrics_", None) or {},
                "training_data": training_data or getattr(self, "training_data_", None) or {},
                "files": {name: _sha256_file(tmp / name) for name in files},
                "versions": library_versions(),
                "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
            if card:
                (tmp / CARD_FILE).write_text(card)
            if path.exists():
                old = path.parent / f".{path.name}.old-{os.getpid()}"
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except OSError as e:  # a full disk, no permission: one clear line, the old folder kept
            shutil.rmtree(tmp, ignore_errors=True)
            raise output_error(path, e) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    def _format_version(self) -> int:
        """The oldest format that describes this model, so older phifilter versions read what they can."""
        return 3 if self.feature_parts != ["mean"] or self.head in FORMAT_3_HEADS else 2

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, embedder: str | os.PathLike | None = None,
             device: str = "auto", batch_size: int = 64, max_length: int | None = None,
             embedder_revision: str | None = None, embedder_sha256: dict[str, str] | None = None) -> "EduClassifier":
        """Load a model folder (None: the bundled default). Refuses foreign or tampered folders.

        The embedder is loaded at the revision the model recorded unless ``embedder_revision``
        says otherwise; ``embedder_sha256`` ({file: hex}) pins its files on top of the check
        against the hashes the model was trained with.
        """

        from .location import local_folder

        path = local_folder(path) if path is not None else default_model_path()  # a URL: a cached copy
        meta = read_model_meta(path)
        forest = _load_skops(path, meta, FOREST_FILE)
        calibrator = _load_skops(path, meta, CALIBRATION_FILE) if meta.get("calibration") else None
        params = dict(meta.get("params") or {})
        info = meta.get("embedder") or {}
        params.update(
            embedder=embedder if embedder is not None else info.get("source"),
            device=device,
            batch_size=batch_size,
            max_length=max_length or info.get("max_length") or params.get("max_length", 256),
        )
        head_names = {v: k for k, v in HEADS.items()}
        if meta.get("head") not in head_names:
            raise ModelError(f"{path}: unknown head '{meta.get('head')}' in {META_FILE}; upgrade phifilter")
        params.setdefault("head", head_names[meta["head"]])
        params.setdefault("doc_mode", meta.get("doc_mode") or "truncate")
        known = set(cls().get_params())
        clf = cls(**{k: v for k, v in params.items() if k in known})
        clf._check_options()
        clf.head_ = clf.forest_ = forest
        clf.calibrator_ = calibrator
        clf.n_features_in_ = int(meta.get("n_features") or forest.n_features_in_)  # the embedding dimension
        if clf.head_width(clf.n_features_in_) != forest.n_features_in_:
            raise ModelError(f"{path}: {META_FILE} says {clf.n_features_in_} features (--features {clf.features}), "
                             f"the forest has {forest.n_features_in_}")
        if info.get("dim") is not None and int(info["dim"]) != clf.n_features_in_:
            raise ModelError(f"{path}: embedder dimension {info['dim']} does not match the forest's {clf.n_features_in_} features")
        clf.embedder_ = clf._make_embedder()
        clf.embedder_.revision = embedder_revision or info.get("revision")
        clf.embedder_.sha256 = dict(embedder_sha256) if embedder_sha256 else None
        clf.embedder_info_ = info
        clf.metrics_ = meta.get("metrics") or {}
        clf.training_data_ = meta.get("training_data") or {}
        clf.path_ = path
        # Identifies the scoring model across processes (checkpoint keys): the hashes of its files.
        clf.forest_sha256_ = hashlib.sha256(json.dumps(meta.get("files") or {}, sort_keys=True).encode()).hexdigest()
        return clf


def _load_skops(folder: Path, meta: dict, name: str):
    """Load one skops file of a model folder after checking its hash and the types it holds."""
    import skops.io as sio

    file = folder / name
    if not file.is_file():
        raise ModelError(f"{folder}: model folder has no {name}")
    recorded = (meta.get("files") or {}).get(name)
    if recorded != _sha256_file(file):
        raise ModelError(
            f"{file}: SHA-256 does not match the one recorded in {META_FILE}; "
            "the model folder was modified after it was saved, refusing to load it"
        )
    try:
        untrusted = sio.get_untrusted_types(file=file)
    except Exception as e:
        raise ModelError(f"{file}: not a skops file ({e})") from None
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise ModelError(f"{file}: contains untrusted types {', '.join(refused)}; refusing to load it")
    return sio.load(file, trusted=list(untrusted))


def make_calibrator(raw: np.ndarray, y: np.ndarray):
    """Isotonic regression from raw scores to the observed share of positives, clipped to [0, 1]."""
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
        np.asarray(raw, np.float64), np.asarray(y, np.float64))


def _make_zip_reproducible(path: Path) -> None:
    """Re-pack a skops archive so the same forest always gives the same bytes (and hash).

    skops names array files and memo keys after Python ``id()`` values, and zip entries carry
    the time of writing; both change from run to run. Files are renamed in order of first
    reference in ``schema.json`` and written with a fixed timestamp.
    """
    import re
    import zipfile

    with zipfile.ZipFile(path) as src:
        entries = {info.filename: src.read(info.filename) for info in src.infolist()}
    schema = entries.pop("schema.json").decode("utf-8")
    renames: dict[str, str] = {}
    for name in re.findall(r'"([^"/\\]+\.npy)"', schema):
        if name in entries and name not in renames:
            renames[name] = f"{len(renames):06d}.npy"
    schema = re.sub(r'"([^"/\\]+\.npy)"', lambda m: f'"{renames.get(m.group(1), m.group(1))}"', schema)
    ids: dict[str, str] = {}  # "__id__" memo keys are id()s too; renumber them consistently
    schema = re.sub(r'"__id__": (\d+)', lambda m: f'"__id__": {ids.setdefault(m.group(1), str(len(ids)))}', schema)
    files = {"schema.json": schema.encode("utf-8")}
    files.update({renames.get(k, k): v for k, v in entries.items()})
    tmp = path.with_name(path.name + ".repack")
    with zipfile.ZipFile(tmp, "w") as dst:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, files[name], compresslevel=9)
    os.replace(tmp, path)


def _embedder_source(embedder) -> str | None:
    if embedder is None:
        return None
    if not isinstance(embedder, (str, os.PathLike)):
        embedder = getattr(embedder, "source", None) or embedder.model
    if embedder is None or str(embedder) == DEFAULT_EMBEDDER:
        return None
    return str(embedder)


def _empty_mask(texts: Sequence[str]) -> np.ndarray:
    return np.fromiter((not t or t.isspace() for t in texts), dtype=bool, count=len(texts))


def default_model_path() -> Path:
    """The bundled default model folder (trained on the shipped seed set)."""
    return Path(__file__).resolve().parent / "models" / "default"


def read_model_meta(path: str | os.PathLike) -> dict:
    """Read and check ``phifilter.json``; ModelError if the folder is not a phifilter model."""
    from .location import local_folder

    path = local_folder(path)
    if not path.is_dir():
        raise ModelError(f"{path}: no such model folder")
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise ModelError(f"{path}: not a phifilter model folder (no {META_FILE})")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{meta_file}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{meta_file}: not a phifilter model (format is not '{FORMAT}')")
    from .modelmeta import check_model_meta

    check_model_meta(meta, meta_file)  # every field's type and range, before anything uses one
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"{meta_file}: format version {meta.get('format_version')} is newer than this phifilter "
            f"understands ({FORMAT_VERSION}); upgrade phifilter"
        )
    return meta
