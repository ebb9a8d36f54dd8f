"""Nested-CV quality, round-1 -> rounds-2-3 transfer, speed and size of every scorer candidate.

    python benchmarks/classifier_quality.py --part ft-grades     # fastText nested CV (slow part)
    python benchmarks/classifier_quality.py --part ft-binary
    python benchmarks/classifier_quality.py --part heads         # MiniLM chunk-mean + each head
    python benchmarks/classifier_quality.py --part speed         # docs/s and sizes, one run
    python benchmarks/classifier_quality.py --part report        # stacks, cascade, the table
    python benchmarks/classifier_quality.py --part recipe --arms oof15,oof14,transfer,r14,r14-no5,r15
    python benchmarks/classifier_quality.py --part recipe-levers  # what could lift F1 on rounds 1-4
    python benchmarks/classifier_quality.py --part recipe-report  # -> classifier_quality_recipe.md

Each part caches its results under ``benchmarks/.cache/cq/``; ``report`` combines them and writes
``benchmarks/classifier_quality.md``. MiniLM chunk embeddings come from phifilter's embedding
cache (``benchmarks/.cache/emb-chunk-256``, the same files as ``phifilter embed --chunking chunk``).

Protocol (labels: ``data/seed/edu_seed.parquet``, 2,371 rows, positive = score >= 3):
- outer 5-fold CV stratified by domain x label; in each outer training part a 3-fold inner CV
  (the same inner folds for every model) gives inner out-of-fold scores that pick the fastText
  hyperparameters (max inner ROC AUC), the F1 threshold, the stackers and the cascade band;
  nothing is chosen on the outer test fold.
- stacks: a logistic regression on the logits of the members' inner out-of-fold scores.
- transfer: trained on round 1 only (1,018 rows; hyperparameters: the ones the outer folds
  chose most often), scored on rounds 2 + 3 (1,353 rows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from phifilter.errors import InputError  # noqa: E402
from phifilter.cascade import cascade_scores, choose_band, in_band  # noqa: E402
from phifilter.lexical import LexicalScorer  # noqa: E402
from phifilter.train import TrainConfig, best_f1_threshold, fit_head, read_labels  # noqa: E402

CACHE = REPO / "benchmarks" / ".cache"
OUT = CACHE / "cq"
FOLDS, INNER, SEED = 5, 3, 0
# fastText grid searched by the inner CV (bucket fixed: it sets the file size, not the quality here).
# Small on purpose: on 2 shared cores one fit took 15-40 s, and nested CV fits 5 x (3 x grid + 1).
FT_GRID = [
    dict(tokenizer="words", wordNgrams=2, dim=16, epoch=10, lr=0.5),
    dict(tokenizer="code", wordNgrams=2, dim=16, epoch=10, lr=0.5),
    dict(tokenizer="code", wordNgrams=1, dim=16, epoch=10, lr=0.25),  # 0.5 diverges (NaN) with unigrams
]
FT_FIXED = dict(bucket=100_000, minCount=1, random_state=0, thread=1)
HEADS = ["forest", "svr", "ridge", "logistic"]
SHARES = [0.1, 0.2, 0.3, 0.5]


def load_data():
    import pyarrow.parquet as pq

    labels = REPO / "data/seed/edu_seed.parquet"
    data = read_labels(labels, TrainConfig())
    rounds = np.asarray(pq.read_table(labels, columns=["round"]).column("round").to_pylist())
    y = data.scores >= 3
    strata = np.char.add(data.domains.astype(str), y.astype(str))
    return data, rounds, y, strata


def splits(strata):
    """Outer folds, and for each its inner folds (indices into the whole set)."""
    from sklearn.model_selection import StratifiedKFold

    out = []
    for tr, te in StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(strata, strata):
        inner = [(tr[a], tr[b]) for a, b in
                 StratifiedKFold(INNER, shuffle=True, random_state=SEED).split(strata[tr], strata[tr])]
        out.append((tr, te, inner))
    return out


def auc(y, p):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def logit(p):
    p = np.clip(np.asarray(p, np.float64), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


# ------------------------------------------------------------------------------------------
# parts


def part_fasttext(mode: str) -> None:
    data, rounds, y, strata = load_data()
    texts = data.texts
    T = lambda idx: [texts[i] for i in idx]  # noqa: E731

    def fit_score(params, tr, te):
        m = LexicalScorer(labels=mode, **params, **FT_FIXED).fit(T(tr), data.scores[tr])
        return m.edu_score(T(te))

    oof, inner_oof, chosen = np.zeros(len(y)), [], []
    for k, (tr, te, inner) in enumerate(splits(strata)):
        start = time.perf_counter()
        best = None
        for g, params in enumerate(FT_GRID):
            io = np.full(len(y), np.nan)
            try:
                for itr, ite in inner:
                    io[ite] = fit_score(params, itr, ite)
            except InputError as exc:  # fastText diverged in every fallback: this config is out
                print(f"  {mode} fold {k} grid {g}: {exc}", flush=True)
                continue
            a = auc(y[tr], io[tr])
            print(f"  {mode} fold {k} grid {g} inner AUC {a:.4f}", flush=True)
            if best is None or a > best[0]:
                best = (a, g, io)
        oof[te] = fit_score(FT_GRID[best[1]], tr, te)
        inner_oof.append(best[2])
        chosen.append(best[1])
        print(f"{mode} fold {k}: grid {best[1]} test AUC {auc(y[te], oof[te]):.4f} [{time.perf_counter() - start:.0f} s]",
              flush=True)
    g = Counter(chosen).most_common(1)[0][0]
    r1 = np.where(rounds == 1)[0]
    r23 = np.where(rounds != 1)[0]
    transfer = fit_score(FT_GRID[g], r1, r23)
    transfer_inner = np.full(len(y), np.nan)
    for itr, ite in transfer_folds(strata, r1):
        transfer_inner[ite] = fit_score(FT_GRID[g], itr, ite)
    save(f"ft-{mode}", oof=oof, inner=np.array(inner_oof), chosen=np.array(chosen), transfer=transfer,
         transfer_inner=transfer_inner)
    print(f"{mode}: nested AUC {auc(y, oof):.4f}, transfer AUC {auc(y[r23], transfer):.4f}, chosen {chosen}")


def transfer_folds(strata, r1):
    from sklearn.model_selection import StratifiedKFold

    return [(r1[a], r1[b]) for a, b in
            StratifiedKFold(INNER, shuffle=True, random_state=SEED).split(strata[r1], strata[r1])]


def embeddings(ids, texts):
    """Cached chunk embeddings of these documents (a cache entry is keyed by id and text hash)."""
    from phifilter.embcache import EmbeddingCache

    E, missing = EmbeddingCache.open(CACHE / "emb-chunk-256").lookup(ids, texts)
    assert not missing, f"{len(missing)} documents missing from the embedding cache"
    return E


def head_model(head):
    from phifilter.classifier import EduClassifier

    return EduClassifier(head=head, doc_mode="chunk-mean", n_estimators=300, n_jobs=2, random_state=0)


def part_heads() -> None:
    data, rounds, y, strata = load_data()
    E = embeddings(data.ids, data.texts)
    r1 = np.where(rounds == 1)[0]
    r23 = np.where(rounds != 1)[0]
    for head in HEADS:
        clf = head_model(head)
        start = time.perf_counter()

        def fit_score(tr, te):
            return clf.raw_scores(E.subset(te), fit_head(clf, E.subset(tr), data.scores[tr]))

        oof, inner_oof = np.zeros(len(y)), []
        for tr, te, inner in splits(strata):
            io = np.full(len(y), np.nan)
            for itr, ite in inner:
                io[ite] = fit_score(itr, ite)
            inner_oof.append(io)
            oof[te] = fit_score(tr, te)
        transfer = fit_score(r1, r23)
        transfer_inner = np.full(len(y), np.nan)
        for itr, ite in transfer_folds(strata, r1):
            transfer_inner[ite] = fit_score(itr, ite)
        save(f"head-{head}", oof=oof, inner=np.array(inner_oof), transfer=transfer, transfer_inner=transfer_inner)
        print(f"{head}: nested AUC {auc(y, oof):.4f} transfer {auc(y[r23], transfer):.4f} "
              f"[{time.perf_counter() - start:.0f} s]", flush=True)


def part_speed(n_docs: int) -> None:
    """docs/s of each component on the same documents, in this one process, and sizes on disk."""
    import tempfile

    import torch

    data, rounds, y, strata = load_data()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(y), n_docs, replace=False)
    docs = [data.texts[i] for i in idx]
    rest = np.setdiff1d(np.arange(len(y)), idx)
    out = {"n_docs": n_docs, "torch_threads": torch.get_num_threads(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("grades", "binary"):
            g = Counter(load(f"ft-{mode}")["chosen"].tolist()).most_common(1)[0][0]
            m = LexicalScorer(labels=mode, **FT_GRID[g], **FT_FIXED).fit([data.texts[i] for i in rest],
                                                                          data.scores[rest])
            meta = m.save(tmp, mode)
            m = LexicalScorer.load(tmp, mode)
            m.edu_score(docs[:5])
            start = time.perf_counter()
            m.edu_score(docs)
            out[f"ft-{mode}"] = {"seconds": time.perf_counter() - start, "bytes": meta["size_bytes"],
                                 "params": {**FT_GRID[g], **FT_FIXED}}
        from phifilter.chunking import embed_documents
        from phifilter.hf_embed import make_embedder

        embedder = make_embedder(None, device="cpu", max_length=256)
        embed_documents(embedder, docs[:5], "chunk", 8, count=False)
        start = time.perf_counter()
        E = embed_documents(embedder, docs, "chunk", 8, count=False)
        out["embed-chunk-mean"] = {"seconds": time.perf_counter() - start, "chunks": int(len(E.vectors))}
        Etr = embeddings([data.ids[i] for i in rest], [data.texts[i] for i in rest])
        import skops.io as sio

        for head in HEADS:
            clf = head_model(head)
            h = fit_head(clf, Etr, data.scores[rest])
            clf.raw_scores(E, h)
            start = time.perf_counter()
            clf.raw_scores(E, h)
            out[f"head-{head}"] = {"seconds": time.perf_counter() - start, "bytes": len(sio.dumps(h))}
    out["load_after"] = os.getloadavg()
    (OUT / "speed.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


# ------------------------------------------------------------------------------------------
# report


def save(name, **arrays):
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(OUT / f"{name}.tmp.npz", **arrays)
    os.replace(OUT / f"{name}.tmp.npz", OUT / f"{name}.npz")


def load(name):
    with np.load(OUT / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def stacked(members, y, folds, transfer_y, r1):
    """Out-of-fold stack of ``members`` (dicts from :func:`load`): oof, per-doc thresholds, transfer."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    oof, thr, inner_stack = np.zeros(len(y)), np.zeros(len(y)), []
    for k, (tr, te, _) in enumerate(folds):
        Xi = np.column_stack([logit(m["inner"][k][tr]) for m in members])
        Xt = np.column_stack([logit(m["oof"][te]) for m in members])
        lr = LogisticRegression(C=1.0).fit(Xi, y[tr])
        oof[te] = lr.predict_proba(Xt)[:, 1]
        # the stacker's own threshold from its out-of-fold predictions on the inner scores
        io = cross_val_predict(LogisticRegression(C=1.0), Xi, y[tr], cv=INNER, method="predict_proba")[:, 1]
        thr[te] = best_f1_threshold(y[tr], io)
        full_inner = np.full(len(y), np.nan)
        full_inner[tr] = io
        inner_stack.append(full_inner)
    Xr1 = np.column_stack([logit(m["transfer_inner"][r1]) for m in members])
    Xr23 = np.column_stack([logit(m["transfer"]) for m in members])
    transfer = LogisticRegression(C=1.0).fit(Xr1, y[r1]).predict_proba(Xr23)[:, 1]
    return {"oof": oof, "threshold": thr, "inner": np.array(inner_stack), "transfer": transfer}


