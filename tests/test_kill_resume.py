"""SIGKILL every command at random points, rerun it, and require the uninterrupted result.

Each test builds a tiny input, makes a reference with an uninterrupted run, then uses the
generic harness in killresume.py: a real `python -m phifilter ...` subprocess is killed with
SIGKILL once its on-disk progress reaches a random target (seeded), repeatedly, and a final
run must finish and leave exactly the reference output, with no temporaries.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifilter.provenance import read_record
from conftest import BOILERPLATE, GOOD_CODE, REPO, cli_env, run_cli, write_shard
from killresume import (
    KillResumeCase,
    parquet_rows,
    published_files_are_whole,
    run_kill_resume,
    temporaries,
)

pytestmark = pytest.mark.slow

PIECES = [GOOD_CODE, BOILERPLATE, "import os\n", "for i in range(3):\n    print(i)\n", "x = 1\n"]


def _corpus(folder, shards: int, rows: int, seed: int = 0, row_group_size: int = 8):
    rng = np.random.default_rng(seed)
    for k in range(shards):
        texts = ["\n".join(rng.choice(PIECES, 2)) + f"\n# {k}-{i}" for i in range(rows)]
        write_shard(folder / f"s{k}.parquet", texts, row_group_size=row_group_size,
                    id=pa.array([f"{k}-{i}" for i in range(rows)]))
    return folder


def assert_scored_equal(ref, out, names):
    for name in names:
        a, b = pq.read_table(ref / name), pq.read_table(out / name)
        assert a.num_rows == b.num_rows
        assert a.drop_columns(["edu_score"]).equals(b.drop_columns(["edu_score"])), name
        np.testing.assert_allclose(a.column("edu_score").to_numpy(), b.column("edu_score").to_numpy(), atol=1e-5)
        ids = b.column("id").to_pylist()
        assert len(ids) == len(set(ids)), f"{name}: duplicate rows"


@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory):
    """Uninterrupted reference runs shared by the tests of this module (each a real CLI run of
    seconds to tens of seconds): ``clean_runs(name, make)`` calls ``make(folder)`` once per
    worker in a fresh folder and returns its result. Tests only read the input and reference it
    writes there; each test's killed and resumed runs write to its own ``tmp_path``."""
    done: dict = {}

    def get(name, make):
        if name not in done:
            done[name] = make(tmp_path_factory.mktemp(f"clean-{name}"))
        return done[name]

    return get


# ---------------------------------------------------------------------------------------------
# score


def test_score_killed_three_times_equals_uninterrupted_run(tmp_path, bundled_model):
    from phifilter.scoring import score_shards

    src = _corpus(tmp_path / "in", shards=3, rows=40)
    ref, out = tmp_path / "ref", tmp_path / "out"
    score_shards(src, ref, model=bundled_model, read_batch_rows=8)
    names = [f"s{k}.parquet" for k in range(3)]
    case = KillResumeCase(
        argv=["score", src, "-o", out, "--read-batch-rows", "8", "--device", "cpu", "-q"],
        progress=lambda: parquet_rows(out), total=120,
        after_kill=lambda: published_files_are_whole(out),
        compare=lambda: assert_scored_equal(ref, out, names),
        outputs=[out],
    )
    result = run_kill_resume(case, seed=0, kills=3)
    assert result.kills >= 1, result.records


