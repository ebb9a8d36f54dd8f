"""Issue 24 items 2 and 3: filter and embed are shard jobs (phifilter.shardjob), under per-shard leases.

Before, each took a folder-wide ``.phifilter.lock``: a second run on the same output failed
outright. Now two runs share the output: each shard is written under its lease by exactly one
of them; a run that finds a shard leased by a live run leaves it to that run and says so
(exit 0), except where a shard's rows depend on the shards before it (``--top-fraction``,
``--token-budget``): that run stops there with one ``Error:`` line and writes nothing more.
Every test here runs two real processes; the first is paused (SIGSTOP) while it holds a lease.
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

from conftest import REPO, cli_env, write_shard
from phifilter import filter_shards
from phifilter.leases import live_holder
from phifilter.provenance import read_record


def scored_corpus(folder: Path, shards: int, rows: int) -> Path:
    rng = np.random.default_rng(3)
    for k in range(shards):
        scores = rng.random(rows).astype(np.float32)
        scores[: rows // 4] = 0.5  # ties at the boundary make the top-fraction quota matter
        write_shard(folder / f"s{k:03d}.parquet", [f"doc {k}-{i} " + "x" * (i % 50) for i in range(rows)],
                    edu_score=pa.array(scores, pa.float32()), id=pa.array([f"{k}-{i}" for i in range(rows)]))
    return folder


def phifilter(*args) -> list[str]:
    return [sys.executable, "-m", "phifilter", *map(str, args)]


def pause_holding_a_lease(proc: subprocess.Popen, out: Path, timeout: float = 300.0) -> str:
    """SIGSTOP ``proc`` at a moment it holds a shard's lease; the leased shard's name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the first run ended before it could be paused holding a lease"
        leases = list(out.glob(".*.lease")) if out.is_dir() else []
        if not leases:
            time.sleep(0.002)
            continue
        proc.send_signal(signal.SIGSTOP)
        held = [p for p in out.glob(".*.lease") if (live_holder(p) or {}).get("pid") == proc.pid]
        if held:
            return held[0].name[1:-len(".lease")]
        proc.send_signal(signal.SIGCONT)  # it was between two shards: try again
    raise AssertionError("never caught the first run holding a lease")


def two_runs(first_argv, second_argv, out: Path):
    """Start the first run, pause it holding a lease, run the second to its end, resume the first."""
    first = subprocess.Popen(first_argv, env=cli_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        leased = pause_holding_a_lease(first, out)
        second = subprocess.run(second_argv, env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    finally:
        first.send_signal(signal.SIGCONT)
    _, first_err = first.communicate(timeout=600)
    return first, first_err, second, leased


def hidden(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def same_outputs(ref: Path, out: Path) -> None:
    names = sorted(p.name for p in ref.glob("*.parquet"))
    assert sorted(p.name for p in out.glob("*.parquet")) == names
    for name in names:
        assert pq.read_table(out / name).equals(pq.read_table(ref / name)), name
        assert read_record(out / name) == read_record(ref / name), name  # counts included


def test_two_filter_runs_on_one_output_share_it_and_write_each_shard_once(tmp_path):
    src = scored_corpus(tmp_path / "in", shards=60, rows=3000)
    ref, out = tmp_path / "ref", tmp_path / "out"
    filter_shards(src, ref, threshold=0.6)
    argv = lambda k: phifilter("filter", src, "-o", out, "--threshold", "0.6", "-q",  # noqa: E731
                               "--stats-json", tmp_path / f"run{k}.stats.json")
    first, first_err, second, leased = two_runs(argv(1), argv(2), out)
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second.stderr
    # the second run left the paused run's shard to it, said so in one line even with -q, and
    # wrote the shards after it
    assert second.stderr.strip() == f"left to another run: {leased} (pid {first.pid} on {os.uname().nodename})"
    a, b = (json.loads((tmp_path / f"run{k}.stats.json").read_text()) for k in (1, 2))
    assert b["shards"]["leased"] == 1 and a["shards"]["leased"] == 0
    assert a["shards"]["filtered"] + b["shards"]["filtered"] == 60, (a["shards"], b["shards"])  # each shard once
    assert a["shards"]["filtered"] >= 1 and b["shards"]["filtered"] >= 1
    # a skipped shard still counts (its counts are stored with its record); a leased one does not
    assert a["rows"]["in"] == 60 * 3000 and b["rows"]["in"] == 59 * 3000
    assert a["rows"]["kept"] == sum(pq.read_metadata(p).num_rows for p in ref.glob("*.parquet"))
    same_outputs(ref, out)
    assert hidden(out) == []


def test_a_second_top_fraction_run_stops_at_the_leased_shard_with_one_error_line(tmp_path):
    src = scored_corpus(tmp_path / "in", shards=60, rows=3000)
    ref, out = tmp_path / "ref", tmp_path / "out"
    filter_shards(src, ref, top_fraction=0.3)
    argv = phifilter("filter", src, "-o", out, "--top-fraction", "0.3", "-q")
    first, first_err, second, leased = two_runs(argv, argv, out)
    assert first.returncode == 0, first_err
    err = second.stderr.strip()
    assert second.returncode == 1 and err.startswith("Error: ") and "\n" not in err, second.stderr
    assert f"{leased}: being written by another run (pid {first.pid}" in err
    assert "--top-fraction keeps the boundary documents in corpus order across shards" in err
    same_outputs(ref, out)  # the first run's quota was not disturbed
    assert hidden(out) == []
    again = subprocess.run(argv, env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stderr == "", again.stderr


def test_two_embed_runs_on_one_output_share_it_and_write_each_shard_once(tmp_path):
    from conftest import BOILERPLATE, GOOD_CODE

    rng = np.random.default_rng(0)
    for k in range(6):
        texts = ["\n".join(rng.choice([GOOD_CODE, BOILERPLATE, "x = 1\n"], 2)) + f"\n# {k}-{i}" for i in range(24)]
        write_shard(tmp_path / "in" / f"s{k}.parquet", texts, id=pa.array([f"{k}-{i}" for i in range(24)]))
    src, ref, out = tmp_path / "in", tmp_path / "ref", tmp_path / "out"
    subprocess.run(phifilter("embed", src, "-o", ref, "--device", "cpu", "-q"), env=cli_env(), cwd=REPO, check=True)
    argv = lambda k: phifilter("embed", src, "-o", out, "--device", "cpu", "-q",  # noqa: E731
                               "--stats-json", tmp_path / f"run{k}.stats.json")
    first, first_err, second, leased = two_runs(argv(1), argv(2), out)
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second.stderr
    assert second.stderr.strip().startswith(f"left to another run: {leased} (pid {first.pid}"), second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    a, b = (json.loads((tmp_path / f"run{k}.stats.json").read_text()) for k in (1, 2))
    assert a["shards"]["written"] + b["shards"]["written"] == 6 and b["shards"]["leased"] == 1
    assert {s["name"] for s in a["per_shard"]}.isdisjoint(s["name"] for s in b["per_shard"])  # each shard once
    assert sorted(p.name for p in out.glob("*.parquet")) == sorted(p.name for p in ref.glob("*.parquet"))
    for p in sorted(ref.glob("*.parquet")):
        x, y = pq.read_table(p), pq.read_table(out / p.name)
        assert x.drop_columns(["embedding"]).equals(y.drop_columns(["embedding"])), p.name
        np.testing.assert_allclose(np.array(x.column("embedding").to_pylist(), np.float32),
                                   np.array(y.column("embedding").to_pylist(), np.float32), atol=2e-3)
        assert read_record(out / p.name) == read_record(p)
    assert hidden(out) == []
