"""Cross-validated quality of every document mode x head x calibration on the seed set.

    .venv/bin/python benchmarks/classifier_quality.py            # writes benchmarks/classifier_quality.md
    .venv/bin/python benchmarks/classifier_quality.py --heads forest --variants truncate:256

Embeddings come from phifilter's own embedding cache (``benchmarks/.cache/emb-*``, written
by the same code as ``phifilter embed`` on the first run), so a rerun costs only the heads.

Every figure is out-of-fold. "F1 nested" is the honest one: for each outer fold the threshold
(max F1) and the isotonic calibration are chosen by an inner cross-validation on the training
part only, then applied to the unseen fold. "F1 opt" picks the threshold on the same
out-of-fold scores it is measured on (what `phifilter train` reports): optimistic.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from phifilter.chunking import chunking_of  # noqa: E402
from phifilter.embcache import EmbeddingCache, embed_shards  # noqa: E402
from phifilter.hf_embed import make_embedder  # noqa: E402
from phifilter.train import (  # noqa: E402
    TrainConfig,
    best_f1_threshold,
    cross_validated_scores,
    make_classifier,
    nested_cv_scores,
    read_labels,
)

# (document mode, max_length, features) compared by default; --variants MODE:LEN[:FEATURES] runs
# others (e.g. truncate:512, chunk-mean:256:mean+first).
VARIANTS = [
    ("truncate", 256, "mean"),
    ("chunk-mean", 256, "mean"),
    ("chunk-mean", 256, "mean+first+max"),
    ("chunk-weighted", 256, "mean"),
    ("chunk-score-mean", 256, "mean"),
    ("chunk-score-max", 256, "mean"),
]
HEADS = ["forest", "forest-regressor", "logistic", "ridge", "svr"]


def parse_variant(text: str) -> tuple[str, int, str]:
    parts = text.split(":")
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "mean"


def embeddings_for(labels: Path, mode: str, max_length: int, cache_root: Path, ids):
    chunking = chunking_of(mode)
    folder = cache_root / f"emb-{chunking}-{max_length}"
    embedder = make_embedder(None, device="cpu", max_length=max_length)
    start = time.perf_counter()
    summary = embed_shards([labels], folder, embedder, chunking=chunking, max_chunks=8)
    if summary.shards_written:
        print(f"  embedded {folder.name} in {time.perf_counter() - start:.0f} s: {summary}", flush=True)
    cache = EmbeddingCache.open(folder)
    emb, missing = cache.lookup(ids)
    assert not missing, f"{folder}: {len(missing)} documents missing; delete the folder and rerun"
    return emb


def metrics(y, p, threshold):
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    pred = p >= threshold
    return {
        "auc": roc_auc_score(y, p),
        "pr_auc": average_precision_score(y, p),
        "f1": f1_score(y, pred, zero_division=0),
        "brier": float(np.mean((np.clip(p, 0, 1) - y) ** 2)),
    }


def run(args) -> list[dict]:
    cfg = TrainConfig()
    data = read_labels(args.labels, cfg)
    y_all = data.scores >= cfg.positive_threshold
    strata = np.char.add(data.domains.astype(str), y_all.astype(str))
    rows = []
    variants = VARIANTS if not args.variants else [parse_variant(v) for v in args.variants]
    for mode, max_length, features in variants:
        E = embeddings_for(Path(args.labels), mode, max_length, Path(args.cache), data.ids)
        stats = E.stats()
        for head in HEADS:
            if args.heads and head not in args.heads:
                continue
            inner = 0 if args.no_nested else args.inner_folds
            results = Path(args.cache) / "results"
            feat = "" if features == "mean" else f"-{features}"
            name = lambda i: results / (  # noqa: E731
                f"{mode}-{max_length}{feat}-{head}-f{args.folds}-i{i}-t{args.n_estimators}-C{make_classifier(TrainConfig()).C}.npz")
            # nested results hold the plain out-of-fold scores too; with --cached-only plain ones do
            candidates = [name(inner), name(args.inner_folds)] + ([name(0)] if args.cached_only else [])
            done = next((c for c in candidates if c.is_file()), candidates[0])
            if not done.is_file() and args.cached_only:
                print(f"{mode:<17} {max_length:>4} {features:<15} {head:<17} not run (--cached-only)", flush=True)
                continue
            if done.is_file():  # nested CV is the slow part: keep its out-of-fold scores
                with np.load(done) as z:
                    res, seconds = {k: z[k] for k in z.files if k != "seconds"}, float(z["seconds"])
            else:
                clf = make_classifier(TrainConfig(head=head, doc_mode=mode, max_length=max_length,
                                                  n_estimators=args.n_estimators, features=features))
                start = time.perf_counter()
                if inner:
                    res = nested_cv_scores(clf, E, data.scores, strata, args.folds, inner, 0, best_f1_threshold)
                else:  # plain out-of-fold scores: AUCs are honest, the F1 columns stay empty
                    raw = cross_validated_scores(clf, E, y_all, strata, args.folds, 0, data.scores)
                    nan = np.full(len(raw), np.nan)
                    res = {"raw": raw, "calibrated": nan, "threshold": nan, "threshold_calibrated": nan}
                seconds = time.perf_counter() - start
                done.parent.mkdir(parents=True, exist_ok=True)
                np.savez(done.with_suffix(".tmp.npz"), seconds=seconds, **res)
                os.replace(done.with_suffix(".tmp.npz"), done)
            for domain in ("all", "code", "web"):
                m = np.ones(len(y_all), bool) if domain == "all" else data.domains == domain
                y = y_all[m]
                raw, cal = res["raw"][m], res["calibrated"][m]
                nested = metrics(y, raw, res["threshold"][m])
                nested_cal = metrics(y, cal, res["threshold_calibrated"][m]) if not np.isnan(cal).any() else \
                    {"f1": np.nan, "auc": np.nan, "brier": np.nan}
                if np.isnan(res["threshold"]).any():
                    nested["f1"] = np.nan
                opt = metrics(y, raw, best_f1_threshold(y, raw))
                rows.append({
                    "mode": mode, "max_length": max_length, "features": features, "head": head, "domain": domain,
                    "auc": nested["auc"], "pr_auc": nested["pr_auc"], "f1_nested": nested["f1"],
                    "f1_nested_cal": nested_cal["f1"], "auc_cal": nested_cal["auc"], "f1_opt": opt["f1"],
                    "brier": nested["brier"], "brier_cal": nested_cal["brier"],
                    "chunked": stats["chunked"], "truncated": stats["truncated"], "seconds": seconds,
                })
            r = rows[-3]
            print(f"{mode:<17} {max_length:>4} {features:<15} {head:<17} all: AUC {r['auc']:.3f} F1 nested {r['f1_nested']:.3f} "
                  f"(cal {r['f1_nested_cal']:.3f}) opt {r['f1_opt']:.3f}  [{seconds:.0f} s]", flush=True)
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sklearn
    import torch

    return (f"{cpu}, {os.cpu_count()} cores (shared), Python {platform.python_version()}, "
            f"torch {torch.__version__}, scikit-learn {sklearn.__version__}")


def write_markdown(rows: list[dict], path: Path, command: str, folds: int = 5) -> None:
    head = ("| doc mode | max len | features | head | domain | ROC AUC | PR AUC | F1 nested | F1 nested, calibrated | "
            "F1 opt | Brier | Brier cal. |")
    lines = [head, "|" + "---|" * 12]
    def f(v):
        return "–" if v is None or np.isnan(v) else f"{v:.3f}"

    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['max_length']} | {r['features']} | {r['head']} | {r['domain']} | {f(r['auc'])} | {f(r['pr_auc'])} | "
            f"{f(r['f1_nested'])} | {f(r['f1_nested_cal'])} | {f(r['f1_opt'])} | {f(r['brier'])} | {f(r['brier_cal'])} |"
        )
    chunk_rows = {(r["mode"], r["max_length"]): (r["chunked"], r["truncated"]) for r in rows}
    docs = "\n".join(f"- `{m}` (max {n} tokens): {c} documents embedded in more than one chunk, {t} with text not read"
                     for (m, n), (c, t) in chunk_rows.items())
    best = max((r for r in rows if r["domain"] == "all"), key=lambda r: (r["auc"], r["f1_opt"]))
    text = f"""# Classifier quality on the seed set

