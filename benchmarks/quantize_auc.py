"""Do int8 quantisation and bfloat16 keep the classifier's quality? Out-of-sample AUC vs float32.

The bundled forest was trained on the whole seed set, so scoring the seed set with it would be
in-sample. Instead: embed the LLM-labelled seed set (../shared/data/seed) with the float32 and
the int8 and the bfloat16 embedder, then 5-fold cross-validate a forest with the bundled model's settings,
trained on float32 embeddings (as every shipped model is), and score each held-out fold with each variant's embeddings. The gap to the float32 AUC is what
--quantize int8 or --dtype bfloat16 costs. Also prints embedding speed and score differences.

    .venv/bin/python benchmarks/quantize_auc.py [--limit 1018] [--max-length 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

SEED = ROOT.parent / "shared" / "data" / "seed" / "edu_seed.parquet"


def make_forest(clf):
    """A fresh, unfitted estimator for ``clf``'s head (the default: the random forest); moved
    here from ``EduClassifier._make_forest``, which nothing in the package used."""
    clf.check_options()
    from phifilter.heads import make_head

    return make_head(clf.head, **clf.get_params()).make_estimator()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="use the first N seed rows (default: all)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--variants", default="fp32,int8,bf16", help="fp32 first; then any of int8, bf16")
    args = ap.parse_args()
    if not SEED.is_file():
        sys.exit(f"{SEED}: seed set not found (this benchmark reads the shared data folder)")
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from phifilter.classifier import EduClassifier
    from phifilter.embed import Embedder

    t = pq.read_table(SEED, columns=["text", "score"])
    if args.limit:
        t = t.slice(0, args.limit)
    texts = [x or "" for x in t.column("text").to_pylist()]
    y = np.asarray(t.column("score").to_pylist()) >= 3
    emb, speed = {}, {}
    variants = {"fp32": {}, "int8": {"quantize": "int8"}, "bf16": {"dtype": "bfloat16"}}
    for name in args.variants.split(","):
        e = Embedder(device="cpu", max_length=args.max_length, **variants[name])
        e.encode(["warm up"])
        start = time.perf_counter()
        emb[name] = e.encode(texts)
        secs = time.perf_counter() - start
        speed[name] = len(texts) / secs
        print(f"embed {name}: {len(texts)} docs in {secs:.1f} s = {speed[name]:.1f} docs/s", flush=True)
    ref = emb["fp32"]
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    proba = {name: np.zeros(len(y)) for name in emb}
    for train, test in folds.split(texts, y):
        clf = EduClassifier(n_jobs=-1, random_state=0)
        forest = make_forest(clf).fit(ref[train], y[train])  # trained on float32, as shipped
        pos = list(forest.classes_).index(True)
        for name in emb:
            proba[name][test] = forest.predict_proba(emb[name][test])[:, pos]
    a32 = roc_auc_score(y, proba["fp32"])
    print(f"out-of-sample AUC ({args.folds}-fold, n={len(y)}, positives={int(y.sum())}): fp32 {a32:.4f}")
    for name in emb:
        if name == "fp32":
            continue
        cos = (ref * emb[name]).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(emb[name], axis=1) + 1e-12)
        auc = roc_auc_score(y, proba[name])
        d = np.abs(proba[name] - proba["fp32"])
        print(f"{name}: {speed[name] / speed['fp32']:.2f}x fp32 speed; cosine to fp32 mean {cos.mean():.5f}, "
              f"min {cos.min():.5f}; AUC {auc:.4f} ({auc - a32:+.4f}); score difference max {d.max():.4f}, "
              f"mean {d.mean():.5f}; {'within' if abs(auc - a32) <= 0.01 else 'NOT within'} 0.01 AUC")

if __name__ == "__main__":
    main()
