"""The training recipe: what :meth:`EduClassifier.fit <phifilter.classifier.EduClassifier.fit>` learns.

From embedded, labelled documents: stratified out-of-fold scores of the embedding head and the
lexical scorer, the stacked combiner, the cascade (band and novelty rule), the calibration, the
decision threshold, the 0-5 score map and the out-of-fold figures; then every part on all
documents. The functions take the classifier as an argument (its parameters say what to fit)
and set its learned attributes; this module does not import :mod:`phifilter.classifier`.
"""

from __future__ import annotations

import numpy as np

from .errors import ModelError


def parse_threshold_rule(value) -> tuple[str, float | None]:
    """``threshold``: a number in [0, 1] -> ('value', x); 'auto' -> ('auto', None);
    'precision:P', 'share:S', 'token-share:S' -> (kind, number)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if 0.0 <= float(value) <= 1.0:
            return "value", float(value)
    elif value == "auto":
        return "auto", None
    elif isinstance(value, str) and value.count(":") == 1:
        kind, _, number = value.partition(":")
        try:
            x = float(number)
        except ValueError:
            x = float("nan")
        if kind in ("precision", "share", "token-share") and 0.0 < x <= 1.0:
            return kind, x
    raise ModelError(f"threshold {value!r}: expected a number in [0, 1], 'auto', or 'precision:P', 'share:S', "
                     "'token-share:S' with P, S in (0, 1]")


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


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    pred = p >= threshold
    out = {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
    }
    out["roc_auc"] = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
    return out


def cross_validated_scores(clf, X, y: np.ndarray, strata: np.ndarray,
                           folds: int, random_state: int, scores: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold raw head scores for every document, stratified by ``strata`` (domain x label).

    ``X`` is a :class:`~phifilter.chunking.DocEmbeddings` or one embedding per document;
    ``scores`` are the 0-5 labels (needed by the regressor head; else ``y`` stands in).
    """
    from sklearn.model_selection import StratifiedKFold

    E = clf.featurizer.as_doc_embeddings(X)
    scores = np.where(y, 5.0, 0.0) if scores is None else np.asarray(scores, np.float64)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    oof = np.zeros(len(y), dtype=np.float64)
    for train_idx, test_idx in skf.split(np.zeros(len(y)), strata):
        head = fit_head(clf, E.subset(train_idx), scores[train_idx])
        oof[test_idx] = clf.raw_scores(E.subset(test_idx), head)
    return oof


def best_f1_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The score cut-off that maximises F1 on out-of-fold predictions (rounded to 0.001)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(np.round(thresholds[int(np.argmax(f1[:-1]))], 3))


