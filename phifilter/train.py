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

from .classifier import EduClassifier, cached_doc_embeddings
from .recipe import (  # noqa: F401 (re-exported: the names benchmarks and tests import from here)
    best_f1_threshold,
    choose_threshold,
    cross_validated_scores,
    evaluate_oof,
    fit_head,
    fit_recipe,
    folds_for,
    make_lexical,
    precision_threshold,
    share_threshold,
    strata_of,
)
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
    max_chars: int | None = None  # characters of each document the embedder reads (None: all); default recipe: 2,500
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
    novelty_share: float | None = None  # cascade: also embed documents whose unseen-token share is in the top this share
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_recipe(cls, recipe: str = "default", **options) -> "TrainConfig":
        """The config of a named recipe with ``options`` over it: :func:`recipe_config`."""
        return recipe_config(recipe, **options)

    def __post_init__(self):
        self.threshold = parse_threshold(self.threshold)
        targets = (self.target_precision, self.target_share, self.target_token_share)
        if sum(x is not None for x in targets) > 1 or (
                self.threshold != "auto" and any(x is not None for x in targets)):
            raise OptionError("give at most one of --threshold, --target-precision, --target-share, --target-token-share")


RECIPES = {
    # the bundled default: fastText + MiniLM chunk-mean SVR, stacked, cascade with the novelty rule
    # (the embedder reads the first 2,500 characters, the excerpt length the seed labels were given on;
    # the fastText scorer reads the same)
    "default": {"head": "svr", "lexical": "fasttext", "expensive_share": 0.2, "novelty_share": 0.05,
                "max_chars": 2500},
    # phi-1's: every document embedded, a random forest on the embedding
    "paper": {"head": "forest", "lexical": None, "expensive_share": None, "novelty_share": None, "max_chars": None},
}


def recipe_config(recipe: str = "default", lexical: str | None = None, lexical_labels: str = "binary",
                  **options) -> "TrainConfig":
    """A TrainConfig from a named recipe (:data:`RECIPES`); options given (not None) override it.
    ``lexical`` 'none' drops the lexical scorer (and with it the cascade)."""
    if recipe not in RECIPES:
        raise OptionError(f"expected one of {', '.join(RECIPES)}", option="--recipe")
    chosen = dict(RECIPES[recipe])
    if lexical is not None:
        chosen["lexical"] = None if lexical == "none" else lexical
    if chosen["lexical"] is None and lexical is not None:  # --lexical none: no cascade either, unless asked
        chosen["expensive_share"] = chosen["novelty_share"] = None
    for key in ("head", "expensive_share", "novelty_share", "max_chars"):
        if options.get(key) is not None:
            chosen[key] = options[key]
        options.pop(key, None)
    if chosen["max_chars"] == 0:  # --max-chars 0: the whole document
        chosen["max_chars"] = None
    if chosen["expensive_share"] is None:
        chosen["novelty_share"] = None  # the novelty rule is part of the cascade
    params = {"labels": lexical_labels} if chosen["lexical"] else None
    return TrainConfig(lexical_params=params, **chosen, **options)


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


def threshold_rule(cfg: TrainConfig) -> float | str:
    """The config's threshold options as an :class:`EduClassifier` ``threshold`` (a number or a rule)."""
    if cfg.target_precision is not None:
        return f"precision:{cfg.target_precision:g}"
    if cfg.target_share is not None:
        return f"share:{cfg.target_share:g}"
    if cfg.target_token_share is not None:
        return f"token-share:{cfg.target_token_share:g}"
    return cfg.threshold


def make_classifier(cfg: TrainConfig) -> EduClassifier:
    return EduClassifier(
        embedder=cfg.embedder,
        n_estimators=cfg.n_estimators,
        min_samples_leaf=cfg.min_samples_leaf,
        class_weight=cfg.class_weight,
        positive_threshold=cfg.positive_threshold,
        threshold=threshold_rule(cfg),
        max_length=cfg.max_length,
        device=cfg.device,
        batch_size=cfg.batch_size,
        random_state=cfg.random_state,
        head=cfg.head,
        doc_mode=cfg.doc_mode,
        max_chunks=cfg.max_chunks,
        max_chars=cfg.max_chars,
        calibrate=cfg.calibrate,
        features=cfg.features,
        lexical=cfg.lexical,
        lexical_params=cfg.lexical_params,
        expensive_share=cfg.expensive_share,
        novelty_share=cfg.novelty_share,
        cv_folds=cfg.cv_folds,
    )


