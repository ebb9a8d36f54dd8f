"""Issue 24, "Targets": every engine and every partition on one output, started together,
killed at random points (seeded), then a rerun.

On one output (a local folder, and a prefix on the moto S3 server): a full run, task 0/2, task
1/3, a ``--devices cpu,cpu`` run and, when Ray is installed, a Ray run start at once, and each
is SIGKILLed (with everything it started) at a seeded random moment after the first rows
appear on the output (about one run in four is left to finish). A final full run must
then leave every shard equal to a clean run's, nothing behind (no temporary, checkpoint or
lease), and every run that ended by itself must have exited 0, or 1 with one ``Error:`` line.

Equality: every column but the score, and the run record, exactly; the score within 1e-4
(the ``--devices`` and Ray workers use other thread counts than a single process, and CPU
kernels may round differently). How many shards came out byte-identical is printed.
"""

from __future__ import annotations

import importlib.util
import json
import random
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

pytestmark = pytest.mark.slow

PIECES = [GOOD_CODE, BOILERPLATE, "import os\n", "for i in range(3):\n    print(i)\n", "x = 1\n"]
SIZES = (96, 64, 48, 40, 24, 16)
HAS_RAY = importlib.util.find_spec("ray") is not None

RUNS = {
    "full": [],
    "task 0/2": ["--task-index", "0", "--num-tasks", "2"],
    "task 1/3": ["--task-index", "1", "--num-tasks", "3"],
    "devices cpu,cpu": ["--devices", "cpu,cpu"],
    **({"ray": ["--engine", "ray", "--num-threads", "1"]} if HAS_RAY else {}),
}


def corpus(folder: Path) -> Path:
    rng = np.random.default_rng(5)
    for k, rows in enumerate(SIZES):
        texts = ["\n".join(rng.choice(PIECES, 2)) + f"\n# {k}-{i}" for i in range(rows)]
        write_shard(folder / f"m{k}.parquet", texts, row_group_size=8, id=pa.array([f"{k}-{i}" for i in range(rows)]))
    return folder


def score_cmd(src, out, *extra) -> list[str]:
    return [sys.executable, "-m", "phifilter", "score", str(src), "-o", str(out), "--read-batch-rows", "8",
            "--device", "cpu", "-q", *extra]


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the run and every process it started (its workers, a Ray instance it began)."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in [proc, *family]:
        try:
            p.send_signal(signal.SIGKILL) if isinstance(p, subprocess.Popen) else p.kill()
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    psutil.wait_procs(family, timeout=30)


