"""Train an EduClassifier from a labelled Parquet file and write the model folder and card.

Labels are 0-5 educational scores (from `phifilter label` or any annotator); they are binarised
at ``positive_threshold``. Before the final fit, stratified k-fold cross-validation on the same
embeddings gives honest out-of-fold precision, recall, F1 and ROC AUC, overall and per domain
(when the file has a ``domain`` column). Those figures go into ``phifilter.json`` and the card.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .classifier import EduClassifier
from .corpus import check_text_column, open_parquet, texts_from_array
from .defaults import EMBED_BATCH_SIZE, MAX_CHUNKS, MAX_LENGTH
from .errors import InputError, OptionError

SCORE_COLUMNS = ("llm_score", "score")  # fresh LLM labels win over an older score column


@dataclass
class TrainConfig:
    """Everything `phifilter train` needs besides the input file and the output folder."""

    text_column: str = "text"
    score_column: str | None = None  # None: 'llm_score', else 'score'
    domain_column: str = "domain"
    positive_threshold: int = 3
    threshold: float | str = "auto"  # "auto": the cut-off that maximises out-of-fold F1
    n_estimators: int = 300
    min_samples_leaf: int = 3
    class_weight: str | None = "balanced_subsample"
    cv_folds: int = 5
    embedder: str | None = None
    embedder_revision: str | None = None  # hub revision (commit) to load the embedder at
    embedder_sha256: dict | None = None  # {file: sha256} the embedder's files must match
    max_length: int = MAX_LENGTH
    device: str = "auto"
    batch_size: int = EMBED_BATCH_SIZE
    random_state: int = 0
    head: str = "forest"  # forest | forest-regressor | logistic | ridge | svr
    doc_mode: str = "chunk-mean"  # see phifilter.chunking.DOC_MODES; chosen in benchmarks/classifier_quality.md
    max_chunks: int = MAX_CHUNKS
    features: str = "mean"  # chunk-mean/-weighted: parts of the head's input, e.g. "mean+first"
    calibrate: bool = False  # isotonic calibration fitted on the out-of-fold scores
    target_precision: float | None = None  # threshold: the lowest reaching this out-of-fold precision
    target_share: float | None = None  # threshold: keep this share of documents
    target_token_share: float | None = None  # threshold: keep this share of tokens
    embeddings: str | None = None  # an embedding cache folder from `phifilter embed`
    id_column: str = "id"
    lexical: str | None = None  # "fasttext": a lexical scorer beside the embedding scorer, stacked (format 4)
    lexical_params: dict | None = None  # LexicalScorer parameters (None: its defaults)
    expensive_share: float | None = None  # cascade: share of documents sent to the embedder (needs lexical)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.threshold = parse_threshold(self.threshold)
        targets = (self.target_precision, self.target_share, self.target_token_share)
        if sum(x is not None for x in targets) > 1 or (
                self.threshold != "auto" and any(x is not None for x in targets)):
            raise OptionError("give at most one of --threshold, --target-precision, --target-share, --target-token-share")


def parse_threshold(value: float | str) -> float | str:
    """``--threshold``: 'auto', or a number in [0, 1] (also given as text, as the CLI does)."""
    if value == "auto":
        return value
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = float("nan")
    if not 0.0 <= threshold <= 1.0:  # also refuses nan
        raise OptionError("expected 'auto' or a number in [0, 1]", option="--threshold")
    return threshold


@dataclass
class LabelledSet:
    texts: list[str]
    scores: np.ndarray
    domains: np.ndarray | None
    sha256: str
    dropped_unlabelled: int
    ids: list[str] | None = None


def read_labels(path: str | os.PathLike, cfg: TrainConfig) -> LabelledSet:
    """Read text, score and (optional) domain columns; rows with a null score are dropped."""
    import pyarrow.compute as pc

    pf = open_parquet(path)
    schema = pf.schema_arrow
    check_text_column(schema, cfg.text_column, path)
    score_col = cfg.score_column or next((c for c in SCORE_COLUMNS if c in schema.names), None)
    if score_col is None or score_col not in schema.names:
        raise InputError(
            f"{path}: no score column ({cfg.score_column or ' or '.join(SCORE_COLUMNS)}); "
            f"columns are: {', '.join(schema.names)} (choose one with --score-column)"
        )
    cols = [cfg.text_column, score_col] + ([cfg.domain_column] if cfg.domain_column in schema.names else [])
    id_column = getattr(cfg, "id_column", None)
    if id_column and id_column in schema.names and id_column not in cols:
        cols.append(id_column)
    try:
        table = pf.read(columns=cols)
    except Exception as e:
        raise InputError(f"{path}: corrupt Parquet data ({str(e).splitlines()[0]})") from None
    score_arr = table.column(score_col)
    if not (score_arr.type.id in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)):  # ints and floats
        raise InputError(f"{path}: score column '{score_col}' has type {score_arr.type}, expected numbers")
    keep = pc.is_valid(score_arr)
    dropped = len(table) - pc.sum(keep).as_py() if len(table) else 0
    table = table.filter(keep)
    if len(table) == 0:
        raise InputError(f"{path}: no labelled rows (every '{score_col}' is null)")
    texts = texts_from_array(table.column(cfg.text_column))
    scores = table.column(score_col).to_numpy(zero_copy_only=False).astype(np.float64)
    check_label_values(path, score_col, scores)
    domains = None
    if cfg.domain_column in table.column_names:
        domains = np.array([d or "" for d in table.column(cfg.domain_column).to_pylist()], dtype=object)
    h = hashlib.sha256()
    for t, s in zip(texts, scores):
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00%g\x00" % s)
    from .hashing import document_ids

    ids = document_ids(table, id_column, texts)
    return LabelledSet(texts, scores, domains, h.hexdigest(), int(dropped), ids)


def check_label_values(path, column: str, scores: np.ndarray) -> None:
    """Labels are whole numbers 0-5: anything else is a mistake to report, not to round."""
    for bad, what in ((~np.isfinite(scores), "is not a number (NaN or infinite)"),
                      (np.isfinite(scores) & ((scores < 0) | (scores > 5)), "is outside 0-5"),
                      (np.isfinite(scores) & (scores != np.round(scores)), "is not one of the whole numbers 0-5")):
        if bad.any():
            rows = np.flatnonzero(bad)
            raise InputError(f"{path}: '{column}' {what} in {len(rows)} row(s) (first: row {int(rows[0])}, "
                             f"value {scores[rows[0]]:g}); labels must be whole numbers 0-5 or null")


def check_both_classes(path, scores: np.ndarray, positive_threshold: float) -> None:
    """Both sides of --positive-threshold must be present; checked before any embedding."""
    y = scores >= positive_threshold
    if y.all() or not y.any():
        raise InputError(
            f"{path}: all {len(y)} training labels fall on one side of --positive-threshold "
            f"{positive_threshold}; the classifier needs both classes"
        )


def _binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
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


def cross_validated_scores(clf: EduClassifier, X, y: np.ndarray, strata: np.ndarray,
                           folds: int, random_state: int, scores: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold raw head scores for every document, stratified by ``strata`` (domain x label).

    ``X`` is a :class:`~phifilter.chunking.DocEmbeddings` or one embedding per document;
    ``scores`` are the 0-5 labels (needed by the regressor head; else ``y`` stands in).
    """
    from sklearn.model_selection import StratifiedKFold

    E = clf.as_doc_embeddings(X)
    scores = np.where(y, 5.0, 0.0) if scores is None else np.asarray(scores, np.float64)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    oof = np.zeros(len(y), dtype=np.float64)
    for train_idx, test_idx in skf.split(np.zeros(len(y)), strata):
        head = clf.fit_head(E.subset(train_idx), scores[train_idx])
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