def test_score_kill_mid_shard_resumes_without_rescoring_checkpointed_rows(tmp_path, bundled_model, monkeypatch):
    from phifilter.scoring import score_shards

    # 512 rows, so the kill lands mid-shard however fast the scorer is: with the cascade default
    # most of these short documents skip the embedder, and 64 rows were once all checkpointed
    # before the poll below saw 24.
    rows = 512
    src = _corpus(tmp_path / "in", shards=1, rows=rows)
    ref, out = tmp_path / "ref", tmp_path / "out"
    score_shards(src, ref, model=bundled_model, read_batch_rows=8)
    proc = subprocess.Popen([sys.executable, "-m", "phifilter", "score", str(src), "-o", str(out),
                             "--read-batch-rows", "8", "--device", "cpu", "-q"], env=cli_env(), cwd=REPO)
    deadline = time.monotonic() + 300
    while proc.poll() is None and parquet_rows(out) < 24 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "s0.parquet").exists(), "the kill came too late to test a mid-shard resume"
    manifest = json.loads((out / ".s0.parquet.partial" / "manifest.json").read_text())
    checkpointed = manifest["rows"]
    assert 24 <= checkpointed < rows

    # Count the documents that reach the model, at its entry point: every batch the flow scores
    # is routed first (the model's cheap step, before any embedding), in stages or in one call.
    embedded = []
    original = bundled_model.route
    monkeypatch.setattr(bundled_model, "route", lambda texts: (embedded.append(len(texts)), original(texts))[1])
    summary = score_shards(src, out, model=bundled_model, read_batch_rows=8)
    monkeypatch.undo()
    assert summary.rows_resumed == checkpointed
    assert summary.rows_scored == rows - checkpointed
    assert sum(embedded) == rows - checkpointed  # finished row groups were not embedded again
    assert "resumed from checkpoints" in str(summary)
    assert_scored_equal(ref, out, ["s0.parquet"])
    assert not temporaries([out])


def test_checkpoints_of_a_changed_input_are_not_reused(tmp_path, bundled_model):
    """A partial shard whose input was rewritten since the kill is discarded, not mixed in."""
    from phifilter.corpus import PartialShard
    from phifilter.scoring import ScoreConfig, score_shards
    from phifilter.scoring.flow import output_schema
    from phifilter.scoring.model import checkpoint_key
    from phifilter.corpus import find_shards

    src = _corpus(tmp_path / "in", shards=1, rows=24)
    shard = find_shards(src)[0]
    cfg = ScoreConfig(read_batch_rows=8)
    schema = output_schema(pq.read_schema(shard.path), "edu_score")
    bundled_model.check_embedder()
    with pytest.raises(KeyboardInterrupt):
        with PartialShard(tmp_path / "out" / "s0.parquet", schema, checkpoint_key(bundled_model, shard, cfg)) as w:
            bogus = pq.read_table(shard.path).slice(0, 8)
            w.write_batch(pa.RecordBatch.from_arrays([*bogus.combine_chunks().to_batches()[0].columns,
                                                      pa.array([9.0] * 8, pa.float32())], schema=schema))
            raise KeyboardInterrupt
    assert (tmp_path / "out" / ".s0.parquet.partial" / "manifest.json").exists()
    _corpus(tmp_path / "in", shards=1, rows=24, seed=1)  # the input changes before the rerun
    summary = score_shards(src, tmp_path / "out", model=bundled_model, read_batch_rows=8)
    assert summary.rows_resumed == 0 and summary.rows_scored == 24
    assert float(pq.read_table(tmp_path / "out" / "s0.parquet").column("edu_score").to_numpy().max()) <= 1.0