def race(src, out, env, seed: int, progress) -> list[str]:
    """Start every run at once; once rows appear on the output, kill each at a seeded random
    moment (about one in four is left to finish); return what each run did."""
    rng = random.Random(seed)
    procs = {name: subprocess.Popen(score_cmd(src, out, *extra), env=env, cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
             for name, extra in RUNS.items()}
    kill_after = {name: (rng.uniform(0.0, 3.0) if rng.random() < 0.75 else None) for name in procs}
    began, writing_since, at_kill = time.monotonic(), None, {}
    try:
        while any(p.poll() is None for p in procs.values()) and time.monotonic() - began < 900:
            if writing_since is None and progress() > 0:
                writing_since = time.monotonic()  # the first rows are on the output: kills start from here
            for name, p in procs.items():
                due = kill_after[name]
                if p.poll() is None and writing_since is not None and due is not None \
                        and time.monotonic() - writing_since >= due:
                    kill_tree(p)
                    at_kill[name] = progress()
            time.sleep(0.05)
    finally:
        for p in procs.values():
            if p.poll() is None:
                kill_tree(p)
    outcomes = []
    for name, p in procs.items():
        _, err = p.communicate(timeout=60)
        if p.returncode == -signal.SIGKILL:
            outcomes.append(f"{name}: killed {kill_after[name]:.1f} s after the first rows ({at_kill.get(name)} rows "
                            "on the output then)")
            continue
        assert "Traceback" not in err, (name, err)
        errors = [line for line in err.splitlines() if line.startswith("Error:")]
        other = [line for line in err.splitlines() if line.strip() and not line.startswith(("Error:", "left to another run:"))]
        if p.returncode == 0:
            assert not errors, (name, err)
        else:
            assert p.returncode == 1 and len(errors) == 1 and not other, (name, p.returncode, err)
        left = sum(line.startswith("left to another run:") for line in err.splitlines())
        outcomes.append(f"{name}: exit {p.returncode}" + (f" ({errors[0]})" if errors else "")
                        + (f", {left} shard(s) left to another run" if left else ""))
    return outcomes


def local_progress(out: Path):
    """Rows on the output: finished shards plus checkpointed rows."""
    def rows() -> int:
        total = 0
        for p in list(out.rglob("*")) if out.exists() else []:
            try:
                if p.name == "manifest.json":
                    total += json.loads(p.read_text())["rows"]
                elif p.suffix == ".parquet" and not p.name.startswith(".") and ".partial" not in str(p):
                    total += pq.ParquetFile(p).metadata.num_rows
            except (OSError, ValueError, KeyError, pa.ArrowException):
                pass
        return total

    return rows


def s3_progress(s3, prefix: str):
    def rows() -> int:
        total = 0
        for key in s3.fs.find(f"{s3.bucket}/{prefix}"):
            name = key.rsplit("/", 1)[-1]
            try:
                if name == "manifest.json":
                    total += json.loads(s3.fs.cat_file(key))["rows"]
                elif name.endswith(".parquet") and not name.startswith(".") and "/." not in key:
                    total += pq.read_metadata(pa.BufferReader(s3.fs.cat_file(key))).num_rows
            except (OSError, ValueError, KeyError, pa.ArrowException):
                pass
        return total

    return rows


def assert_equal_to_clean(ref: Path, read) -> int:
    """Every shard equals the clean run's; returns how many are byte-identical."""
    identical = 0
    for k in range(len(SIZES)):
        name = f"m{k}.parquet"
        data = read(name)
        identical += data == (ref / name).read_bytes()
        a, b = pq.read_table(ref / name), pq.read_table(pa.BufferReader(data))
        assert b.num_rows == a.num_rows, name
        assert a.drop_columns(["edu_score"]).equals(b.drop_columns(["edu_score"])), name
        assert a.schema.metadata == b.schema.metadata, name  # the run record
        np.testing.assert_allclose(a.column("edu_score").to_numpy(), b.column("edu_score").to_numpy(), atol=1e-4)
    return identical


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    src = corpus(root / "in")
    subprocess.run(score_cmd(src, root / "ref"), env=cli_env(), cwd=REPO, check=True, capture_output=True)
    return src, root / "ref"


@pytest.mark.parametrize("seed", [0, 1])
def test_every_engine_and_partition_on_one_local_output_killed_then_rerun(tmp_path, clean, seed):
    src, ref = clean
    out = tmp_path / "out"
    outcomes = race(src, out, cli_env(), seed, local_progress(out))
    final = subprocess.run(score_cmd(src, out), env=cli_env(), cwd=REPO, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    identical = assert_equal_to_clean(ref, lambda name: (out / name).read_bytes())
    assert sorted(p.name for p in out.rglob("*")) == sorted(f"m{k}.parquet" for k in range(len(SIZES)))
    print(f"local seed {seed}: " + "; ".join(outcomes) + f"; {identical}/{len(SIZES)} shards byte-identical")


@pytest.mark.parametrize("seed", [0])
def test_every_engine_and_partition_on_one_s3_output_killed_then_rerun(clean, s3, seed):
    src, ref = clean
    env = {**cli_env(), **s3.env}
    outcomes = race(src, s3.url("out"), env, seed, s3_progress(s3, "out"))
    final = subprocess.run(score_cmd(src, s3.url("out")), env=env, cwd=REPO, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    identical = assert_equal_to_clean(ref, lambda name: s3.fs.cat_file(f"{s3.bucket}/out/{name}"))
    keys = sorted(k.rsplit("/", 1)[-1] for k in s3.fs.find(f"{s3.bucket}/out"))
    assert keys == sorted(f"m{k}.parquet" for k in range(len(SIZES)))
    print(f"s3 seed {seed}: " + "; ".join(outcomes) + f"; {identical}/{len(SIZES)} shards byte-identical")
