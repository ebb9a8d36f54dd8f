"""A real S3-compatible server for tests: moto in server mode on 127.0.0.1, s3fs as the client.

``s3`` (fixture) starts one server per test session on a free loopback port, creates a fresh
bucket per test, points the AWS_* environment at it (for this process and for CLI
subprocesses, via ``s3.env``) and stops the server at the end of the session.
"""

from __future__ import annotations

import itertools
import os
import socket
from dataclasses import dataclass

import pytest

_counter = itertools.count()


@dataclass
class S3:
    endpoint: str
    bucket: str
    fs: object  # s3fs.S3FileSystem
    env: dict

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"


@pytest.fixture(scope="session")
def _moto_endpoint():
    from moto.server import ThreadedMotoServer

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(_moto_endpoint, monkeypatch):
    import s3fs

    from phifilter.location import set_storage_options

    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": _moto_endpoint}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    set_storage_options(None)  # drop filesystems cached with another environment
    fs = s3fs.S3FileSystem(endpoint_url=_moto_endpoint, key="test", secret="test", use_listings_cache=False)
    bucket = f"bucket{next(_counter)}-{os.getpid()}"
    fs.mkdir(bucket)
    yield S3(_moto_endpoint, bucket, fs, env)
    set_storage_options(None)