def test_second_score_process_on_the_same_output_leaves_it_the_shard_it_writes(tmp_path, bundled_model):
    """Issue 24: no run-wide lock; the second run scores what nobody is writing, leaves the
    shard whose lease the first (paused) run holds, says so, and exits 0."""
    from phifilter.scoring import score_shards

    src = _corpus(tmp_path / "in", shards=2, rows=32)
    ref, out = tmp_path / "ref", tmp_path / "out"
    score_shards(src, ref, model=bundled_model, read_batch_rows=8)
    cmd = [sys.executable, "-m", "phifilter", "score", str(src), "-o", str(out), "--read-batch-rows", "8",
           "--device", "cpu", "-q"]
    first = subprocess.Popen(cmd, env=cli_env(), cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while first.poll() is None and parquet_rows(out) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    # Pause the first run while it holds the lock: the default model (a cascade) is fast enough
    # to finish 64 documents while the second process starts, which would make this a race.
    first.send_signal(signal.SIGSTOP)
    try:
        assert first.poll() is None, "the first run ended before the second could start"
        second = subprocess.run(cmd, env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second.stderr
    lines = second.stderr.strip().splitlines()
    # the shard being written, and perhaps the next one (the read stage takes its lease one shard ahead)
    assert 1 <= len(lines) <= 2 and all(line.startswith("left to another run: s") and f"pid {first.pid}" in line
                                        for line in lines), second.stderr
    assert "Traceback" not in second.stderr
    assert_scored_equal(ref, out, ["s0.parquet", "s1.parquet"])
    assert not temporaries([out])


# ---------------------------------------------------------------------------------------------
# filter


def _scored_corpus(folder, shards: int, rows: int):
    rng = np.random.default_rng(7)
    for k in range(shards):
        scores = rng.random(rows).astype(np.float32)
        scores[: rows // 4] = 0.5  # ties at the boundary make the top-fraction quota matter
        write_shard(folder / f"s{k:02d}.parquet", [f"doc {k}-{i}" for i in range(rows)],
                    edu_score=pa.array(scores, pa.float32()), id=pa.array([f"{k}-{i}" for i in range(rows)]))
    return folder


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filter_killed_at_random_points_equals_uninterrupted_run(tmp_path, seed):
    from phifilter.select import filter_shards

    src = _scored_corpus(tmp_path / "in", shards=40, rows=50)
    ref, out = tmp_path / "ref", tmp_path / "out"
    filter_shards(src, ref, top_fraction=0.3)

    def progress():  # shards in place (each written whole under its lease, its record in its footer)
        return len(list(out.glob("*.parquet"))) if out.is_dir() else 0

    def compare():
        for p in sorted(ref.glob("*.parquet")):
            assert pq.read_table(p).equals(pq.read_table(out / p.name)), p.name
        assert sorted(x.name for x in out.glob("*.parquet")) == sorted(x.name for x in ref.glob("*.parquet"))
        assert [read_record(p) for p in sorted(out.glob("*.parquet"))] == \
            [read_record(p) for p in sorted(ref.glob("*.parquet"))]  # the run records, counts included

    case = KillResumeCase(argv=["filter", src, "-o", out, "--top-fraction", "0.3", "-q"], progress=progress, total=40,
                          jitter=0.01, after_kill=lambda: published_files_are_whole(out), compare=compare,
                          outputs=[out])
    run_kill_resume(case, seed=seed, kills=2)


# ---------------------------------------------------------------------------------------------
# sample


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sample_killed_at_random_times_equals_uninterrupted_run(tmp_path, seed):
    from phifilter.sample import SampleConfig, sample_shards

    src = _corpus(tmp_path / "in", shards=4, rows=3000, row_group_size=500)
    ref, out = tmp_path / "ref.parquet", tmp_path / "out" / "sample.parquet"
    out.parent.mkdir()
    sample_shards(src, ref, SampleConfig(n=200, max_chars=60, seed=3), progress=False)

    def after_kill():  # the sample is all or nothing
        if out.exists():
            assert pq.read_table(out).equals(pq.read_table(ref))

    case = KillResumeCase(argv=["sample", src, "-o", out, "-n", "200", "--max-chars", "60", "--seed", "3", "-q"],
                          kill_window=(0.2, 3.0), after_kill=after_kill,
                          compare=lambda: pq.read_table(out).equals(pq.read_table(ref)) or pytest.fail("differs"),
                          outputs=[out])
    run_kill_resume(case, seed=seed, kills=2)


# ---------------------------------------------------------------------------------------------
# label


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_killed_at_random_points_equals_uninterrupted_run(tmp_path, chat_server, seed):
    from phifilter.label.standin import Canned
    from phifilter.label.annotate import LabelConfig, label_file
    from phifilter.label.backends import OpenAIChatBackend

    docs = [f"def step_{i}(n):\n    return n + {i}\n" for i in range(60)]
    src, out, ref = tmp_path / "seed.parquet", tmp_path / "out" / "labels.parquet", tmp_path / "ref.parquet"
    out.parent.mkdir()
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(60)], "text": docs}), src)
    label_file(src, ref, OpenAIChatBackend(chat_server.url, "m", concurrency=4), LabelConfig(), progress=False)
    chat_server.reset()
    chat_server.script = lambda doc, body: Canned(delay=0.02)

    def progress():
        try:
            with sqlite3.connect(f"file:{out.with_name('labels.cache.sqlite')}?mode=ro", uri=True, timeout=1) as db:
                return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        except sqlite3.Error:
            return 0

    def compare():
        a, b = pq.read_table(ref), pq.read_table(out)
        assert a.equals(b)
        per_doc = chat_server.per_doc()
        # answers are cached as they arrive: at most the requests in flight at a kill are asked twice
        assert sum(per_doc.values()) <= 60 + 4 * 2
        assert set(per_doc) <= set(docs)

    case = KillResumeCase(argv=["label", src, "-o", out, "--base-url", chat_server.url, "--model", "m",
                                "--concurrency", "4", "-q"],
                          progress=progress, total=60, jitter=0.02, compare=compare, outputs=[out],
                          after_kill=lambda: (not out.exists()) or pq.read_table(out).equals(pq.read_table(ref))
                          or pytest.fail("a labels file that differs from the reference was published"),
                          env={"OPENAI_API_KEY": "sk-test"})
    run_kill_resume(case, seed=seed, kills=2)


