"""Several scorers in one pass: docs/s of `phifilter score` with our default alone and with three
scorers together (`--model NAME=SPEC` x 3), on the same shards, in one run.

Scorers of the three-scorer pass, the two foreign ones built as the tests build them
(tests/tinymodels.py):
  edu_score  the bundled default (fastText + MiniLM cascade), as in the one-scorer pass
  fw         a Hugging Face sequence-classification folder: a random-weight 2-layer BERT (hidden 32)
             with a one-output regression head, saved with save_pretrained (safetensors), max
             length 512 (the FineWeb-Edu classifier's style, far smaller: it measures the pass's
             overhead per scorer, not a 110M model's cost); its int score goes to fw_int_score
  dclm       a fastText .bin trained on the fly, scored for one label: fasttext:...#hq (the
             DCLM style: one line, whitespace collapsed)

Both passes read the same shards (examples/shards, or --docs N documents built like
benchmarks/throughput.py's from ../shared), alternate for --repeats rounds, and the best round
of each is reported (docs/s, wall clock), with the CPU seconds of each pass (every thread of
this process: less swayed by other work on the machine than the wall clock) and the load
average before, after each pass and after. A third arm scores the default through
``-m edu_score=DIR`` alone, so the cost of the several-scorer path itself shows apart from the
cost of the two extra scorers.

    nice -n 10 .venv/bin/python benchmarks/multi_scorer.py --docs 600 --repeats 3 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))


def one_pass(shards: Path, out: Path, model) -> dict:
    from phifilter.scoring import score_shards

    import resource

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    summary = score_shards(shards, out, model=model, device="cpu")
    seconds = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)  # every thread of this process
    rows = summary.rows_scored
    return {"rows": rows, "seconds": round(seconds, 3), "docs_per_s": round(rows / seconds, 2),
            "cpu_s": round(cpu, 2), "cpu_ms_per_doc": round(1000 * cpu / rows, 2),
            "load_1min_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=0, help="build N documents (default: examples/shards)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    from phifilter.classifier import default_model_path

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="phifilter-multi-") as tmp:
        tmp = Path(tmp)
        if args.docs:
            from throughput import make_documents, write_shards

            shards = tmp / "in"
            write_shards(shards, make_documents(args.docs), 2)
        else:
            shards = ROOT / "examples" / "shards"
        from tinymodels import build_bert, train_fasttext

        hf = build_bert(tmp / "fw")
        ft = train_fasttext(tmp / "dclm.bin")
        three = {"edu_score": str(default_model_path()), "fw": str(hf), "dclm": f"fasttext:{ft}#hq"}
        arms = {"default alone": None, "default as -m edu_score=DIR": {"edu_score": three["edu_score"]},
                "three scorers": three}
        results = {name: [] for name in arms}
        for r in range(args.repeats):
            for name, model in arms.items():
                results[name].append(one_pass(shards, tmp / f"out-{name.replace(' ', '-')}-{r}", model))
                print(f"round {r + 1} {name}: {results[name][-1]}", flush=True)
    load_after = os.getloadavg()
    best = {name: max(rs, key=lambda x: x["docs_per_s"]) for name, rs in results.items()}
    report = {"shards": str(shards) if not args.docs else f"{args.docs} built documents, 2 shards",
              "rounds": results, "best": best,
              "three_vs_default": round(best["three scorers"]["docs_per_s"] / best["default alone"]["docs_per_s"], 3),
              "three_vs_default_cpu": round(min(r["cpu_s"] for r in results["three scorers"])
                                            / min(r["cpu_s"] for r in results["default alone"]), 3),
              "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
              "cpus": os.cpu_count(), "nice": os.nice(0)}
    print(json.dumps({k: report[k] for k in ("best", "three_vs_default", "three_vs_default_cpu",
                                         "load_before", "load_after")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
