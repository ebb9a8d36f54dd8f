"""`ablate --prune-similar TAU`: the arms again without the documents most like the benchmarks.

phi-1 (§5) asked whether its filtered data won only because it kept code resembling HumanEval:
it removed every training document whose similarity to a HumanEval problem exceeded a
threshold, retrained, and showed the gain held. Here every document of the ablation's corpus
gets ``max_similarity`` from :mod:`phifilter.contamination` (HumanEval and all of MBPP;
embedding and syntax), cached in ``data/similarity.npz``. For each TAU, each arm gets a pruned
twin, ``<arm>@<TAU>``: the same training documents less those with ``max_similarity > TAU``
(the random twin is drawn from the pruned pool and sized by the pruned filtered arm). The
validation splits are not pruned, so every twin is scored on the same data as its arm.
Each arm's similarity distribution goes into the manifest, so the report always shows it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import data as D

SIMILARITY = "similarity.npz"
DIST_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def split_arm(arm: str) -> tuple[str, float | None]:
    """'filtered@0.8' -> ('filtered', 0.8); 'random' -> ('random', None)."""
    base, sep, tau = arm.partition("@")
    return base, (float(tau) if sep else None)


def arm_name(base: str, tau: float | None) -> str:
    return base if tau is None else f"{base}@{tau:g}"


def run_arms(arms, taus) -> list[str]:
    """The arms to train: each arm, then each arm's twin per TAU."""
    return [*arms, *[arm_name(a, t) for t in sorted(set(taus), reverse=True) for a in arms]]


def corpus_similarity(shards, folder: Path, text_column: str, progress: bool, eval_dir=None,
                      audit: str | None = None, methods=("syntax",)) -> tuple[np.ndarray, list[str]]:
    """(``max_similarity`` of every document in corpus order, the methods behind it), cached in
    ``folder/similarity.npz``: measured here by ``methods``, or read from ``audit`` (a
    `phifilter contamination` folder of the same inputs). A cache made another way is redone."""
    path = folder / SIMILARITY
    wanted = audit_methods(audit) if audit is not None else sorted(methods)
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if "methods" in z.files and sorted(map(str, z["methods"])) == wanted:
                return z["max_similarity"], wanted
    from ..atomic import write_atomic

    if audit is not None:
        sims, nearest = read_audit(audit, shards)
    else:
        from ..contamination import Matcher, shipped_problems
        from ..contamination_run import log

        log(progress, f"measuring each document's similarity to HumanEval/MBPP ({' + '.join(wanted)})")
        matcher = Matcher(shipped_problems(eval_dir), methods=wanted)
        sims, nearest = [], []
        for texts, _ in D.iter_texts(shards, text_column):
            cols = matcher.match(texts)
            sims += cols["max_similarity"]
            nearest += [n or "" for n in cols["nearest_problem"]]
    values = np.asarray(sims, dtype=np.float32)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, max_similarity=values, nearest_problem=np.asarray(nearest, dtype=str),
                     methods=np.asarray(wanted, dtype=str))

    write_atomic(path, save)
    return values, wanted


def audit_methods(audit: str) -> list[str]:
    """The methods a `phifilter contamination` folder (or the file in it) was made with."""
    import json

    from ..contamination import SETTINGS

    path = Path(audit)
    settings = (path if path.is_dir() else path.parent) / SETTINGS
    try:
        return sorted(json.loads(settings.read_text())["methods"])
    except (OSError, ValueError, KeyError, TypeError):
        from ..errors import InputError

        raise InputError(f"{audit}: no readable {SETTINGS}; give the folder `phifilter contamination` wrote") from None


def read_audit(audit: str, shards) -> tuple[list[float], list[str]]:
    """(max_similarity, nearest_problem) in corpus order from a contamination audit of these shards."""
    import pyarrow.parquet as pq

    from ..contamination import RESULT
    from ..corpus import open_parquet
    from ..errors import InputError

    path = Path(audit)
    path = path / RESULT if path.is_dir() else path
    if not path.is_file():
        raise InputError(f"{audit}: no {RESULT}; run `phifilter contamination` on the same inputs first")
    cols = pq.read_table(path, columns=["shard", "row", "max_similarity", "nearest_problem"]).to_pydict()
    expected = [(str(s.name), r) for s in shards for r in range(open_parquet(s.path).metadata.num_rows)]
    if list(zip(cols["shard"], cols["row"])) != expected:
        raise InputError(f"{path}: audits other inputs than these ({len(cols['row'])} rows, the inputs "
                         f"{len(expected)}); run `phifilter contamination` on the same inputs")
    return cols["max_similarity"], [n or "" for n in cols["nearest_problem"]]