def single(m, y, folds):
    thr = np.zeros(len(y))
    for k, (tr, te, _) in enumerate(folds):
        thr[te] = best_f1_threshold(y[tr], m["inner"][k][tr])
    return {**m, "threshold": thr}


def figures(r, y, domains, rounds):
    from sklearn.metrics import f1_score

    row = {}
    for d in ("all", "code", "web"):
        mk = np.ones(len(y), bool) if d == "all" else domains == d
        row[f"auc_{d}"] = auc(y[mk], r["oof"][mk])
        row[f"f1_{d}"] = float(f1_score(y[mk], r["oof"][mk] >= r["threshold"][mk]))
    row["transfer"] = auc(y[rounds != 1], r["transfer"])
    return row


def cascade_table(cheap, full, y, folds, speed_cheap, speed_full_extra):
    """Per budget: the band chosen on inner scores of each outer training part, applied to its test fold."""
    from sklearn.linear_model import LogisticRegression

    rows = []
    full_dec = full["oof"] >= full["threshold"]
    for share in SHARES:
        score, mask = np.zeros(len(y)), np.zeros(len(y), bool)
        for k, (tr, te, _) in enumerate(folds):
            ci, fi = cheap["inner"][k][tr], full["inner"][k][tr]
            # the cheap score on the ensemble's probability scale, for documents outside the band
            one = LogisticRegression(C=1.0).fit(logit(ci)[:, None], y[tr])
            ci_p = one.predict_proba(logit(ci)[:, None])[:, 1]
            ft = best_f1_threshold(y[tr], fi)
            # one scale, one threshold: outside the band the cheap probability meets the stack's cut-off
            band = choose_band(ci_p, fi, share, ft, ft)
            te_p = one.predict_proba(logit(cheap["oof"][te])[:, None])[:, 1]
            m = in_band(te_p, band)
            mask[te] = m
            score[te] = cascade_scores(te_p, full["oof"][te], m)
        # documents outside the band are kept by the cheap threshold mapped onto the stack's scale:
        # same scale, so the stack's threshold applies to both
        dec = score >= full["threshold"]
        from sklearn.metrics import f1_score

        rows.append({"share": share, "embedded": float(mask.mean()), "agreement": float((dec == full_dec).mean()),
                     "auc": auc(y, score), "f1": float(f1_score(y, dec)),
                     "docs_s": 1.0 / (speed_cheap + mask.mean() * speed_full_extra)})
    return rows


