"""EduClassifier: the scorer that puts a model's parts together and gives every document an edu_score.

A model is made of parts, each a small public class:

- a :class:`~phifilter.featurizer.Featurizer` (embedder + chunking -> document feature rows),
- a head (:mod:`phifilter.heads`: forest, forest-regressor, logistic, ridge, svr) on those rows,
- optionally a lexical scorer (:class:`phifilter.lexical.LexicalScorer`, fastText on the raw text),
  a :class:`~phifilter.combiner.StackedCombiner` fitted on the scorers' out-of-fold scores, and a
  :class:`~phifilter.cascade.Cascade` that sends only the lexical scorer's uncertain band to the
  embedder,
- model-folder I/O in :mod:`phifilter.modelfolder`.

A scikit-learn style estimator: the constructor only stores its arguments, ``fit`` does the
work and returns ``self``, learned attributes end in ``_``. Folder formats 1-3 (embedding + head,
optional isotonic calibration) load and score exactly as before; format 4 adds the scorers, the
combiner and the cascade::

    model/
      forest.skops       the embedding head (any kind), skops; the name is kept from format 1
      calibration.skops  optional isotonic calibration of the head's scores (formats 2-3)
      lexical.bin        format 4: the fastText lexical scorer
      phifilter.json     parts, embedder identity and hashes, combiner weights, band, metrics
      README.md          the model card

Scoring a batch is two steps so a pipeline can run them in separate stages:
:meth:`EduClassifier.route` (cheap: blank texts, the lexical score, which documents need the
embedder) and :meth:`EduClassifier.score_routed` (the head on those documents' embeddings,
combined). :meth:`EduClassifier.edu_score` is both in one call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .chunking import DocEmbeddings
from .defaults import EMBED_BATCH_SIZE, MAX_CHUNKS, MAX_LENGTH
from .embed import DEFAULT_EMBEDDER, Embedder
from .errors import ModelError
from .featurizer import FEATURE_PARTS, Featurizer, blank_mask, params_of  # noqa: F401 (re-exported)
from .heads import HEAD_CLASSES, HEADS, REGRESSORS, RIDGE_ALPHAS, Head, make_head  # noqa: F401 (re-exported)
from .modelfolder import (  # noqa: F401 (re-exported: the names notebooks and tests import from here)
    CALIBRATION_FILE,
    CARD_FILE,
    FORMAT,
    FORMAT_VERSION,
    HEAD_FILE,
    META_FILE,
    TRUSTED_TYPES,
    default_model_path,
    library_versions,
    read_model_meta,
)
from .modelfolder import sha256_file as _sha256_file  # noqa: F401 (older name, used by tests)

# Heads written as format 3 (older phifilter versions do not know them).
FORMAT_3_HEADS = ("ridge", "svr")
LEXICAL_NAME = "lexical"  # the lexical scorer's file is lexical.bin
LEXICAL_FILE = LEXICAL_NAME + ".bin"


@dataclass
class Route:
    """What the cheap step decided for a batch of texts.

    ``blank``: texts that score 0; ``cheap``: the lexical score per text (None: no lexical
    scorer); ``embed``: indices of the texts that go through the embedder and head, in order.
    """

    blank: np.ndarray
    cheap: np.ndarray | None
    embed: np.ndarray

    @property
    def n(self) -> int:
        return len(self.blank)


class EduClassifier:
    """Score documents for "high educational value" (P(score >= positive_threshold)) from parts.

    Parameters
    ----------
    embedder : hub name, local folder, ``mean-pool:FOLDER`` (any transformers model, see
        :mod:`phifilter.hf_embed`), an embedder object, or None for all-MiniLM-L6-v2.
    head : the embedding head, one of :data:`phifilter.heads.HEADS` (see that module's table).
    doc_mode, max_chunks, features : the :class:`~phifilter.featurizer.Featurizer`'s settings.
    calibrate : fit isotonic calibration of the head on out-of-fold scores (done by ``train``).
    C : inverse regularisation of the logistic head.
    n_estimators, max_depth, min_samples_leaf, max_features, class_weight :
        passed to the random forest (class_weight also sets the logistic head's weights and,
        when 'balanced*', balanced sample weights for the forest regressor).
    positive_threshold : label scores (0-5) at or above this count as positive.
    threshold : decision threshold on ``edu_score`` for "keep" (used by summaries and filter).
    max_length, device, batch_size : embedder settings when ``embedder`` is not an Embedder.
    n_jobs, random_state : as in scikit-learn.
    lexical : None (embedding + head only) or 'fasttext': a lexical scorer beside the embedding
        scorer, combined by a stacked logistic regression (format 4).
    lexical_params : parameters of :class:`phifilter.lexical.LexicalScorer` (None: its defaults).
    expensive_share : with ``lexical``, the share of documents the embedding model may see (the
        cascade's band, chosen by ``train``); None: every document is embedded.
    """

    # Scoring can be cut into route -> embed -> score_routed pipeline stages; a subclass that
    # scores documents its own way (overriding edu_score) sets this to False.
    staged = True

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
        max_length: int = MAX_LENGTH,
        device: str = "auto",
        batch_size: int = EMBED_BATCH_SIZE,
        n_jobs: int | None = -1,
        random_state: int | None = 0,
        head: str = "forest",
        doc_mode: str = "truncate",
        max_chunks: int = MAX_CHUNKS,
        calibrate: bool = False,
        C: float = 0.005,
        features: str = "mean",
        lexical: str | None = None,
        lexical_params: dict | None = None,
        expensive_share: float | None = None,
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
        self.lexical = lexical
        self.lexical_params = lexical_params
        self.expensive_share = expensive_share

    # -- parts --------------------------------------------------------------------------------

    def get_params(self, deep: bool = False) -> dict:
        return params_of(self)

    @property
    def featurizer(self) -> Featurizer:
        return Featurizer(doc_mode=self.doc_mode, max_chunks=self.max_chunks, features=self.features)

    def make_head(self) -> Head:
        """A fresh, unfitted head of kind ``head`` with this classifier's settings."""
        return make_head(self.head, **self.get_params())

    def make_embedder(self):
        if self.embedder is not None and not isinstance(self.embedder, (str, os.PathLike)):
            return self.embedder  # an Embedder, or anything with the same interface
        from .hf_embed import make_embedder

        return make_embedder(self.embedder, device=self.device, max_length=self.max_length,
                             batch_size=self.batch_size)

    def make_lexical(self):
        """A fresh, unfitted lexical scorer."""
        from .lexical import LexicalScorer

        return LexicalScorer(**{"positive_threshold": self.positive_threshold, **dict(self.lexical_params or {})})

    def check_options(self) -> None:
        if self.head not in HEADS:
            raise ModelError(f"--head {self.head}: expected one of {', '.join(HEADS)}")
        self.featurizer.check()
        if self.lexical not in (None, "fasttext"):
            raise ModelError(f"lexical={self.lexical!r}: expected None or 'fasttext'")
        if self.lexical is not None and self.calibrate:
            raise ModelError("--calibrate with --lexical: the combiner already turns the scores into a probability")
        if self.expensive_share is not None:
            if self.lexical is None:
                raise ModelError("--expensive-share needs a lexical scorer (--lexical fasttext): "
                                 "the cascade sends what the lexical scorer is unsure of to the embedder")
            if not 0.0 <= float(self.expensive_share) <= 1.0:
                raise ModelError(f"--expensive-share {self.expensive_share}: expected a number in [0, 1]")

    _check_options = check_options  # older private names, kept for callers outside the package
    _make_embedder = make_embedder

    @property
    def feature_parts(self) -> list[str]:
        return self.featurizer.parts

    def head_width(self, dim: int) -> int:
        """Columns the head sees for ``dim``-dimensional embeddings."""
        return self.featurizer.width(dim)

    def binarize(self, scores: Sequence[float]) -> np.ndarray:
        return np.asarray(scores, dtype=np.float64) >= self.positive_threshold

    @property
    def has_parts(self) -> bool:
        """Whether this model has a lexical scorer and a combiner (format 4)."""
        return getattr(self, "lexical_", None) is not None

    # -- features ---------------------------------------------------------------------------

    @property
    def chunking(self) -> str:
        return self.featurizer.chunking

    @property
    def needs_chunk_tokens(self) -> bool:
        """Whether scoring needs each chunk's token count (token-weighted pooling does)."""
        return self.featurizer.needs_chunk_tokens

    def embed_documents(self, texts: Sequence[str], progress: bool = False, count: bool = True) -> DocEmbeddings:
        """Embed ``texts`` the way ``doc_mode`` needs (truncated, or one row per chunk);
        ``count=False`` skips the token statistics truncation does not need."""
        embedder = getattr(self, "embedder_", None) or self.make_embedder()
        return self.featurizer.embed(embedder, texts, progress=progress, count=count)

    def as_doc_embeddings(self, X) -> DocEmbeddings:
        return self.featurizer.as_doc_embeddings(X)

    _as_doc_embeddings = as_doc_embeddings

    def head_input(self, E) -> np.ndarray:
        """Rows the head sees: one per document, or one per chunk for the chunk-score modes."""
        return self.featurizer.transform(self.as_doc_embeddings(E))

    _head_input = head_input

    # -- fitting ----------------------------------------------------------------------------

    def fit_head(self, E, scores: Sequence[float]) -> Head:
        """Fit a fresh head on document embeddings and 0-5 scores; returns the fitted head."""
        self.check_options()
        f = self.featurizer
        E = f.as_doc_embeddings(E)
        scores = np.asarray(scores, dtype=np.float64)
        return self.make_head().fit(f.transform(E), f.row_labels(E, scores), sample_weight=f.row_weights(E))

    def _as_head(self, head) -> Head:
        if head is None:
            return self.embedding_head_
        if isinstance(head, Head):
            return head
        return type(self.make_head()).from_estimator(head, **self.make_head().get_params())  # a bare estimator

    def raw_scores(self, E, head=None) -> np.ndarray:
        """Uncalibrated float64 head score per document from a fitted head (default: this model's)."""
        f = self.featurizer
        E = f.as_doc_embeddings(E)
        head = self._as_head(head)
        if E.n_docs == 0:
            return np.zeros(0)
        return f.reduce(E, head.score(f.transform(E)))

    def fit(self, texts: Sequence[str], scores: Sequence[float], embeddings=None):
        """Fit the embedding head on documents and their 0-5 scores (precomputed ``embeddings``
        skip the embedder: a :class:`DocEmbeddings`, or one truncated embedding per document).
        The lexical scorer, combiner and cascade are fitted by :func:`phifilter.train.train_model`,
        which has the out-of-fold scores they need."""
        self.check_options()
        self.embedder_ = self.make_embedder()
        E = self.embed_documents(texts) if embeddings is None else self.as_doc_embeddings(embeddings)
        y = self.binarize(scores)
        if y.all() or not y.any():
            raise ModelError(
                f"all {len(y)} training labels fall on one side of --positive-threshold "
                f"{self.positive_threshold}; the classifier needs both classes"
            )
        self.set_head(self.fit_head(E, scores))
        self.calibrator_ = None
        self.embedder_info_ = self.embedder_.describe()
        self.n_features_in_ = E.vectors.shape[1]
        return self

    def set_head(self, head: Head) -> "EduClassifier":
        self.embedding_head_ = head
        self.head_ = head.estimator_
        return self

    @property
    def forest_(self):
        """The head's estimator when it is a random forest (or extra trees), else None.

        The name of ``head_`` in format 1, when every head was a forest; kept for code that reads it."""
        from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor

        est = getattr(self, "head_", None)
        forests = (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor)
        return est if isinstance(est, forests) else None

    def set_parts(self, lexical, combiner, cascade=None, score_map=None) -> "EduClassifier":
        """Attach a fitted lexical scorer, combiner and cascade (None: no cascade), and the 0-5
        score map when given (from train); the model keeps its score map otherwise."""
        self.lexical_, self.combiner_, self.cascade_ = lexical, combiner, cascade
        if score_map is not None:
            self.score_map_ = score_map
        return self

    def fit_calibration(self, raw: np.ndarray, y: np.ndarray):
        """Isotonic map from raw head scores to P(positive), fitted on out-of-fold scores."""
        self.calibrator_ = make_calibrator(raw, y)
        return self

    def check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise ModelError("this EduClassifier is not fitted; call fit() or EduClassifier.load()")

    _check_fitted = check_fitted

    # -- prediction -------------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One embedding per text (chunk modes: the mean of its chunks)."""
        self.check_fitted()
        self.check_embedder()
        E = self.embed_documents(texts, count=False)
        return E.vectors if E.chunking == "truncate" else E.pooled()

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """[n, 2] probabilities of (low, high) educational value."""
        p = self.edu_score(texts).astype(np.float64)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.edu_score(texts) >= self.threshold

    def route(self, texts: Sequence[str]) -> Route:
        """The cheap step: blank texts, the lexical score, and which texts need the embedder.

        Without a lexical scorer every text is embedded (blank ones too, as formats 1-3 always
        did, so their scores stay bit-identical); with one, blank texts never are, and with a
        cascade only the texts whose lexical score falls in the band.
        """
        blank = blank_mask(texts)
        if not self.has_parts:
            return Route(blank, None, np.arange(len(texts)))
        cheap = np.zeros(len(texts), np.float64)
        live = np.flatnonzero(~blank)
        if len(live):
            cheap[live] = self.lexical_.predict_proba_high([_utf8(texts[k]) for k in live])
        wanted = ~blank
        if getattr(self, "cascade_", None) is not None:
            wanted &= self.cascade_.in_band(cheap)
        return Route(blank, cheap, np.flatnonzero(wanted))

    def score_routed(self, route: Route, E) -> np.ndarray:
        """float32 scores of a routed batch; ``E`` holds the embeddings of ``route.embed``'s texts, in order."""
        if route.cheap is None:
            return self.score_doc_embeddings(E, route.blank)
        if E is None and len(route.embed) == 0:  # nothing in the band: the embedder never ran
            E = self.as_doc_embeddings(np.zeros((0, self.n_features_in_), np.float32))
        elif E is not None:
            E = self.as_doc_embeddings(E)
        if E is None or E.n_docs != len(route.embed):
            raise ModelError(f"{0 if E is None else E.n_docs} embedded documents for {len(route.embed)} "
                             "routed to the embedder")
        full = None
        if len(route.embed):
            full = self.combiner_.predict(np.column_stack([route.cheap[route.embed], self.raw_scores(E)]))
        if getattr(self, "cascade_", None) is not None:
            band = np.zeros(route.n, bool)
            band[route.embed] = True
            p = self.cascade_.combine(route.cheap, full, band)
        else:
            p = np.zeros(route.n)
            if full is not None:
                p[route.embed] = full
        p = p.astype(np.float32)
        p[route.blank] = 0.0
        return p

    def edu_score(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> np.ndarray:
        """float32 edu_score per text; empty or blank texts score 0.

        With an embedding cache attached (:meth:`use_embedding_cache`) and ``ids`` given, texts
        whose id is in the cache are not embedded again.
        """
        texts = list(texts)
        self.check_fitted()
        self.check_embedder()
        route = self.route(texts)
        sub = [texts[k] for k in route.embed]
        cache = getattr(self, "embedding_cache_", None)
        if cache is not None and ids is not None:
            E = self.doc_embeddings_from_cache(cache, sub, [ids[k] for k in route.embed])
        else:
            E = self.embed_documents(sub, count=False)
        return self.score_routed(route, E)

    def score_texts_embedded(self, texts: Sequence[str], E) -> np.ndarray:
        """Scores of ``texts`` whose embeddings ``E`` (all of them, in order) are already at hand."""
        route = self.route(list(texts))
        E = self.as_doc_embeddings(E)
        if route.cheap is not None:
            E = E.subset(route.embed)
        return self.score_routed(route, E)

    def score_doc_embeddings(self, E, empty: np.ndarray | None = None) -> np.ndarray:
        """Embedding-only scores (calibrated when the model has a calibration) from precomputed
        embeddings. A model with a lexical scorer needs the texts: use :meth:`score_texts_embedded`."""
        self.check_fitted()
        if self.has_parts:
            raise ModelError("this model combines a lexical scorer with the embeddings; "
                             "score texts (edu_score or score_texts_embedded), not embeddings alone")
        E = self.as_doc_embeddings(E)
        if E.n_docs == 0:
            return np.zeros(0, dtype=np.float32)
        p = self.raw_scores(E)
        if getattr(self, "calibrator_", None) is not None:
            p = self.calibrator_.predict(p)
        p = p.astype(np.float32)
        if empty is not None:
            p[np.asarray(empty, dtype=bool)] = 0.0
        return p

    def int_scores(self, edu_scores: np.ndarray) -> np.ndarray:
        """FineWeb-Edu style int_score: the expected 0-5 label given edu_score, rounded (int8).

        The map is fitted at training time (isotonic, on out-of-fold scores); models trained
        before it existed have none and are refused."""
        m = getattr(self, "score_map_", None)
        if m is None:
            raise ModelError("this model has no 0-5 score map (trained before phifilter stored one); "
                             "retrain it with `phifilter train` to use --int-score-column")
        expected = np.interp(np.asarray(edu_scores, np.float64), m["edu_score"], m["expected_score"])
        return np.rint(np.clip(expected, 0.0, 5.0)).astype(np.int8)

    def disagreement(self, E) -> np.ndarray:
        """How unsure the embedding head is per document: the spread of its trees' votes
        (forests), or closeness to the decision point (others). Higher means more worth labelling."""
        self.check_fitted()
        f = self.featurizer
        E = f.as_doc_embeddings(E)
        return f.reduce(E, self.embedding_head_.disagreement(f.transform(E)), "mean")

    # -- scoring stages (the scoring flow asks the model for them) -----------------------------

    @property
    def splits_into_stages(self) -> bool:
        """Can scoring be cut into tokenise / embed / head stages? Not when embeddings come from a
        cache (it decides per document whether it is embedded at all) or ``staged`` is False."""
        emb = getattr(self, "embedder_", None)
        return (getattr(self, "embedding_cache_", None) is None and bool(self.staged)
                and hasattr(emb, "prepare") and hasattr(emb, "run"))

    def scoring_stages(self, tensor_forest: bool | None = None) -> list:
        """:meth:`edu_score` cut into steps a scoring flow runs in threads of their own.

        Returns ``[(name, fn), ...]``, each ``fn(batch) -> batch`` on a batch with ``texts``
        (and ``records``, ``id_column``), setting ``work`` for the next stage, ``tokens`` and, in
        the last one, ``scores``. "tokenise" runs :meth:`route` (the lexical score; a cascade's
        band) and lays out and tokenises only the routed documents, "embed" runs the embedder,
        "head" pools chunks, scores and combines (:meth:`score_routed`). One "model" stage
        instead when the model cannot be cut (see :attr:`splits_into_stages`).
        ``tensor_forest``: walk a forest head as tensors on the embedder's device (None: on CUDA).
        """
        if not self.splits_into_stages:
            return [("model", self.score_batch)]
        from .chunking import assemble, layout_documents

        emb = self.embedder_
        tensor = self.tensor_head(tensor_forest)

        def tokenise(batch):
            route = self.route(batch.texts)
            texts = batch.texts if len(route.embed) == len(batch.texts) else [batch.texts[k] for k in route.embed]
            if not texts:  # nothing for the embedder in this batch
                batch.work = (route, None, None)
                return batch
            layout = layout_documents(emb, texts, self.chunking, self.max_chunks, count=False)
            plan = emb.prepare(layout[0])
            batch.work, batch.tokens = (route, layout, plan), getattr(plan, "tokens", 0)
            return batch

        def embed(batch):
            route, layout, plan = batch.work
            batch.work = (route, layout, None if plan is None else emb.run(plan))
            return batch

        def head(batch):
            (route, layout, X), batch.work = batch.work, None
            if not batch.texts:
                batch.scores = np.zeros(0, np.float32)
                return batch
            E = None if X is None else assemble(emb, X, layout, self.chunking, chunk_tokens=self.needs_chunk_tokens)
            if tensor is not None:
                batch.scores = tensor.predict_positive(self.head_input(E)).astype(np.float32)
                batch.scores[route.blank] = 0.0
            else:
                batch.scores = self.score_routed(route, E)
            return batch

        return [("tokenise", tokenise), ("embed", embed), ("head", head)]

    def score_batch(self, batch):
        """The whole model as one stage (embedding cache: texts whose id it holds are not embedded)."""
        ids = None
        if getattr(self, "embedding_cache_", None) is not None:
            from .hashing import document_ids

            ids = document_ids(batch.records, batch.id_column, batch.texts)
        batch.scores = self.edu_score(batch.texts, ids=ids) if batch.texts else np.zeros(0, np.float32)
        return batch

    def tensor_head(self, wanted: bool | None):
        """A TensorForest on the embedder's device when wanted (None: on CUDA only), else None.

        Only for a plain scikit-learn forest classifier head with one row per document, no
        calibration and no combiner after it.
        """
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

        device = getattr(self.embedder_, "resolved_device", None) or "cpu"
        use = wanted if wanted is not None else device.startswith("cuda")
        forest = getattr(self, "head_", None)
        per_document = self.doc_mode in ("truncate", "chunk-mean", "chunk-weighted")
        if not (use and self.staged and per_document and getattr(self, "calibrator_", None) is None
                and not self.has_parts and isinstance(forest, (RandomForestClassifier, ExtraTreesClassifier))
                and True in list(forest.classes_)):
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

        self.check_fitted()
        self.check_embedder()
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

    def check_embedder(self) -> None:
        """Refuse an embedder whose dimension or file hashes differ from the ones the head was trained on."""
        if getattr(self, "_embedder_checked", False):
            return
        info = getattr(self, "embedder_info_", {}) or {}
        dim = self.embedder_.dim
        if dim != self.n_features_in_:
            raise ModelError(
                f"embedder {self.embedder_.name} gives {dim}-dimensional embeddings but the head "
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

    _check_embedder = check_embedder

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, metrics: dict | None = None, training_data: dict | None = None,
             card: str | None = None) -> Path:
        """Write the model folder atomically (a temporary folder renamed into place)."""
        from .modelfolder import dump_skops, now_utc, write_model_folder

        self.check_fitted()
        calibrated = getattr(self, "calibrator_", None) is not None

        def write_parts(tmp: Path) -> None:
            dump_skops(self.head_, tmp / HEAD_FILE)
            if calibrated:
                dump_skops(self.calibrator_, tmp / CALIBRATION_FILE)
            if self.has_parts:
                # the scorer's own metadata (file, SHA-256, parameters, classes) goes into
                # phifilter.json beside the other parts, not into a second JSON file
                lexical_entry["fasttext"] = self.lexical_.save(tmp, LEXICAL_NAME)
                (tmp / f"{LEXICAL_NAME}.json").unlink()

        params = {k: v for k, v in self.get_params().items() if k != "embedder"}
        if not self.has_parts:  # formats 2-3 as they always were (byte-identical rebuilds)
            for k in ("lexical", "lexical_params", "expensive_share"):
                params.pop(k)
        meta = {
            "format": FORMAT,
            "format_version": self._format_version(),
            "head": HEADS[self.head],
            "doc_mode": self.doc_mode,
            "calibration": "isotonic" if calibrated else None,
            "params": params,
            "embedder": {**self.embedder_info_, "source": _embedder_source(self.embedder)},
            "positive_threshold": self.positive_threshold,
            "threshold": self.threshold,
            "n_features": int(self.n_features_in_),
        }
        lexical_entry: dict = {}
        if self.has_parts:
            meta.update(self._parts_meta())
            lexical_entry = meta["scorers"][0]  # filled by write_parts (the saved file's metadata)
        if getattr(self, "score_map_", None) is not None:
            meta["int_score_map"] = self.score_map_
        meta.update({
            "metrics": metrics or getattr(self, "metrics_", None) or {},
            "training_data": training_data or getattr(self, "training_data_", None) or {},
            "files": {HEAD_FILE: None, **({CALIBRATION_FILE: None} if calibrated else {})},
            "versions": library_versions(),
            "created": now_utc(),
        })
        return write_model_folder(path, write_parts, meta, card)

    def _parts_meta(self) -> dict:
        scorers = [
            {"name": "lexical", "kind": "fasttext", "file": LEXICAL_FILE, "output": "P(score >= positive_threshold)"},
            {"name": "embedding", "kind": "featurizer+head", "head": HEADS[self.head], "file": HEAD_FILE,
             "featurizer": self.featurizer.get_params()},
        ]
        out = {"scorers": scorers, "combiner": self.combiner_.to_dict()}
        if getattr(self, "cascade_", None) is not None:
            out["cascade"] = self.cascade_.to_dict()
        return out

    def _format_version(self) -> int:
        """The oldest format that describes this model, so older phifilter versions read what they can."""
        if self.has_parts:
            return 4
        return 3 if self.feature_parts != ["mean"] or self.head in FORMAT_3_HEADS else 2

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, embedder: str | os.PathLike | None = None,
             device: str = "auto", batch_size: int = EMBED_BATCH_SIZE, max_length: int | None = None,
             embedder_revision: str | None = None, embedder_sha256: dict[str, str] | None = None) -> "EduClassifier":
        """Load a model folder (None: the bundled default). Refuses foreign or tampered folders.

        The embedder is loaded at the revision the model recorded unless ``embedder_revision``
        says otherwise; ``embedder_sha256`` ({file: hex}) pins its files on top of the check
        against the hashes the model was trained with.
        """
        from .modelfolder import load_skops, models_id

        from .remotecopy import local_folder

        path = local_folder(path) if path is not None else default_model_path()  # a URL: a cached copy
        meta = read_model_meta(path)
        estimator = load_skops(path, meta, HEAD_FILE)
        calibrator = load_skops(path, meta, CALIBRATION_FILE) if meta.get("calibration") else None
        params = dict(meta.get("params") or {})
        info = meta.get("embedder") or {}
        params.update(
            embedder=embedder if embedder is not None else info.get("source"),
            device=device,
            batch_size=batch_size,
            max_length=max_length or info.get("max_length") or params.get("max_length", MAX_LENGTH),
        )
        head_names = {v: k for k, v in HEADS.items()}
        if meta.get("head") not in head_names:
            raise ModelError(f"{path}: unknown head '{meta.get('head')}' in {META_FILE}; upgrade phifilter")
        params.setdefault("head", head_names[meta["head"]])
        params.setdefault("doc_mode", meta.get("doc_mode") or "truncate")
        known = set(cls().get_params())
        clf = cls(**{k: v for k, v in params.items() if k in known})
        clf.check_options()
        head = type(clf.make_head()).from_estimator(estimator, **clf.make_head().get_params())
        clf.set_head(head)
        clf.calibrator_ = calibrator
        clf.n_features_in_ = int(meta.get("n_features") or estimator.n_features_in_)  # the embedding dimension
        if clf.head_width(clf.n_features_in_) != estimator.n_features_in_:
            raise ModelError(f"{path}: {META_FILE} says {clf.n_features_in_} features (--features {clf.features}), "
                             f"the head has {estimator.n_features_in_}")
        if info.get("dim") is not None and int(info["dim"]) != clf.n_features_in_:
            raise ModelError(f"{path}: embedder dimension {info['dim']} does not match the head's {clf.n_features_in_} features")
        if int(meta.get("format_version", 0)) >= 4 and meta.get("scorers"):
            clf._load_parts(path, meta)
        clf.score_map_ = meta.get("int_score_map")
        clf.embedder_ = clf.make_embedder()
        clf.embedder_.revision = embedder_revision or info.get("revision")
        clf.embedder_.sha256 = dict(embedder_sha256) if embedder_sha256 else None
        clf.embedder_info_ = info
        clf.metrics_ = meta.get("metrics") or {}
        clf.training_data_ = meta.get("training_data") or {}
        clf.path_ = path
        # Identifies the scoring model across processes (checkpoint keys): the hashes of its files.
        clf.model_sha256_ = models_id(meta)
        return clf

    def _load_parts(self, path: Path, meta: dict) -> None:
        from .cascade import Cascade
        from .combiner import StackedCombiner
        from .lexical import LexicalScorer
        from .modelfolder import checked_file

        kinds = {s.get("name"): s for s in meta["scorers"] if isinstance(s, dict)}
        if set(kinds) != {"lexical", "embedding"} or kinds["lexical"].get("kind") != "fasttext":
            raise ModelError(f"{path}: unknown scorers {sorted(kinds)} in {META_FILE}; upgrade phifilter")
        entry = kinds["lexical"]
        checked_file(path, meta, entry.get("file", LEXICAL_FILE))
        if not isinstance(entry.get("fasttext"), dict):
            raise ModelError(f"{path}: {META_FILE} has no metadata for the lexical scorer")
        lexical = LexicalScorer.load(path, entry["fasttext"])
        combiner = StackedCombiner.from_dict(meta.get("combiner"))
        cascade = Cascade.from_dict(meta["cascade"]) if meta.get("cascade") else None
        self.set_parts(lexical, combiner, cascade)


def make_calibrator(raw: np.ndarray, y: np.ndarray):
    """Isotonic regression from raw scores to the observed share of positives, clipped to [0, 1]."""
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
        np.asarray(raw, np.float64), np.asarray(y, np.float64))


def make_score_map(edu_scores: np.ndarray, labels: np.ndarray) -> dict:
    """The expected 0-5 label given edu_score (isotonic, on out-of-fold scores), as breakpoints
    for ``np.interp`` (isotonic prediction with clipping is exactly that interpolation)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=5.0, out_of_bounds="clip").fit(
        np.asarray(edu_scores, np.float64), np.asarray(labels, np.float64))
    return {"edu_score": [round(float(x), 6) for x in iso.X_thresholds_],
            "expected_score": [round(float(y), 6) for y in iso.y_thresholds_]}


def _embedder_source(embedder) -> str | None:
    if embedder is None:
        return None
    if not isinstance(embedder, (str, os.PathLike)):
        embedder = getattr(embedder, "source", None) or embedder.model
    if embedder is None or str(embedder) == DEFAULT_EMBEDDER:
        return None
    return str(embedder)


_empty_mask = blank_mask  # older private name, kept for callers outside the package


def _utf8(text: str) -> str:
    """``text`` as fastText can take it: lone surrogates (possible in Python strings, not in
    UTF-8) become U+FFFD; any other text is returned as is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
