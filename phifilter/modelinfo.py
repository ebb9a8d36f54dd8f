"""What `phifilter info` and `phifilter train` print about a model: its parts and its metrics.

Plain text from ``phifilter.json`` (read with :func:`~phifilter.classifier.read_model_meta`);
nothing is loaded or scored.
"""

from __future__ import annotations


def describe_model(path=None) -> str:
    """`phifilter info`: a model folder's embedder, thresholds, parts and metrics (None: the bundled model)."""
    from .classifier import default_model_path, read_model_meta

    path = path or default_model_path()
    meta = read_model_meta(path)
    emb = meta.get("embedder", {})
    features = (meta.get("params") or {}).get("features") or "mean"
    td = meta.get("training_data", {})
    lines = [
        f"model: {path}",
        f"head: {meta.get('head')}; positive label: score >= {meta.get('positive_threshold')}; "
        f"threshold: {meta.get('threshold')}",
        f"documents: {meta.get('doc_mode') or 'truncate'}"
        + (f" (features {features})" if features != "mean" else "")
        + f"; calibration: {meta.get('calibration') or 'none'}",
        f"embedder: {emb.get('name')} ({emb.get('dim')} dims, max {emb.get('max_length')} tokens)",
        f"trained on: {td.get('file')} ({td.get('rows')} rows, {td.get('positives')} positive)",
        *format_parts(meta),
        format_metrics(meta.get("metrics") or {}),
    ]
    return "\n".join(lines)


def format_parts(meta: dict) -> list[str]:
    """`phifilter info` lines for a model made of parts (format 4): scorers, combiner weights, band."""
    scorers = meta.get("scorers")
    if not scorers:
        return ["parts: embedding + head (one scorer)"]
    parts = (meta.get("metrics") or {}).get("parts") or {}
    auc = lambda name: (parts.get(name) or {}).get("roc_auc")  # noqa: E731
    lines = ["parts:"]
    for s in scorers:
        what = s.get("kind") + (f" ({s.get('head')})" if s.get("head") else "")
        a = auc(s.get("name"))
        lines.append(f"  scorer {s.get('name')}: {what}" + (f", out-of-fold AUC {a:.3f}" if a is not None else ""))
    c = meta.get("combiner") or {}
    weights = ", ".join(f"{w:+.3f} x {n}" for n, w in zip(c.get("inputs", []), c.get("coef", [])))
    a = auc("combined")
    lines.append(f"  combiner: {c.get('kind')} on logits: {weights}, intercept {c.get('intercept', 0):+.3f}"
                 + (f"; out-of-fold AUC {a:.3f}" if a is not None else ""))
    cascade = meta.get("cascade")
    if cascade:
        lo, hi = cascade.get("band") or [None, None]
        fig = parts.get("cascade") or {}
        band = "empty" if lo is None else f"[{lo:.4f}, {hi:.4f}]"
        lines.append(f"  cascade: {cascade.get('cheap')} score band {band} is embedded "
                     f"(--expensive-share {cascade.get('expensive_share')}; out of fold: "
                     f"{100 * fig.get('share_embedded', 0):.1f}% embedded, {100 * fig.get('agreement', 0):.1f}% "
                     f"agreement with the full ensemble, AUC {fig.get('roc_auc') or 0:.3f})")
        novelty = cascade.get("novelty")
        if novelty:
            lines.append(f"  novelty rule: documents with more than {100 * novelty['threshold']:.1f}% of tokens unseen "
                         f"by the lexical scorer are embedded too (--novelty-share {novelty['share']:g}; "
                         f"{100 * fig.get('share_novel', 0):.1f}% of training documents out of fold)")
    else:
        lines.append("  cascade: none (every document is embedded)")
    return lines


def chunk_summary(docs: dict) -> str:
    """How the training documents fitted the embedder's window, in words."""
    n, cut = docs.get("docs"), docs["truncated"]
    of = f" of {n:,}" if isinstance(n, int) else ""
    return (f"training documents: {docs['chunked']:,}{of} were embedded in several chunks; "
            f"{cut:,} {'was' if cut == 1 else 'were'} longer than the chunks the embedder reads "
            f"(their tail was not embedded)")


def format_metrics(metrics: dict) -> str:
    """The cross-validated figures as a table: overall, then per domain."""
    if not metrics:
        return "no cross-validation (too few labels)"
    lines = [f"{metrics['cv_folds']}-fold cross-validated, threshold {metrics['threshold']} "
             f"({metrics.get('threshold_chosen_by', 'user')}):",
             f"  {'subset':<8} {'docs':>6} {'pos':>5} {'prec':>6} {'recall':>6} {'F1':>6} {'AUC':>6}"]
    groups = [("all", metrics["overall"])] + sorted((metrics.get("per_domain") or {}).items())
    for name, m in groups:
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        lines.append(f"  {name:<8} {m['n']:>6} {m['positives']:>5} {m['precision']:>6.3f} "
                     f"{m['recall']:>6.3f} {m['f1']:>6.3f} {auc:>6}")
    docs = metrics.get("documents")
    if docs:
        lines.append(chunk_summary(docs))
    return "\n".join(lines)