# ---------------------------------------------------------------------------------------------
# train


def test_train_killed_while_saving_leaves_old_or_new_model_never_a_broken_one(tmp_path):
    from phifilter.classifier import HEAD_FILE, META_FILE, EduClassifier

    rng = np.random.default_rng(0)
    texts = [GOOD_CODE + f"\n# v{i}" if i % 2 else BOILERPLATE + f"\n# v{i}" for i in range(24)]
    scores = [4 if i % 2 else int(rng.integers(0, 2)) for i in range(24)]
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"text": texts, "llm_score": pa.array(scores, pa.int8())}), labels)
    ref, out = tmp_path / "ref", tmp_path / "out" / "model"
    out.parent.mkdir()
    options = ["--recipe", "paper", "--n-estimators", "400", "--cv-folds", "2", "--device", "cpu", "-q"]
    run_cli("train", labels, "-o", ref, *options)

    def progress():  # 1 once the model folder is being written
        return int(any(out.parent.glob(".model.tmp-*")) or out.exists())

    def after_kill():  # the model folder is absent or complete and loadable
        if out.exists():
            EduClassifier.load(out)

    def compare():
        assert (out / HEAD_FILE).read_bytes() == (ref / HEAD_FILE).read_bytes()
        a, b = json.loads((ref / META_FILE).read_text()), json.loads((out / META_FILE).read_text())
        for meta in (a, b):
            meta.pop("created")
            meta["training_data"].pop("file", None)
        assert a == b

    case = KillResumeCase(argv=["train", labels, "-o", out, *options], progress=progress, total=1, jitter=0.4, after_kill=after_kill,
                          compare=compare, outputs=[out])
    run_kill_resume(case, seed=0, kills=2)


# ---------------------------------------------------------------------------------------------
# embed


def _clean_embed(folder):
    """Four shards of 24 rows and their uninterrupted `embed` run."""
    src = _corpus(folder / "in", shards=4, rows=24)
    run_cli("embed", src, "-o", folder / "ref", "--device", "cpu", "-q")
    return src, folder / "ref"