def choose_threshold(cfg: TrainConfig, y: np.ndarray, p: np.ndarray, doc_tokens: np.ndarray) -> tuple[float, str]:
    """The decision threshold the config asks for, and how it was chosen (for the model card)."""
    if cfg.target_precision is not None:
        return precision_threshold(y, p, cfg.target_precision), f"out-of-fold precision >= {cfg.target_precision:g}"
    if cfg.target_share is not None:
        return share_threshold(p, cfg.target_share), f"keeps {cfg.target_share:g} of documents"
    if cfg.target_token_share is not None:
        return share_threshold(p, cfg.target_token_share, doc_tokens), f"keeps {cfg.target_token_share:g} of tokens"
    if cfg.threshold == "auto":
        return best_f1_threshold(y, p), "max out-of-fold F1"
    return float(cfg.threshold), "user"


def evaluate_oof(y: np.ndarray, oof: np.ndarray, domains: np.ndarray | None, threshold: float,
                 folds: int) -> dict:
    metrics = {"cv_folds": folds, "threshold": threshold, "overall": _binary_metrics(y, oof, threshold)}
    if domains is not None:
        metrics["per_domain"] = {
            str(d): _binary_metrics(y[domains == d], oof[domains == d], threshold)
            for d in sorted(set(domains.tolist()))
        }
    return metrics