def recommendation(pick, sp, rows, cascade_rows, best_auc, best_f1) -> str:
    """The default to build: the pick's exact recipe, and the cascade budgets that still beat every single model."""
    if not pick:
        return "No stack beat every single model; keep the best single model."
    parts = pick.split("+")
    ft = [p for p in parts if p.startswith("ft-")]
    heads = [p[5:] for p in parts if p.startswith("head-")]
    ok = [c for c in cascade_rows if c["auc"] > best_auc and c["f1"] > best_f1]
    lines = [
        "The stack of " + " and ".join(
            f"`LexicalScorer(labels=\"{p[3:]}\", " + ", ".join(f"{k}={v!r}" for k, v in sp[p]["params"].items()) + ")`"
            for p in ft)
        + " with " + ", ".join(f"MiniLM chunk-mean (256 tokens, up to 8 chunks, features `mean`) + the `{h}` head "
                               "(`EduClassifier(head=\"" + h + "\", doc_mode=\"chunk-mean\")`: RBF SVR on the 0-5 score, "
                               "C=1, epsilon=0.1, gamma='scale', standardised)" for h in heads)
        + ", combined by `LogisticRegression(C=1)` on the logits of the members' scores (fastText "
          "P(score >= 3) for binary, expected grade / 5 for grades; the head's score / 5 clipped to [0, 1]; "
          "logits of values clipped to [1e-4, 1 - 1e-4]), fitted on out-of-fold scores (3-fold CV of the training set).",
        f"Full stack: nested ROC AUC {rows[pick]['auc_all']:.3f}, F1 {rows[pick]['f1_all']:.3f}, transfer "
        f"{rows[pick]['transfer']:.3f}; every single model: at most {best_auc:.3f} / {best_f1:.3f}.",
        "Cascade budgets whose nested AUC and F1 still beat every single model: "
        + (", ".join(f"{c['share']:.1f} (AUC {c['auc']:.3f}, F1 {c['f1']:.3f}, agreement {c['agreement']:.3f}, "
                     f"{c['docs_s']:.1f} docs/s)" for c in ok) if ok else "none") + ".",
        "By the issue's rule (best agreement per CPU-second among combinations that beat every single model) "
        "the smallest such budget wins; its margin over the lone fastText model is small (see the AUC column), "
        "so the band should be a training option (`--expensive-share`) stored in the model folder.",
    ]
    return "\n\n".join(lines)


def machine() -> str:
    cpu = platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores shared with other jobs, Python {platform.python_version()}"