@pytest.mark.parametrize("seed", [0, 1])
def test_embed_killed_at_random_points_equals_uninterrupted_run(tmp_path, seed, clean_runs):
    src, ref = clean_runs("embed", _clean_embed)
    out = tmp_path / "out"
    names = sorted(p.name for p in ref.glob("*.parquet"))
    assert len(names) == 4

    def compare():
        assert sorted(p.name for p in out.glob("*.parquet")) == names
        for name in names:
            a, b = pq.read_table(ref / name), pq.read_table(out / name)
            assert a.schema.names == b.schema.names and a.num_rows == b.num_rows == 24, name
            for col in a.schema.names:
                if col == "embedding":
                    np.testing.assert_allclose(np.array(a.column(col).to_pylist(), dtype=np.float32),
                                               np.array(b.column(col).to_pylist(), dtype=np.float32), atol=2e-3)
                else:
                    assert a.column(col).equals(b.column(col)), (name, col)

    case = KillResumeCase(argv=["embed", src, "-o", out, "--device", "cpu", "-q"],
                          progress=lambda: parquet_rows(out), total=96,
                          after_kill=lambda: published_files_are_whole(out), compare=compare, outputs=[out])
    run_kill_resume(case, seed=seed, kills=2)


# ---------------------------------------------------------------------------------------------
# ablate


ABLATE_ARGS = ["--preset", "micro", "--seeds", "1", "--val-fraction", "0.1", "--pass-samples", "1",
               "--pass-problems", "1", "--max-new-tokens", "8", "--threads", "1"]


def _clean_ablate(folder):
    """A scored corpus of 160 documents and its uninterrupted `ablate` run (and how long it took)."""
    from ablate_corpus import make_corpus
    from phifilter.pretrain.evalsets import default_eval_dir

    scored = folder / "scored"
    make_corpus(scored, default_eval_dir(), n_docs=160)
    seconds = _timed_cli("ablate", scored, "-o", folder / "ref", *ABLATE_ARGS)
    return scored, folder / "ref", seconds


def test_ablate_killed_at_random_points_equals_uninterrupted_run(tmp_path, clean_runs):
    scored, ref, _ = clean_runs("ablate", _clean_ablate)
    args = ABLATE_ARGS
    out = tmp_path / "out"

    def compare():
        a = json.loads((ref / "results.json").read_text())["arms"]
        b = json.loads((out / "results.json").read_text())["arms"]
        assert sorted(a) == sorted(b)
        for arm in a:
            np.testing.assert_allclose(a[arm]["humaneval_loss"]["seeds"], b[arm]["humaneval_loss"]["seeds"], atol=1e-5)

    case = KillResumeCase(argv=["ablate", scored, "-o", out, *args],
                          progress=lambda: len(list(out.glob("runs/*/result.json"))), total=3,
                          compare=compare, outputs=[out])
    run_kill_resume(case, seed=0, kills=2)


# ---------------------------------------------------------------------------------------------
# the signal matrix (issue 20, item 6): SIGTERM, SIGINT and SIGKILL at one seeded random point
# per signal and command, then a rerun: the clean run's result, nothing left behind (no
# temporary, no lock). The SIGKILL chains of several kills above stay; SIGKILL here covers the
# commands they do not (report) and one more point for the rest.

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL}


def _timed_cli(*args) -> float:
    began = time.monotonic()
    run_cli(*args)
    return time.monotonic() - began


def _window(seconds: float) -> tuple[float, float]:
    """Kill points drawn over a clean run's duration, past the interpreter's start."""
    return (min(1.0, 0.3 * seconds), max(1.2, 0.95 * seconds))


