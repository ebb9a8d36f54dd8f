"""Peak memory of `phifilter score`: bounded by the batch, not by the shard or document size.

Runs `phifilter score` in a fresh subprocess per case and reads that process's own peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss`` at exit, so short spikes are counted):

* ``1x``: one shard of N ordinary documents;
* ``8x``: one shard of 8N of the same documents (8 times the shard size);
* ``10MB-docs``: a shard of a few 10 MB documents (plus ordinary ones).

It prints each peak, the growth over a `--help`-sized baseline (Python + torch + model), and
the ratios. Memory bounded by batch size means 8x/1x stays close to 1 and the 10 MB documents
cost about their own size per batch, not a multiple of it.

    .venv/bin/python benchmarks/memory.py [--rows 2000] [--max-length 32] [--big-docs 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WRAPPER = """
import resource, sys
from phifilter.cli import main
try:
    main(sys.argv[2:], standalone_mode=False)
finally:
    with open(sys.argv[1], "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""

DOC = '''def moving_average(values, window):
    """Mean of each run of `window` consecutive values (a simple low-pass filter)."""
    if window <= 0:
        raise ValueError("window must be positive")
    total = sum(values[:window])
    out = [total / window]
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        out.append(total / window)
    return out
'''


def peak_rss_mib(args: list[str], work: Path) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of `phifilter ARGS` in a fresh process."""
    report = work / "rss.txt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", WRAPPER, str(report), *args], check=True, env=env, cwd=ROOT)
    return int(report.read_text()) / 1024, time.perf_counter() - start  # ru_maxrss is KiB on Linux


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000, help="documents in the 1x shard")
    ap.add_argument("--max-length", type=int, default=32, help="tokens per document (small keeps the run short)")
    ap.add_argument("--big-docs", type=int, default=4, help="10 MB documents in the big-document shard")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--read-batch-rows", type=int, default=256)
    ap.add_argument("--cases", default="1x,8x,10MB-docs", help="comma-separated subset of the cases")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="phifilter-memory-"))
    docs = [DOC + f"# variant {i}\n" for i in range(args.rows)]
    cases = {
        "1x": docs,
        "8x": docs * 8,
        "10MB-docs": [(DOC * 30_000)[: 10 * 1024 * 1024] for _ in range(args.big_docs)] + docs[:100],
    }
    common = ["--device", "cpu", "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
              "--read-batch-rows", str(args.read_batch_rows), "-q"]
    baseline, _ = peak_rss_mib(["info"], work)
    print(f"baseline (phifilter info, no model): {baseline:,.0f} MiB")
    results = {}
    for name, texts in cases.items():
        if name not in args.cases.split(","):
            continue
        src = work / name / "shard.parquet"
        src.parent.mkdir()
        pq.write_table(pa.table({"text": texts}), src, row_group_size=args.read_batch_rows)
        mib = src.stat().st_size / 2**20
        raw = sum(len(t) for t in texts) / 2**20
        peak, secs = peak_rss_mib(["score", str(src), "-o", str(work / f"{name}-out"), *common], work)
        results[name] = peak
        print(f"{name:>10}: {len(texts):>6,} docs, {raw:8.1f} MiB of text ({mib:.1f} MiB on disk): "
              f"peak RSS {peak:,.0f} MiB ({secs:.0f} s)")
    if "1x" in results and "8x" in results:
        print(f"ratio 8x / 1x peak RSS:        {results['8x'] / results['1x']:.3f}  (shard 8 times larger)")
    if "1x" in results and "10MB-docs" in results:
        print(f"ratio 10MB-docs / 1x peak RSS: {results['10MB-docs'] / results['1x']:.3f}  "
              f"({args.big_docs} documents of 10 MiB in one read batch)")
        extra = results["10MB-docs"] - results["1x"]
        print(f"extra memory for the 10 MB documents: {extra:,.0f} MiB for {10 * args.big_docs} MiB of text in the batch")


if __name__ == "__main__":
    main()