def part_report(out_path: Path) -> None:
    data, rounds, y, strata = load_data()
    folds = splits(strata)
    r1 = np.where(rounds == 1)[0]
    sp = json.loads((OUT / "speed.json").read_text())
    n = sp["n_docs"]
    per = {k: v["seconds"] / n for k, v in sp.items() if isinstance(v, dict) and "seconds" in v}
    emb = per["embed-chunk-mean"]
    members = {"ft-grades": load("ft-grades"), "ft-binary": load("ft-binary"),
               **{f"head-{h}": load(f"head-{h}") for h in HEADS}}
    names = {"ft-grades": "fastText grades (expected score)", "ft-binary": "fastText binary",
             **{f"head-{h}": f"MiniLM chunk-mean + {h}" for h in HEADS}}
    results, cost, size = {}, {}, {}
    for k, m in members.items():
        results[k] = single(m, y, folds)
        cost[k] = per[k] + (emb if k.startswith("head") else 0.0)
        size[k] = sp[k]["bytes"]
    for ft in ("ft-grades", "ft-binary"):
        for h in HEADS:
            k = f"{ft}+head-{h}"
            results[k] = stacked([members[ft], members[f"head-{h}"]], y, folds, None, r1)
            names[k] = f"stack: {names[ft].split(' (')[0]} + {h}"
            cost[k] = per[ft] + emb + per[f"head-{h}"]
            size[k] = sp[ft]["bytes"] + sp[f"head-{h}"]["bytes"]
    for h in ("svr", "ridge"):
        k = f"ft-grades+ft-binary+head-{h}"
        results[k] = stacked([members["ft-grades"], members["ft-binary"], members[f"head-{h}"]], y, folds, None, r1)
        names[k] = f"stack: fastText grades + binary + {h}"
        cost[k] = per["ft-grades"] + per["ft-binary"] + emb + per[f"head-{h}"]
        size[k] = sp["ft-grades"]["bytes"] + sp["ft-binary"]["bytes"] + sp[f"head-{h}"]["bytes"]
    rows = {k: figures(r, y, data.domains, rounds) for k, r in results.items()}
    singles = [k for k in rows if "+" not in k]
    best_single_auc = max(rows[k]["auc_all"] for k in singles)
    best_single_f1 = max(rows[k]["f1_all"] for k in singles)
    naive = cost["head-forest"]
    # the default: among stacks beating every single model on nested AUC and F1, the best
    # agreement (nested AUC) per CPU-second
    beating = [k for k in rows if "+" in k and rows[k]["auc_all"] > best_single_auc and rows[k]["f1_all"] > best_single_f1]
    rule = "beat every single model on nested ROC AUC and F1"
    if not beating:  # fall back to AUC alone, and say so
        beating = [k for k in rows if "+" in k and rows[k]["auc_all"] > best_single_auc]
        rule = "beat every single model on nested ROC AUC (none beats them on F1 too)"
    pick = max(beating, key=lambda k: (rows[k]["auc_all"] / cost[k])) if beating else None

    lines = ["| scorer | ROC AUC all / code / web | F1 all / code / web | transfer AUC (r1 -> r2+3) | CPU docs/s | "
             "x today's default | size on disk |", "|---|---|---|---|---|---|---|"]
    for k in sorted(rows, key=lambda k: -rows[k]["auc_all"]):
        r = rows[k]
        bold = "**" if k == pick else ""
        lines.append(
            f"| {bold}{names[k]}{bold} | {r['auc_all']:.3f} / {r['auc_code']:.3f} / {r['auc_web']:.3f} | "
            f"{r['f1_all']:.3f} / {r['f1_code']:.3f} / {r['f1_web']:.3f} | {r['transfer']:.3f} | "
            f"{1 / cost[k]:,.1f} | {naive / cost[k]:.1f} | {size[k] / 1e6:.1f} MB"
            f"{' + MiniLM ~90 MB' if 'head' in k else ''} |")
    casc, cascade_rows = [], []
    if pick:
        cheap_key = pick.split("+")[0]
        full_extra = emb + sum(per[p] for p in pick.split("+")[1:] if p.startswith("head"))
        cascade_rows = cascade_table(members[cheap_key], results[pick], y, folds, per[cheap_key], full_extra)
        for c in cascade_rows:
            casc.append(f"| {c['share']:.1f} | {c['embedded']:.3f} | {c['agreement']:.3f} | {c['auc']:.3f} | {c['f1']:.3f} | "
                        f"{c['docs_s']:,.1f} | {naive * c['docs_s']:.1f} |")
        r = rows[pick]
        casc.append(f"| 1.0 (full stack) | 1.000 | 1.000 | {r['auc_all']:.3f} | {r['f1_all']:.3f} | {1 / cost[pick]:,.1f} | "
                    f"{naive / cost[pick]:.1f} |")
    chosen = {m: Counter(members[m]["chosen"].tolist()) for m in ("ft-grades", "ft-binary")}
    grid = "\n".join(f"- grid {i}: `{json.dumps(g)}`" for i, g in enumerate(FT_GRID))
    targets = rows[pick] if pick else rows[max(rows, key=lambda k: rows[k]["auc_all"])]
    text = f"""# Classifier quality on the seed set (2,371 documents, rounds 1-3)

Commands (each part caches its results in `benchmarks/.cache/cq/`):
```
python benchmarks/classifier_quality.py --part ft-grades
python benchmarks/classifier_quality.py --part ft-binary
python benchmarks/classifier_quality.py --part heads
python benchmarks/classifier_quality.py --part speed --speed-docs {n}
python benchmarks/classifier_quality.py --part report
```
Machine: {machine()}. Speed part: {n} seed documents, all scorers in one process, torch threads
{sp['torch_threads']}, fastText one thread; load average {sp['load_before'][0]:.1f} before and
{sp['load_after'][0]:.1f} after (five other engineers' tests and jobs were running: read the
docs/s as ratios within this run, not as absolute figures).

Labels: `data/seed/edu_seed.parquet`, positive = LLM score >= 3 (528 of 2,371). One model for both
domains; code / web are its scores on each domain's documents.

- **ROC AUC, F1**: outer 5-fold out-of-fold scores; every choice (fastText hyperparameters,
  F1 threshold, stacker, cascade band) is made by a 3-fold inner CV of each outer training part.
- **transfer AUC**: trained on round 1 only (1,018 rows), scored on rounds 2 + 3 (1,353 rows of
  library code and docs; no TheAlgorithms).
- **CPU docs/s**: embedding included for every model with a MiniLM head (chunk-mean: up to 8
  chunks of 256 tokens per document); a stack costs the sum of its members.
  "x today's default": relative to MiniLM chunk-mean + forest (the bundled default's recipe,
  retrained here); `benchmarks/throughput.py` compares with the naive truncating loop.
- **size**: the fastText `.bin` / the head's skops bytes; models with a head also need the
  MiniLM embedder (about 90 MB).
- **stacks**: logistic regression (C = 1) on the logits of the members' inner out-of-fold scores.

fastText grid (all with `{json.dumps(FT_FIXED)}`; labels "grades" = six classes, score = expected
grade / 5; "binary" = score >= 3):
{grid}

Chosen per outer fold: grades {dict(chosen['ft-grades'])}, binary {dict(chosen['ft-binary'])}.

{chr(10).join(lines)}

Best single model: ROC AUC {best_single_auc:.3f}, F1 {best_single_f1:.3f}.
Targets (issue 15): nested-CV ROC AUC >= 0.93: **{'met' if targets['auc_all'] >= 0.93 else 'not met'}**
({targets['auc_all']:.3f}); F1 >= 0.78: **{'met' if targets['f1_all'] >= 0.78 else 'not met'}** ({targets['f1_all']:.3f});
transfer AUC >= 0.90: **{'met' if targets['transfer'] >= 0.90 else 'not met'}** ({targets['transfer']:.3f})
(figures of the recommended default{'' if pick else ' (none beat every single model: the best row)'}).

Recommended default by the rule "best ROC AUC per CPU-second among the stacks that {rule}":
**{names.get(pick, 'none')}**.

## Cascade: `{names.get(pick, '-')}`

The cheap member scores every document; only documents whose cheap score (mapped to a
probability by a one-feature logistic fitted on inner scores) falls in the band go through
MiniLM and the stack. The band is chosen by `phifilter.cascade.choose_band` on the inner
out-of-fold scores of each outer training part for the stated budget, then applied to the test
fold. Agreement: same keep/drop decision as the full stack at its threshold.

| budget (share embedded) | share embedded (measured) | agreement with full stack | ROC AUC | F1 | CPU docs/s | x today's default |
|---|---|---|---|---|---|---|
{chr(10).join(casc)}

## Recommendation
{recommendation(pick, sp, rows, cascade_rows, best_single_auc, best_single_f1)}
"""
    out_path.write_text(text)
    print(text)
    json.dump({"rows": rows, "cost": cost, "size": size, "pick": pick}, open(OUT / "report.json", "w"), indent=1)


