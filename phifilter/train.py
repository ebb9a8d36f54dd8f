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
from .errors import InputError

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
    max_length: int = 256
    device: str = "auto"
    batch_size: int = 64
    random_state: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class LabelledSet:
    texts: list[str]
    scores: np.ndarray
    domains: np.ndarray | None
    sha256: str
    dropped_unlabelled: int


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
    domains = None
    if cfg.domain_column in table.column_names:
        domains = np.array([d or "" for d in table.column(cfg.domain_column).to_pylist()], dtype=object)
    h = hashlib.sha256()
    for t, s in zip(texts, scores):
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00%g\x00" % s)
    return LabelledSet(texts, scores, domains, h.hexdigest(), int(dropped))


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


def cross_validated_scores(clf: EduClassifier, X: np.ndarray, y: np.ndarray, strata: np.ndarray,
                           folds: int, random_state: int) -> np.ndarray:
    """Out-of-fold P(positive) for every row, stratified by ``strata`` (domain x label)."""
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    oof = np.zeros(len(y), dtype=np.float64)
    for train_idx, test_idx in skf.split(X, strata):
        forest = clf._make_forest().fit(X[train_idx], y[train_idx])
        oof[test_idx] = forest.predict_proba(X[test_idx])[:, list(forest.classes_).index(True)]
    return oof


def best_f1_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The score cut-off that maximises F1 on out-of-fold predictions (rounded to 0.001)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(np.round(thresholds[int(np.argmax(f1[:-1]))], 3))


def evaluate_oof(y: np.ndarray, oof: np.ndarray, domains: np.ndarray | None, threshold: float,
                 folds: int) -> dict:
    metrics = {"cv_folds": folds, "threshold": threshold, "overall": _binary_metrics(y, oof, threshold)}
    if domains is not None:
        metrics["per_domain"] = {
            str(d): _binary_metrics(y[domains == d], oof[domains == d], threshold)
            for d in sorted(set(domains.tolist()))
        }
    return metrics


def train_model(labels: str | os.PathLike, output: str | os.PathLike, cfg: TrainConfig | None = None,
                progress: bool = False) -> tuple[EduClassifier, dict]:
    """Embed, cross-validate, fit on everything, save. Returns (classifier, metrics)."""
    cfg = cfg or TrainConfig()
    data = read_labels(labels, cfg)
    clf = EduClassifier(
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
    )
    embedder = clf._make_embedder()
    embedder.revision = cfg.embedder_revision
    embedder.sha256 = dict(cfg.embedder_sha256) if cfg.embedder_sha256 else None
    X = _encode_with_progress(embedder, data.texts, progress)
    y = clf.binarize(data.scores)
    strata = y.astype(str) if data.domains is None else np.char.add(data.domains.astype(str), y.astype(str))
    folds = min(cfg.cv_folds, int(min(np.unique(strata, return_counts=True)[1])))
    metrics: dict = {}
    if folds >= 2:
        oof = cross_validated_scores(clf, X, y, strata, folds, cfg.random_state)
        if cfg.threshold == "auto":
            clf.threshold = best_f1_threshold(y, oof)
        metrics = evaluate_oof(y, oof, data.domains, clf.threshold, folds)
        metrics["threshold_chosen_by"] = "max out-of-fold F1" if cfg.threshold == "auto" else "user"
    clf.embedder = embedder
    clf.fit(data.texts, data.scores, embeddings=X)
    clf.embedder = cfg.embedder
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


def _encode_with_progress(embedder, texts: list[str], progress: bool) -> np.ndarray:
    from tqdm import tqdm

    chunk = 256
    parts = []
    with tqdm(total=len(texts), unit="doc", desc="embedding", disable=not progress) as bar:
        for start in range(0, len(texts), chunk):
            parts.append(embedder.encode(texts[start : start + chunk]))
            bar.update(min(chunk, len(texts) - start))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


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
    cfg_lines = "\n".join(f"- `{k}`: {v!r}" for k, v in asdict(cfg).items() if k != "extra")
    return f"""# phifilter model card

**What it predicts.** `edu_score`: the probability that a document would get an educational
score of {clf.positive_threshold} or more (0-5 scale) from the LLM annotator whose labels trained it.
Documents with `edu_score >= {clf.threshold}` count as "keep" in summaries and `phifilter filter`.

**How.** The text is embedded with `{clf.embedder_info_.get('name')}` (max {clf.max_length} tokens,
{clf.n_features_in_} dimensions); a random forest of {clf.n_estimators} trees
(class weight `{clf.class_weight}`) predicts the label from the embedding.
Empty or blank documents score 0.

**Training data.** `{training_data['file']}`: {training_data['rows']} labelled documents,
{training_data['positives']} positive; score counts {training_data['score_counts']};
SHA-256 of (text, score) pairs `{training_data['sha256']}`.

## Cross-validated quality ({metrics.get('cv_folds', 0)}-fold, stratified by domain and label, threshold {clf.threshold})

{table}

Out-of-fold figures: every document is scored by a forest that never saw it. The threshold was
chosen by: {metrics.get('threshold_chosen_by', 'user')}; when that is "max out-of-fold F1", the F1,
precision and recall above are slightly optimistic (the cut-off saw the same predictions), while
ROC AUC does not depend on the threshold.

## Limits
- The forest learns the annotator's judgement from a small seed set; it inherits the
  annotator's biases and is only as good as the embedder's view of the text.
- Text after the first {clf.max_length} tokens is not read.
- Domains unlike the training data (other programming languages, other kinds of prose) get
  less reliable scores: spot-check with `phifilter report` before filtering.

## Training configuration
{cfg_lines}
"""