def make_classifier(cfg: TrainConfig) -> EduClassifier:
    return EduClassifier(
        embedder=cfg.embedder,
        n_estimators=cfg.n_estimators,
        min_samples_leaf=cfg.min_samples_leaf,
        class_weight=cfg.class_weight,
        positive_threshold=cfg.positive_threshold,
        threshold=0.5 if cfg.threshold == "auto" else float(cfg.threshold),
        max_length=cfg.max_length,
        device=cfg.device,
        batch_size=cfg.batch_size,
        random_state=cfg.random_state,
        head=cfg.head,
        doc_mode=cfg.doc_mode,
        max_chunks=cfg.max_chunks,
        calibrate=cfg.calibrate,
        features=cfg.features,
        lexical=cfg.lexical,
        lexical_params=cfg.lexical_params,
        expensive_share=cfg.expensive_share,
    )


def labelled_embeddings(clf: EduClassifier, data: LabelledSet, embeddings: str | os.PathLike | None,
                        progress: bool = False, revision: str | None = None, sha256: dict | None = None):
    """Embeddings of a labelled set: from the cache where it has them, else from the embedder."""
    from .embcache import EmbeddingCache, identity, merge

    embedder = clf.make_embedder()
    embedder.revision = revision
    embedder.sha256 = dict(sha256) if sha256 else None
    clf.embedder_ = embedder
    if embeddings is None:
        return embedder, clf.embed_documents(data.texts, progress=progress)
    cache = EmbeddingCache.open(embeddings)
    cache.check(identity(embedder, clf.chunking, clf.max_chunks), f"--doc-mode {clf.doc_mode}")
    found, missing = cache.lookup(data.ids, data.texts)
    if not missing:
        return embedder, found
    fresh = clf.embed_documents([data.texts[k] for k in missing], progress=progress)
    if found is None:
        return embedder, fresh
    gone = set(missing)
    return embedder, merge(len(data.texts), [([k for k in range(len(data.texts)) if k not in gone], found),
                                             (missing, fresh)])


def lexical_oof(clf: EduClassifier, texts: list[str], scores: np.ndarray, strata: np.ndarray, folds: int,
                random_state: int) -> np.ndarray:
    """Out-of-fold lexical P(positive) for every document, on the same folds as the head's."""
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    oof = np.zeros(len(texts), dtype=np.float64)
    for train_idx, test_idx in skf.split(np.zeros(len(texts)), strata):
        lex = clf.make_lexical().fit([texts[k] for k in train_idx], scores[train_idx])
        oof[test_idx] = lex.predict_proba_high([texts[k] for k in test_idx])
    return oof


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


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None


