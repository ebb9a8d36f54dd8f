"""EduClassifier: the scorer that puts a model's parts together and gives every document an edu_score.

A model is made of parts, each a small public class:

- a :class:`~phifilter.featurizer.Featurizer` (embedder + chunking -> document feature rows),
- a head (:mod:`phifilter.heads`: forest, forest-regressor, logistic, ridge, svr) on those rows,
- optionally a lexical scorer (:class:`phifilter.lexical.LexicalScorer`, fastText on the raw text),
  a :class:`~phifilter.combiner.StackedCombiner` fitted on the scorers' out-of-fold scores, and a
  :class:`~phifilter.cascade.Cascade` that sends only the lexical scorer's uncertain band to the
  embedder,
- model-folder I/O in :mod:`phifilter.modelio` (the folder format: :mod:`phifilter.modelfolder`),
  the scoring-stage adapter in :mod:`phifilter.modelstages`, the training recipe in
  :func:`phifilter.train.fit_recipe`.

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
from .embed import Embedder
from .errors import InputError, ModelError
from .recipe import make_calibrator, make_score_map, parse_threshold_rule  # noqa: F401 (re-exported)
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

from .modelio import FORMAT_3_HEADS, LEXICAL_FILE, LEXICAL_NAME  # noqa: F401 (re-exported)


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

    ``EduClassifier(...).fit(texts, scores)`` learns the whole recipe (:func:`phifilter.train.fit_recipe`):
    out-of-fold scores of the embedding head (and the lexical scorer), the combiner, the cascade
    band and its novelty rule, the calibration, the threshold and the 0-5 score map, then every
    part on all documents. ``phifilter train`` is this plus reading labels and writing the folder.

    Parameters
    ----------
    embedder : hub name, local folder, ``mean-pool:FOLDER`` (any transformers model, see
        :mod:`phifilter.hf_embed`), an embedder object, or None for all-MiniLM-L6-v2.
    head : the embedding head, one of :data:`phifilter.heads.HEADS` (see that module's table).
    doc_mode, max_chunks, features, max_chars : the :class:`~phifilter.featurizer.Featurizer`'s
        settings (``max_chars``: characters of each document the embedder reads, None: all).
    calibrate : fit isotonic calibration of the head on out-of-fold scores.
    C : inverse regularisation of the logistic head.
    n_estimators, max_depth, min_samples_leaf, max_features, class_weight :
        passed to the random forest (class_weight also sets the logistic head's weights and,
        when 'balanced*', balanced sample weights for the forest regressor).
    positive_threshold : label scores (0-5) at or above this count as positive.
    threshold : decision threshold on ``edu_score`` for "keep" (used by summaries and filter):
        a number, or a rule that ``fit`` replaces by the value it chooses on out-of-fold scores:
        'auto' (max F1), 'precision:P' (the lowest reaching out-of-fold precision P),
        'share:S' (keeps S of documents), 'token-share:S' (keeps S of tokens).
    max_length, device, batch_size : embedder settings when ``embedder`` is not an Embedder.
    n_jobs, random_state : as in scikit-learn.
    lexical : None (embedding + head only) or 'fasttext': a lexical scorer beside the embedding
        scorer, combined by a stacked logistic regression (format 4).
    lexical_params : parameters of :class:`phifilter.lexical.LexicalScorer` (None: its defaults).
    expensive_share : with ``lexical``, the share of documents the embedding model may see (the
        cascade's band); None: every document is embedded.
    novelty_share : with a cascade, the novelty rule (:mod:`phifilter.cascade`): documents whose
        share of tokens unseen by the lexical scorer exceeds that of this share of the training
        documents (out of fold) are embedded whatever their lexical score; None: no rule.
    cv_folds : folds of the out-of-fold scores ``fit`` learns the combiner, cascade, calibration,
        threshold and score map from (fewer when a domain x label group is smaller).
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
        threshold: float | str = 0.5,
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
        novelty_share: float | None = None,
        cv_folds: int = 5,
        max_chars: int | None = None,
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
        self.novelty_share = novelty_share
        self.cv_folds = cv_folds
        self.max_chars = max_chars

    # -- parts --------------------------------------------------------------------------------

    def get_params(self, deep: bool = False) -> dict:
        return params_of(self)

    @property
    def featurizer(self) -> Featurizer:
        return Featurizer(doc_mode=self.doc_mode, max_chunks=self.max_chunks, features=self.features,
                          max_chars=self.max_chars)

    @property
    def chunking(self) -> str:
        return self.featurizer.chunking

    @property
    def has_parts(self) -> bool:
        """Whether this model has a lexical scorer and a combiner (format 4)."""
        return getattr(self, "lexical_", None) is not None

    def make_embedder(self):
        if self.embedder is not None and not isinstance(self.embedder, (str, os.PathLike)):
            return self.embedder  # an Embedder, or anything with the same interface
        from .hf_embed import make_embedder

        return make_embedder(self.embedder, device=self.device, max_length=self.max_length,
                             batch_size=self.batch_size)

    def check_options(self) -> None:
        if self.head not in HEADS:
            raise ModelError(f"--head {self.head}: expected one of {', '.join(HEADS)}")
        self.featurizer.check()
        parse_threshold_rule(self.threshold)
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
        if self.novelty_share is not None:
            if self.expensive_share is None:
                raise ModelError("--novelty-share needs a cascade (--expensive-share): the rule decides what it embeds")
            if not 0.0 < float(self.novelty_share) < 1.0:
                raise ModelError(f"--novelty-share {self.novelty_share}: expected a number in (0, 1)")

    # -- fitting ----------------------------------------------------------------------------

    def fit(self, texts: Sequence[str], scores: Sequence[float], embeddings=None, domains=None, embedder=None):
        """Learn the whole recipe from documents and their 0-5 scores; returns self.

        ``embeddings`` (a :class:`DocEmbeddings`, or one truncated embedding per document) skip
        the embedding pass; ``embedder`` is an already built embedder to use (its pins kept);
        ``domains`` (one label per document) stratify the folds and split the figures in ``metrics_``.
        """
        from .recipe import fit_recipe

        self.check_options()
        texts = as_text_list(texts)
        self.embedder_ = embedder if embedder is not None else self.make_embedder()
        E = self.embed_documents(texts) if embeddings is None else self.featurizer.as_doc_embeddings(embeddings)
        scores = np.asarray(scores, dtype=np.float64)
        if E.n_docs != len(texts) or len(scores) != len(texts):
            raise ModelError(f"{len(texts)} texts, {len(scores)} scores and {E.n_docs} embeddings: one each per document")
        fit_recipe(self, texts, scores, E, None if domains is None else np.asarray(domains, dtype=object))
        self.embedder_info_ = self.embedder_.describe()
        self.n_features_in_ = E.vectors.shape[1]
        self._embedder_checked = False
        return self

    def check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise ModelError("this EduClassifier is not fitted; call fit() or EduClassifier.load()")

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

    # -- prediction -------------------------------------------------------------------------

    def embed_documents(self, texts: Sequence[str], progress: bool = False, count: bool = True) -> DocEmbeddings:
        """Embed ``texts`` the way ``doc_mode`` needs (truncated, or one row per chunk);
        ``count=False`` skips the token statistics truncation does not need."""
        embedder = getattr(self, "embedder_", None) or self.make_embedder()
        return self.featurizer.embed(embedder, as_text_list(texts), progress=progress, count=count)

    def raw_scores(self, E, head=None) -> np.ndarray:
        """Uncalibrated float64 head score per document from a fitted head (default: this model's;
        a :class:`~phifilter.heads.Head` or a bare scikit-learn estimator)."""
        f = self.featurizer
        E = f.as_doc_embeddings(E)
        if head is None:
            head = self.embedding_head_
        elif not isinstance(head, Head):
            fresh = make_head(self.head, **self.get_params())
            head = type(fresh).from_estimator(head, **fresh.get_params())
        if E.n_docs == 0:
            return np.zeros(0)
        return f.reduce(E, head.score(f.transform(E)))

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
        cascade only the texts whose lexical score falls in the band, or (novelty rule) whose
        share of tokens the lexical scorer never saw is too high to trust its score.
        """
        blank = blank_mask(texts)
        if not self.has_parts:
            return Route(blank, None, np.arange(len(texts)))
        cheap = np.zeros(len(texts), np.float64)
        unseen = np.zeros(len(texts), np.float64)
        cascade = getattr(self, "cascade_", None)
        live = np.flatnonzero(~blank)
        if len(live):
            live_texts = [_utf8(texts[k]) for k in live]
            if cascade is not None and cascade.uses_novelty:
                cheap[live], unseen[live] = self.lexical_.high_and_unseen(live_texts)
            else:
                cheap[live] = self.lexical_.predict_proba_high(live_texts)
        wanted = ~blank
        if cascade is not None:
            wanted &= cascade.in_band(cheap, unseen)
        return Route(blank, cheap, np.flatnonzero(wanted))

    def score_routed(self, route: Route, E) -> np.ndarray:
        """float32 scores of a routed batch; ``E`` holds the embeddings of ``route.embed``'s texts, in order."""
        if route.cheap is None:
            return self.score_doc_embeddings(E, route.blank)
        if E is None and len(route.embed) == 0:  # nothing in the band: the embedder never ran
            E = self.featurizer.as_doc_embeddings(np.zeros((0, self.n_features_in_), np.float32))
        elif E is not None:
            E = self.featurizer.as_doc_embeddings(E)
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

    def edu_score(self, texts: Sequence[str], ids: Sequence[str] | None = None, route: Route | None = None) -> np.ndarray:
        """float32 edu_score per text (a list of texts: one bare string is refused); empty or
        blank texts score 0.

        With an embedding cache attached (:meth:`use_embedding_cache`) and ``ids`` given, texts
        whose id is in the cache are not embedded again. ``route``: :meth:`route` of these texts,
        when the caller has it already.
        """
        texts = as_text_list(texts)
        self.check_fitted()
        self.check_embedder()
        route = self.route(texts) if route is None else route
        sub = [texts[k] for k in route.embed]
        cache = getattr(self, "embedding_cache_", None)
        if cache is not None and ids is not None:
            E = cached_doc_embeddings(self, cache, sub, [ids[k] for k in route.embed])
        else:
            E = self.embed_documents(sub, count=False)
        return self.score_routed(route, E)

    def score_texts_embedded(self, texts: Sequence[str], E) -> np.ndarray:
        """Scores of ``texts`` whose embeddings ``E`` (all of them, in order) are already at hand."""
        route = self.route(as_text_list(texts))
        E = self.featurizer.as_doc_embeddings(E)
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
        E = self.featurizer.as_doc_embeddings(E)
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

    def scoring_stages(self, tensor_forest: bool | None = None) -> list:
        """:meth:`edu_score` cut into steps a scoring flow runs in threads of their own
        (:func:`phifilter.modelstages.classifier_stages`). ``tensor_forest``: walk a forest head
        as tensors on the embedder's device (None: on CUDA)."""
        from .modelstages import classifier_stages

        return classifier_stages(self, tensor_forest)

    def use_embedding_cache(self, cache) -> "EduClassifier":
        """Read embeddings from an :class:`~phifilter.embcache.EmbeddingCache` (or its folder) by id."""
        from .embcache import EmbeddingCache, identity

        self.check_fitted()
        self.check_embedder()
        if not isinstance(cache, EmbeddingCache):
            cache = EmbeddingCache.open(cache)
        cache.check(identity(self.embedder_, self.chunking, self.max_chunks), "this model")
        self.embedding_cache_ = cache
        return self

    # -- persistence (phifilter.modelio) ------------------------------------------------------

    def save(self, path: str | os.PathLike, metrics: dict | None = None, training_data: dict | None = None,
             card: str | None = None) -> Path:
        """Write the model folder atomically (a temporary folder renamed into place)."""
        from .modelio import save_classifier

        return save_classifier(self, path, metrics=metrics, training_data=training_data, card=card)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, embedder: str | os.PathLike | None = None,
             device: str = "auto", batch_size: int = EMBED_BATCH_SIZE, max_length: int | None = None,
             embedder_revision: str | None = None, embedder_sha256: dict[str, str] | None = None) -> "EduClassifier":
        """Load a model folder (None: the bundled default). Refuses foreign or tampered folders.

        The embedder is loaded at the revision the model recorded unless ``embedder_revision``
        says otherwise; ``embedder_sha256`` ({file: hex}) pins its files on top of the check
        against the hashes the model was trained with.
        """
        from .modelio import load_classifier

        return load_classifier(cls, path, embedder=embedder, device=device, batch_size=batch_size,
                               max_length=max_length, embedder_revision=embedder_revision,
                               embedder_sha256=embedder_sha256)


