"""`phifilter label` as a real subprocess: SIGKILL and Ctrl-C mid-run, resume, secrets, dry run."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifilter.label.standin import Canned

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-DO-NOT-LEAK-4f9a2c71e0b3"
DOCS = [f"def step_{i}(n):\n    # advance the counter by {i}\n    return n + {i}\n" for i in range(40)]


def env(**extra) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("OPENAI_API_KEY", None)
    e.update(extra)
    return e


def label_cmd(src, out, server, *args) -> list[str]:
    return [sys.executable, "-m", "phifilter", "label", str(src), "-o", str(out), "--base-url", server.url,
            "--model", "test-model", "--retry-delay", "0.01", "-q", *args]


def write_seed(path: Path, texts=DOCS) -> Path:
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts}), path)
    return path


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cached_docs(cache: Path) -> set[str]:
    with sqlite3.connect(cache) as db:
        return {r[0] for r in db.execute("SELECT doc_sha FROM answers")}


def wait_for(predicate, proc, limit=60.0):
    deadline = time.monotonic() + limit
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the labelling run made no progress"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_pays_for_nothing_twice(tmp_path, chat_server):
    src, out = write_seed(tmp_path / "seed.parquet"), tmp_path / "labels.parquet"
    cache = tmp_path / "labels.cache.sqlite"
    chat_server.script = lambda doc, body: Canned(delay=0.05)
    proc = subprocess.Popen(label_cmd(src, out, chat_server, "--concurrency", "4"), env=env(OPENAI_API_KEY=SECRET),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: chat_server.count() >= 15, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = chat_server.count()
    done_before = cached_docs(cache)
    assert 0 < len(done_before) < len(DOCS) and not out.exists()

    resumed = subprocess.run(label_cmd(src, out, chat_server, "--concurrency", "4"), env=env(OPENAI_API_KEY=SECRET),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    per_doc = chat_server.per_doc()
    asked_after = [r.doc for r in chat_server.requests[before:]]
    # nothing that was cached before the kill was asked again ...
    assert not {sha(d) for d in asked_after} & done_before
    # ... only the requests in flight at the kill (at most --concurrency) were asked twice ...
    assert sum(c - 1 for c in per_doc.values()) <= 4
    assert set(per_doc) == set(DOCS)
    # ... and the output is whole.
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len(DOCS) and all(r["llm_model"] == "test-model" for r in rows)


@pytest.mark.slow
def test_ctrl_c_waits_for_requests_in_flight_then_resume_asks_each_document_once(tmp_path, chat_server):
    src, out = write_seed(tmp_path / "seed.parquet"), tmp_path / "labels.parquet"
    chat_server.script = lambda doc, body: Canned(delay=0.1)
    proc = subprocess.Popen(label_cmd(src, out, chat_server, "--concurrency", "4"), env=env(OPENAI_API_KEY=SECRET),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: chat_server.count() >= 10, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Interrupted" in stderr and "Traceback" not in stderr
    asked = chat_server.count()
    assert asked < len(DOCS) and len(cached_docs(tmp_path / "labels.cache.sqlite")) == asked
    resumed = subprocess.run(label_cmd(src, out, chat_server), env=env(OPENAI_API_KEY=SECRET),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert chat_server.per_doc() == {d: 1 for d in DOCS}


def test_api_key_is_never_printed_or_written(tmp_path, chat_server):
    src, out = write_seed(tmp_path / "seed.parquet", DOCS[:6]), tmp_path / "labels.parquet"
    # The server echoes the key in its error messages, as some providers do.
    chat_server.queue(Canned(429, {"error": {"message": f"rate limited for key {SECRET}"}}),
                      Canned(500, {"error": {"message": f"internal error, key={SECRET}"}}))
    ok = subprocess.run(label_cmd(src, out, chat_server)[:-1], env=env(OPENAI_API_KEY=SECRET),
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    chat_server.queue(Canned(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}}))
    refused = subprocess.run(label_cmd(write_seed(tmp_path / "more.parquet", ["print('hi there')\n"]),
                                       tmp_path / "more-labels.parquet", chat_server, "--api-key-env", "MY_KEY"),
                             env=env(MY_KEY=SECRET), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "API key was refused" in refused.stderr
    assert chat_server.requests[0].headers["Authorization"] == f"Bearer {SECRET}"  # it was sent
    for text in (ok.stdout, ok.stderr, refused.stdout, refused.stderr):
        assert SECRET not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "labels.cache.sqlite" for p in files)
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p


def test_missing_key_for_openai_is_a_clear_error(tmp_path):
    src = write_seed(tmp_path / "seed.parquet", DOCS[:1])
    r = subprocess.run([sys.executable, "-m", "phifilter", "label", str(src), "-o", str(tmp_path / "o.parquet"),
                        "--model", "gpt-4o-mini"], env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "OPENAI_API_KEY is not set" in r.stderr


def test_dry_run_needs_no_key_and_sends_nothing(tmp_path, chat_server):
    src = write_seed(tmp_path / "seed.parquet")
    r = subprocess.run(label_cmd(src, tmp_path / "labels.parquet", chat_server, "--dry-run",
                                 "--price-per-mtok", "2.5,10"), env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "would send 40 requests to test-model" in r.stdout
    assert "estimated tokens:" in r.stdout and "estimated cost: $" in r.stdout
    assert chat_server.count() == 0 and not (tmp_path / "labels.parquet").exists()


def test_input_without_text_column_is_one_clear_line(tmp_path, chat_server):
    src = tmp_path / "seed.parquet"
    pq.write_table(pa.table({"body": ["x"]}), src)
    r = subprocess.run(label_cmd(src, tmp_path / "o.parquet", chat_server), env=env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"Error: {src}: no column 'text'; columns are: body "
                                             "(choose one with --text-column)"]
