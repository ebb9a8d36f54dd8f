"""`phifilter evaluate MODEL LABELS`: how well a model agrees with labels it is shown.

Precision, recall and F1 at the model's own threshold, ROC AUC, PR AUC, Spearman correlation
with the 0-5 score, the confusion matrix, and 95% bootstrap confidence intervals (documents
resampled with replacement), overall and per domain. A precision-recall plot and a
calibration (reliability) plot are written as PNG files next to ``metrics.json``.

Figures are honest only for labels the model never saw: when the labels are the model's own
training data (same SHA-256), the report says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import OutputError

CI_METRICS = ("precision", "recall", "f1", "roc_auc", "pr_auc", "spearman")


def _point_metrics(y: np.ndarray, p: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    from scipy.stats import spearmanr
    from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

    pred = p >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    both = 0 < y.sum() < len(y)
    rho = spearmanr(p, scores).statistic if len(np.unique(scores)) > 1 and len(np.unique(p)) > 1 else None
    return {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "spearman": None if rho is None or np.isnan(rho) else float(rho),
        "confusion_matrix": confusion_matrix(y, pred, labels=[False, True]).tolist(),  # rows: true 0/1
        "kept": int(pred.sum()),
    }


def bootstrap_ci(y, p, scores, threshold, n_boot: int, seed: int, level: float = 0.95) -> dict:
    """Percentile intervals of each metric over ``n_boot`` resamples of the documents."""
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in CI_METRICS}
    n = len(y)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        m = _point_metrics(y[idx], p[idx], scores[idx], threshold)
        for k in CI_METRICS:
            if m[k] is not None:
                draws[k].append(m[k])
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if v else None for k, v in draws.items()}


@dataclass
class EvalReport:
    model: str
    labels: str
    threshold: float
    groups: dict  # name -> metrics (with "ci")
    files: list[str] = field(default_factory=list)
    in_sample: bool = False
    documents: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "labels": self.labels, "threshold": self.threshold, "in_sample": self.in_sample,
                "documents": self.documents, "groups": self.groups}

    def __str__(self) -> str:
        def f(v):
            return "  n/a" if v is None else f"{v:.3f}"

        def ci(m, k):
            c = (m.get("ci") or {}).get(k)
            return "" if not c else f" [{c[0]:.3f}, {c[1]:.3f}]"

        lines = [f"model {self.model} on {self.labels}, threshold {self.threshold:g}"]
        if self.in_sample:
            lines.append("NOTE: these labels trained this model; the figures are in-sample, not an estimate "
                         "for unseen documents")
        for name, m in self.groups.items():
            (tn, fp), (fn, tp) = m["confusion_matrix"]
            lines += [
                f"{name}: {m['n']} documents, {m['positives']} positive, {m['kept']} above threshold",
                f"  precision {f(m['precision'])}{ci(m, 'precision')}  recall {f(m['recall'])}{ci(m, 'recall')}  "
                f"F1 {f(m['f1'])}{ci(m, 'f1')}",
                f"  ROC AUC {f(m['roc_auc'])}{ci(m, 'roc_auc')}  PR AUC {f(m['pr_auc'])}{ci(m, 'pr_auc')}  "
                f"Spearman {f(m['spearman'])}{ci(m, 'spearman')}",
                f"  confusion matrix (rows: label, columns: predicted)   low  high",
                f"    low  {tn:>6} {fp:>6}",
                f"    high {fn:>6} {tp:>6}",
            ]
        if self.files:
            lines.append("wrote: " + ", ".join(self.files))
        return "\n".join(lines)


def _write_atomic(path: Path, write) -> None:
    from .atomic import write_atomic

    write_atomic(path, write)


EVAL_FILES = ("metrics.json", "pr_curve.png", "calibration.png")


def plot_pr(groups_data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, (y, p, threshold) in groups_data.items():
        if 0 < y.sum() < len(y):
            precision, recall, _ = precision_recall_curve(y, p)
            ax.plot(recall, precision, label=name)
            pred = p >= threshold
            if pred.any():
                ax.plot((pred & y).sum() / y.sum(), (pred & y).sum() / pred.sum(), "o", color=ax.lines[-1].get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="precision-recall (dot: model threshold)")
    ax.legend()
    fig.tight_layout()
    _write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def plot_calibration(groups_data: dict, path: Path, bins: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    edges = np.linspace(0, 1, bins + 1)
    for name, (y, p, _) in groups_data.items():
        which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
        xs, ys = [], []
        for b in range(bins):
            m = which == b
            if m.any():
                xs.append(p[m].mean())
                ys.append(y[m].mean())
        ax.plot(xs, ys, "o-", label=name)
    ax.set(xlabel="mean edu_score in bin", ylabel="share labelled positive", xlim=(0, 1), ylim=(0, 1),
           title="calibration")
    ax.legend()
    fig.tight_layout()
    _write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def default_output_dir(labels) -> str:
    """Where `phifilter evaluate` writes without -o: ``eval-LABELS_STEM`` in the working folder."""
    return f"eval-{Path(labels).stem}"


@dataclass
class EvalConfig:
    """Options of `phifilter evaluate`."""

    text_column: str = "text"
    score_column: str | None = None  # None: llm_score, else score
    embeddings: str | None = None  # an embedding cache from `phifilter embed`
    id_column: str = "id"  # what the embedding cache is keyed by
    n_bootstrap: int = 1000  # resamples for the 95% confidence intervals (0: none)
    seed: int = 0  # of the bootstrap
    device: str = "auto"


def evaluate_model(model, labels, output_dir=None, config: EvalConfig | None = None, progress: bool = False,
                   **options) -> EvalReport:
    """Score ``labels`` with ``model`` (folder or None for the bundled one) and measure agreement;
    with ``output_dir``, write the metrics and plots there. ``options`` (n_bootstrap=..., seed=...)
    override fields of ``config``."""
    import dataclasses

    from .classifier import EduClassifier, cached_doc_embeddings
    from .train import TrainConfig, read_labels

    cfg = dataclasses.replace(config or EvalConfig(), **options)
    text_column, score_column, embeddings, id_column = cfg.text_column, cfg.score_column, cfg.embeddings, cfg.id_column
    n_bootstrap, seed, device = cfg.n_bootstrap, cfg.seed, cfg.device

    if output_dir is not None:  # before the model loads: a foreign or read-only folder fails now
        from .outputs import claim_folder, named

        claim_folder(output_dir, named(*EVAL_FILES), "evaluation results", inputs=[labels])
    clf = model if isinstance(model, EduClassifier) else EduClassifier.load(model, device=device)
    data = read_labels(labels, TrainConfig(text_column=text_column, score_column=score_column, id_column=id_column))
    clf.check_embedder()
    if embeddings:
        clf.use_embedding_cache(embeddings)
        E = cached_doc_embeddings(clf, clf.embedding_cache_, data.texts, data.ids)
    else:
        E = clf.embed_documents(data.texts, progress=progress)
    p = clf.score_texts_embedded(data.texts, E).astype(np.float64)
    y = np.asarray(data.scores, np.float64) >= clf.positive_threshold
    masks = {"all": np.ones(len(y), bool)}
    if data.domains is not None:
        for d in sorted(set(data.domains.tolist())):
            masks[str(d) or "(no domain)"] = data.domains == d
    groups, plot_data = {}, {}
    for name, m in masks.items():
        g = _point_metrics(y[m], p[m], data.scores[m], clf.threshold)
        g["ci"] = bootstrap_ci(y[m], p[m], data.scores[m], clf.threshold, n_bootstrap, seed) if n_bootstrap else {}
        groups[name] = g
        plot_data[name] = (y[m], p[m], clf.threshold)
    trained_on = (getattr(clf, "training_data_", None) or {}).get("sha256")
    report = EvalReport(str(getattr(clf, "path_", model)), str(labels), float(clf.threshold), groups,
                        in_sample=trained_on == data.sha256, documents=E.stats())
    if output_dir is not None:
        _write_outputs(report, plot_data, output_dir)
    return report


def _write_outputs(report: EvalReport, plot_data: dict, output_dir) -> None:
    """metrics.json and the plots into ``output_dir``; a URL gets them written locally, then
    each published whole, metrics.json last (``store_of(dest).staged_folder``)."""
    from .location import store_of
    from .location import as_location

    dest = as_location(output_dir)
    with store_of(dest).staged_folder(dest, last=("metrics.json",)) as out:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{out}: cannot create the output folder ({e.strerror or e})") from None
        report.files = [str(dest / "metrics.json")]
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            report.files.append("no plots: pip install matplotlib (or phifilter[plots])")
        else:
            plot_pr(plot_data, out / "pr_curve.png")
            plot_calibration(plot_data, out / "calibration.png")
            report.files += [str(dest / "pr_curve.png"), str(dest / "calibration.png")]
        _write_atomic(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(report.to_dict(), indent=2) + "\n"))