Command: `{command}`

Machine: {machine()}

Labels: `data/seed/edu_seed.parquet` (1018 documents: 617 code, 401 web; positive = LLM score >= 3).
Embedder: all-MiniLM-L6-v2. Every figure is out-of-fold ({folds}-fold, stratified by domain x label);
one model serves both domains, the code and web rows are its scores on each domain's documents.

- **features** (chunk-mean only): what the head sees per document. `mean`: the mean of the chunk
  embeddings; `mean+first+max`: that mean, the first chunk's embedding and the elementwise maximum
  over chunks side by side (1152 numbers).
- **heads**: `ridge` (penalty chosen by leave-one-out inside each training part), `svr` (RBF
  kernel, scikit-learn defaults) and `forest-regressor` regress the 0-5 score; `forest` and
  `logistic` classify "score >= 3".
- **ROC AUC, PR AUC**: of the raw (uncalibrated) out-of-fold scores.
- **F1 nested**: threshold (max F1) chosen by a 3-fold inner cross-validation on each outer training
  part, applied to the unseen fold: an honest estimate for documents the model never saw.
- **F1 nested, calibrated**: the same with an isotonic calibration also fitted on the inner folds.
- **F1 opt**: threshold chosen on the very scores it is measured on (optimistic; what `train` prints).
- **Brier**: mean squared error of the score as a probability (lower is better), raw vs calibrated.

Highest ROC AUC on all documents: `{best['mode']}` / max {best['max_length']} / `{best['features']}` / `{best['head']}`:
ROC AUC {best['auc']:.3f}, F1 opt {best['f1_opt']:.3f}, F1 nested {f(best['f1_nested'])}.

{chr(10).join(lines)}

Documents cut or chunked per embedding pass:
{docs}
"""
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default=str(REPO / "data/seed/edu_seed.parquet"))
    ap.add_argument("--cache", default=str(REPO / "benchmarks/.cache"))
    ap.add_argument("--out", default=str(REPO / "benchmarks/classifier_quality.md"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--inner-folds", type=int, default=3)
    ap.add_argument("--n-estimators", type=int, default=300)
    ap.add_argument("--no-nested", action="store_true", help="Plain 5-fold scores only (4x faster; no nested F1).")
    ap.add_argument("--cached-only", action="store_true", help="Only tabulate configurations already computed.")
    ap.add_argument("--variants", nargs="*", default=None,
                    help="MODE:MAX_LENGTH[:FEATURES], e.g. truncate:256 chunk-mean:256:mean+first+max")
    ap.add_argument("--heads", nargs="*", default=None)
    args = ap.parse_args()
    rows = run(args)
    command = "python benchmarks/classifier_quality.py " + " ".join(sys.argv[1:])
    write_markdown(rows, Path(args.out), command.strip(), args.folds)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
