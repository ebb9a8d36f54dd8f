"""Stores that fail (issue 20, item 4): a dead endpoint, a wrong one, a stalled one, refused
credentials and a missing bucket are each one `Error:` line naming the URL and the fix, with
progress lines while retrying, in bounded time, and the original cause kept on the exception.

Real servers on 127.0.0.1: the moto S3 server (tests/s3server.py), a closed port, an HTTP
server that answers everything with an HTML page, and a socket that accepts and never answers.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading

import pytest

from conftest import REPO, cli_env, write_shard
from s3server import _moto_endpoint, s3  # noqa: F401  (fixtures)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def stalled_endpoint():
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def html_endpoint():
    """A web server that is not an object store: every request gets a 404 HTML page."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def _page(self):
            body = b"<html><body><h1>Not Found</h1></body></html>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _page

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _run(args, endpoint, **env):
    full = {**cli_env(), "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
            "PHIFILTER_STORE_TIMEOUT": "1", "PHIFILTER_STORE_RETRIES": "2", **env}
    full.pop("AWS_PROFILE", None)
    return subprocess.run([sys.executable, "-m", "phifilter", *map(str, args)], capture_output=True, text=True,
                          env=full, cwd=REPO, timeout=240)


def _one_error(proc, *needles):
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error: ")]
    others = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(("Error: ", "note: "))]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-4000:])
    assert len(errors) == 1 and not others, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("where", ["input", "output"])
def test_dead_endpoint_is_one_line_naming_the_url_and_the_fix(tmp_path, where):
    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    local = write_shard(tmp_path / "in" / "a.parquet", ["x = 1"])
    args = (["sample", "s3://bucket/in", "-o", tmp_path / "s.parquet", "-n", "1"] if where == "input"
            else ["filter", tmp_path / "scored", "-o", "s3://bucket/out", "--threshold", "0.5"])
    if where == "output":
        write_shard(tmp_path / "scored" / "a.parquet", ["x = 1"], edu_score=__import__("pyarrow").array([0.9], "float32"))
    del local
    proc = _run(args, endpoint)
    line = _one_error(proc, "s3://bucket/", "cannot be reached", endpoint, "AWS_ENDPOINT_URL")
    assert "retrying" in proc.stderr  # a progress line per retry: never silent


def test_stalled_endpoint_gives_up_after_bounded_retries_with_progress_lines(tmp_path, stalled_endpoint):
    proc = _run(["sample", "s3://bucket/in", "-o", tmp_path / "s.parquet", "-n", "1"], stalled_endpoint)
    _one_error(proc, "s3://bucket/in", "did not answer within 1 s", "PHIFILTER_STORE_TIMEOUT")
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("note: ") and "retrying" in ln]
    assert notes, proc.stderr


def test_wrong_endpoint_is_one_line(tmp_path, html_endpoint):
    proc = _run(["sample", "s3://bucket/in", "-o", tmp_path / "s.parquet", "-n", "1"], html_endpoint)
    _one_error(proc, "s3://bucket/in", html_endpoint)


def test_score_to_a_dead_store_is_not_masked_by_the_lock_cleanup(tmp_path):
    """The lock's release failing during an error must not replace that error."""
    src = write_shard(tmp_path / "in" / "a.parquet", ["x = 1"])
    endpoint = f"http://127.0.0.1:{_free_port()}"
    proc = _run(["score", src, "-o", "s3://bucket/scored", "--device", "cpu"], endpoint)
    _one_error(proc, "s3://bucket/scored", "cannot be reached")


def test_refused_credentials_are_one_line(tmp_path, s3):
    import requests

    src = write_shard(tmp_path / "in" / "a.parquet", ["x = 1"])
    s3.fs.put(str(src), f"{s3.bucket}/in/a.parquet")
    requests.post(f"{s3.endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        proc = _run(["sample", s3.url("in"), "-o", tmp_path / "s.parquet", "-n", "1"], s3.endpoint,
                    AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG1", AWS_SECRET_ACCESS_KEY="wrong")
    finally:
        requests.post(f"{s3.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
    _one_error(proc, s3.url("in"), "credentials", "AWS_")


def test_missing_bucket_is_one_line(tmp_path, s3):
    proc = _run(["sample", "s3://no-such-bucket-here/in", "-o", tmp_path / "s.parquet", "-n", "1"], s3.endpoint)
    _one_error(proc, "s3://no-such-bucket-here/in", "no such bucket s3://no-such-bucket-here", "create it")


def test_store_errors_keep_their_cause(tmp_path, monkeypatch):
    from phifilter.errors import StoreError
    from phifilter.location import RemotePath, set_storage_options

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("PHIFILTER_STORE_RETRIES", "1")
    set_storage_options(None)
    try:
        with pytest.raises(StoreError, match="cannot be reached") as info:
            RemotePath("s3://bucket/x").exists()
    finally:
        set_storage_options(None)
    assert info.value.__cause__ is not None  # raise ... from: the store's own exception is kept
