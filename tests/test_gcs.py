"""gs:// against a local GCS emulator (gcp-storage-emulator on 127.0.0.1, gcsfs as the client):
scoring and labelling publish whole objects there, reruns skip or ask nothing, and no lock
object or temporary is left. (GCS gets the plain-write lock, docs/reliability.md.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import BOILERPLATE, GOOD_CODE, write_shard
from gcsserver import gcs  # noqa: F401  (fixture)
from gcsserver import _gcs_endpoint  # noqa: F401  (fixture)
from phifilter.label import StandinServer, heuristic_rating

ROOT = Path(__file__).resolve().parents[1]


def _keys(gcs, prefix: str) -> list[str]:
    return sorted(p.split("/", 1)[1] for p in gcs.fs.find(f"{gcs.bucket}/{prefix}"))


def test_gcs_score_equals_local_and_rerun_skips(tmp_path, gcs, bundled_model):
    from phifilter.scoring import score_shards

    texts = [GOOD_CODE, BOILERPLATE, "import os\n", "for i in range(3):\n    print(i)\n"]
    for k in range(2):
        write_shard(tmp_path / "in" / f"s{k}.parquet", [t + f"# {k}\n" for t in texts], row_group_size=2)
        gcs.fs.put(str(tmp_path / "in" / f"s{k}.parquet"), f"{gcs.bucket}/corpus/s{k}.parquet")
    score_shards(tmp_path / "in", tmp_path / "ref", model=bundled_model)
    stats = tmp_path / "stats.json"
    done = score_shards(gcs.url("corpus"), gcs.url("scored"), model=bundled_model, stats_json=gcs.url("stats.json"))
    assert done.shards_scored == 2
    assert _keys(gcs, "scored") == ["scored/s0.parquet", "scored/s1.parquet"]  # lock released, no temporaries
    for k in range(2):
        with gcs.fs.open(f"{gcs.bucket}/scored/s{k}.parquet", "rb") as f:
            assert pq.read_table(f).equals(pq.read_table(tmp_path / "ref" / f"s{k}.parquet"))
    stats.write_bytes(gcs.fs.cat(f"{gcs.bucket}/stats.json"))
    assert json.loads(stats.read_text())["rows"]["scored"] == 2 * len(texts)
    again = score_shards(gcs.url("corpus"), gcs.url("scored"), model=bundled_model)
    assert again.shards_skipped == 2 and again.shards_scored == 0


def test_gcs_label_output_and_cache_rerun_asks_nothing(tmp_path, gcs):
    docs = [f"def f{i}(x):\n    # add {i}\n    return x + {i}\n" for i in range(8)]
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(8)], "text": docs}), tmp_path / "seed.parquet")
    gcs.fs.put(str(tmp_path / "seed.parquet"), f"{gcs.bucket}/in/seed.parquet")
    env = dict(os.environ, **gcs.env, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PHIFILTER_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("OPENAI_API_KEY", None)
    with StandinServer() as server:
        cmd = [sys.executable, "-m", "phifilter", "label", gcs.url("in/seed.parquet"), "-o", gcs.url("out/labels.parquet"),
               "--base-url", server.url, "--model", server.model, "--rubric", "code", "-q", *gcs.cli_options,
               "--stats-json", gcs.url("out/stats.json")]
        first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        assert server.count() == len(docs)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        assert server.count() == len(docs)  # every answer came from the published cache
    assert _keys(gcs, "out") == ["out/labels.cache.sqlite", "out/labels.parquet", "out/stats.json"]
    with gcs.fs.open(f"{gcs.bucket}/out/labels.parquet", "rb") as f:
        assert pq.read_table(f).column("llm_score").to_pylist() == [heuristic_rating(d)[0] for d in docs]
    stats = json.loads(gcs.fs.cat(f"{gcs.bucket}/out/stats.json"))
    assert stats["rows"]["cached"] == len(docs) and stats["rows"]["answered"] == 0