def distribution(values: np.ndarray, taus=()) -> dict:
    """What the report shows of an arm's training documents' similarities."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"docs": 0}
    q = np.quantile(v, [0.5, 0.9, 0.99, 1.0])
    above = sorted(set(DIST_THRESHOLDS) | set(taus))
    v32 = np.asarray(values, dtype=np.float32)  # compared as the pruning compares (float32)
    return {"docs": int(v.size), "mean": float(v.mean()), "median": float(q[0]), "p90": float(q[1]),
            "p99": float(q[2]), "max": float(q[3]),
            "above": {f"{t:g}": int((v32 > np.float32(t)).sum()) for t in above}}


def add_pruned_arms(bundle, config, sim: np.ndarray) -> None:
    """Give the manifest (and data folder) each pruned twin and every arm's similarity
    distribution; what already exists is kept, so a TAU added later costs only its own files."""
    taus = sorted(set(config.prune_similar), reverse=True)
    manifest, folder = bundle.manifest, bundle.folder
    tokens = np.diff(bundle.offsets)
    fil_train, _, _ = D.filtered_docs(bundle.table, tokens, bundle.train_mask, bundle.val_mask,
                                      config.effective_threshold(), config.top_fraction)
    base_docs = {"filtered": fil_train, "unfiltered": np.flatnonzero(bundle.train_mask)}
    changed = False
    if manifest.get("similarity_methods") != bundle.similarity_methods:
        manifest["similarity_methods"] = bundle.similarity_methods
        for entry in manifest["arms"].values():  # distributions of another measure are stale
            entry.pop("similarity", None)
            for draw in entry.get("per_seed", {}).values():
                draw.pop("similarity", None)
        changed = True
    for arm, docs in base_docs.items():
        entry = manifest["arms"].get(arm)
        if entry is not None and "similarity" not in entry:
            entry["similarity"] = distribution(sim[docs], taus)
            changed = True
    all_tokens = None
    for tau in taus:
        keep = sim <= np.float32(tau)
        for arm, docs in base_docs.items():
            name = arm_name(arm, tau)
            pruned = docs[keep[docs]]
            if name in manifest["arms"]:
                if "similarity" not in manifest["arms"][name]:
                    manifest["arms"][name]["similarity"] = distribution(sim[pruned], taus)
                    changed = True
                continue
            if not (arm in config.arms or (arm == "filtered" and "random" in config.arms)):
                continue
            if all_tokens is None:
                all_tokens = D.open_tokens(folder / "all.bin")
            val = manifest["arms"][arm]
            manifest["arms"][name] = {
                "tau": tau, "val_docs": val["val_docs"], "val_tokens": val["val_tokens"],
                "train_docs": int(pruned.size), "removed_docs": int(docs.size - pruned.size),
                "removed_tokens": int(tokens[docs].sum() - tokens[pruned].sum()),
                "train_tokens": D.write_arm(all_tokens, bundle.offsets, pruned, folder / f"{name}.train.bin"),
                "similarity": distribution(sim[pruned], taus)}
            changed = True
        name = arm_name("random", tau)
        if "random" in config.arms and name not in manifest["arms"]:
            val = manifest["arms"]["random"]
            manifest["arms"][name] = {"tau": tau, "val_docs": val["val_docs"], "val_tokens": val["val_tokens"],
                                      "train_target_tokens": manifest["arms"][arm_name("filtered", tau)]["train_tokens"],
                                      "per_seed": {}}
            changed = True
    if changed:
        D.write_json(folder / "manifest.json", manifest)


def random_pool(bundle, arm: str, sim: np.ndarray | None) -> np.ndarray:
    """The documents the random arm (or its twin) draws from."""
    _, tau = split_arm(arm)
    pool = bundle.train_mask if tau is None else bundle.train_mask & (sim <= np.float32(tau))
    return np.flatnonzero(pool)
