"""Does int8 dynamic quantisation keep the classifier's quality? Out-of-sample AUC, fp32 vs int8.

The bundled forest was trained on the whole seed set, so scoring the seed set with it would be
in-sample. Instead: embed the LLM-labelled seed set (../shared/data/seed) with the float32 and
the int8 embedder, then 5-fold cross-validate a forest with the bundled model's settings,
trained on float32 embeddings (as every shipped model is), and score each held-out fold twice:
with its float32 embeddings and with its int8 embeddings. The gap between the two AUCs is what
--quantize int8 costs. Also prints embedding speed of both and the max score difference.

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="use the first N seed rows (default: all)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--folds", type=int, default=5)
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
    emb = {}
    for mode in (None, "int8"):
        e = Embedder(device="cpu", max_length=args.max_length, quantize=mode)
        e.encode(["warm up"])
        start = time.perf_counter()
        emb[mode] = e.encode(texts)
        secs = time.perf_counter() - start
        print(f"embed {mode or 'fp32'}: {len(texts)} docs in {secs:.1f} s = {len(texts) / secs:.1f} docs/s", flush=True)
    cos = (emb[None] * emb["int8"]).sum(1) / (
        np.linalg.norm(emb[None], axis=1) * np.linalg.norm(emb["int8"], axis=1) + 1e-12)
    print(f"cosine(fp32, int8) per doc: mean {cos.mean():.4f}, min {cos.min():.4f}")
    p32, p8 = np.zeros(len(y)), np.zeros(len(y))
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    for train, test in folds.split(texts, y):
        clf = EduClassifier(n_jobs=-1, random_state=0)
        forest = clf._make_forest().fit(emb[None][train], y[train])
        pos = list(forest.classes_).index(True)
        p32[test] = forest.predict_proba(emb[None][test])[:, pos]
        p8[test] = forest.predict_proba(emb["int8"][test])[:, pos]
    a32, a8 = roc_auc_score(y, p32), roc_auc_score(y, p8)
    print(f"out-of-sample AUC ({args.folds}-fold, n={len(y)}, positives={int(y.sum())}): "
          f"fp32 {a32:.4f}, int8 {a8:.4f}, difference {a8 - a32:+.4f}")
    print(f"score difference int8 vs fp32: max {np.abs(p8 - p32).max():.4f}, mean {np.abs(p8 - p32).mean():.4f}")
    print("verdict:", "within 0.01 AUC" if abs(a8 - a32) <= 0.01 else "NOT within 0.01 AUC")


if __name__ == "__main__":
    main()