def precision_threshold(y: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The lowest cut-off whose precision reaches ``target`` (most recall at that precision);
    the cut-off of the highest precision when no cut-off reaches it."""
    from sklearn.metrics import precision_recall_curve

    precision, _, thresholds = precision_recall_curve(y, scores)
    ok = np.flatnonzero(precision[:-1] >= target)
    k = int(ok[0]) if len(ok) else int(np.argmax(precision[:-1]))
    return float(np.round(thresholds[k], 3))


def share_threshold(scores: np.ndarray, share: float, weights: np.ndarray | None = None) -> float:
    """The cut-off that keeps ``share`` of the documents (or of ``weights``, e.g. tokens), best first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    w = np.ones(len(order)) if weights is None else np.asarray(weights, np.float64)[order]
    kept = np.cumsum(w) / max(w.sum(), 1e-12)
    k = min(int(np.searchsorted(kept, share, side="left")), len(order) - 1)
    return float(np.round(np.asarray(scores)[order[k]], 4))


def choose_threshold(rule, y: np.ndarray, p: np.ndarray, doc_tokens: np.ndarray) -> tuple[float, str]:
    """The decision threshold ``rule`` (see :class:`EduClassifier`'s ``threshold``) asks for, and
    how it was chosen (for the model card)."""
    kind, x = parse_threshold_rule(rule)
    if kind == "precision":
        return precision_threshold(y, p, x), f"out-of-fold precision >= {x:g}"
    if kind == "share":
        return share_threshold(p, x), f"keeps {x:g} of documents"
    if kind == "token-share":
        return share_threshold(p, x, doc_tokens), f"keeps {x:g} of tokens"
    if kind == "auto":
        return best_f1_threshold(y, p), "max out-of-fold F1"
    return x, "user"


def evaluate_oof(y: np.ndarray, oof: np.ndarray, domains: np.ndarray | None, threshold: float,
                 folds: int) -> dict:
    metrics = {"cv_folds": folds, "threshold": threshold, "overall": binary_metrics(y, oof, threshold)}
    if domains is not None:
        metrics["per_domain"] = {
            str(d): binary_metrics(y[domains == d], oof[domains == d], threshold)
            for d in sorted(set(domains.tolist()))
        }
    return metrics


def fit_head(clf, E, scores: np.ndarray):
    """A fresh head of ``clf``'s kind fitted on document embeddings and 0-5 scores."""
    from .heads import make_head

    f = clf.featurizer
    E = f.as_doc_embeddings(E)
    scores = np.asarray(scores, dtype=np.float64)
    return make_head(clf.head, **clf.get_params()).fit(f.transform(E), f.row_labels(E, scores),
                                                       sample_weight=f.row_weights(E))


def make_lexical(clf):
    """A fresh, unfitted lexical scorer with ``clf``'s settings."""
    from .lexical import LexicalScorer

    return LexicalScorer(**{"positive_threshold": clf.positive_threshold, **dict(clf.lexical_params or {})})


def strata_of(y: np.ndarray, domains: np.ndarray | None) -> np.ndarray:
    """Fold strata: label, or domain x label."""
    return y.astype(str) if domains is None else np.char.add(domains.astype(str), y.astype(str))


def folds_for(strata: np.ndarray, cv_folds: int) -> int:
    """Folds possible: at most ``cv_folds``, at most the smallest stratum's size."""
    return min(int(cv_folds), int(min(np.unique(strata, return_counts=True)[1])))


def fit_recipe(clf, texts: list[str], scores: np.ndarray, E, domains: np.ndarray | None) -> object:
    """Everything :meth:`EduClassifier.fit` learns, on embedded documents: out-of-fold scores ->
    combiner, cascade (band, novelty rule), calibration, threshold, score map and figures
    (``metrics_``); then the head and the lexical scorer on all documents."""
    y = np.asarray(scores, np.float64) >= clf.positive_threshold
    if y.all() or not y.any():
        raise ModelError(f"all {len(y)} training labels fall on one side of --positive-threshold "
                         f"{clf.positive_threshold}; the classifier needs both classes")
    strata = strata_of(y, domains)
    folds = folds_for(strata, clf.cv_folds)
    if folds < 2 and (clf.lexical or clf.calibrate):
        what = "--lexical has no out-of-fold scores to fit the combiner on" if clf.lexical else "--calibrate has nothing to fit on"
        raise ModelError(f"too few labels for cross-validation, so {what}")
    metrics, calibrator, parts, score_map, oof_arrays = {}, None, None, None, {}
    kind, value = parse_threshold_rule(clf.threshold)
    if kind == "value":
        threshold, chosen_by = value, "user"
    else:  # a rule needs out-of-fold scores: without them, 0.5
        threshold, chosen_by = 0.5, "0.5 (too few labels for cross-validation)"
    if folds >= 2:
        oof = cross_validated_scores(clf, E, y, strata, folds, clf.random_state or 0, scores)
        if clf.lexical:
            parts = fit_parts(clf, texts, scores, y, strata, folds, oof, E.doc_tokens)
            oof = parts["oof"]
            threshold, chosen_by = parts["threshold"], parts["chosen_by"]
        if clf.calibrate:
            calibrator = make_calibrator(oof, y)
            oof = calibrator.predict(oof)
        if parts is None:
            threshold, chosen_by = choose_threshold(clf.threshold, y, oof, E.doc_tokens)
        metrics = evaluate_oof(y, oof, domains, threshold, folds)
        metrics["threshold_chosen_by"] = chosen_by
        if parts is not None:
            metrics["parts"] = parts["metrics"]
        metrics["documents"] = E.stats()  # how many were chunked or truncated
        score_map = make_score_map(oof, scores)
        oof_arrays = {"edu_score": oof, **(parts["arrays"] if parts is not None else {})}
    head = fit_head(clf, E, scores)
    clf.embedding_head_, clf.head_ = head, head.estimator_
    clf.calibrator_ = calibrator
    clf.lexical_ = make_lexical(clf).fit(texts, scores) if parts is not None else None
    clf.combiner_ = parts["combiner"] if parts is not None else None
    clf.cascade_ = parts["cascade"] if parts is not None else None
    clf.score_map_ = score_map
    clf.threshold = threshold
    clf.metrics_ = metrics
    clf.oof_ = oof_arrays  # out-of-fold arrays (benchmarks read them; not saved in the folder)
    return clf


def lexical_oof(clf, texts: list[str], scores: np.ndarray, strata: np.ndarray, folds: int,
                random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold lexical P(positive) and unseen-token share (against the vocabulary of the
    folds that did not hold the document) for every document, on the same folds as the head's."""
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    oof = np.zeros(len(texts), dtype=np.float64)
    unseen = np.zeros(len(texts), dtype=np.float64)
    for train_idx, test_idx in skf.split(np.zeros(len(texts)), strata):
        lex = make_lexical(clf).fit([texts[k] for k in train_idx], scores[train_idx])
        oof[test_idx], unseen[test_idx] = lex.high_and_unseen([texts[k] for k in test_idx])
    return oof, unseen


def stacked_oof(S: np.ndarray, y: np.ndarray, strata: np.ndarray, folds: int, random_state: int) -> np.ndarray:
    """Out-of-fold combiner scores: the combiner is fitted on the other folds' out-of-fold scores,
    so the combined figures are as honest as the single scorers'."""
    from sklearn.model_selection import StratifiedKFold

    from .combiner import StackedCombiner

    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state + 1)
    out = np.zeros(len(y), dtype=np.float64)
    for train_idx, test_idx in skf.split(np.zeros(len(y)), strata):
        out[test_idx] = StackedCombiner().fit(S[train_idx], y[train_idx]).predict(S[test_idx])
    return out


def oof_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None


def fit_parts(clf, texts: list[str], scores: np.ndarray, y: np.ndarray, strata: np.ndarray,
              folds: int, head_oof: np.ndarray, doc_tokens: np.ndarray) -> dict:
    """Fit the combiner (and the cascade) on out-of-fold scores of the lexical and embedding scorers.

    Returns the combiner, the cascade (or None), the threshold, the model's out-of-fold scores
    (the cascade's, when there is one) and per-part figures for the card.
    """
    from .cascade import Cascade
    from .combiner import StackedCombiner

    rs = clf.random_state or 0
    lex, unseen = lexical_oof(clf, texts, scores, strata, folds, rs)
    S = np.column_stack([lex, head_oof])
    full = stacked_oof(S, y, strata, folds, rs)
    threshold, chosen_by = choose_threshold(clf.threshold, y, full, doc_tokens)
    combiner = StackedCombiner().fit(S, y)
    figures = {"lexical": {"roc_auc": oof_auc(y, lex)}, "embedding": {"roc_auc": oof_auc(y, head_oof)},
               "combined": {"roc_auc": oof_auc(y, full)}}
    cascade, oof, band = None, full, np.ones(len(y), bool)
    if clf.expensive_share is not None:
        cascade = Cascade(expensive_share=float(clf.expensive_share), novelty_share=clf.novelty_share).fit(
            lex, full, y, threshold, unseen)
        band = cascade.in_band(lex, unseen)
        oof = cascade.combine(lex, full[band], band)
        figures["cascade"] = {
            "band": [float(b) for b in cascade.band_] if band.any() else None,
            "share_embedded": float(band.mean()),
            **({"share_novel": float((unseen > cascade.novelty_).mean()),
                "novelty_threshold": cascade.novelty_} if cascade.uses_novelty else {}),
            "agreement": float(((oof >= threshold) == (full >= threshold)).mean()),
            "roc_auc": oof_auc(y, oof),
        }
    return {"combiner": combiner, "cascade": cascade, "threshold": threshold, "chosen_by": chosen_by,
            "oof": oof, "metrics": figures,
            "arrays": {"lexical": lex, "unseen": unseen, "full": full, "embedded": band}}
