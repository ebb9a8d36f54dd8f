"""Read throughput and peak memory of each shard format: Parquet vs JSON Lines (plain, .gz, .zst).

Writes the same synthetic code-like rows (``id``, ``text`` of about 2 KB, a nested ``meta``
struct) as one shard in each format at two sizes (``--small-mb`` and ``--large-mb`` of JSON
text), then reads every shard to the end through phifilter's reader
(:func:`phifilter.corpus.open_parquet` + :func:`phifilter.corpus.iter_batches`, 2048-row batches,
the text column turned into Python strings as the scorer does), each in a fresh subprocess.

Reported per shard: file size, seconds to open (Parquet: the footer; JSON Lines: the first
pass that counts rows and infers the schema), seconds to read, throughput in MB/s of
uncompressed JSON text and rows/s over open + read, and the subprocess's peak RSS (VmHWM)
minus its peak after imports. Flat memory means the large shard's peak is about the small one's.

Parquet is written with 2048-row row groups, as `phifilter score` writes its outputs; a Parquet
reader holds one row group at a time, so a file written with huge row groups needs more.

    python benchmarks/read_formats.py [--small-mb 50] [--large-mb 500] [--out benchmarks/read_formats.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

READER = r"""
import json, sys, time
import pyarrow  # imported before the baseline, as in any phifilter command
from phifilter.corpus import iter_batches, open_parquet, texts_from_array

def hwm_kb():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

base = hwm_kb()
t0 = time.perf_counter()
pf = open_parquet(sys.argv[1])
t1 = time.perf_counter()
rows = chars = 0
for batch in iter_batches(sys.argv[1], 2048, parquet_file=pf):
    texts = texts_from_array(batch.column("text"))
    rows += batch.num_rows
    chars += sum(map(len, texts))
t2 = time.perf_counter()
peak = hwm_kb()
print(json.dumps({"rows": rows, "chars": chars, "open_s": t1 - t0, "read_s": t2 - t1,
                  "base_mb": base / 1024, "peak_mb": peak / 1024}))
"""

WORDS = ("def class return self import for in while if else elif try except with as yield lambda "
         "value items index result total count data path name list dict print range len append "
         "the of a to is and that this function returns computes sorted search tree node").split()


def make_rows(target_bytes: int, seed: int = 0):
    import random

    rng = random.Random(seed)
    size, i = 0, 0
    while size < target_bytes:
        lines = []
        for _ in range(rng.randint(20, 60)):
            indent = "    " * rng.randint(0, 3)
            lines.append(indent + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))))
        row = {"id": f"doc-{i}", "text": "\n".join(lines) + f"\n# {rng.random()}\n",
               "meta": {"repo": f"org/repo-{rng.randint(0, 999)}", "stars": rng.randint(0, 5000),
                        "langs": ["python", "ünïcode"][: rng.randint(1, 2)]}}
        line = json.dumps(row, ensure_ascii=False) + "\n"
        size += len(line.encode())
        i += 1
        yield line


def write_shards(folder: Path, label: str, megabytes: int) -> dict[str, Path]:
    import gzip

    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq
    import zstandard

    plain = folder / f"{label}.jsonl"
    with open(plain, "w", encoding="utf-8") as f:
        for line in make_rows(megabytes * 1_000_000):
            f.write(line)
    paths = {"jsonl": plain, "jsonl.gz": folder / f"{label}.jsonl.gz", "jsonl.zst": folder / f"{label}.jsonl.zst",
             "parquet": folder / f"{label}.parquet"}
    with open(plain, "rb") as src, gzip.open(paths["jsonl.gz"], "wb", compresslevel=6) as dst:
        while chunk := src.read(1 << 22):
            dst.write(chunk)
    with open(plain, "rb") as src, open(paths["jsonl.zst"], "wb") as raw:
        zstandard.ZstdCompressor(level=3).copy_stream(src, raw)
    reader = pj.open_json(plain, read_options=pj.ReadOptions(block_size=1 << 24))
    writer = None
    for batch in reader:
        if writer is None:
            writer = pq.ParquetWriter(paths["parquet"], batch.schema, compression="zstd")
        writer.write_table(pa.Table.from_batches([batch]), row_group_size=2048)
    writer.close()
    return paths


def measure(path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", READER, str(path)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-mb", type=int, default=50)
    ap.add_argument("--large-mb", type=int, default=500)
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    ap.add_argument("--workdir", type=Path, default=None, help="where the shards go (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = []
        for label, mb in (("small", args.small_mb), ("large", args.large_mb)):
            t = time.perf_counter()
            paths = write_shards(Path(tmp), label, mb)
            print(f"wrote the {mb} MB shards in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            text_mb = paths["jsonl"].stat().st_size / 1e6
            for fmt, path in paths.items():
                r = measure(path)
                total = r["open_s"] + r["read_s"]
                results.append({"shard": f"{mb} MB", "format": fmt, "file_mb": path.stat().st_size / 1e6,
                                "rows": r["rows"], "open_s": r["open_s"], "read_s": r["read_s"],
                                "mb_per_s": text_mb / total, "rows_per_s": r["rows"] / total,
                                "rss_mb": r["peak_mb"] - r["base_mb"], "peak_mb": r["peak_mb"]})
                print(json.dumps(results[-1]), file=sys.stderr)
    lines = [
        f"Read throughput and peak memory per format (`python benchmarks/read_formats.py --small-mb {args.small_mb} "
        f"--large-mb {args.large_mb}`; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"shared with other jobs; MB/s is uncompressed JSON text per second over open + read; RSS growth is the "
        f"reader's peak RSS minus its RSS after imports).",
        "",
        "| shard | format | file MB | rows | open s | read s | MB/s | rows/s | RSS growth MB | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['shard']} | {r['format']} | {r['file_mb']:.1f} | {r['rows']:,} | {r['open_s']:.2f} | "
                     f"{r['read_s']:.2f} | {r['mb_per_s']:.0f} | {r['rows_per_s']:,.0f} | {r['rss_mb']:.0f} | {r['peak_mb']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