# ------------------------------------------------------------------------------------------
# the shipped recipe (issue 23): nested CV on rounds 1-4 and 1-5, transfer 1-3 -> 4, novelty rule

RECIPE = dict(head="svr", doc_mode="chunk-mean", lexical="fasttext", lexical_params={"labels": "binary"},
              expensive_share=0.2, novelty_share=0.05, max_chars=2500, threshold="auto", random_state=0)
KIND_CONFIG_EXT = (".json", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".conf", ".xml", ".txt", ".in")


def round4_kind(source: str, path: str) -> str:
    """The kind of a round-4 row, from its source and path (the seed set has no kind column)."""
    top = source.split("/")[0]
    fixed = {"debian-copyright": "licence", "pypi-licence": "licence", "debian-changelog": "changelog",
             "debian-readme": "README", "gnu-info": "info manual", "site-packages-docs": "package docs"}
    if top in fixed:
        return fixed[top]
    base = os.path.basename(path)
    if base == "__init__.py":
        return "__init__.py"
    if not base.endswith(".py") or base.endswith(KIND_CONFIG_EXT):
        return "config"
    if re.search(r"(^|/)tests?/", path) or base.startswith("test_") or base.endswith("_test.py"):
        return "test"
    return "generated"


def recipe_fit(data, E, idx, **overrides):
    from phifilter.classifier import EduClassifier
    from phifilter.hf_embed import make_embedder

    clf = EduClassifier(**{**RECIPE, **overrides})
    return clf.fit([data.texts[i] for i in idx], data.scores[idx], embeddings=E.subset(idx),
                   domains=data.domains[idx], embedder=make_embedder(None, device="cpu"))


def recipe_score(clf, data, E, idx) -> dict:
    """Scores of rows ``idx`` with the novelty rule, without it, and with no cascade at all, and
    which rows each embedded."""
    texts = [data.texts[i] for i in idx]
    Ei = E.subset(idx)
    out = {}
    novelty = clf.cascade_.novelty_
    for name, setting in (("novelty", novelty), ("band_only", None)):
        clf.cascade_.novelty_ = setting
        route = clf.route(texts)
        embedded = np.zeros(len(idx), bool)
        embedded[route.embed] = True
        out[name] = clf.score_texts_embedded(texts, Ei).astype(np.float64)
        out[name + "_embedded"] = embedded
    clf.cascade_.novelty_ = novelty
    cascade, clf.cascade_ = clf.cascade_, None
    out["full"] = clf.score_texts_embedded(texts, Ei).astype(np.float64)
    clf.cascade_ = cascade
    out["threshold"] = np.full(len(idx), clf.threshold)
    return out


