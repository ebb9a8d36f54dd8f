"""A local Google Cloud Storage emulator for tests: gcp-storage-emulator on 127.0.0.1, gcsfs as the
client.

``gcs`` (fixture) starts one in-memory emulator per test session on a free loopback port, makes a
fresh bucket per test and points phifilter's ``gs`` storage options (endpoint, anonymous token)
and ``STORAGE_EMULATOR_HOST`` at it, for this process; CLI subprocesses get ``gcs.env`` and
``gcs.cli_options`` (``--storage-options``).

gcsfs (2025.x and later) by default asks Google's gRPC storage-control API whether a bucket is
hierarchical or zonal, which an emulator does not serve (each bucket then waits 60 s before
gcsfs falls back); ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` turns that off. It is set here,
when the module is imported, because gcsfs reads it once at its own import.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
from dataclasses import dataclass

import pytest

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

_counter = itertools.count()


@dataclass
class GCS:
    endpoint: str
    bucket: str
    fs: object  # gcsfs.GCSFileSystem
    env: dict
    cli_options: list  # --storage-options for CLI subprocesses

    def url(self, key: str = "") -> str:
        return f"gs://{self.bucket}/{key}"


@pytest.fixture(scope="session")
def _gcs_endpoint():
    pytest.importorskip("gcsfs", reason="gs:// tests need gcsfs (pip install 'phifilter[remote]')")
    server_mod = pytest.importorskip("gcp_storage_emulator.server",
                                     reason="gs:// tests need gcp-storage-emulator (the dev extra)")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = server_mod.create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def gcs(_gcs_endpoint, monkeypatch):
    import gcsfs

    from phifilter.location import set_storage_options

    options = {"gs": {"endpoint_url": _gcs_endpoint, "token": "anon", "project": "test"}}
    env = {"STORAGE_EMULATOR_HOST": _gcs_endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    set_storage_options(options)
    fs = gcsfs.GCSFileSystem(endpoint_url=_gcs_endpoint, token="anon", project="test")
    bucket = f"gbucket{next(_counter)}-{os.getpid()}"
    fs.mkdir(bucket)
    yield GCS(_gcs_endpoint, bucket, fs, env, ["--storage-options", json.dumps(options)])
    set_storage_options(None)
