"""Rebuild examples/shards/example-00000.parquet, the shard the README's first command scores.

Half textbook-style Python from TheAlgorithms (MIT, ../shared/data/corpora/thealgorithms.parquet),
half modules of the CPython standard library of the running interpreter (PSF-2.0): a mix of
high and low educational value. Deterministic for a given Python version.

    python examples/make_example.py
"""

import random
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "corpora" / "thealgorithms.parquet"
N_EACH = 60
MAX_CHARS = 6000

rng = random.Random(0)
algo = pq.read_table(SHARED).to_pylist()
algo = [r for r in algo if 300 < len(r["text"]) <= MAX_CHARS]
rows = [
    {"id": f"thealgorithms/{r['path']}", "text": r["text"], "source": "thealgorithms", "license": "MIT"}
    for r in rng.sample(sorted(algo, key=lambda r: r["path"]), N_EACH)
]
stdlib = Path(sysconfig.get_paths()["stdlib"])
files = sorted(
    p for p in stdlib.rglob("*.py")
    if "site-packages" not in p.parts and "test" not in p.parts and 300 < p.stat().st_size <= MAX_CHARS
)
for p in rng.sample(files, N_EACH):
    rows.append({"id": f"stdlib/{p.relative_to(stdlib)}", "text": p.read_text(errors="replace"),
                 "source": "cpython-stdlib", "license": "PSF-2.0"})
rng.shuffle(rows)
out = HERE / "shards" / "example-00000.parquet"
out.parent.mkdir(parents=True, exist_ok=True)
pq.write_table(pa.Table.from_pylist(rows), out, compression="zstd")
print(f"wrote {out} ({len(rows)} rows)")
