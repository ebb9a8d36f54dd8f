"""Issue 24 item 5: every engine on every store.

Before, ``--engine ray`` and ``--devices`` refused URL outputs ("local folders only so far"),
and Ray's skip path built its own output name, ignoring ``--output-format``. Now the local
engine, ``--devices`` worker processes and Ray actors run the same flow, with the same
per-shard leases and the same publish, into a local folder, s3:// (the moto server) or gs://
(the emulator); workers get the driver's ``--storage-options``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BOILERPLATE, GOOD_CODE, REPO, cli_env, write_shard
from gcsserver import _gcs_endpoint, gcs  # noqa: F401  (fixtures)
from s3server import _moto_endpoint, s3  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
HAS_RAY = importlib.util.find_spec("ray") is not None
TEXTS = [GOOD_CODE, BOILERPLATE, "import os\n", "for i in range(3):\n    print(i)\n", "x = 1\n"]


def corpus(folder, shards=3, rows=10):
    for k in range(shards):
        write_shard(folder / f"e{k}.parquet", [TEXTS[i % len(TEXTS)] + f"# {k}-{i}\n" for i in range(rows)],
                    row_group_size=4, id=pa.array([f"{k}-{i}" for i in range(rows)]))
    return folder


def same_scores(a: pa.Table, b: pa.Table) -> None:
    assert a.drop_columns(["edu_score"]).equals(b.drop_columns(["edu_score"]))
    assert a.schema.metadata == b.schema.metadata  # the run record
    np.testing.assert_allclose(a.column("edu_score").to_numpy(), b.column("edu_score").to_numpy(), atol=1e-4)


def keys(fs, prefix):
    return sorted(k.rsplit("/", 1)[-1] for k in fs.find(prefix))


def score(*args, env=None):
    return subprocess.run([sys.executable, "-m", "phifilter", "score", *map(str, args), "--device", "cpu", "-q"],
                          env=env or cli_env(), cwd=REPO, capture_output=True, text=True, timeout=900)


def test_devices_write_s3_exactly_once_and_a_rerun_skips(tmp_path, s3, bundled_model):
    from phifilter import score_shards

    src = corpus(tmp_path / "in")
    score_shards(src, tmp_path / "ref", model=bundled_model)  # the reference: one plain local run
    env = {**cli_env(), **s3.env}
    run = score(src, "-o", s3.url("out"), "--devices", "cpu,cpu", "--read-batch-rows", "4", env=env)
    assert run.returncode == 0, run.stderr
    assert keys(s3.fs, f"{s3.bucket}/out") == ["e0.parquet", "e1.parquet", "e2.parquet"]  # no lease, no temporary
    for k in range(3):
        with s3.fs.open(f"{s3.bucket}/out/e{k}.parquet", "rb") as f:
            same_scores(pq.read_table(tmp_path / "ref" / f"e{k}.parquet"), pq.read_table(f))
    again = subprocess.run([sys.executable, "-m", "phifilter", "score", str(src), "-o", s3.url("out"), "--devices",
                            "cpu,cpu", "--device", "cpu"], env=env, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0 and "0 scored, 3 already complete" in again.stdout, again.stdout + again.stderr


def test_devices_write_gcs_with_the_drivers_storage_options(tmp_path, gcs, bundled_model):
    from phifilter import score_shards

    src = corpus(tmp_path / "in", shards=2, rows=6)
    score_shards(src, tmp_path / "ref", model=bundled_model)  # the reference: one plain local run
    run = score(src, "-o", gcs.url("out"), "--devices", "cpu,cpu", *gcs.cli_options, env={**cli_env(), **gcs.env})
    assert run.returncode == 0, run.stderr
    assert keys(gcs.fs, f"{gcs.bucket}/out") == ["e0.parquet", "e1.parquet"]
    for k in range(2):
        with gcs.fs.open(f"{gcs.bucket}/out/e{k}.parquet", "rb") as f:
            same_scores(pq.read_table(tmp_path / "ref" / f"e{k}.parquet"), pq.read_table(f))


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'phifilter[ray]')")
def test_ray_reads_and_writes_s3_and_its_skip_path_honours_the_output_format(tmp_path, s3, bundled_model):
    from phifilter import score_shards

    src = corpus(tmp_path / "in")
    score_shards(src, tmp_path / "ref", model=bundled_model)
    for k in range(3):
        s3.fs.put(str(src / f"e{k}.parquet"), f"{s3.bucket}/in/e{k}.parquet")
    done = score_shards(s3.url("in"), s3.url("out"), engine="ray", num_threads=1, read_batch_rows=4)
    assert done.shards_scored == 3
    assert keys(s3.fs, f"{s3.bucket}/out") == ["e0.parquet", "e1.parquet", "e2.parquet"]
    for k in range(3):
        with s3.fs.open(f"{s3.bucket}/out/e{k}.parquet", "rb") as f:
            same_scores(pq.read_table(tmp_path / "ref" / f"e{k}.parquet"), pq.read_table(f))
    # --output-format jsonl: the driver's skip path names outputs like the flow (it looked for .parquet)
    first = score_shards(src, tmp_path / "jl", model=bundled_model, output_format="jsonl")
    assert first.shards_scored == 3 and sorted(p.name for p in (tmp_path / "jl").iterdir()
                                               if not p.name.startswith(".")) == ["e0.jsonl", "e1.jsonl", "e2.jsonl"]
    again = score_shards(src, tmp_path / "jl", engine="ray", num_threads=1, output_format="jsonl")
    assert (again.shards_skipped, again.shards_scored) == (3, 0)
