"""Demo: SIGKILL a real `phifilter label` run mid-way, resume it, count requests at the server.

Runs against phifilter's loopback chat-completions stand-in (phifilter.label.StandinServer),
scripted to answer every request after a short delay; it records which document each request
was for. Prints how many requests each phase sent, how many answers survived the kill in the cache,
and how many documents were paid for twice (at most the requests in flight at the kill).

    .venv/bin/python benchmarks/label_kill_resume.py [--docs 200] [--concurrency 8] [--kill-after 80]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from phifilter.label.standin import Canned, StandinServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--kill-after", type=int, default=80, help="requests received before the SIGKILL")
    ap.add_argument("--delay", type=float, default=0.05, help="seconds the server takes per reply")
    args = ap.parse_args()

    server = StandinServer().start()
    server.script = lambda doc, body: Canned(delay=args.delay)
    work = Path(tempfile.mkdtemp(prefix="phifilter-kill-resume-"))
    docs = [f"def step_{i}(n):\n    # advance the counter by {i}\n    return n + {i}\n" for i in range(args.docs)]
    src, out, cache = work / "seed.parquet", work / "labels.parquet", work / "labels.cache.sqlite"
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(docs))], "text": docs}), src)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENAI_API_KEY="sk-demo-not-a-real-key")
    cmd = [sys.executable, "-m", "phifilter", "label", str(src), "-o", str(out), "--base-url", server.url,
           "--model", "demo-model", "--concurrency", str(args.concurrency), "-q"]
    print("$", " ".join(cmd[1:]).replace(str(work), "$WORK"))

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while server.count() < args.kill_after:
        if proc.poll() is not None:
            sys.exit(f"the run ended before the kill: {proc.stderr.read().decode()}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = server.count()
    with sqlite3.connect(cache) as db:
        cached = {r[0] for r in db.execute("SELECT doc_sha FROM answers")}
    print(f"run 1: SIGKILL after the server had received {first} requests; exit status {proc.returncode}; "
          f"{len(cached)} answers in the cache; output written: {out.exists()}")

    t0 = time.monotonic()
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    second = server.count() - first
    asked_again = [r.doc for r in server.requests[first:]]
    per_doc = server.per_doc()
    twice = sum(1 for c in per_doc.values() if c > 1)
    cached_asked_again = sum(1 for d in asked_again if hashlib.sha256(d.encode()).hexdigest() in cached)
    rows = pq.read_table(out).to_pylist() if out.exists() else []
    print(f"run 2 (same command): exit status {resumed.returncode}; sent {second} requests in "
          f"{time.monotonic() - t0:.1f}s; output rows {len(rows)}, labelled {sum(r['llm_model'] is not None for r in rows)}")
    print(f"total requests {server.count()} for {len(docs)} documents; documents asked twice: {twice} "
          f"(in flight at the kill; --concurrency {args.concurrency}); cached answers asked again: {cached_asked_again}")
    server.stop()


if __name__ == "__main__":
    main()
