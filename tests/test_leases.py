"""Issue 24 item 3: leases per output shard, not per run.

Before: a full run took ``.phifilter.lock``, a task ``.phifilter.lock.task-I-of-N``; they never
excluded each other yet shared ``.<shard>.partial/``. ``score --task-index 0 --num-tasks 2``
beside ``--task-index 0 --num-tasks 3`` published a shard with 272 of 300 rows and exited 0,
while the other run failed on a vanished chunk. Now every shard is written under its own
lease: a run that finds a shard leased by a live run leaves it to that run and says so; one
that loses its lease publishes nothing of that shard; only a lease holder removes a shard's
temporaries; chunk row counts are checked before a shard is assembled; ``status`` reads leases.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BOILERPLATE, GOOD_CODE, REPO, cli_env, write_shard
from s3server import _moto_endpoint, s3  # noqa: F401  (fixtures)
from phifilter import score_shards
from phifilter.corpus import PartialShard, ShardWriter
from phifilter.errors import OutputError
from phifilter.leases import Leased, ShardLease, lease_path_for, live_holder
from phifilter.scoring.status import scoring_status

PIECES = [GOOD_CODE, BOILERPLATE, "import os\n", "for i in range(3):\n    print(i)\n", "x = 1\n"]


class LengthModel:
    threshold = 0.5

    def scoring_identity(self):
        return {"model": "length", "version": 1}

    def scoring_stages(self, tensor_forest=None):
        def head(batch):
            batch.scores = np.array([min(len(t) / 100.0, 1.0) for t in batch.texts], np.float32)
            return batch

        return [("head", head)]


def corpus(folder: Path, sizes=(300, 16, 12), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for k, rows in enumerate(sizes):
        texts = ["\n".join(rng.choice(PIECES, 2)) + f"\n# {k}-{i}" for i in range(rows)]
        write_shard(folder / f"part-{k}.parquet", texts, row_group_size=8, id=pa.array([f"{k}-{i}" for i in range(rows)]))
    return folder


def hidden(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob(".*"))


def cmd(src, out, *extra) -> list[str]:
    return [sys.executable, "-m", "phifilter", "score", str(src), "-o", str(out), "--read-batch-rows", "8",
            "--device", "cpu", "-q", *map(str, extra)]


def wait_for(check, proc, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_live_lease_leaves_the_shard_to_its_holder_and_the_run_says_so(tmp_path):
    src = corpus(tmp_path / "in", sizes=(20, 6))
    out = tmp_path / "out"
    lease = ShardLease(out / "part-0.parquet")
    lease.acquire()  # another writer (this test) holds part-0
    try:
        # its temporaries must survive a run beside it
        partial = out / ".part-0.parquet.partial"
        partial.mkdir(parents=True)
        (partial / ".000000.parquet.tmp-1").write_bytes(b"live writer's")
        summary = score_shards(src, out, model=LengthModel(), read_batch_rows=4)
        assert [o.name for o in summary.outcomes if o.status == "leased"] == ["part-0.parquet"]
        assert summary.shards_scored == 1 and not (out / "part-0.parquet").exists()
        assert f"left to another run: part-0.parquet (pid {os.getpid()}" in str(summary)
        assert (partial / ".000000.parquet.tmp-1").read_bytes() == b"live writer's"
        shown = scoring_status(out, [src])
        assert shown.running == [f"part-0.parquet (pid {os.getpid()} on {os.uname().nodename})"]
        assert "writing now: part-0.parquet" in str(shown)
    finally:
        lease.release()
    assert not lease_path_for(out / "part-0.parquet").exists()
    again = score_shards(src, out, model=LengthModel(), read_batch_rows=4)
    assert (again.shards_scored, again.shards_skipped) == (1, 1)
    assert hidden(out) == [] and scoring_status(out, [src]).complete


def test_dead_leases_and_temporaries_of_a_killed_run_are_taken_over_and_removed(tmp_path):
    src = corpus(tmp_path / "in", sizes=(20, 6))
    out = tmp_path / "out"
    out.mkdir()
    dead = {"host": os.uname().nodename, "pid": 2 ** 22 + 12345}  # no such process
    (out / ".part-0.parquet.lease").write_text(json.dumps(dead))
    (out / ".part-0.parquet.tmp-4194305").write_bytes(b"half")
    (out / ".part-0.parquet.partial").mkdir()
    (out / ".part-0.parquet.partial" / ".000003.parquet.tmp-4194305").write_bytes(b"half")
    assert live_holder(out / ".part-0.parquet.lease") is None
    assert scoring_status(out, [src]).running == []  # a dead lease is not a writer
    summary = score_shards(src, out, model=LengthModel(), read_batch_rows=4)
    assert summary.shards_scored == 2
    assert hidden(out) == []
    # a finished shard with a dead lease beside it (killed after the rename): tidied on the rerun
    (out / ".part-1.parquet.lease").write_text(json.dumps(dead))
    again = score_shards(src, out, model=LengthModel(), read_batch_rows=4)
    assert again.shards_skipped == 2 and hidden(out) == []


def test_chunk_row_counts_are_checked_before_a_shard_is_assembled(tmp_path):
    schema = pa.schema([("text", pa.string())])
    out = tmp_path / "out" / "a.parquet"
    part = PartialShard(out, schema, key={"k": 1}).__enter__()
    part.write_batch(pa.RecordBatch.from_pylist([{"text": "a"}, {"text": "b"}], schema=schema))
    part.write_batch(pa.RecordBatch.from_pylist([{"text": "c"}, {"text": "d"}], schema=schema))
    # another writer replaced a chunk behind this one's back (what shared .partial/ folders did)
    pq.write_table(pa.table({"text": ["x"]}), part.folder / "000001.parquet")
    with pytest.raises(OutputError, match="000001.parquet has 1 rows, its manifest says 2; nothing was published"):
        part.__exit__(None, None, None)
    assert not out.exists() and not part.folder.exists()


def test_overlapping_tasks_of_different_partitions_never_write_one_shard_at_once(tmp_path):
    """The issue's reproduction, locally: task 0/2 beside task 0/3 (both own part-0)."""
    src = corpus(tmp_path / "in")
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(cmd(src, ref), env=cli_env(), cwd=REPO, check=True, capture_output=True)
    first = subprocess.Popen(cmd(src, out, "--task-index", 0, "--num-tasks", 2), env=cli_env(), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = out / ".part-0.parquet.partial" / "manifest.json"
    wait_for(manifest.exists, first)
    first.send_signal(signal.SIGSTOP)  # mid-shard, holding part-0's lease
    try:
        second = subprocess.run(cmd(src, out, "--task-index", 0, "--num-tasks", 3), env=cli_env(), cwd=REPO,
                                capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    first_out, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second.stderr
    assert "left to another run: part-0.parquet (pid %d" % first.pid in second.stdout + second.stderr
    for k in range(3):
        name = f"part-{k}.parquet"
        if (out / name).exists():
            assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert (out / "part-0.parquet").exists()
    assert hidden(out) == []


def test_overlapping_tasks_on_s3_never_publish_a_short_shard(tmp_path, s3):
    """The issue's reproduction on the moto server: before, part-0 had 272 of 300 rows, exit 0."""
    src = corpus(tmp_path / "in")
    ref = tmp_path / "ref"
    env = {**cli_env(), **s3.env}
    subprocess.run(cmd(src, ref), env=env, cwd=REPO, check=True, capture_output=True)
    out = s3.url("out")
    first = subprocess.Popen(cmd(src, out, "--task-index", 0, "--num-tasks", 2), env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: s3.fs.exists(f"{s3.bucket}/out/.part-0.parquet.partial/manifest.json"), first)
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run(cmd(src, out, "--task-index", 0, "--num-tasks", 3), env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second.stderr
    assert "left to another run: part-0.parquet" in second.stdout + second.stderr
    assert s3.fs.cat_file(f"{s3.bucket}/out/part-0.parquet") == (ref / "part-0.parquet").read_bytes()
    assert [k for k in s3.fs.find(f"{s3.bucket}/out") if k.rsplit("/", 1)[-1].startswith(".")] == []


def test_a_run_that_lost_its_lease_publishes_nothing_of_that_shard(s3):
    final = s3.url("out/a.parquet")
    lease = ShardLease(final)
    lease.acquire()
    key = f"{s3.bucket}/out/.a.parquet.lease"
    other = {"host": "elsewhere", "pid": 1, "token": "0" * 16, "expires": time.time() + 600}
    s3.fs.pipe(key, json.dumps(other).encode())  # taken over (as after an expiry) by another run
    schema = pa.schema([("text", pa.string())])
    with pytest.raises(OutputError, match="lost its lease on the shard to another run; nothing of it was published"):
        with ShardWriter(final, schema) as w:
            w.write_batch(pa.RecordBatch.from_pylist([{"text": "a"}], schema=schema))
    assert not s3.fs.exists(f"{s3.bucket}/out/a.parquet")
    assert [k for k in s3.fs.find(f"{s3.bucket}/out") if ".tmp-" in k] == []
    lease.release()
    assert json.loads(s3.fs.cat_file(key))["host"] == "elsewhere"  # the winner's lease is left alone
    with pytest.raises(Leased):
        ShardLease(final).acquire()


def test_a_dead_lease_object_on_a_store_is_taken_over(tmp_path, s3):
    src = corpus(tmp_path / "in", sizes=(6,))
    dead = {"host": os.uname().nodename, "pid": 2 ** 22 + 12345, "token": "1" * 16, "expires": time.time() + 600}
    s3.fs.pipe(f"{s3.bucket}/out/.part-0.parquet.lease", json.dumps(dead).encode())
    assert scoring_status(s3.url("out"), [src]).running == []
    summary = score_shards(src, s3.url("out"), model=LengthModel())
    assert summary.shards_scored == 1
    assert [k.rsplit("/", 1)[-1] for k in s3.fs.find(f"{s3.bucket}/out")] == ["part-0.parquet"]