def _filter_case(tmp_path, **_):
    from phifilter.select import filter_shards

    src = _scored_corpus(tmp_path / "in", shards=40, rows=50)
    ref, out = tmp_path / "ref", tmp_path / "out"
    filter_shards(src, ref, top_fraction=0.3)

    def progress():  # shards in place (each written whole under its lease, its record in its footer)
        return len(list(out.glob("*.parquet"))) if out.is_dir() else 0

    def compare():
        assert sorted(x.name for x in out.glob("*.parquet")) == sorted(x.name for x in ref.glob("*.parquet"))
        for p in sorted(ref.glob("*.parquet")):
            assert pq.read_table(p).equals(pq.read_table(out / p.name)), p.name
        assert [read_record(p) for p in sorted(out.glob("*.parquet"))] == \
            [read_record(p) for p in sorted(ref.glob("*.parquet"))]  # the run records, counts included

    return KillResumeCase(argv=["filter", src, "-o", out, "--top-fraction", "0.3", "-q"], progress=progress, total=40,
                          jitter=0.01, after_kill=lambda: published_files_are_whole(out), compare=compare,
                          outputs=[out])


def _label_case(tmp_path, chat_server, **_):
    from phifilter.label.annotate import LabelConfig, label_file
    from phifilter.label.backends import OpenAIChatBackend
    from phifilter.label.standin import Canned

    docs = [f"def step_{i}(n):\n    return n + {i}\n" for i in range(60)]
    src, out, ref = tmp_path / "seed.parquet", tmp_path / "out" / "labels.parquet", tmp_path / "ref.parquet"
    out.parent.mkdir()
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(60)], "text": docs}), src)
    label_file(src, ref, OpenAIChatBackend(chat_server.url, "m", concurrency=4), LabelConfig(), progress=False)
    chat_server.reset()
    chat_server.script = lambda doc, body: Canned(delay=0.02)

    def progress():
        try:
            with sqlite3.connect(f"file:{out.with_name('labels.cache.sqlite')}?mode=ro", uri=True, timeout=1) as db:
                return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        except sqlite3.Error:
            return 0

    return KillResumeCase(argv=["label", src, "-o", out, "--base-url", chat_server.url, "--model", "m",
                                "--concurrency", "4", "-q"],
                          progress=progress, total=60, jitter=0.02, outputs=[out.parent],
                          compare=lambda: pq.read_table(ref).equals(pq.read_table(out)) or pytest.fail("labels differ"),
                          after_kill=lambda: (not out.exists()) or pq.read_table(out).equals(pq.read_table(ref))
                          or pytest.fail("a labels file that differs from the reference was published"),
                          env={"OPENAI_API_KEY": "sk-test"})


TRAIN_OPTIONS = ["--n-estimators", "400", "--cv-folds", "2", "--device", "cpu", "-q"]


def _clean_train(folder):
    """24 labelled documents and their uninterrupted `train` run (and how long it took)."""
    rng = np.random.default_rng(0)
    texts = [GOOD_CODE + f"\n# v{i}" if i % 2 else BOILERPLATE + f"\n# v{i}" for i in range(24)]
    scores = [4 if i % 2 else int(rng.integers(0, 2)) for i in range(24)]
    labels = folder / "labels.parquet"
    pq.write_table(pa.table({"text": texts, "llm_score": pa.array(scores, pa.int8())}), labels)
    seconds = _timed_cli("train", labels, "-o", folder / "ref", *TRAIN_OPTIONS)
    return labels, folder / "ref", seconds


def _train_case(tmp_path, clean_runs, **_):
    from phifilter.classifier import HEAD_FILE, META_FILE, EduClassifier

    labels, ref, seconds = clean_runs("train", _clean_train)
    options = TRAIN_OPTIONS
    out = tmp_path / "out" / "model"
    out.parent.mkdir()

    def compare():
        assert (out / HEAD_FILE).read_bytes() == (ref / HEAD_FILE).read_bytes()
        a, b = json.loads((ref / META_FILE).read_text()), json.loads((out / META_FILE).read_text())
        for meta in (a, b):
            meta.pop("created")
            meta["training_data"].pop("file", None)
        assert a == b

    return KillResumeCase(argv=["train", labels, "-o", out, *options], kill_window=_window(seconds),
                          after_kill=lambda: (not out.exists()) or EduClassifier.load(out),
                          compare=compare, outputs=[out.parent])