def fit_parts(clf: EduClassifier, cfg: TrainConfig, data: LabelledSet, y: np.ndarray, strata: np.ndarray,
              folds: int, head_oof: np.ndarray, doc_tokens: np.ndarray) -> dict:
    """Fit the combiner (and the cascade) on out-of-fold scores of the lexical and embedding scorers.

    Returns the combiner, the cascade (or None), the threshold, the model's out-of-fold scores
    (the cascade's, when there is one) and per-part figures for the card.
    """
    from .cascade import Cascade
    from .combiner import StackedCombiner

    lex = lexical_oof(clf, data.texts, data.scores, strata, folds, cfg.random_state)
    S = np.column_stack([lex, head_oof])
    full = stacked_oof(S, y, strata, folds, cfg.random_state)
    threshold, chosen_by = choose_threshold(cfg, y, full, doc_tokens)
    combiner = StackedCombiner().fit(S, y)
    figures = {"lexical": {"roc_auc": _auc(y, lex)}, "embedding": {"roc_auc": _auc(y, head_oof)},
               "combined": {"roc_auc": _auc(y, full)}}
    cascade, oof = None, full
    if cfg.expensive_share is not None:
        cascade = Cascade(expensive_share=float(cfg.expensive_share)).fit(lex, full, y, threshold)
        band = cascade.in_band(lex)
        oof = cascade.combine(lex, full[band], band)
        figures["cascade"] = {
            "band": [float(b) for b in cascade.band_] if band.any() else None,
            "share_embedded": float(band.mean()),
            "agreement": float(((oof >= threshold) == (full >= threshold)).mean()),
            "roc_auc": _auc(y, oof),
        }
    return {"combiner": combiner, "cascade": cascade, "threshold": threshold, "chosen_by": chosen_by,
            "oof": oof, "metrics": figures}


def train_model(labels: str | os.PathLike, output: str | os.PathLike, cfg: TrainConfig | None = None,
                progress: bool = False) -> tuple[EduClassifier, dict]:
    """Embed (or read the embedding cache), cross-validate, fit on everything, save.
    Returns (classifier, metrics)."""
    from .classifier import make_calibrator

    from .outputs import claim_folder, is_model_file

    cfg = cfg or TrainConfig()
    claim_folder(output, is_model_file, "a model folder", inputs=[labels])
    data = read_labels(labels, cfg)
    check_both_classes(labels, data.scores, cfg.positive_threshold)
    clf = make_classifier(cfg)
    clf.check_options()
    embedder, E = labelled_embeddings(clf, data, cfg.embeddings, progress,
                                      revision=cfg.embedder_revision, sha256=cfg.embedder_sha256)
    y = clf.binarize(data.scores)
    strata = y.astype(str) if data.domains is None else np.char.add(data.domains.astype(str), y.astype(str))
    folds = min(cfg.cv_folds, int(min(np.unique(strata, return_counts=True)[1])))
    metrics: dict = {}
    calibrator = None
    parts = None
    if cfg.lexical and folds < 2:
        raise InputError(f"{labels}: too few labels for cross-validation, so --lexical has no out-of-fold "
                         "scores to fit the combiner on")
    if folds >= 2:
        oof = cross_validated_scores(clf, E, y, strata, folds, cfg.random_state, data.scores)
        if cfg.lexical:
            parts = fit_parts(clf, cfg, data, y, strata, folds, oof, E.doc_tokens)
            oof = parts["oof"]
        if cfg.calibrate:
            calibrator = make_calibrator(oof, y)
            oof = calibrator.predict(oof)
        if parts is not None:
            clf.threshold, chosen_by = parts["threshold"], parts["chosen_by"]
        else:
            clf.threshold, chosen_by = choose_threshold(cfg, y, oof, E.doc_tokens)
        metrics = evaluate_oof(y, oof, data.domains, clf.threshold, folds)
        metrics["threshold_chosen_by"] = chosen_by
        if parts is not None:
            metrics["parts"] = parts["metrics"]
    elif cfg.calibrate:
        raise InputError(f"{labels}: too few labels for cross-validation, so --calibrate has nothing to fit on")
    if metrics:
        metrics["documents"] = E.stats()  # how many were chunked or truncated
    clf.embedder = embedder
    clf.fit(data.texts, data.scores, embeddings=E)
    clf.calibrator_ = calibrator
    clf.embedder = cfg.embedder
    if parts is not None:
        lexical = clf.make_lexical().fit(data.texts, data.scores)
        clf.set_parts(lexical, parts["combiner"], parts["cascade"])
    if metrics:
        from .classifier import make_score_map

        clf.score_map_ = make_score_map(oof, data.scores)
    training_data = {
        "file": Path(labels).name,
        "sha256": data.sha256,
        "rows": len(data.texts),
        "positives": int(y.sum()),
        "dropped_unlabelled": data.dropped_unlabelled,
        "score_counts": {str(int(k)): int(v) for k, v in zip(*np.unique(data.scores, return_counts=True))},
    }
    card = model_card(clf, metrics, training_data, cfg)
    clf.save(output, metrics=metrics, training_data=training_data, card=card)
    return clf, metrics


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _mode_note(clf: EduClassifier) -> str:
    if clf.feature_parts != ["mean"]:
        names = {"mean": "the mean", "first": "the first chunk's", "max": "the elementwise maximum",
                 "length": "3 length figures (log tokens, log chunks, tail cut)"}
        return (f" (features `{clf.features}`: {', '.join(names[p] for p in clf.feature_parts)} "
                f"over up to {clf.max_chunks} chunks' embeddings, side by side)")
    return {
        "truncate": " (the first tokens only)",
        "chunk-mean": f" (the mean embedding of up to {clf.max_chunks} chunks)",
        "chunk-weighted": f" (the token-weighted mean embedding of up to {clf.max_chunks} chunks)",
        "chunk-score-mean": f" (every chunk scored, up to {clf.max_chunks}, scores averaged)",
        "chunk-score-max": f" (every chunk scored, up to {clf.max_chunks}, the best chunk counts)",
    }[clf.doc_mode]


