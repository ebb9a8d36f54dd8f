"""What the cascade saves: the same documents scored with and without it, in one run.

    python benchmarks/cascade_speed.py [--model DIR] [--docs N] [--threads T]

Arms, in this order in one process (the embedder is loaded and warmed up before either is timed):
- ``cascade``: the model as shipped (lexical score for all, embedder only for the band);
- ``full``: the same model folder with the cascade removed (every document embedded, combined);
each through ``score_shards`` (the real pipeline: read, route, tokenise, embed, head, write).
Reported: docs/s, the share of documents embedded, the agreement of the keep/drop decisions
with the full ensemble, and the largest score difference on the documents in the band.
Documents: rounds 2-3 of the seed set (library code and docs, like a real corpus), or the first
``--docs`` of them; the model has seen them in training, which does not change the cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder with a cascade (default: the bundled model)")
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    import phifilter.chunking
    from phifilter import EduClassifier
    from phifilter.scoring import score_shards

    if a.threads:
        torch.set_num_threads(a.threads)
    t = pq.read_table(REPO / "data" / "seed" / "edu_seed.parquet", columns=["text", "round"])
    texts = [x for x, r in zip(t.column("text").to_pylist(), t.column("round").to_pylist()) if r != 1][: a.docs]
    tmp = Path(tempfile.mkdtemp(prefix="cascade-speed-"))
    (tmp / "in").mkdir()
    pq.write_table(pa.table({"text": texts}), tmp / "in" / "docs.parquet")

    cascade = EduClassifier.load(a.model, device="cpu")
    if getattr(cascade, "cascade_", None) is None:
        sys.exit(f"{a.model or 'the bundled model'} has no cascade")
    full = EduClassifier.load(a.model, device="cpu")
    full.cascade_ = None
    for clf in (cascade, full):  # load the embedder, tokeniser and fastText before timing
        clf.edu_score(texts[:8])

    embedded = []
    original = phifilter.chunking.layout_documents

    def counting(emb, docs, *args, **kw):
        embedded.append(len(docs))
        return original(emb, docs, *args, **kw)

    phifilter.chunking.layout_documents = counting
    results = {}
    for name, clf in (("cascade", cascade), ("full", full)):
        embedded.clear()
        start = time.perf_counter()
        score_shards(tmp / "in", tmp / name, model=clf)
        seconds = time.perf_counter() - start
        scores = pq.read_table(tmp / name / "docs.parquet").column("edu_score").to_numpy()
        results[name] = {"seconds": seconds, "docs_per_s": len(texts) / seconds,
                         "share_embedded": sum(embedded) / len(texts), "scores": scores}
    phifilter.chunking.layout_documents = original

    thr = cascade.threshold
    band = np.zeros(len(texts), bool)
    band[cascade.route(texts).embed] = True
    c, f = results["cascade"]["scores"], results["full"]["scores"]
    from sklearn.metrics import roc_auc_score

    summary = {
        "docs": len(texts),
        "threads": torch.get_num_threads(),
        "threshold": thr,
        "band": list(cascade.cascade_.band_),
        "cascade_docs_per_s": round(results["cascade"]["docs_per_s"], 1),
        "full_docs_per_s": round(results["full"]["docs_per_s"], 1),
        "speed-up": round(results["cascade"]["docs_per_s"] / results["full"]["docs_per_s"], 2),
        "share_embedded_cascade": round(results["cascade"]["share_embedded"], 3),
        "share_embedded_full": round(results["full"]["share_embedded"], 3),
        "decision_agreement": round(float(((c >= thr) == (f >= thr)).mean()), 4),
        "rank_auc_of_cascade_vs_full_keep": round(float(roc_auc_score(f >= thr, c)), 4) if 0 < (f >= thr).sum() < len(f) else None,
        "max_abs_diff_in_band": float(np.abs(c[band] - f[band]).max()) if band.any() else 0.0,
    }
    print(json.dumps(summary, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