def cached_doc_embeddings(clf: EduClassifier, cache, texts: Sequence[str], ids: Sequence[str],
                          progress: bool = False, count: bool = False) -> DocEmbeddings:
    """Embeddings of ``texts`` from ``cache`` for the ids it holds; the rest embedded by ``clf``.

    The cache holds embeddings of whole texts: a text this model reads only the start of
    (``max_chars``) is embedded again, from that start."""
    from .embcache import merge

    f = clf.featurizer
    whole = [k for k in range(len(ids)) if f.reads_whole(texts[k])]
    found, missing = None, []
    if whole:
        found, missing = cache.lookup([ids[k] for k in whole], [texts[k] for k in whole])
    missing = sorted({whole[j] for j in missing} | (set(range(len(ids))) - set(whole)))
    if not missing:
        return found
    fresh = clf.embed_documents([texts[k] for k in missing], progress=progress, count=count)
    if found is None:
        return fresh
    gone = set(missing)
    present = [k for k in range(len(ids)) if k not in gone]
    return merge(len(ids), [(present, found), (missing, fresh)])


def as_text_list(texts) -> list:
    """``texts`` as a list; one bare string (or bytes) is refused, not scored character by character."""
    if isinstance(texts, (str, bytes)):
        raise InputError(f"expected a list of texts, got one {type(texts).__name__} of {len(texts)} characters; "
                         "pass [text] to score a single document")
    return list(texts)


def _utf8(text: str) -> str:
    """``text`` as fastText can take it: lone surrogates (possible in Python strings, not in
    UTF-8) become U+FFFD; any other text is returned as is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