def labelled_embeddings(clf: EduClassifier, data: LabelledSet, embeddings: str | os.PathLike | None,
                        progress: bool = False, revision: str | None = None, sha256: dict | None = None):
    """Embeddings of a labelled set: from the cache where it has them, else from the embedder."""
    from .embcache import EmbeddingCache, identity

    embedder = clf.make_embedder()
    embedder.revision = revision
    embedder.sha256 = dict(sha256) if sha256 else None
    clf.embedder_ = embedder
    if embeddings is None:
        return embedder, clf.embed_documents(data.texts, progress=progress)
    cache = EmbeddingCache.open(embeddings)
    cache.check(identity(embedder, clf.chunking, clf.max_chunks), f"--doc-mode {clf.doc_mode}")
    return embedder, cached_doc_embeddings(clf, cache, data.texts, data.ids, progress=progress, count=True)


def train_model(labels: str | os.PathLike, output: str | os.PathLike, cfg: TrainConfig | None = None,
                progress: bool = False) -> tuple[EduClassifier, dict]:
    """Read the labels, embed them (or read the embedding cache), fit the recipe
    (:meth:`EduClassifier.fit`), write the model folder and its card. Returns (classifier, metrics)."""
    from .outputs import claim_folder, is_model_file

    cfg = cfg or recipe_config("default")
    claim_folder(output, is_model_file, "a model folder", inputs=[labels])
    data = read_labels(labels, cfg)
    check_both_classes(labels, data.scores, cfg.positive_threshold)
    clf = make_classifier(cfg)
    clf.check_options()
    y = data.scores >= cfg.positive_threshold
    if folds_for(strata_of(y, data.domains), cfg.cv_folds) < 2:
        if cfg.lexical:
            raise InputError(f"{labels}: too few labels for cross-validation, so --lexical has no out-of-fold "
                             "scores to fit the combiner on")
        if cfg.calibrate:
            raise InputError(f"{labels}: too few labels for cross-validation, so --calibrate has nothing to fit on")
    embedder, E = labelled_embeddings(clf, data, cfg.embeddings, progress,
                                      revision=cfg.embedder_revision, sha256=cfg.embedder_sha256)
    clf.fit(data.texts, data.scores, embeddings=E, domains=data.domains, embedder=embedder)
    training_data = {
        "file": Path(labels).name,
        "sha256": data.sha256,
        "rows": len(data.texts),
        "positives": int(y.sum()),
        "dropped_unlabelled": data.dropped_unlabelled,
        "score_counts": {str(int(k)): int(v) for k, v in zip(*np.unique(data.scores, return_counts=True))},
    }
    clf.training_data_ = training_data
    card = model_card(clf, clf.metrics_, training_data, cfg)
    clf.save(output, metrics=clf.metrics_, training_data=training_data, card=card)
    return clf, clf.metrics_


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _mode_note(clf: EduClassifier) -> str:
    if clf.featurizer.parts != ["mean"]:
        names = {"mean": "the mean", "first": "the first chunk's", "max": "the elementwise maximum",
                 "length": "3 length figures (log tokens, log chunks, tail cut)"}
        return (f" (features `{clf.features}`: {', '.join(names[p] for p in clf.featurizer.parts)} "
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
    read = (f"the first {clf.max_length} tokens" if clf.doc_mode == "truncate"
            else f"the first {clf.max_chunks} chunks of {clf.max_length} tokens")
    if clf.max_chars is None:
        return f"Text after {read} is not read."
    return (f"The embedder reads the first {clf.max_chars:,} characters of a document (cut at a line break), "
            f"and of those at most {read}; text after them is not read.")


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
        if cascade.uses_novelty:
            lines.append(
                f"- **novelty rule**: a document is embedded whatever its lexical score when more than "
                f"{100 * cascade.novelty_:.1f}% of its tokens are unseen in the lexical scorer's training vocabulary "
                f"(the level that {100 * cascade.novelty_share:g}% of training documents exceed out of fold: "
                f"{100 * fig.get('share_novel', 0):.1f}%): a kind of document the lexical scorer never saw is "
                "judged by the embedding scorer too, not by a confident lexical score resting on few known words. "
                "The embedded share above includes these documents.")
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
