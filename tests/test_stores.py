"""Scoring from and to fsspec stores: memory:// in-process, and a real S3-compatible server (moto
in server mode on 127.0.0.1) with s3fs as the client: publish-by-copy, the lock object with
owner and expiry, a SIGKILL mid-run and a rerun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BOILERPLATE, GOOD_CODE, write_shard
from s3server import s3  # noqa: F401  (fixture)
from s3server import _moto_endpoint  # noqa: F401  (fixture)
from phifilter.errors import OutputError

PIECES = [GOOD_CODE, BOILERPLATE, "import os\n", "for i in range(3):\n    print(i)\n", "x = 1\n"]


def _corpus(folder, shards=2, rows=12, seed=0):
    rng = np.random.default_rng(seed)
    for k in range(shards):
        texts = ["\n".join(rng.choice(PIECES, 2)) + f"\n# {k}-{i}" for i in range(rows)]
        write_shard(folder / f"s{k}.parquet", texts, row_group_size=4, id=pa.array([f"{k}-{i}" for i in range(rows)]))
    return folder


def _s3_keys(s3, prefix):
    return sorted(p.split("/", 1)[1] for p in s3.fs.find(f"{s3.bucket}/{prefix}"))


def test_memory_store_scores_and_reruns(tmp_path, bundled_model):
    import fsspec

    from phifilter.scoring import score_shards

    src = _corpus(tmp_path / "in", shards=1, rows=6)
    mem = fsspec.filesystem("memory")
    root = f"/t{os.getpid()}-{time.time_ns()}"
    mem.put(str(src / "s0.parquet"), f"{root}/in/sub/s0.parquet")
    score_shards(src, tmp_path / "ref", model=bundled_model)
    summary = score_shards(f"memory://{root}/in", f"memory://{root}/out", model=bundled_model)
    assert summary.shards_scored == 1
    with mem.open(f"{root}/out/sub/s0.parquet", "rb") as f:
        assert pq.read_table(f).equals(pq.read_table(tmp_path / "ref" / "s0.parquet"))
    assert sorted(mem.find(f"{root}/out")) == [f"{root}/out/sub/s0.parquet"]  # no lock, no temporaries
    assert score_shards(f"memory://{root}/in", f"memory://{root}/out", model=bundled_model).shards_skipped == 1


def test_s3_score_equals_local_and_rerun_skips(tmp_path, s3, bundled_model):
    from phifilter.scoring import score_shards

    src = _corpus(tmp_path / "in")
    s3.fs.put(str(src / "s0.parquet"), f"{s3.bucket}/corpus/s0.parquet")
    s3.fs.put(str(src / "s1.parquet"), f"{s3.bucket}/corpus/deep/s1.parquet")
    score_shards(src, tmp_path / "ref", model=bundled_model)
    summary = score_shards(s3.url("corpus/"), s3.url("scored/"), model=bundled_model, read_batch_rows=4)
    assert summary.shards_scored == 2 and summary.rows == 24
    assert _s3_keys(s3, "scored") == ["scored/deep/s1.parquet", "scored/s0.parquet"]  # lock released, no temporaries
    for key, ref in (("scored/s0.parquet", "s0.parquet"), ("scored/deep/s1.parquet", "s1.parquet")):
        with s3.fs.open(f"{s3.bucket}/{key}", "rb") as f:
            assert pq.read_table(f).equals(pq.read_table(tmp_path / "ref" / ref))  # scores bit-identical
    again = score_shards(s3.url("corpus"), s3.url("scored"), model=bundled_model)
    assert again.shards_skipped == 2 and again.shards_scored == 0
    assert _s3_keys(s3, "corpus") == ["corpus/deep/s1.parquet", "corpus/s0.parquet"]  # inputs untouched
    assert s3.fs.cat(f"{s3.bucket}/corpus/s0.parquet") == (src / "s0.parquet").read_bytes()


def _lock_doc(**kw):
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": "t",
                       "expires": time.time() + 600, **kw}).encode()


def test_s3_lock_refuses_a_live_owner_and_takes_over_a_dead_or_expired_one(tmp_path, s3, bundled_model):
    from phifilter.corpus import OutputLock

    lock_key = f"{s3.bucket}/out/.phifilter.lock"
    s3.fs.pipe(lock_key, _lock_doc())  # a live process on this host (this one) holds it
    with pytest.raises(OutputError, match=r"out: another phifilter process \(pid \d+ on .*\) is writing here"):
        OutputLock.check_free(s3.url("out"))
    with pytest.raises(OutputError, match="another phifilter process"):
        OutputLock(s3.url("out")).__enter__()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    s3.fs.pipe(lock_key, _lock_doc(pid=int(dead.stdout)))  # a SIGKILLed run on this host: taken over at once
    with OutputLock(s3.url("out")):
        held = json.loads(s3.fs.cat(lock_key))
        assert held["pid"] == os.getpid() and held["token"] != "t"
        with pytest.raises(OutputError, match="another phifilter process"):  # two runs never both hold it
            OutputLock(s3.url("out")).__enter__()
    assert not s3.fs.exists(lock_key)  # released
    s3.fs.pipe(lock_key, _lock_doc(host="elsewhere", pid=1, expires=time.time() - 1))  # expired
    with OutputLock(s3.url("out")):
        assert json.loads(s3.fs.cat(lock_key))["host"] == socket.gethostname()


def test_s3_a_run_that_lost_its_lock_publishes_nothing(tmp_path, s3):
    from phifilter.corpus import OutputLock, ShardWriter

    schema = pa.schema([("text", pa.string())])
    with OutputLock(s3.url("out")):
        s3.fs.pipe(f"{s3.bucket}/out/.phifilter.lock", _lock_doc(host="elsewhere", token="winner"))
        with pytest.raises(OutputError, match="no longer this run's"):
            with ShardWriter(s3.url("out/a.parquet"), schema) as w:
                w.write_batch(pa.record_batch([pa.array(["x"])], schema=schema))
    assert _s3_keys(s3, "out") == ["out/.phifilter.lock"]  # the winner's lock, untouched; no output


def _s3_progress(s3, prefix):
    """Rows visible in S3: published shards plus checkpointed rows in partial manifests."""
    rows = 0
    for key in s3.fs.find(f"{s3.bucket}/{prefix}"):
        name = key.rsplit("/", 1)[1]
        try:
            if name == "manifest.json":
                rows += json.loads(s3.fs.cat(key))["rows"]
            elif not name.startswith(".") and "/." not in key:
                with s3.fs.open(key, "rb") as f:
                    rows += pq.ParquetFile(f).metadata.num_rows
        except (OSError, ValueError, KeyError):
            pass
    return rows


@pytest.mark.slow
def test_s3_score_killed_mid_run_then_rerun_equals_uninterrupted(tmp_path, s3, bundled_model):
    from killresume import KillResumeCase, run_kill_resume
    from phifilter.scoring import score_shards

    src = _corpus(tmp_path / "in", shards=2, rows=32)
    for k in range(2):
        s3.fs.put(str(src / f"s{k}.parquet"), f"{s3.bucket}/corpus/s{k}.parquet")
    score_shards(src, tmp_path / "ref", model=bundled_model, read_batch_rows=8)

    def compare():
        assert _s3_keys(s3, "scored") == ["scored/s0.parquet", "scored/s1.parquet"]  # no temporaries, no lock
        for k in range(2):
            with s3.fs.open(f"{s3.bucket}/scored/s{k}.parquet", "rb") as f:
                got = pq.read_table(f)
            ref = pq.read_table(tmp_path / "ref" / f"s{k}.parquet")
            assert got.drop_columns(["edu_score"]).equals(ref.drop_columns(["edu_score"]))
            np.testing.assert_allclose(got.column("edu_score").to_numpy(), ref.column("edu_score").to_numpy(), atol=1e-5)

    case = KillResumeCase(
        argv=["score", s3.url("corpus/"), "-o", s3.url("scored/"), "--read-batch-rows", "8", "--device", "cpu", "-q"],
        progress=lambda: _s3_progress(s3, "scored"), total=64, compare=compare, outputs=[], env=s3.env,
    )
    result = run_kill_resume(case, seed=1, kills=2)
    assert result.kills >= 1, result.records


def _scored_rows(n=40, seed=3):
    rng = np.random.default_rng(seed)
    scores = rng.random(n).astype(np.float32)
    scores[5] = scores[6]  # a tie across the boundary is broken by corpus order
    return [{"id": f"d{i}", "text": f"doc {i} é" * (i % 4), "meta": {"k": [i]}, "edu_score": float(s)}
            for i, s in enumerate(scores)]


def test_filter_sample_report_on_s3_and_jsonl_equal_local_parquet(tmp_path, s3):
    from test_formats import read_jsonl, write_jsonl

    from phifilter.report import ReportConfig, build_report
    from phifilter.sample import SampleConfig, sample_shards
    from phifilter.select import filter_shards

    rows = _scored_rows()
    local = tmp_path / "scored"
    local.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:25]), local / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows[25:]), local / "b.parquet")
    for name in ("a.parquet", "b.parquet"):
        s3.fs.put(str(local / name), f"{s3.bucket}/scored/{name}")
    write_jsonl(tmp_path / "js" / "a.jsonl.gz", rows[:25], "gzip")
    write_jsonl(tmp_path / "js" / "b.jsonl.gz", rows[25:], "gzip")

    ref = filter_shards(local, tmp_path / "kept", top_fraction=0.3)
    on_s3 = filter_shards(s3.url("scored"), s3.url("kept"), top_fraction=0.3)
    js = filter_shards(tmp_path / "js", tmp_path / "kept-js", top_fraction=0.3)
    assert ref.rows_kept == on_s3.rows_kept == js.rows_kept == 12
    assert ref.bytes_kept == on_s3.bytes_kept == js.bytes_kept
    for name in ("a", "b"):
        want = pq.read_table(tmp_path / "kept" / f"{name}.parquet").to_pylist()
        with s3.fs.open(f"{s3.bucket}/kept/{name}.parquet", "rb") as f:
            assert pq.read_table(f).to_pylist() == want
        assert read_jsonl(tmp_path / "kept-js" / f"{name}.jsonl.gz") == want  # same format and rows
    assert filter_shards(s3.url("scored"), s3.url("kept"), top_fraction=0.3).shards_skipped == 2  # rerun
    tb = filter_shards(local, tmp_path / "tb", token_budget=60)
    tb_js = filter_shards(tmp_path / "js", tmp_path / "tb-js", token_budget=60)
    assert 0 < tb.rows_kept == tb_js.rows_kept < 40 and tb.tokens_kept == tb_js.tokens_kept
    for name in ("a", "b"):
        assert read_jsonl(tmp_path / "tb-js" / f"{name}.jsonl.gz") == pq.read_table(tmp_path / "tb" / f"{name}.parquet").to_pylist()

    cfg = SampleConfig(n=7, seed=1)
    sample_shards(local, tmp_path / "seed.parquet", cfg, progress=False)
    sample_shards(s3.url("scored/"), s3.url("seed/seed.parquet"), cfg, progress=False)
    sample_shards(tmp_path / "js", tmp_path / "seed-js.parquet", cfg, progress=False)
    want = pq.read_table(tmp_path / "seed.parquet")
    with s3.fs.open(f"{s3.bucket}/seed/seed.parquet", "rb") as f:
        assert pq.read_table(f).equals(want)
    assert pq.read_table(tmp_path / "seed-js.parquet").to_pylist() == want.to_pylist()

    build_report([s3.url("scored/")], s3.url("reports/r.html"), ReportConfig(samples_per_band=2))
    page = s3.fs.cat(f"{s3.bucket}/reports/r.html").decode()
    assert page.startswith("<!DOCTYPE html>") and "40" in page
    assert build_report([tmp_path / "js"], tmp_path / "r.html", ReportConfig(samples_per_band=2)).rows == 40
    assert _s3_keys(s3, "reports") == ["reports/r.html"]


@pytest.mark.slow
def test_model_folder_on_s3_is_fetched_once_and_scores_like_the_local_one(tmp_path, s3, bundled_model, monkeypatch):
    from phifilter import EduClassifier
    from phifilter.classifier import default_model_path

    monkeypatch.setenv("PHIFILTER_CACHE_DIR", str(tmp_path / "cache"))
    s3.fs.put(str(default_model_path()), f"{s3.bucket}/models/default", recursive=True)
    clf = EduClassifier.load(s3.url("models/default"), device="cpu")
    texts = [GOOD_CODE, BOILERPLATE]
    np.testing.assert_array_equal(clf.edu_score(texts), bundled_model.edu_score(texts))
    copies = list((tmp_path / "cache" / "remote").iterdir())
    assert len(copies) == 1
    EduClassifier.load(s3.url("models/default/"), device="cpu")  # same version: no second copy
    assert list((tmp_path / "cache" / "remote").iterdir()) == copies


def test_embed_suggest_and_train_inputs_take_urls(tmp_path, bundled_model):
    import fsspec
    from test_formats import ROWS, write_jsonl

    from phifilter.embcache import embed_shards
    from phifilter.suggest import suggest
    from phifilter.train import TrainConfig, read_labels

    mem = fsspec.filesystem("memory")
    root = f"/e{os.getpid()}-{time.time_ns()}"
    write_jsonl(tmp_path / "in" / "a.jsonl.gz", ROWS, "gzip")
    mem.put(str(tmp_path / "in" / "a.jsonl.gz"), f"{root}/in/a.jsonl.gz")
    emb = bundled_model.embedder_
    embed_shards(tmp_path / "in", tmp_path / "emb", emb)
    embed_shards(f"memory://{root}/in", f"memory://{root}/emb", emb)
    with mem.open(f"{root}/emb/a.parquet", "rb") as f:  # a sidecar is Parquet whatever the shard's format
        assert pq.read_table(f).equals(pq.read_table(tmp_path / "emb" / "a.parquet"))
    suggest(bundled_model, [tmp_path / "in"], tmp_path / "s.parquet", n=2, random_share=0.5)
    suggest(bundled_model, [f"memory://{root}/in"], f"memory://{root}/s.parquet", n=2, random_share=0.5)
    with mem.open(f"{root}/s.parquet", "rb") as f:
        got = pq.read_table(f).drop_columns(["source_shard"])
    assert got.equals(pq.read_table(tmp_path / "s.parquet").drop_columns(["source_shard"]))
    labels = pa.Table.from_pylist([{"text": r["text"], "llm_score": i} for i, r in enumerate(ROWS)])
    with mem.open(f"{root}/labels.parquet", "wb") as f:
        pq.write_table(labels, f)
    data = read_labels(f"memory://{root}/labels.parquet", TrainConfig())
    assert list(data.scores) == [0, 1, 2, 3]


def test_urls_are_found_named_and_checked_like_local_paths(tmp_path):
    import fsspec

    from phifilter.corpus import check_output_dir, find_shards
    from phifilter.errors import InputError
    from phifilter.location import RemotePath, as_location

    mem = fsspec.filesystem("memory")
    root = f"/f{os.getpid()}-{time.time_ns()}"
    for key in ("in/a.parquet", "in/sub/b.jsonl.zst", "in/.hidden/c.parquet", "in/_SUCCESS", "in/meta.json"):
        mem.pipe(f"{root}/{key}", b"x")
    assert [str(s.name) for s in find_shards(f"memory://{root}/in/")] == ["a.parquet", "sub/b.jsonl.zst"]
    shards = find_shards(f"memory://{root}/in/**/*.zst")
    assert [(str(s.path), str(s.name)) for s in shards] == [(f"memory://{root}/in/sub/b.jsonl.zst", "sub/b.jsonl.zst")]
    with pytest.raises(InputError, match="no such file or folder"):
        find_shards(f"memory://{root}/missing")
    with pytest.raises(OutputError, match="may not be the input folder"):
        check_output_dir([f"memory://{root}/in"], f"memory://{root}/in/out")
    assert check_output_dir([f"memory://{root}/in"], f"memory://{root}/out") == RemotePath(f"memory://{root}/out")
    assert as_location(f"file://{tmp_path}") == tmp_path  # file:// is a local path
    loc = RemotePath("s3://bucket/a/b.jsonl.gz")
    assert (loc.name, str(loc.parent), str(loc.parent / "c" / "d.parquet")) == (
        "b.jsonl.gz", "s3://bucket/a", "s3://bucket/a/c/d.parquet")


def test_missing_driver_and_bad_storage_options_are_one_line_errors(tmp_path):
    from conftest import run_cli

    proc = run_cli("filter", "nosuchproto://bucket/x", "-o", tmp_path / "o", "--threshold", "0.5", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: nosuchproto://bucket/x: ") and "Traceback" not in proc.stderr
    proc = run_cli("filter", "x", "-o", tmp_path / "o", "--threshold", "0.5", "--storage-options", "{nope", check=False)
    assert proc.returncode == 2 and "--storage-options" in proc.stderr


def test_s3_partitioned_tasks_together_equal_one_run(tmp_path, s3, bundled_model):
    from phifilter.scoring import score_shards

    src = _corpus(tmp_path / "in", shards=3, rows=4)
    for k in range(3):
        s3.fs.put(str(src / f"s{k}.parquet"), f"{s3.bucket}/corpus/s{k}.parquet")
    score_shards(src, tmp_path / "ref", model=bundled_model)
    done = [score_shards(s3.url("corpus"), s3.url("scored"), model=bundled_model, task_index=i, num_tasks=2)
            for i in (0, 1)]
    assert sum(d.shards_scored for d in done) == 3
    assert _s3_keys(s3, "scored") == [f"scored/s{k}.parquet" for k in range(3)]  # task locks released
    for k in range(3):
        with s3.fs.open(f"{s3.bucket}/scored/s{k}.parquet", "rb") as f:
            assert pq.read_table(f).equals(pq.read_table(tmp_path / "ref" / f"s{k}.parquet"))
    from phifilter.scoring.status import scoring_status

    report = scoring_status(s3.url("scored"), [s3.url("corpus")])
    assert [(s.name, s.state) for s in report.shards] == [(f"s{k}.parquet", "done") for k in range(3)]
    s3.fs.pipe(f"{s3.bucket}/scored/.s9.parquet.partial/manifest.json", b'{"rows": 4}')
    assert [(s.name, s.state) for s in scoring_status(s3.url("scored")).shards][-1] == ("s9.parquet", "partial")


def test_label_reads_its_input_from_a_url(tmp_path, chat_server):
    import fsspec
    from test_label import CODE_DOCS, backend, fast, write_docs

    from phifilter.label.annotate import label_file

    src = write_docs(tmp_path / "seed.parquet", CODE_DOCS[:3])
    mem = fsspec.filesystem("memory")
    url = f"memory:///l{os.getpid()}-{time.time_ns()}/seed.parquet"
    mem.put(str(src), url.removeprefix("memory://"))
    summary = label_file(url, tmp_path / "labels.parquet", backend(chat_server), fast(), progress=False)
    assert summary.answered == 3
    out = pq.read_table(tmp_path / "labels.parquet")
    assert out.column("text").to_pylist() == pq.read_table(src).column("text").to_pylist()
    assert out.column("llm_score").null_count == 0


def test_s3_lock_heartbeat_renews_past_the_ttl(s3, monkeypatch):
    from phifilter.corpus import OutputLock

    monkeypatch.setenv("PHIFILTER_LOCK_TTL", "1.5")
    with OutputLock(s3.url("out")):
        first = json.loads(s3.fs.cat(f"{s3.bucket}/out/.phifilter.lock"))["expires"]
        time.sleep(2.5)  # past the first expiry: only renewals keep it
        now = json.loads(s3.fs.cat(f"{s3.bucket}/out/.phifilter.lock"))
        assert now["expires"] > first and now["expires"] > time.time()
        monkeypatch.setenv("PHIFILTER_LOCK_TTL", "600")
        with pytest.raises(OutputError, match="another phifilter process"):
            OutputLock(s3.url("out")).__enter__()
    assert not s3.fs.exists(f"{s3.bucket}/out/.phifilter.lock")
