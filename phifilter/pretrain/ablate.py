"""`phifilter ablate`: train the same small GPT on filtered, random and unfiltered data.

Output folder layout (every file is written under a temporary name and renamed when whole,
so a rerun of the same command skips whatever is finished):

    ablate.json                      settings of this folder (a rerun must match them; changed
                                     input contents redo data/ and runs/)
    data/docs.npz                    per-document score, size, contamination flag
    data/tokenizer.json              the byte-level BPE trained for this run
    data/all.bin, all.offsets.npy    every clean document's ids + end-of-text, corpus order
    data/<arm>.train.bin, .val.bin   uint16 token files per arm (random: one train file per seed)
    data/manifest.json               documents and tokens per arm, documents removed
    data/bigram.<arm>[.s<seed>].json the count-based bigram baseline's losses
    runs/<arm>.s<seed>/checkpoint/   safetensors + JSON; resumed after an interruption
    runs/<arm>.s<seed>/result.json   written last: the run is finished
    results.json, report.md, report.html, loss_curves.png

An output on an object store (``-o s3://bucket/ablation/``): the run works in a local folder of
the layout above, ``<cache root>/ablate/<hash of the URL>/`` (:func:`working_folder`; the cache
root is ``PHIFILTER_CACHE_DIR``, else ``$XDG_CACHE_HOME/phifilter``, else
``~/.cache/phifilter``), holding the store's lock object ``.phifilter.lock`` throughout, and then
publishes the top-level files (``ablate.json``, the report files, ``results.json`` last), each
whole. The training data and checkpoints stay in the local folder, so a rerun on the same
machine resumes there; on another machine the published ``ablate.json`` still holds the rerun
to the same settings. Inputs may be URLs too (streamed, as ``score`` reads them).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import OLD_MARK, TMP_MARK, remove_stale_temporaries
from ..corpus import OutputLock, check_output_dir, find_shards, open_parquet
from ..location import store_of
from ..errors import InputError, OutputError
from ..exclude import ExclusionSet
from ..hashing import sha256_file
from . import data as D
from . import prune as P
from .config import AblateConfig, Preset
from .evalsets import HUMANEVAL_FILE, MBPP_FILE, contamination_texts, default_eval_dir, load_humaneval, load_mbpp

SETTINGS = "ablate.json"


def log(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def run_ablation(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    config: AblateConfig | None = None,
    progress: bool = False,
    command: str | None = None,
    stats_json: str | os.PathLike | None = None,
) -> dict:
    """Prepare data, train every (arm, seed) not yet finished, evaluate, write the report.

    Returns the results dictionary that is also written to ``results.json``. ``inputs`` and
    ``output_dir`` may be URLs (``s3://...``; see the module docstring for a URL output).
    ``stats_json``: also write the run's statistics there (a local path or a URL): documents,
    bytes and tokens read, per-shard sizes, stage timings, and per (arm, seed) run its
    timings, steps and tokens.
    """
    from ..outputs import claim_folder, claim_stats

    started = time.monotonic()
    config = config or AblateConfig()
    config.check()
    if config.pass_samples > 0:
        from .sandbox import require_sandbox

        require_sandbox()  # before hours of training, not after
    preset = config.resolved_preset()
    budget = config.tokens or preset.tokens
    steps = max(1, math.ceil(budget / preset.tokens_per_step))
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    shards = find_shards(specs)
    dest = check_output_dir(specs, output_dir)
    claim_folder(dest, lambda p: _is_ablation_file(dest, p), "an ablation")
    claim_stats(stats_json, specs, output_dir=dest)
    D.check_scored_shards(shards, config.text_column, config.score_column)
    stats = {"command": "ablate", "output": str(dest), "stages": {}, "runs": [], "failures": []}
    out = working_folder(dest)
    if out == dest:  # a local folder: the run works in it
        results = _run(shards, dest, config, preset, steps, progress, command, stats)
    else:  # training needs a local folder: a store's ablation runs in a working copy, then publishes it
        stats["work_folder"] = str(out)
        with OutputLock(dest):
            _adopt_published_settings(dest, out)
            try:
                results = _run(shards, out, config, preset, steps, progress, command, stats)
            except OutputError as e:
                raise OutputError(str(e).replace(str(out), str(dest))) from None
            began = time.monotonic()
            store_of(dest).publish_copy(out, dest, TOP_FILES, last=("results.json",),
                                        ours=lambda p: len(p.relative_to(dest).parts) == 1 and p.name in TOP_FILES)
            stats["stages"]["publish_seconds"] = round(time.monotonic() - began, 6)
    stats["seconds"] = round(time.monotonic() - started, 6)
    if stats_json is not None:
        from ..stats import rate, write_stats

        stats["docs_per_second"] = rate(stats["rows"]["in"], stats["seconds"])
        write_stats(stats_json, stats)
    return results


def working_folder(dest) -> Path:
    """The local folder where the ablation whose output is ``dest`` runs: ``dest`` itself, or for
    a URL its working copy (one per URL: :meth:`phifilter.location.ObjectStore.working_copy`)."""
    return store_of(dest).working_copy(dest, "ablate")


def _adopt_published_settings(dest, out: Path) -> None:
    """Hold the local working folder to the ablation published at ``dest``: a working folder made
    for other settings than the published ones is started afresh from the published settings
    (so the usual check refuses other settings, or redoes changed inputs, as on a local folder)."""
    published = D.read_json(dest / SETTINGS)
    if published is None:
        return  # nothing published yet: a first run, or one killed before publishing, resumes here
    local = D.read_json(out / SETTINGS) if (out / SETTINGS).is_file() else None
    if local == published:
        return
    if out.is_dir():
        _discard_stages(out)
    out.mkdir(parents=True, exist_ok=True)
    D.write_json(out / SETTINGS, published)


def _settings(shards, fingerprints, rows, config: AblateConfig, preset: Preset, steps: int, eval_dir: Path) -> dict:
    """What decides the prepared data and the runs: a rerun with other settings is refused."""
    return {
        "data": {
            "inputs": [[str(s.path.resolve()), f["size"], n] for s, f, n in zip(shards, fingerprints, rows)],
            "text_column": config.text_column, "score_column": config.score_column,
            "threshold": config.effective_threshold(), "top_fraction": config.top_fraction,
            "val_fraction": config.val_fraction, "data_seed": config.data_seed,
            "vocab_size": preset.model.vocab_size, "tokenizer_max_bytes": config.tokenizer_max_bytes,
            "eval_sets": _fingerprint(eval_dir),
            # content, not just size and rows: a rewritten input must not reuse the cached stages
            "input_fingerprints": fingerprints,
        },
        "runs": {
            "model": asdict(preset.model), "loop": asdict(preset.loop), "steps": steps,
            "eval_tokens": preset.eval_tokens, "pass_samples": config.pass_samples,
            "pass_problems": config.pass_problems, "max_new_tokens": config.max_new_tokens,
            "temperature": config.temperature, "exec_timeout": config.exec_timeout,
        },
    }


def _run(shards, out: Path, config: AblateConfig, preset: Preset, steps: int, progress: bool, command: str | None,
         stats: dict) -> dict:
    """The ablation in the local folder ``out``; fills ``stats``."""
    from ..outputs import claim_folder
    from ..provenance import fingerprint

    claim_folder(out, lambda p: _is_ablation_file(out, p), "an ablation")
    eval_dir = Path(config.eval_dir) if config.eval_dir else default_eval_dir()
    fingerprints = [fingerprint(s.path) for s in shards]
    rows = [open_parquet(s.path).metadata.num_rows for s in shards]

    settings = _settings(shards, fingerprints, rows, config, preset, steps, eval_dir)
    stats["per_shard"] = [{"path": str(s.path), "name": str(s.name), "rows": n, "file_bytes": f["size"]}
                          for s, f, n in zip(shards, fingerprints, rows)]
    with OutputLock(out):
        remove_stale_temporaries(out, marks=(TMP_MARK, OLD_MARK))  # an interrupted run's files and checkpoints
        _check_settings(out, settings)
        began = time.monotonic()
        bundle = prepare_data(shards, out / "data", config, preset, eval_dir, progress)
        seeds = list(range(config.seed, config.seed + config.seeds))
        arms = P.run_arms(config.arms, config.prune_similar)
        for seed in seeds:  # all data exists before the first run starts
            for arm in arms:
                if P.split_arm(arm)[0] == "random":
                    random_train_file(bundle, seed, config.data_seed, arm)
        stats["stages"]["data_seconds"] = round(time.monotonic() - began, 6)
        manifest = bundle.manifest
        stats["shards"] = {"read": len(shards), "failed": 0}
        stats["rows"] = {"in": manifest["docs"]["input"], "clean": manifest["docs"]["clean"],
                         "removed_exact": manifest["docs"]["removed_exact"],
                         "removed_ngram": manifest["docs"]["removed_ngram"],
                         "train": manifest["docs"]["train"], "val": manifest["docs"]["val"]}
        stats["bytes"] = {"in": int(bundle.table.nbytes.sum())}
        stats["tokens"] = dict(manifest["tokens"])
        stats["arms"] = {arm: {k: v for k, v in entry.items() if k != "per_seed"}
                         for arm, entry in manifest["arms"].items() if arm in arms}
        runs = {}
        began = time.monotonic()
        for seed in seeds:
            for arm in arms:
                run_dir = out / "runs" / f"{arm}.s{seed}"
                skipped = (run_dir / "result.json").is_file()
                t0 = time.monotonic()
                runs[(arm, seed)] = result = run_one(bundle, arm, seed, run_dir, config, preset, steps, progress)
                stats["runs"].append({
                    "arm": arm, "seed": seed, "status": "skipped" if skipped else "trained",
                    "seconds": round(time.monotonic() - t0, 6), "train_seconds": result.get("train_seconds"),
                    "steps": result.get("steps"), "tokens": result.get("tokens"),
                    "train_file_tokens": result.get("train_file_tokens"),
                    "tokens_per_second": (round(result["tokens"] / result["train_seconds"], 3)
                                          if result.get("train_seconds") else None),
                    "parameters": result.get("parameters"), "device": result.get("device")})
        stats["stages"]["runs_seconds"] = round(time.monotonic() - began, 6)
        from .ablation_report import summarise, write_report

        results = summarise(runs, bundle, config, preset, steps, seeds, command=command)
        undefined: list[str] = []
        D.finite_or_none(results, found=undefined)
        if undefined:  # written as null; say so rather than leave a bare NaN to be found later
            print(f"warning: {len(undefined)} figure(s) are undefined (too little data), written as null in "
                  f"results.json: {', '.join(undefined[:5])}{' ...' if len(undefined) > 5 else ''}; "
                  "use a larger input or --tokens", file=sys.stderr, flush=True)
        write_report(results, out)
    return results


# ---------------------------------------------------------------------------------------------
# settings and housekeeping


def _fingerprint(eval_dir: Path) -> dict:
    out = {}
    for name in (HUMANEVAL_FILE, MBPP_FILE):
        path = eval_dir / name
        if not path.is_file():
            raise InputError(f"{path}: no such file; --eval-dir must hold {HUMANEVAL_FILE} and {MBPP_FILE}")
        out[name] = sha256_file(path)
    return out


TOP_FILES = (SETTINGS, "results.json", "report.md", "report.html", "loss_curves.png")


def _is_ablation_file(out: Path, p: Path) -> bool:
    """Ours: a file of the layout above, in a folder that holds our ablate.json."""
    rel = p.relative_to(out)
    if rel.parts[0] in ("data", "runs"):
        return (out / SETTINGS).is_file()
    return len(rel.parts) == 1 and rel.name in TOP_FILES and (out / SETTINGS).is_file()


def _discard_stages(out: Path) -> None:
    """Delete every stage this folder cached (all ours: the folder was claimed); keep nothing stale."""
    for name in ("data", "runs"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in TOP_FILES:
        if name != SETTINGS:
            (out / name).unlink(missing_ok=True)


def _check_settings(out: Path, settings: dict) -> None:
    path = out / SETTINGS
    old = D.read_json(path)
    if old is not None and isinstance(old.get("data"), dict) and "input_fingerprints" not in old["data"]:
        # written before content fingerprints: sizes and row counts are all it can be held to
        old["data"]["input_fingerprints"] = settings["data"]["input_fingerprints"]
    if old is not None:
        for part in ("data", "runs"):
            if json.loads(json.dumps(old.get(part))) != json.loads(json.dumps(settings[part])):
                changed = sorted("inputs changed" if k == "input_fingerprints" else k
                                 for k in settings[part] if old.get(part, {}).get(k) != settings[part][k])
                if part == "data" and changed and set(changed) <= {"inputs", "inputs changed"}:
                    # The same command over rewritten inputs: every cached stage is stale, so redo them.
                    _discard_stages(out)
                    print(f"note: {out}: the inputs changed since the last run; data and runs redone",
                          file=sys.stderr, flush=True)
                    continue
                raise OutputError(
                    f"{out}: holds an ablation with other {part} settings ({', '.join(changed) or 'format'}); "
                    "rerun with the same options, or choose another --output folder"
                )
    D.write_json(path, settings)


# ---------------------------------------------------------------------------------------------
# data


class DataBundle:
    """The prepared data of an output folder: tokenizer, token files, counts."""

    def __init__(self, folder: Path, tokenizer, manifest: dict, offsets: np.ndarray, table: D.DocTable,
                 val_mask: np.ndarray, train_mask: np.ndarray):
        self.folder = folder
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.offsets = offsets
        self.table = table
        self.val_mask = val_mask
        self.train_mask = train_mask
        self.humaneval = []
        self.mbpp = []
        self.similarity = None  # max_similarity per document (prune.py)
        self.similarity_methods: list[str] = []
        self.taus: tuple[float, ...] = ()  # --prune-similar thresholds

    def train_file(self, arm: str, seed: int) -> Path:
        random = P.split_arm(arm)[0] == "random"
        return self.folder / (f"{arm}.s{seed}.train.bin" if random else f"{arm}.train.bin")

    def val_file(self, arm: str) -> Path:
        """Pruned twins (``filtered@0.8``) are scored on their arm's validation split."""
        return self.folder / f"{P.split_arm(arm)[0]}.val.bin"


def prepare_data(shards, folder: Path, config: AblateConfig, preset: Preset, eval_dir: Path,
                 progress: bool) -> DataBundle:
    folder.mkdir(parents=True, exist_ok=True)
    docs_path = folder / "docs.npz"
    if docs_path.is_file():
        table = D.DocTable.load(docs_path)
    else:
        log(progress, f"reading {len(shards)} shard(s); removing HumanEval/MBPP overlap")
        decontaminator = ExclusionSet.from_texts(contamination_texts(eval_dir))
        table = D.scan_corpus(shards, config.text_column, config.score_column, decontaminator, progress)
        table.save(docs_path)
    if not table.clean.any():
        raise InputError("no documents left after removing empty input and HumanEval/MBPP overlap")
    val_mask = D.split_validation(table, config.val_fraction, config.data_seed)
    train_mask = table.clean & ~val_mask

    tok_path = folder / "tokenizer.json"
    if tok_path.is_file():
        tokenizer = D.load_tokenizer(tok_path)
    else:
        log(progress, f"training a byte-level BPE of {preset.model.vocab_size:,} ids on the training documents")
        total = int(table.nbytes[train_mask].sum())
        rate = min(1.0, config.tokenizer_max_bytes / max(1, total))
        sample = train_mask & (np.random.default_rng([config.data_seed, 0xB9E]).random(len(table)) < rate)
        texts = (t for batch, _ in D.iter_texts(shards, config.text_column) for t in batch)
        chosen = (t for t, keep in zip(texts, sample) if keep)
        tokenizer = D.train_tokenizer(chosen, preset.model.vocab_size, tok_path)

    all_bin, offsets_path = folder / "all.bin", folder / "all.offsets.npy"
    if all_bin.is_file() and offsets_path.is_file():
        offsets = np.load(offsets_path, allow_pickle=False)
    else:
        offsets = D.tokenize_corpus(shards, config.text_column, table.clean, tokenizer, all_bin,
                                    offsets_path, progress)

    manifest_path = folder / "manifest.json"
    manifest = D.read_json(manifest_path)
    if manifest is None:
        manifest = write_manifest(manifest_path, config, table, offsets, train_mask, val_mask)

    bundle = DataBundle(folder, tokenizer, manifest, offsets, table, val_mask, train_mask)
    bundle.taus = tuple(config.prune_similar)
    bundle.similarity, bundle.similarity_methods = P.corpus_similarity(
        shards, folder, config.text_column, progress, eval_dir, config.similarity_from, config.similarity_methods)
    if len(bundle.similarity) != len(table):
        raise InputError(f"{folder / P.SIMILARITY}: holds {len(bundle.similarity)} documents, the corpus "
                         f"{len(table)}; delete it and rerun")
    P.add_pruned_arms(bundle, config, bundle.similarity)
    bundle.humaneval = load_humaneval(eval_dir)
    bundle.mbpp = load_mbpp(eval_dir)
    return bundle


def write_manifest(manifest_path: Path, config: AblateConfig, table, offsets, train_mask, val_mask) -> dict:
    """Choose each arm's documents (filtered, random validation, unfiltered), write their token
    files beside ``manifest_path`` and the manifest that counts them; returns the manifest."""
    folder = manifest_path.parent
    all_tokens = D.open_tokens(folder / "all.bin")
    tokens = np.diff(offsets)
    fil_train, fil_val, cutoff = D.filtered_docs(table, tokens, train_mask, val_mask,
                                                 config.effective_threshold(), config.top_fraction)
    if "filtered" in config.arms and fil_train.size == 0:
        raise InputError(f"no training document has {config.score_column} >= {cutoff:g}; "
                         "lower --threshold or use --top-fraction")
    val_docs = np.flatnonzero(val_mask)
    rnd_val = D.random_docs(val_docs, tokens, int(tokens[fil_val].sum()),
                            np.random.default_rng([config.data_seed, 0xA11]))
    arms = {
        "filtered": (fil_train, fil_val),
        "random": (None, rnd_val),
        "unfiltered": (np.flatnonzero(train_mask), val_docs),
    }
    manifest = {
        "docs": {
            "input": len(table), "clean": int(table.clean.sum()),
            "removed_exact": int((table.contamination == D.EXACT).sum()),
            "removed_ngram": int((table.contamination == D.NGRAM).sum()),
            "train": int(train_mask.sum()), "val": int(val_mask.sum()),
        },
        "tokens": {"all": int(offsets[-1]), "train": int(tokens[train_mask].sum()),
                   "val": int(tokens[val_mask].sum())},
        "score_cutoff": cutoff,
        "selection": ({"top_fraction": config.top_fraction} if config.top_fraction is not None
                      else {"threshold": cutoff}),
        "arms": {},
    }
    for arm, (train_docs, val_docs_arm) in arms.items():
        entry = {"val_docs": int(val_docs_arm.size),
                 "val_tokens": D.write_arm(all_tokens, offsets, val_docs_arm, folder / f"{arm}.val.bin")}
        if train_docs is not None:
            entry.update(train_docs=int(train_docs.size),
                         train_tokens=D.write_arm(all_tokens, offsets, train_docs, folder / f"{arm}.train.bin"))
        manifest["arms"][arm] = entry
    manifest["arms"]["random"]["train_target_tokens"] = manifest["arms"]["filtered"]["train_tokens"]
    manifest["arms"]["random"]["per_seed"] = {}
    D.write_json(manifest_path, manifest)
    return manifest


def random_train_file(bundle: DataBundle, seed: int, data_seed: int, arm: str = "random") -> Path:
    """The random arm's training documents for one seed: a fresh draw per seed, so the spread
    over seeds includes the luck of the draw as well as the luck of the initialisation.
    ``arm`` may be a pruned twin (``random@0.8``), drawn from the pruned pool."""
    path = bundle.train_file(arm, seed)
    per_seed = bundle.manifest["arms"][arm]["per_seed"]
    if path.is_file() and str(seed) in per_seed and (bundle.similarity is None or "similarity" in per_seed[str(seed)]):
        return path
    tokens = np.diff(bundle.offsets)
    docs = D.random_docs(P.random_pool(bundle, arm, bundle.similarity), tokens,
                         bundle.manifest["arms"][arm]["train_target_tokens"],
                         np.random.default_rng([data_seed, seed, 0xA11]))
    written = D.write_arm(D.open_tokens(bundle.folder / "all.bin"), bundle.offsets, docs, path)
    per_seed[str(seed)] = {"train_docs": int(docs.size), "train_tokens": written}
    if bundle.similarity is not None:
        per_seed[str(seed)]["similarity"] = P.distribution(bundle.similarity[docs], bundle.taus)
    D.write_json(bundle.folder / "manifest.json", bundle.manifest)
    return path


# ---------------------------------------------------------------------------------------------
# one (arm, seed)


def run_one(bundle: DataBundle, arm: str, seed: int, run_dir: Path, config: AblateConfig,
            preset: Preset, steps: int, progress: bool) -> dict:
    result_path = run_dir / "result.json"
    done = D.read_json(result_path)
    if done is not None:
        log(progress, f"{arm} seed {seed}: finished earlier, skipped")
        return done
    import torch

    from ..devices import resolve_device
    from .loop import train_gpt, window_starts, windows_loss
    from .metrics import encode_texts, evaluate_pass_at_k, sequences_loss

    run_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        # On a busy machine one thread per process can be several times faster than one per
        # core: OpenMP threads that wait for each other stall when any one is descheduled.
        torch.set_num_threads(config.threads)
    device = torch.device(resolve_device(config.device))
    base = P.split_arm(arm)[0]
    train_path = (random_train_file(bundle, seed, config.data_seed, arm) if base == "random"
                  else bundle.train_file(arm, seed))
    train_tokens = D.open_tokens(train_path)
    val_sets = {a: D.open_tokens(bundle.val_file(a)) for a in config.arms}
    model, info = train_gpt(preset.model, preset.loop, train_tokens, val_sets[base], steps, seed, run_dir,
                            device, compile=config.compile, progress=progress, desc=f"{arm} seed {seed}")
    ctx = preset.model.context
    n_windows = max(1, preset.eval_tokens // ctx)
    he_seqs = encode_texts(bundle.tokenizer, [p.reference for p in bundle.humaneval])
    mbpp_seqs = encode_texts(bundle.tokenizer, [p.reference for p in bundle.mbpp])
    result = {
        "arm": arm, "seed": seed, "device": str(device), "parameters": info["parameters"],
        "steps": info["steps"], "tokens": info["tokens"], "train_seconds": round(info["seconds"], 1),
        "train_file_tokens": int(train_tokens.size), "curve": info["curve"],
        "val_loss": {a: windows_loss(model, v, window_starts(v.size, ctx, n_windows), device)
                     for a, v in val_sets.items()},
        "humaneval_loss": sequences_loss(model, he_seqs, device),
        "mbpp_loss": sequences_loss(model, mbpp_seqs, device),
    }
    if config.pass_samples > 0:
        for name, problems in (("humaneval", bundle.humaneval), ("mbpp", bundle.mbpp)):
            chosen = problems[: config.pass_problems] if config.pass_problems else problems
            result[f"{name}_pass"] = evaluate_pass_at_k(
                model, bundle.tokenizer, chosen, config.pass_samples, config.max_new_tokens,
                config.temperature, config.exec_timeout, seed, device, progress,
                desc=f"{arm} seed {seed} {name} pass@k")
    result["bigram"] = bigram_baseline(bundle, train_path, val_sets, he_seqs, mbpp_seqs,
                                       preset.model.vocab_size, ctx, n_windows, info["tokens"])
    D.write_json(result_path, result)
    log(progress, f"{arm} seed {seed}: HumanEval loss {result['humaneval_loss']:.4f}, "
                  f"own validation loss {result['val_loss'][base]:.4f} ({result['train_seconds']:.0f} s)")
    return result


def bigram_baseline(bundle: DataBundle, train_path: Path, val_sets: dict, he_seqs, mbpp_seqs,
                    vocab_size: int, ctx: int, n_windows: int, budget: int) -> dict:
    """Losses of a count-based bigram that sees as many tokens as each GPT: ``budget`` tokens in
    random windows of the arm's training file (cached per training file)."""
    from .metrics import bigram_sequences_loss
    from .ngram import BigramModel
    from .loop import window_starts

    cache = bundle.folder / f"bigram.{train_path.name.removesuffix('.train.bin')}.json"
    cached = D.read_json(cache)
    if cached is not None and set(cached["val_loss"]) >= set(val_sets) and cached.get("tokens") == budget:
        return cached
    train = D.open_tokens(train_path)
    rng = np.random.default_rng(0)
    n = max(2, budget // (ctx + 1))
    starts = rng.integers(0, max(1, train.size - ctx - 1), size=n)
    windows = np.stack([train[s : s + ctx + 1] for s in starts])
    # Smoothing is tuned on 5% of the windows held out from the counts (not on a validation
    # split, which would flatter the bigram there), then the counts are refitted on all of them.
    cut = max(1, int(n * 0.95))
    beta = BigramModel(vocab_size).fit(windows[:cut]).tune(windows[cut:]).beta
    model = BigramModel(vocab_size, beta=beta).fit(windows)

    def windows_nll(tokens):
        # The same windows as the GPT is scored on, with one token of context each.
        starts = window_starts(tokens.size, ctx, n_windows)
        if starts.size == 0:
            return float("nan")
        rows = np.stack([tokens[s : s + ctx + 1] for s in starts])
        return model.nll(rows)

    out = {"beta": model.beta, "tokens": budget, "val_loss": {a: windows_nll(v) for a, v in val_sets.items()},
           "humaneval_loss": bigram_sequences_loss(model, he_seqs),
           "mbpp_loss": bigram_sequences_loss(model, mbpp_seqs)}
    D.write_json(cache, out)
    return out

