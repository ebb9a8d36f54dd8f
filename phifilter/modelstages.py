"""An EduClassifier cut into the stages a scoring flow runs in threads of their own.

:func:`classifier_stages` is what :meth:`EduClassifier.scoring_stages` returns: "tokenise"
(the cheap route: lexical score, cascade band, novelty rule; then the routed documents laid out
and tokenised), "embed" (the embedder), "head" (pool chunks, score, combine). One "model" stage
instead when the model cannot be cut (:func:`splits_into_stages`). Each stage also records on
the batch how many documents went to the embedder (``batch.embedded``), which the run summary
adds up.
"""

from __future__ import annotations

import numpy as np


def splits_into_stages(clf) -> bool:
    """Can scoring be cut into tokenise / embed / head stages? Not when embeddings come from a
    cache (it decides per document whether it is embedded at all) or the class says ``staged = False``."""
    emb = getattr(clf, "embedder_", None)
    return (getattr(clf, "embedding_cache_", None) is None and bool(clf.staged)
            and hasattr(emb, "prepare") and hasattr(emb, "run"))


def tensor_head(clf, wanted: bool | None):
    """A TensorForest on the embedder's device when wanted (None: on CUDA only), else None.

    Only for a plain scikit-learn forest classifier head with one row per document, no
    calibration and no combiner after it.
    """
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    device = getattr(clf.embedder_, "resolved_device", None) or "cpu"
    use = wanted if wanted is not None else device.startswith("cuda")
    forest = getattr(clf, "head_", None)
    per_document = clf.doc_mode in ("truncate", "chunk-mean", "chunk-weighted")
    if not (use and clf.staged and per_document and getattr(clf, "calibrator_", None) is None
            and not clf.has_parts and isinstance(forest, (RandomForestClassifier, ExtraTreesClassifier))
            and True in list(forest.classes_)):
        return None
    from .tensor_forest import TensorForest

    return TensorForest(forest, True, device=device)


def score_batch(clf, batch):
    """The whole model as one stage (embedding cache: texts whose id it holds are not embedded)."""
    ids = None
    if getattr(clf, "embedding_cache_", None) is not None:
        from .hashing import document_ids

        ids = document_ids(batch.records, batch.id_column, batch.texts)
    if not batch.texts:
        batch.scores = np.zeros(0, np.float32)
        return batch
    route = clf.route(batch.texts)
    batch.embedded = len(route.embed)
    batch.scores = clf.edu_score(batch.texts, ids=ids, route=route)
    return batch


def classifier_stages(clf, tensor_forest: bool | None = None) -> list:
    """``[(name, fn), ...]``, each ``fn(batch) -> batch`` on a batch with ``texts`` (and
    ``records``, ``id_column``), setting ``work`` for the next stage, ``tokens`` and, in the
    last one, ``scores``; see the module docstring."""
    if not splits_into_stages(clf):
        return [("model", lambda batch: score_batch(clf, batch))]
    from .chunking import assemble

    emb = clf.embedder_
    tensor = tensor_head(clf, tensor_forest)

    def tokenise(batch):
        route = clf.route(batch.texts)
        batch.embedded = len(route.embed)
        texts = batch.texts if len(route.embed) == len(batch.texts) else [batch.texts[k] for k in route.embed]
        if not texts:  # nothing for the embedder in this batch
            batch.work = (route, None, None)
            return batch
        layout = clf.featurizer.layout(emb, texts, count=False)
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
        E = None if X is None else assemble(emb, X, layout, clf.chunking, chunk_tokens=clf.featurizer.needs_chunk_tokens)
        if tensor is not None:
            f = clf.featurizer
            batch.scores = tensor.predict_positive(f.transform(f.as_doc_embeddings(E))).astype(np.float32)
            batch.scores[route.blank] = 0.0
        else:
            batch.scores = clf.score_routed(route, E)
        return batch

    return [("tokenise", tokenise), ("embed", embed), ("head", head)]
