"""Security: model files load only through skops with a trusted-type list, no eval/pickle of
user data anywhere, API keys never reach logs, outputs or error messages, pinned embedders."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import traceback
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skops.io as sio
from click.testing import CliRunner

from conftest import REPO, cli_env, write_shard
from phifilter.classifier import HEAD_FILE, META_FILE, EduClassifier, _sha256_file, default_model_path
from phifilter.cli import main
from phifilter.embed import DEFAULT_EMBEDDER_SHA256, bundled_model_path, file_hashes
from phifilter.errors import ModelError
from phifilter.label.standin import Canned

SECRET = "sk-test-5ecret-DO-NOT-LEAK-0123456789abcdef"


def _model_with_forest(tmp_path: Path, obj) -> Path:
    m = Path(shutil.copytree(default_model_path(), tmp_path / "model"))
    sio.dump(obj, m / HEAD_FILE)
    meta = json.loads((m / META_FILE).read_text())
    meta["files"][HEAD_FILE] = _sha256_file(m / HEAD_FILE)  # an attacker can fix the hash too
    (m / META_FILE).write_text(json.dumps(meta))
    return m


@pytest.mark.parametrize("payload, name", [({"f": eval}, "builtins.eval"), ([os.system], "posix.system")])
def test_skops_file_referencing_a_function_is_refused(tmp_path, payload, name):
    m = _model_with_forest(tmp_path, payload)
    with pytest.raises(ModelError, match=f"untrusted types {re.escape(name)}"):
        EduClassifier.load(m)
    result = CliRunner().invoke(main, ["score", str(write_shard(tmp_path / "in" / "a.parquet", ["x"])),
                                       "-o", str(tmp_path / "out"), "-m", str(m), "-q"])
    assert result.exit_code == 1 and "untrusted types" in result.output and "Traceback" not in result.output


def test_a_file_that_is_not_a_skops_archive_is_refused(tmp_path):
    m = Path(shutil.copytree(default_model_path(), tmp_path / "model"))
    (m / HEAD_FILE).write_bytes(b"\x80\x04\x95" + b"cos\nsystem\n" * 4)  # a pickle, not a zip
    meta = json.loads((m / META_FILE).read_text())
    meta["files"][HEAD_FILE] = _sha256_file(m / HEAD_FILE)
    (m / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not a skops file"):
        EduClassifier.load(m)


# Where a forbidden call is acceptable, with the reason. Keys: "path:needle".
ALLOWED = {
    # sqlite3 "executescript"/"execute" are SQL, not Python exec; matched by the exact pattern below
    # The pass@k sandbox's harness runs a model completion: that is its purpose. It runs inside
    # bubblewrap (own user, PID, mount, IPC and network namespaces, uid 65534, a read-only
    # interpreter, a private tmpfs, rlimits); tests/test_sandbox.py proves the escapes stay contained.
    "phifilter/pretrain/sandbox.py:exec(",
}
FORBIDDEN = [
    (re.compile(r"^\s*(import pickle|from pickle|import cPickle|import dill|import cloudpickle|import joblib)", re.M), "pickle"),
    (re.compile(r"\bpickle\.(loads?|Unpickler)\b"), "pickle"),
    (re.compile(r"(?<![\w.])eval\("), "eval("),
    (re.compile(r"(?<![\w.])exec\("), "exec("),
    (re.compile(r"\btorch\.load\("), "torch.load"),
    (re.compile(r"\byaml\.(load|unsafe_load|full_load)\("), "yaml.load"),
    (re.compile(r"\bmarshal\.loads?\("), "marshal"),
    (re.compile(r"\bnp\.load\([^)]*allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
]


def test_no_eval_exec_or_pickle_in_the_package():
    found = []
    for path in sorted((REPO / "phifilter").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text(encoding="utf-8")
        for pattern, what in FORBIDDEN:
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                if f"{rel}:{what}" not in ALLOWED:
                    found.append(f"{rel}:{line}: {what}")
    assert not found, "forbidden calls (add a justified entry to ALLOWED if one is really needed):\n" + "\n".join(found)


def test_the_forbidden_patterns_do_match():  # the scanner above is not vacuous
    samples = {"pickle": "import pickle", "eval(": "x = eval(s)", "exec(": "exec(code)",
               "torch.load": "torch.load(f)", "yaml.load": "yaml.load(f)"}
    for what, code in samples.items():
        assert any(p.search(code) for p, w in FORBIDDEN if w == what), what
    assert not any(p.search("db.execute(sql)") or p.search("model.eval()") for p, _ in FORBIDDEN)


# ---------------------------------------------------------------------------------------------
# API keys


def _seed(tmp_path: Path) -> Path:
    src = tmp_path / "seed.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["def f(): pass", "x = 1", "print(2)"]}), src)
    return src


def _echo_key(status: int):
    def script(doc, body):  # a server that quotes the key back, as real ones do on a bad key
        return Canned(status, {"error": {"message": f"Incorrect API key provided: {SECRET}. "
                                                      f"Header was 'Bearer {SECRET}'"}})
    return script


@pytest.mark.parametrize("status", [401, 500])
def test_api_key_echoed_by_a_failing_endpoint_never_reaches_output(tmp_path, chat_server, status):
    import subprocess
    import sys

    chat_server.script = _echo_key(status)
    src, out = _seed(tmp_path), tmp_path / "labels.parquet"
    env = cli_env() | {"OPENAI_API_KEY": SECRET}
    proc = subprocess.run([sys.executable, "-m", "phifilter", "label", str(src), "-o", str(out), "--base-url",
                           chat_server.url, "--model", "m", "--retries", "1", "--retry-delay", "0"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Error:" in proc.stderr and "Traceback" not in proc.stderr
    assert "***" in proc.stderr  # the server's message is shown, with the key blanked
    assert SECRET not in proc.stdout + proc.stderr
    assert chat_server.requests and chat_server.requests[0].headers.get("Authorization") == f"Bearer {SECRET}"
    for p in tmp_path.iterdir():
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p


def test_api_key_not_in_exceptions_or_debug_logs(tmp_path, chat_server, caplog):
    from phifilter.label.annotate import LabelConfig, LabelError, label_file
    from phifilter.label.backends import BackendError, OpenAIChatBackend

    chat_server.script = _echo_key(500)
    backend = OpenAIChatBackend(chat_server.url, "m", api_key=SECRET, concurrency=2)
    caplog.set_level(logging.DEBUG)  # everything any library logs
    with pytest.raises((LabelError, BackendError)) as info:
        label_file(_seed(tmp_path), tmp_path / "l.parquet", backend, LabelConfig(retries=1, retry_delay=0),
                   progress=False, echo=logging.getLogger("test").info)
    e = info.value
    shown = "".join(traceback.format_exception(type(e), e, e.__traceback__)) + repr(e) + repr(e.args) + repr(backend)
    assert SECRET not in shown
    assert SECRET not in caplog.text
    chat_server.script = _echo_key(401)
    with pytest.raises(BackendError) as info:
        backend.complete([[{"role": "user", "content": "x"}]])
    assert SECRET not in str(info.value) and "***" in str(info.value)


# ---------------------------------------------------------------------------------------------
# supply chain: pinned embedder hashes


def test_embedder_sha256_mismatch_is_refused_by_score_and_train(tmp_path):
    src = write_shard(tmp_path / "in" / "a.parquet", ["def f():\n    return 1\n"])
    wrong = "config.json=" + "0" * 64
    runner = CliRunner()
    result = runner.invoke(main, ["score", str(src), "-o", str(tmp_path / "out"), "--device", "cpu", "-q",
                                  "--embedder-sha256", wrong])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and "config.json: SHA-256" in result.output
    assert not list((tmp_path / "out").glob("*.parquet"))
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c", "d"], "llm_score": [0, 5, 1, 4]}), labels)
    result = runner.invoke(main, ["train", str(labels), "-o", str(tmp_path / "m"), "--device", "cpu", "-q",
                                  "--recipe", "paper", "--embedder-sha256", wrong])
    assert result.exit_code == 1 and "config.json: SHA-256" in result.output, result.output
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("value", ["config.json", "config.json=abc", "=" + "0" * 64, "a/b=" + "0" * 64])
def test_malformed_embedder_sha256_is_a_usage_error(tmp_path, value):
    result = CliRunner().invoke(main, ["score", str(tmp_path), "-o", str(tmp_path / "o"), "--embedder-sha256", value])
    assert result.exit_code == 2 and "--embedder-sha256" in result.output and "Traceback" not in result.output


def test_matching_pins_and_revision_are_accepted_and_recorded(tmp_path, bundled_model):
    from phifilter.scoring import score_shards

    src = write_shard(tmp_path / "in" / "a.parquet", ["def f():\n    return 1\n", "x = 2"])
    summary = score_shards(src, tmp_path / "out", model=None, device="cpu", embedder_sha256=dict(DEFAULT_EMBEDDER_SHA256),
                           embedder_revision="1110a243fdf4706b3f48f1d95db1a4f5529b4d41")
    assert summary.rows == 2
    clf = EduClassifier.load(embedder_revision="abc", embedder_sha256={"config.json": "1" * 64})
    assert clf.embedder_.revision == "abc" and clf.embedder_.sha256 == {"config.json": "1" * 64}


def test_hash_cache_is_used_and_catches_an_edit_that_restores_mtime(tmp_path, monkeypatch):
    import phifilter.embed as embed

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = []
    real = embed.sha256_file
    monkeypatch.setattr(embed, "sha256_file", lambda p: (calls.append(Path(p).name), real(p))[1])
    folder = Path(shutil.copytree(bundled_model_path(), tmp_path / "emb"))
    first = file_hashes(folder)
    assert sorted(calls) == sorted(first) and first["config.json"] == DEFAULT_EMBEDDER_SHA256["config.json"]
    assert (tmp_path / "cache" / "phifilter" / "hashes.json").is_file()
    calls.clear()
    assert file_hashes(folder) == first and calls == []  # second verification: no file is read
    # Edit config.json keeping its size, then set its mtime back: the cache must not be fooled.
    cfg = folder / "config.json"
    st = cfg.stat()
    data = bytearray(cfg.read_bytes())
    i = data.index(b"0")
    data[i : i + 1] = b"1"
    cfg.write_bytes(bytes(data))
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cfg.stat().st_size == st.st_size and cfg.stat().st_mtime_ns == st.st_mtime_ns
    assert file_hashes(folder)["config.json"] != DEFAULT_EMBEDDER_SHA256["config.json"]
    assert calls == ["config.json"]