def oof_arrays(clf, idx) -> dict:
    """A recipe fit's own out-of-fold arrays, and the band-only cascade's scores from them."""
    from phifilter.cascade import in_band

    o = clf.oof_
    band = in_band(o["lexical"], clf.cascade_.band_)
    band_only = clf.cascade_.combine(o["lexical"], o["full"][band], band)
    return {"idx": idx, "novelty": o["edu_score"], "novelty_embedded": o["embedded"], "band_only": band_only,
            "band_only_embedded": band, "full": o["full"], "unseen": o["unseen"],
            "threshold": np.full(len(idx), clf.threshold)}


def part_recipe(arms: list[str]) -> None:
    """The shipped recipe (each fit chooses its own combiner, band, novelty rule and threshold on
    its inner 5-fold out-of-fold scores).

    Reduced arms (one recipe fit each; the figures are the fit's own out-of-fold scores, not
    nested: the threshold and band saw them): ``oof15`` rounds 1-5, ``oof14`` rounds 1-4 (what
    round 5 adds: compare the two on rounds 1-4 rows), ``transfer`` rounds 1-3 -> round 4.
    Nested arms (5 outer folds, 5 recipe fits each): ``r14`` rounds 1-4 with round 5 added to
    every training part, ``r14-no5`` without it, ``r15`` rounds 1-5."""
    from sklearn.model_selection import StratifiedKFold

    data, rounds, y, strata = load_data()
    E = embeddings(data.ids, data.texts)
    r5 = np.where(rounds == 5)[0]
    for arm in arms:
        start = time.perf_counter()
        if arm == "transfer":
            tr, te = np.where(rounds <= 3)[0], np.where(rounds == 4)[0]
            clf = recipe_fit(data, E, tr)
            res = {"idx": te, **recipe_score(clf, data, E, te)}
        elif arm in ("oof15", "oof14"):
            idx = np.where(rounds <= (5 if arm == "oof15" else 4))[0]
            res = oof_arrays(recipe_fit(data, E, idx), idx)
        else:
            pool = np.where(rounds <= (5 if arm == "r15" else 4))[0]
            res = {"idx": pool}
            parts = []
            for tr, te in StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(pool, strata[pool]):
                train = pool[tr] if arm != "r14" else np.concatenate([pool[tr], r5])
                clf = recipe_fit(data, E, train)
                parts.append((te, recipe_score(clf, data, E, pool[te])))
                print(f"  {arm}: fold done [{time.perf_counter() - start:.0f} s]", flush=True)
            for key in parts[0][1]:
                arr = np.zeros(len(pool), parts[0][1][key].dtype)
                for te, got in parts:
                    arr[te] = got[key]
                res[key] = arr
        save(f"recipe-{arm}", **res)
        print(f"{arm}: AUC {auc(y[res['idx']], res['novelty']):.4f} [{time.perf_counter() - start:.0f} s]", flush=True)


def part_novelty_lexical(out_path: Path) -> None:
    """The novelty rule on the lexical scorer alone (no embeddings needed): a fastText model of
    the shipped settings trained on rounds 1-3, its novelty level learned as the recipe does (the
    0.95 quantile of 5-fold out-of-fold unseen-token shares), applied to round 4 by kind: how
    many documents the rule would send to the embedder, and how many of the documents fastText
    alone would keep (P >= 0.5) it catches."""
    import pyarrow.parquet as pq
    from sklearn.model_selection import StratifiedKFold

    data, rounds, y, strata = load_data()
    t = pq.read_table(REPO / "data/seed/edu_seed.parquet", columns=["source", "path"]).to_pydict()
    params = dict(labels="binary", positive_threshold=3, random_state=0, thread=1)
    tr, te = np.where(rounds <= 3)[0], np.where(rounds == 4)[0]
    T = lambda idx: [data.texts[i] for i in idx]  # noqa: E731
    unseen_oof = np.zeros(len(tr))
    for a, b in StratifiedKFold(5, shuffle=True, random_state=0).split(tr, strata[tr]):
        m = LexicalScorer(**params).fit(T(tr[a]), data.scores[tr[a]])
        unseen_oof[b] = m.unseen_share(T(tr[b]))
    level = float(np.quantile(unseen_oof, 0.95))
    m = LexicalScorer(**params).fit(T(tr), data.scores[tr])
    p, unseen = m.high_and_unseen(T(te))
    kinds = np.array([round4_kind(t["source"][i], t["path"][i]) for i in te])
    flagged = unseen > level
    lines = [f"Novelty level learned on rounds 1-3 (0.95 quantile of out-of-fold unseen-token shares): "
             f"{level:.3f}; rounds 1-3 documents above it out of fold: {100 * (unseen_oof > level).mean():.1f}%.",
             f"fastText (rounds 1-3) on round 4: ROC AUC {auc(y[te], p):.3f}.", "",
             "| round-4 kind | docs | positives | fastText keeps (P >= 0.5) | flagged by the novelty rule | "
             "of those kept, flagged | median unseen share |", "|---|---|---|---|---|---|---|"]
    for k in sorted(set(kinds.tolist())) + ["all"]:
        sel = np.ones(len(te), bool) if k == "all" else kinds == k
        keep = sel & (p >= 0.5)
        lines.append(f"| {k} | {sel.sum()} | {int(y[te][sel].sum())} | {100 * keep.sum() / sel.sum():.1f}% | "
                     f"{100 * flagged[sel].mean():.1f}% | {f'{100 * flagged[keep].mean():.0f}% of {keep.sum()}' if keep.any() else '-'} | "
                     f"{np.median(unseen[sel]):.3f} |")
    text = "\n".join(lines) + "\n"
    out_path.write_text(text)
    print(text)