def _embed_case(tmp_path, clean_runs, **_):
    src, ref = clean_runs("embed", _clean_embed)
    out = tmp_path / "out"
    names = sorted(p.name for p in ref.glob("*.parquet"))

    def compare():
        assert sorted(p.name for p in out.glob("*.parquet")) == names
        for name in names:
            a, b = pq.read_table(ref / name), pq.read_table(out / name)
            assert a.schema.names == b.schema.names and a.num_rows == b.num_rows == 24, name
            for col in a.schema.names:
                if col == "embedding":
                    np.testing.assert_allclose(np.array(a.column(col).to_pylist(), dtype=np.float32),
                                               np.array(b.column(col).to_pylist(), dtype=np.float32), atol=1e-4)
                else:
                    assert a.column(col).equals(b.column(col)), (name, col)

    return KillResumeCase(argv=["embed", src, "-o", out, "--device", "cpu", "-q"],
                          progress=lambda: parquet_rows(out), total=96,
                          after_kill=lambda: published_files_are_whole(out), compare=compare, outputs=[out])


REPORT_ARGS = ["--threshold", "0.4", "--samples", "2", "-q"]


def _clean_report(folder):
    """20 scored shards of 400 rows and their uninterrupted `report` (and how long it took)."""
    src = _scored_corpus(folder / "in", shards=20, rows=400)
    seconds = _timed_cli("report", src, "-o", folder / "ref" / "r.html", *REPORT_ARGS)
    return src, folder / "ref" / "r.html", seconds


def _report_case(tmp_path, clean_runs, **_):
    src, ref, seconds = clean_runs("report", _clean_report)
    out = tmp_path / "out" / "r.html"
    out.parent.mkdir()
    args = REPORT_ARGS

    def page(path):  # the page names the minute it was generated
        import re

        return re.sub(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "Generated", path.read_text())

    def after_kill():  # the page is whole or absent
        if out.exists():
            assert page(out) == page(ref)

    return KillResumeCase(argv=["report", src, "-o", out, *args], kill_window=_window(seconds), after_kill=after_kill,
                          compare=lambda: page(out) == page(ref) or pytest.fail("the report differs"),
                          outputs=[out.parent])


def _ablate_case(tmp_path, clean_runs, **_):
    scored, ref, seconds = clean_runs("ablate", _clean_ablate)
    args = ABLATE_ARGS
    out = tmp_path / "out"

    def compare():
        a = json.loads((ref / "results.json").read_text())["arms"]
        b = json.loads((out / "results.json").read_text())["arms"]
        assert sorted(a) == sorted(b)
        for arm in a:
            np.testing.assert_allclose(a[arm]["humaneval_loss"]["seeds"], b[arm]["humaneval_loss"]["seeds"], atol=1e-4)

    return KillResumeCase(argv=["ablate", scored, "-o", out, *args], kill_window=_window(seconds),
                          compare=compare, outputs=[out])


MATRIX = {"filter": _filter_case, "label": _label_case, "train": _train_case, "embed": _embed_case,
          "report": _report_case, "ablate": _ablate_case}


@pytest.mark.parametrize("sig", sorted(SIGNALS))
@pytest.mark.parametrize("command", sorted(MATRIX))
def test_signal_matrix_rerun_equals_clean_run_and_leaves_nothing(tmp_path, chat_server, clean_runs, command, sig):
    case = MATRIX[command](tmp_path, chat_server=chat_server, clean_runs=clean_runs)
    seed = sorted(MATRIX).index(command) * 10 + sorted(SIGNALS).index(sig)  # one seeded point per cell
    result = run_kill_resume(case, seed=seed, kills=1, sig=SIGNALS[sig])
    assert len(result.records) == 1
