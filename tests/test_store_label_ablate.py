"""`label` and `ablate` with their inputs and outputs on a real S3-compatible server (moto in server
mode on 127.0.0.1, s3fs as the client), and their ``--stats-json``.

label: the answer cache is worked on as a local copy, locked and published to the store; a run
SIGKILLed mid-run is rerun without asking the stand-in LLM again for any answered document
(requests counted at the stand-in), on the same machine and on "another" one (a fresh local
cache folder) that only has what was published.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s3server import s3  # noqa: F401  (fixture)
from s3server import _moto_endpoint  # noqa: F401  (fixture)
from phifilter.label import StandinServer, heuristic_rating

ROOT = Path(__file__).resolve().parents[1]
DOCS = [f"def step_{i}(n):\n    # advance the counter by {i}\n    return n + {i}\n" for i in range(40)]


class CountingRater:
    """The stand-in's heuristic, recording every document it is asked about; with ``hold_after``
    it answers that many requests and then holds every later one until ``gate`` is set (so a
    test can act while a run is surely mid-way)."""

    def __init__(self, delay: float = 0.01, hold_after: int | None = None):
        self.delay = delay
        self.hold_after = hold_after
        self.gate = threading.Event()
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, doc: str):
        time.sleep(self.delay)
        with self._lock:
            n = len(self.asked)
            self.asked.append(doc)
        if self.hold_after is not None and n >= self.hold_after:
            self.gate.wait(120)
        return heuristic_rating(doc)

    def per_doc(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in list(self.asked):
            out[d] = out.get(d, 0) + 1
        return out


def _env(s3, cache_dir: Path, **extra) -> dict:
    e = dict(os.environ)
    e.update(s3.env)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["PHIFILTER_CACHE_DIR"] = str(cache_dir)
    e.pop("OPENAI_API_KEY", None)
    e.update(extra)
    return e


def _label_cmd(src: str, out: str, server, *args) -> list[str]:
    return [sys.executable, "-m", "phifilter", "label", src, "-o", out, "--base-url", server.url,
            "--model", server.model, "--rubric", "code", "--retry-delay", "0.01", "-q", *args]


def _seed_on_s3(s3, tmp_path, texts=DOCS) -> str:
    local = tmp_path / "seed.parquet"
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts}), local)
    s3.fs.put(str(local), f"{s3.bucket}/in/seed.parquet")
    return s3.url("in/seed.parquet")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _published_docs(s3, tmp_path, key: str) -> set[str]:
    if not s3.fs.exists(f"{s3.bucket}/{key}"):
        return set()
    local = tmp_path / f"published-{time.monotonic_ns()}.sqlite"
    s3.fs.get(f"{s3.bucket}/{key}", str(local))
    with sqlite3.connect(local) as db:
        return {r[0] for r in db.execute("SELECT doc_sha FROM answers")}


def _wait_for(predicate, proc, limit=60.0):
    deadline = time.monotonic() + limit
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the labelling run made no progress"
        time.sleep(0.02)


def _keys(s3, prefix: str) -> list[str]:
    return sorted(p.split("/", 1)[1] for p in s3.fs.find(f"{s3.bucket}/{prefix}"))


@pytest.mark.slow
def test_label_to_s3_killed_mid_run_reruns_without_asking_again(tmp_path, s3):
    src, out = _seed_on_s3(s3, tmp_path), s3.url("labels/labels.parquet")
    cache_dir = tmp_path / "cache"
    rater = CountingRater(hold_after=12)
    with StandinServer(rate=rater) as server:
        proc = subprocess.Popen(_label_cmd(src, out, server, "--concurrency", "4"), env=_env(s3, cache_dir),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for(lambda: server.count() >= 12 and len(rater.asked) >= 16, proc)
        # While it runs, the store's lock object keeps a second run out (before it asks anything).
        second = subprocess.run(_label_cmd(src, out, server, "--concurrency", "4"), env=_env(s3, tmp_path / "other"),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and "another phifilter process" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        rater.gate.set()  # the 4 requests held in flight are answered to a dead client
        asked_before = len(rater.asked)
        assert asked_before == 16
        assert not s3.fs.exists(f"{s3.bucket}/labels/labels.parquet")  # no output yet, never a partial one
        local_copy = list(cache_dir.rglob("labels.cache.sqlite"))
        assert len(local_copy) == 1  # the killed run's answers wait in the local working copy

        stats_url = s3.url("labels/label-stats.json")
        resumed = subprocess.run(_label_cmd(src, out, server, "--concurrency", "4", "--stats-json", stats_url),
                                 env=_env(s3, cache_dir), capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
    per_doc = rater.per_doc()
    assert set(per_doc) == set(DOCS)
    # Only the requests in flight at the kill (at most --concurrency) were asked twice.
    assert sum(c - 1 for c in per_doc.values()) <= 4
    with s3.fs.open(f"{s3.bucket}/labels/labels.parquet", "rb") as f:
        rows = pq.read_table(f).to_pylist()
    assert [r["text"] for r in rows] == DOCS
    assert [r["llm_score"] for r in rows] == [heuristic_rating(d)[0] for d in DOCS]
    # The cache is published beside the output; lock and temporaries are gone; the input is unchanged.
    assert _keys(s3, "labels") == ["labels/label-stats.json", "labels/labels.cache.sqlite", "labels/labels.parquet"]
    assert _published_docs(s3, tmp_path, "labels/labels.cache.sqlite") == {_sha(d) for d in DOCS}
    assert not list(cache_dir.rglob("labels.cache.sqlite"))  # published, so the local copy was deleted
    stats = json.loads(s3.fs.cat(f"{s3.bucket}/labels/label-stats.json"))
    assert stats["command"] == "label" and stats["rows"]["in"] == len(DOCS)
    assert stats["rows"]["cached"] + stats["rows"]["answered"] == len(DOCS)
    assert stats["rows"]["answered"] == len(rater.asked) - asked_before
    assert stats["bytes"]["in"] == sum(len(d.encode()) for d in DOCS)
    assert stats["tokens"]["prompt"] > 0 and stats["tokens"]["completion"] > 0
    assert stats["per_shard"][0]["rows"] == len(DOCS) and stats["failures"] == []
    assert sum(stats["scores"].values()) == len(DOCS)


@pytest.mark.slow
def test_label_rerun_on_another_machine_asks_nothing_that_was_published(tmp_path, s3):
    src, out = _seed_on_s3(s3, tmp_path), s3.url("labels/labels.parquet")
    rater = CountingRater(hold_after=10)
    with StandinServer(rate=rater) as server:
        # Publish a snapshot of the cache after every round of answers.
        proc = subprocess.Popen(_label_cmd(src, out, server, "--concurrency", "2"),
                                env=_env(s3, tmp_path / "machine-a", PHIFILTER_LABEL_PUBLISH_S="0"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for(lambda: len(_published_docs(s3, tmp_path, "labels/labels.cache.sqlite")) >= 8, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        rater.gate.set()
        published = _published_docs(s3, tmp_path, "labels/labels.cache.sqlite")
        asked_before = len(rater.asked)
        assert 8 <= len(published) < len(DOCS)
        # "Machine b" has no local copy: only what machine a published (and machine a's lock,
        # whose owner is a dead pid on this host, so it is taken over at once).
        resumed = subprocess.run(_label_cmd(src, out, server, "--concurrency", "2"),
                                 env=_env(s3, tmp_path / "machine-b"), capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
    asked_after = {_sha(d) for d in rater.asked[asked_before:]}
    assert not asked_after & published  # no published answer is paid for again
    assert {_sha(d) for d in rater.asked} == {_sha(d) for d in DOCS}
    with s3.fs.open(f"{s3.bucket}/labels/labels.parquet", "rb") as f:
        assert pq.read_table(f).column("llm_score").null_count == 0
    assert _keys(s3, "labels") == ["labels/labels.cache.sqlite", "labels/labels.parquet"]


def test_label_with_a_local_output_and_a_cache_on_s3_merges_and_publishes(tmp_path, s3, monkeypatch):
    from phifilter.label import LabelConfig, OpenAIChatBackend, label_file

    monkeypatch.setenv("PHIFILTER_CACHE_DIR", str(tmp_path / "cache"))
    src = _seed_on_s3(s3, tmp_path, DOCS[:6])
    cache_url = s3.url("caches/answers.sqlite")
    rater = CountingRater(delay=0)
    with StandinServer(rate=rater) as server:
        backend = OpenAIChatBackend(server.url, server.model, api_key="unused", concurrency=2)
        cfg = LabelConfig(rubric="code", cache=cache_url, max_requests=4)
        first = label_file(src, tmp_path / "a.parquet", backend, cfg, progress=False, echo=lambda line: None)
        assert first.answered == 4 and first.stopped
        assert len(_published_docs(s3, tmp_path, "caches/answers.sqlite")) == 4
        cfg.max_requests = None
        stats = tmp_path / "stats.json"
        second = label_file(src, tmp_path / "a.parquet", backend, cfg, progress=False, echo=lambda line: None,
                            stats_json=stats)
    assert second.cached == 4 and second.answered == 2 and len(rater.asked) == 6
    assert pq.read_table(tmp_path / "a.parquet").column("llm_score").null_count == 0
    assert _keys(s3, "caches") == ["caches/answers.sqlite"]  # no lock object, no temporaries
    assert not list((tmp_path / "cache").rglob("answers.sqlite"))
    doc = json.loads(stats.read_text())
    assert doc["rows"]["cached"] == 4 and doc["rows"]["answered"] == 2 and doc["requests"]["sent"] == 2
    assert doc["docs_per_second"] > 0 and doc["per_shard"][0]["name"] == "seed.parquet"

    # A dry run reads the published cache, takes no lock, publishes nothing and keeps no copy.
    published = s3.fs.cat(f"{s3.bucket}/caches/answers.sqlite")
    cfg.dry_run = True
    dry = label_file(src, tmp_path / "b.parquet", backend, cfg, progress=False, echo=lambda line: None)
    assert dry.cached == 6 and "would send 0 requests" in str(dry)
    assert _keys(s3, "caches") == ["caches/answers.sqlite"]
    assert s3.fs.cat(f"{s3.bucket}/caches/answers.sqlite") == published
    assert not (tmp_path / "b.parquet").exists() and not list((tmp_path / "cache").rglob("answers.sqlite"))


def test_label_to_an_s3_output_with_a_local_cache(tmp_path, s3):
    from phifilter.label import LabelConfig, OpenAIChatBackend, label_file

    src = tmp_path / "seed.parquet"
    pq.write_table(pa.table({"text": DOCS[:3]}), src)
    with StandinServer() as server:
        backend = OpenAIChatBackend(server.url, server.model, api_key="unused")
        cfg = LabelConfig(rubric="code", cache=str(tmp_path / "answers.sqlite"))
        label_file(src, s3.url("out/labels.parquet"), backend, cfg, progress=False, echo=lambda line: None)
        label_file(src, s3.url("out/labels.parquet"), backend, cfg, progress=False, echo=lambda line: None)
        assert server.count() == 3
    assert _keys(s3, "out") == ["out/labels.parquet"]  # the output's lock object is gone
    with s3.fs.open(f"{s3.bucket}/out/labels.parquet", "rb") as f:
        assert pq.read_table(f).column("text").to_pylist() == DOCS[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.sqlite", "seed.parquet"]


def test_label_refuses_a_foreign_file_as_the_published_cache(tmp_path, s3, monkeypatch):
    from phifilter.errors import InputError
    from phifilter.label import LabelConfig, OpenAIChatBackend, label_file

    monkeypatch.setenv("PHIFILTER_CACHE_DIR", str(tmp_path / "cache"))
    src = _seed_on_s3(s3, tmp_path, DOCS[:2])
    s3.fs.pipe(f"{s3.bucket}/out/labels.cache.sqlite", b"not a database, somebody's notes")
    with StandinServer() as server:
        backend = OpenAIChatBackend(server.url, server.model, api_key="unused")
        with pytest.raises(InputError, match=r"s3://.*/out/labels.cache.sqlite: not a phifilter label cache"):
            label_file(src, s3.url("out/labels.parquet"), backend, LabelConfig(rubric="code"), progress=False,
                       echo=lambda line: None)
        assert server.count() == 0
    assert s3.fs.cat(f"{s3.bucket}/out/labels.cache.sqlite") == b"not a database, somebody's notes"
    assert _keys(s3, "out") == ["out/labels.cache.sqlite"]  # lock released, nothing published


# --- ablate -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_ablate_reads_scored_shards_on_s3_and_publishes_its_report_there(tmp_path, s3):
    from ablate_corpus import EVAL_DIR, make_corpus

    if not (EVAL_DIR / "HumanEval.jsonl.gz").is_file():
        pytest.skip(f"{EVAL_DIR}: the shared HumanEval/MBPP copies are absent")
    made = make_corpus(tmp_path / "scored", EVAL_DIR, n_docs=120)
    for p in sorted((tmp_path / "scored").iterdir()):
        s3.fs.put(str(p), f"{s3.bucket}/scored/{p.name}")
    inputs_before = {k: s3.fs.cat(k) for k in s3.fs.find(f"{s3.bucket}/scored")}
    args = [sys.executable, "-m", "phifilter", "ablate", s3.url("scored"), "-o", s3.url("ablation"), "--preset", "micro",
            "--seeds", "1", "--arms", "filtered,random", "--pass-samples", "0", "--threads", "1", "--tokens", "4K",
            "--eval-dir", str(EVAL_DIR), "--val-fraction", "0.1", "--stats-json", s3.url("stats/ablate.json")]
    env = _env(s3, tmp_path / "cache")
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    # The report files, published whole; no lock object or temporary left; the inputs unchanged.
    assert _keys(s3, "ablation") == ["ablation/ablate.json", "ablation/loss_curves.png", "ablation/report.html",
                                     "ablation/report.md", "ablation/results.json"]
    assert {k: s3.fs.cat(k) for k in s3.fs.find(f"{s3.bucket}/scored")} == inputs_before
    results = json.loads(s3.fs.cat(f"{s3.bucket}/ablation/results.json"))
    assert results["data"]["docs"]["input"] == made["docs"]
    assert results["data"]["docs"]["removed_exact"] == 1 and results["data"]["docs"]["removed_ngram"] == 1
    assert "| filtered |" in s3.fs.cat(f"{s3.bucket}/ablation/report.md").decode()
    # Data and checkpoints stay in the local working folder keyed by the URL.
    from phifilter.pretrain.ablate import working_folder
    from phifilter.location import as_location

    os.environ["PHIFILTER_CACHE_DIR"], saved = str(tmp_path / "cache"), os.environ.get("PHIFILTER_CACHE_DIR")
    try:
        work = working_folder(as_location(s3.url("ablation")))
    finally:
        os.environ.pop("PHIFILTER_CACHE_DIR") if saved is None else os.environ.__setitem__("PHIFILTER_CACHE_DIR", saved)
    assert (work / "data" / "tokenizer.json").is_file() and (work / "runs" / "filtered.s0" / "result.json").is_file()
    assert (work / "results.json").read_bytes() == s3.fs.cat(f"{s3.bucket}/ablation/results.json")

    stats = json.loads(s3.fs.cat(f"{s3.bucket}/stats/ablate.json"))
    assert stats["command"] == "ablate" and stats["rows"]["in"] == made["docs"]
    assert stats["rows"]["removed_exact"] == 1 and stats["bytes"]["in"] > 0 and stats["tokens"]["all"] > 0
    assert [s["name"] for s in stats["per_shard"]] == ["part-0.parquet", "part-1.parquet"]
    assert sum(s["rows"] for s in stats["per_shard"]) == made["docs"]
    assert [(r["arm"], r["seed"], r["status"]) for r in stats["runs"]] == [("filtered", 0, "trained"),
                                                                           ("random", 0, "trained")]
    for run in stats["runs"]:
        assert run["tokens"] == results["arms"][run["arm"]]["tokens"] if "tokens" in results["arms"][run["arm"]] \
            else run["tokens"] > 0
        assert run["seconds"] > 0 and run["train_seconds"] >= 0 and run["steps"] > 0
    assert stats["docs_per_second"] > 0 and stats["failures"] == [] and stats["stages"]["data_seconds"] > 0

    # A rerun on this machine trains nothing again and publishes the same figures.
    again = subprocess.run(args[:-2], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("finished earlier, skipped") == 2
    assert json.loads(s3.fs.cat(f"{s3.bucket}/ablation/results.json"))["arms"] == results["arms"]
    # On another machine (no working folder) the published settings still hold: other run
    # settings are refused with one line naming the URL.
    other = subprocess.run([*args[:-2], "--set", "lr=0.01"], env=_env(s3, tmp_path / "machine-b"),
                           capture_output=True, text=True, timeout=600)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert f"{s3.url('ablation').rstrip('/')}: holds an ablation with other runs settings" in other.stderr, other.stderr
    assert json.loads(s3.fs.cat(f"{s3.bucket}/ablation/results.json"))["arms"] == results["arms"]


def test_label_stats_json_records_the_failure_and_the_cache_on_s3_keeps_every_answer(tmp_path, s3, chat_server,
                                                                                     monkeypatch):
    from phifilter.label import Canned
    from test_label import CODE_DOCS, backend, fast, write_docs

    from phifilter.label import LabelError, label_file

    monkeypatch.setenv("PHIFILTER_CACHE_DIR", str(tmp_path / "cache"))
    src = write_docs(tmp_path / "seed.parquet", CODE_DOCS)
    bad = CODE_DOCS[5]
    chat_server.script = lambda doc, body: Canned(500, {"error": {"message": "overloaded"}}) if doc == bad else None
    stats = tmp_path / "stats.json"
    with pytest.raises(LabelError, match="gave up after 2 attempts"):
        label_file(src, s3.url("out/labels.parquet"), backend(chat_server, concurrency=1), fast(retries=1, rubric="code"),
                   progress=False, echo=lambda line: None, stats_json=stats)
    doc = json.loads(stats.read_text())
    assert doc["shards"]["failed"] == 1 and doc["failures"][0]["path"] == str(src)
    assert "HTTP 500: overloaded" in doc["failures"][0]["error"] and doc["per_shard"][0]["status"] == "failed"
    assert doc["written"] is False and doc["rows"]["answered"] == 5
    # The answers paid for before the failure were published with the cache; no output, no lock.
    assert _keys(s3, "out") == ["out/labels.cache.sqlite"]
    assert len(_published_docs(s3, tmp_path, "out/labels.cache.sqlite")) == 5
    assert list((tmp_path / "cache").rglob("labels.cache.sqlite"))  # the local copy is kept until a run ends well
    chat_server.script = None
    summary = label_file(src, s3.url("out/labels.parquet"), backend(chat_server, concurrency=1), fast(rubric="code"),
                         progress=False, echo=lambda line: None)
    assert summary.cached == 5 and summary.answered == len(CODE_DOCS) - 5