def _head_note(clf: EduClassifier) -> str:
    if clf.head == "logistic":
        return f"(standardised logistic regression, C={clf.C}, class weight balanced)"
    if clf.head == "ridge":
        alpha = getattr(getattr(clf, "head_", None), "steps", [[None, None]])[-1][1]
        alpha = f", penalty {alpha.alpha_:g} chosen by leave-one-out" if hasattr(alpha, "alpha_") else ""
        return (f"(standardised ridge regression on the 0-5 score{alpha}; "
                "edu_score = prediction / 5, clipped to [0, 1], before calibration)")
    if clf.head == "svr":
        return ("(standardised RBF support-vector regression on the 0-5 score, scikit-learn's default C, epsilon "
                "and gamma; edu_score = prediction / 5, clipped to [0, 1], before calibration)")
    if clf.head == "forest-regressor":
        return (f"(random forest regressor of {clf.n_estimators} trees on the 0-5 score, balanced sample weights; "
                "edu_score = prediction / 5 before calibration)")
    return f"(a random forest of {clf.n_estimators} trees, class weight `{clf.class_weight}`)"


def _calibration_note(clf: EduClassifier) -> str:
    if getattr(clf, "calibrator_", None) is None:
        return ""
    return "; isotonic calibration fitted on the out-of-fold scores makes `edu_score` a calibrated probability"


def _docs_note(metrics: dict) -> str:
    d = (metrics or {}).get("documents")
    if not d:
        return ""
    return (f"Of the {d['docs']} training documents, {d['chunked']} were embedded in more than one chunk "
            f"and {d['truncated']} had text the embedder never read.")


def _limit_note(clf: EduClassifier) -> str:
    if clf.doc_mode == "truncate":
        return f"Text after the first {clf.max_length} tokens is not read."
    return f"Text after the first {clf.max_chunks} chunks of {clf.max_length} tokens is not read."