def _best_f1(y, p) -> tuple[float, float]:
    """The highest F1 any threshold gives on these scores, and that threshold (an oracle: tuned
    on the very scores it is measured on, so an upper bound for every threshold rule)."""
    from sklearn.metrics import precision_recall_curve

    pr, rc, th = precision_recall_curve(y, p)
    f = 2 * pr[:-1] * rc[:-1] / np.maximum(pr[:-1] + rc[:-1], 1e-12)
    k = int(np.argmax(f))
    return float(f[k]), float(th[k])


def part_recipe_levers() -> None:
    """What could lift the shipped default's F1 on the random rounds 1-4 rows (issue 23 target
    0.76): the best threshold any rule could pick (oracle, from the recipe arms' arrays), and
    the embedding head alone with another SVR C or reading only the first chunk (nested like
    ``r14``: 5 outer folds of rounds 1-4, round 5 in every training part)."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    data, rounds, y, strata = load_data()
    out = {"max_seed_chars": int(max(len(t) for t in data.texts)), "oracle": {}, "head": {}}
    for arm in ("r14", "oof15", "r15"):
        f = OUT / f"recipe-{arm}.npz"
        if f.exists():
            r = dict(np.load(f))
            sel = rounds[r["idx"]] <= 4
            out["oracle"][arm] = {key: _best_f1(y[r["idx"]][sel], r[key][sel]) for key in ("novelty", "full")}
    E = embeddings(data.ids, data.texts)
    pool, r5 = np.where(rounds <= 4)[0], np.where(rounds == 5)[0]
    folds = list(StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(pool, strata[pool]))
    for name, X, C in (("chunk-mean, C=1 (shipped)", E.pooled(), 1.0), ("chunk-mean, C=0.3", E.pooled(), 0.3),
                       ("chunk-mean, C=3", E.pooled(), 3.0), ("chunk-mean, C=10", E.pooled(), 10.0),
                       ("first chunk only (truncate), C=1", E.first_chunk(), 1.0)):
        oof = np.zeros(len(pool))
        for tr, te in folds:
            train = np.concatenate([pool[tr], r5])
            oof[te] = make_pipeline(StandardScaler(), SVR(C=C)).fit(X[train], data.scores[train]).predict(X[pool[te]])
        out["head"][name] = {"roc_auc": auc(y[pool], oof), "best_f1": _best_f1(y[pool], oof)[0]}
        print(name, out["head"][name], flush=True)
    (OUT / "recipe-levers.json").write_text(json.dumps(out, indent=1) + "\n")


def levers_section() -> list[str]:
    """The recipe-levers figures as a markdown section (empty without ``--part recipe-levers``)."""
    f = OUT / "recipe-levers.json"
    if not f.exists():
        return []
    lv = json.loads(f.read_text())
    lines = ["### F1 >= 0.76 on rounds 1-4: what was tried (`--part recipe-levers`)", "",
             "The best threshold any rule could choose, picked on the very rounds 1-4 out-of-fold scores it is "
             "measured on (an upper bound, not a result):", "",
             "| arm | cascade (shipped): best F1 at threshold | full ensemble (every document embedded) |",
             "|---|---|---|"]
    for arm, v in lv["oracle"].items():
        lines.append(f"| {arm} | {v['novelty'][0]:.3f} at {v['novelty'][1]:.3f} | {v['full'][0]:.3f} at {v['full'][1]:.3f} |")
    lines += ["", "The embedding head alone (SVR on MiniLM), rounds 1-4 out of fold with round 5 in every training "
              "part (best F1: oracle threshold):", "", "| head | ROC AUC | best F1 |", "|---|---|---|"]
    for name, v in lv["head"].items():
        lines.append(f"| {name} | {v['roc_auc']:.4f} | {v['best_f1']:.4f} |")
    lines += ["", "So no threshold rule reaches 0.76 for the cascade: its best F1 stays below it even with the "
              "threshold tuned on the figures themselves. A wider band (`--expensive-share`) moves the cascade "
              "towards the full ensemble, which embeds every document (five times the embedder's work) and "
              "still reaches only 0.759 at its own nested thresholds and 0.755 at the stored one (`r14` "
              "above). The head's C moves its ROC AUC by about 0.002 (within fold noise). Reading only the "
              "first chunk (the cheap way to make whole files fast) costs the head about 0.036 ROC AUC, so "
              "it was not taken. Nothing here reached the target honestly, so the bundled model was not "
              f"retrained for it. The seed texts are at most {lv['max_seed_chars']:,} characters, so the "
              "bundled model's `max_chars` 2,500 (its embedder reads a document's first 2,500 characters) "
              "changes no figure on this page.", ""]
    return lines


def _f1(y, p, t):
    from sklearn.metrics import f1_score

    return float(f1_score(y, p >= t, zero_division=0))


def recipe_report(out_path: Path) -> None:
    """The shipped default's figures from the recipe parts, as markdown."""
    import pyarrow.parquet as pq

    from phifilter.modelfolder import default_model_path, read_model_meta

    data, rounds, y, strata = load_data()
    t = pq.read_table(REPO / "data/seed/edu_seed.parquet", columns=["source", "path"]).to_pydict()
    kinds = np.array([round4_kind(s, p) if r == 4 else "" for s, p, r in zip(t["source"], t["path"], rounds)])
    stored = float(read_model_meta(default_model_path())["threshold"])
    lines = [f"Stored threshold of the shipped default: {stored:g}. \"own\": each outer model's threshold, chosen "
             "by its own inner CV (honest); \"stored\": the shipped model's. Embedded: share of documents the "
             "cascade sent to MiniLM (band + novelty rule).", ""]

    def row(name, sel, r, key="novelty"):
        yy, p = y[r["idx"]][sel], r[key][sel]
        a = auc(yy, p) if 0 < yy.sum() < len(yy) else None
        emb = r[key + "_embedded"][sel].mean() if key + "_embedded" in r else 1.0
        return (f"| {name} | {sel.sum()} | {int(yy.sum())} | {'n/a' if a is None else f'{a:.3f}'} | "
                f"{_f1(yy, p, r['threshold'][sel]):.3f} | {_f1(yy, p, stored):.3f} | "
                f"{100 * (p >= r['threshold'][sel]).mean():.1f}% | {100 * emb:.1f}% |")

    head = ["| subset | docs | positives | ROC AUC | F1 (own) | F1 (stored) | kept (own) | embedded |",
            "|---|---|---|---|---|---|---|---|"]
    titles = {"oof15": "Rounds 1-5, the recipe's own 5-fold out-of-fold scores (what the shipped model's card reports)",
              "oof14": "Rounds 1-4 only, the recipe's own 5-fold out-of-fold scores (trained without round 5)",
              "r14": "Rounds 1-4 out of fold, trained on the other folds + round 5 (the shipped recipe)",
              "r14-no5": "Rounds 1-4 out of fold, trained without round 5",
              "r15": "Rounds 1-5 out of fold (round 5 is hard on purpose: lower figures)",
              "transfer": "Transfer: trained on rounds 1-3, scored on round 4"}
    for arm, title in titles.items():
        f = OUT / f"recipe-{arm}.npz"
        if not f.exists():
            continue
        r = dict(np.load(f))
        idx = r["idx"]
        lines += [f"### {title}", ""] + head
        lines.append(row("all", np.ones(len(idx), bool), r))
        for d in ("code", "web"):
            lines.append(row(d, data.domains[idx] == d, r))
        for k in sorted(set(rounds[idx].tolist())):
            lines.append(row(f"round {k}", rounds[idx] == k, r))
        for k in sorted(set(kinds[idx].tolist()) - {""}):
            lines.append(row(f"round 4: {k}", kinds[idx] == k, r))
        lines += ["", "Novelty rule on/off and the full ensemble (every document embedded), all rows:", "",
                  *head, row("with the novelty rule", np.ones(len(idx), bool), r, "novelty"),
                  row("band only", np.ones(len(idx), bool), r, "band_only"),
                  row("full ensemble", np.ones(len(idx), bool), r, "full")]
        if (rounds[idx] == 4).any():
            sel = rounds[idx] == 4
            lines += ["", "Round-4 rows only:", "", *head, row("with the novelty rule", sel, r, "novelty"),
                      row("band only", sel, r, "band_only"), row("full ensemble", sel, r, "full")]
        lines.append("")
    f15, f14 = OUT / "recipe-oof15.npz", OUT / "recipe-oof14.npz"
    if f15.exists():
        r = dict(np.load(f15))
        sel = rounds[r["idx"]] <= 4
        yy, p = y[r["idx"]][sel], r["novelty"][sel]
        a, f = auc(yy, p), _f1(yy, p, stored)
        lines += ["### Targets (issue 23)", "",
                  f"The shipped recipe on the random rounds 1-4 rows, out of fold (trained on rounds 1-5): "
                  f"ROC AUC {a:.3f} (target >= 0.94: **{'met' if a >= 0.94 else 'not met'}**), F1 at the stored "
                  f"threshold {stored:g}: {f:.3f} (target >= 0.76: **{'met' if f >= 0.76 else 'not met'}**).", ""]
        if f14.exists():
            r14 = dict(np.load(f14))
            y14 = y[r14["idx"]]
            lines += ["### What round 5 adds (rounds 1-4 rows, out of fold)", "", *head,
                      row("trained on rounds 1-5", sel, r), row("trained on rounds 1-4", np.ones(len(r14["idx"]), bool), r14),
                      "", f"(AUC {auc(y14, r14['novelty']):.3f} without round 5 vs {a:.3f} with it.)", ""]
    lines += levers_section()
    out_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", required=True,
                    choices=["ft-grades", "ft-binary", "heads", "speed", "report", "recipe", "recipe-report",
                             "recipe-levers", "novelty-lexical"])
    ap.add_argument("--arms", default="oof15,oof14,transfer",
                    help="--part recipe: which arms (reduced: oof15, oof14, transfer; nested: r14, r14-no5, r15)")
    ap.add_argument("--speed-docs", type=int, default=200)
    ap.add_argument("--out", default=str(REPO / "benchmarks/classifier_quality.md"))
    a = ap.parse_args()
    if a.part.startswith("ft-"):
        part_fasttext(a.part[3:])
    elif a.part == "heads":
        part_heads()
    elif a.part == "speed":
        part_speed(a.speed_docs)
    elif a.part == "recipe":
        part_recipe(a.arms.split(","))
    elif a.part == "novelty-lexical":
        part_novelty_lexical(REPO / "benchmarks/classifier_quality_novelty.md")
    elif a.part == "recipe-levers":
        part_recipe_levers()
    elif a.part == "recipe-report":
        recipe_report(REPO / "benchmarks/classifier_quality_recipe.md")
    else:
        part_report(Path(a.out))


if __name__ == "__main__":
    main()