def _parts_note(clf: EduClassifier, metrics: dict) -> str:
    """The scorers, the combiner's weights and the cascade's band (format 4 models)."""
    if not clf.has_parts:
        return ""
    c = clf.combiner_
    figures = (metrics or {}).get("parts") or {}
    auc = lambda name: _fmt((figures.get(name) or {}).get("roc_auc"))  # noqa: E731
    lines = ["", "", "## Parts", "",
             f"- **lexical scorer**: fastText on the raw text (`{clf.lexical_.get_params()}`), "
             f"P(score >= {clf.positive_threshold}); out-of-fold ROC AUC {auc('lexical')}.",
             f"- **embedding scorer**: the embedder and head above; out-of-fold ROC AUC {auc('embedding')}.",
             f"- **combiner**: logistic regression on the scorers' logits, fitted on their out-of-fold scores: "
             + ", ".join(f"{w:+.3f} x {n}" for n, w in zip(c.inputs, c.coef_)) + f", intercept {c.intercept_:+.3f}; "
             f"out-of-fold ROC AUC {auc('combined')} (the combiner itself cross-validated on those scores)."]
    cascade = getattr(clf, "cascade_", None)
    if cascade is not None:
        fig = figures.get("cascade") or {}
        lo, hi = cascade.band_
        lines.append(
            f"- **cascade**: only documents whose lexical score lies in [{lo:.4f}, {hi:.4f}] are embedded "
            f"(chosen for --expensive-share {cascade.expensive_share:g}; {100 * fig.get('share_embedded', 0):.1f}% "
            f"of the training documents); the others get the lexical score mapped onto the combined scale. "
            f"Out of fold, the cascade's keep/drop decision agrees with the full ensemble's on "
            f"{100 * fig.get('agreement', 0):.1f}% of documents; its ROC AUC is {_fmt(fig.get('roc_auc'))} "
            "(the band was chosen on the same out-of-fold scores, so these two figures are slightly optimistic). "
            "The quality table below is the cascade's, i.e. what `phifilter score` gives; the threshold was "
            "chosen on the full ensemble's out-of-fold scores.")
    return "\n".join(lines)


def model_card(clf: EduClassifier, metrics: dict, training_data: dict, cfg: TrainConfig) -> str:
    rows = []
    if metrics:
        groups = [("all", metrics["overall"])] + sorted((metrics.get("per_domain") or {}).items())
        for name, m in groups:
            rows.append(
                f"| {name} | {m['n']} | {m['positives']} | {_fmt(m['precision'])} | {_fmt(m['recall'])} "
                f"| {_fmt(m['f1'])} | {_fmt(m['roc_auc'])} |"
            )
    table = "\n".join(
        ["| subset | docs | positives | precision | recall | F1 | ROC AUC |", "|---|---|---|---|---|---|---|", *rows]
    ) if rows else "(too few labels for cross-validation)"
    # the embedding cache only saves time (its embeddings are the ones the embedder gives), so the
    # card of a model trained with one reads like the card of the same model trained without
    cfg_lines = "\n".join(f"- `{k}`: {v!r}" for k, v in asdict(cfg).items() if k not in ("extra", "embeddings"))
    return f"""# phifilter model card

**What it predicts.** `edu_score`: the probability that a document would get an educational
score of {clf.positive_threshold} or more (0-5 scale) from the LLM annotator whose labels trained it.
Documents with `edu_score >= {clf.threshold}` count as "keep" in summaries and `phifilter filter`.

**How.** The text is embedded with `{clf.embedder_info_.get('name')}` (max {clf.max_length} tokens,
{clf.n_features_in_} dimensions) in document mode `{clf.doc_mode}`{_mode_note(clf)}; the head
{_head_note(clf)} predicts the label from the embedding{_calibration_note(clf)}.
Empty or blank documents score 0. {_docs_note(metrics)}{_parts_note(clf, metrics)}

**Training data.** `{training_data['file']}`: {training_data['rows']} labelled documents,
{training_data['positives']} positive; score counts {training_data['score_counts']};
SHA-256 of (text, score) pairs `{training_data['sha256']}`.

## Cross-validated quality ({metrics.get('cv_folds', 0)}-fold, stratified by domain and label, threshold {clf.threshold})

{table}

Out-of-fold figures: every document is scored by a model that never saw it. The threshold was
chosen by: {metrics.get('threshold_chosen_by', 'user')}; when that is "max out-of-fold F1", the F1,
precision and recall above are slightly optimistic (the cut-off saw the same predictions), while
ROC AUC does not depend on the threshold.

## Limits
- The model learns the annotator's judgement from a small seed set; it inherits the
  annotator's biases and is only as good as the embedder's view of the text.
- {_limit_note(clf)}
- Domains unlike the training data (other programming languages, other kinds of prose) get
  less reliable scores: spot-check with `phifilter report` before filtering.

## Training configuration
{cfg_lines}
"""
