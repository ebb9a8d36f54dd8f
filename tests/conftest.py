"""Shared test helpers: real Parquet shards in tmp_path, the real bundled model, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parent.parent


def _one_thread_per_worker() -> None:
    """When pytest-xdist runs one worker per core (``-n auto``), each worker (and every CLI
    subprocess it starts, which inherits the environment) keeps torch and BLAS to one thread:
    two workers each running two threads on two cores fight over them (measured on 2 cores,
    tests/test_contamination.py with -n 2: 199 s and 201 s with torch's default threads,
    146 s and 150 s with one; tests/test_hostile_models.py, mostly CLI subprocesses: 71 s and
    58 s, against 52 s and 53 s). Set before any test imports torch; a value the caller set is
    kept; PHIFILTER_TEST_KEEP_THREADS=1 turns this off (to measure it again)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers and workers >= (os.cpu_count() or 1) and not os.environ.get("PHIFILTER_TEST_KEEP_THREADS"):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, "1")


_one_thread_per_worker()
SHARED = REPO.parent / "shared"

GOOD_CODE = '''def binary_search(items, target):
    """Return the index of target in the sorted list items, or -1 if it is absent.

    Binary search halves the search interval at every step, so it needs O(log n)
    comparisons instead of the O(n) of a linear scan.

    >>> binary_search([1, 3, 5, 7], 5)
    2
    """
    low, high = 0, len(items) - 1
    while low <= high:
        middle = (low + high) // 2
        if items[middle] == target:
            return middle
        if items[middle] < target:
            low = middle + 1
        else:
            high = middle - 1
    return -1
'''

BOILERPLATE = '''# Generated file, do not edit.
from ._impl import *  # noqa
from ._impl import _private_a, _private_b, _private_c
__all__ = ["A", "B", "C", "D", "E", "F", "G", "H"]
__version__ = "4.2.1"
'''


def write_shard(path: Path, texts, row_group_size: int | None = None, **columns) -> Path:
    """Write a Parquet shard with a `text` column (plus any extra columns) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"text": pa.array(texts, pa.string()) if not isinstance(texts, pa.Array) else texts}
    data.update(columns)
    pq.write_table(pa.table(data), path, row_group_size=row_group_size)
    return path


# Float results of torch and BLAS kernels are bit-identical only on one CPU type with the same
# package versions (CI lands on Intel Xeon or AMD EPYC), so tests compare them within this
# tolerance and keep exact equality for what is exact: ids, row order, hashes of files that do
# not depend on float kernels, and thresholds stored rounded.
FLOAT_TOL = 1e-4


def assert_close_tree(got, want, path: str = "", tol: float = FLOAT_TOL) -> None:
    """Equal structure (keys, lengths, strings, ints, bools) and floats within `tol`."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            assert_close_tree(got[key], want[key], f"{path}.{key}", tol)
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), f"{path}: length differs"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close_tree(g, w, f"{path}[{i}]", tol)
    elif isinstance(want, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)) and abs(got - want) <= tol, f"{path}: {got} != {want} (tolerance {tol})"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    return env


def run_cli(*args, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m phifilter ARGS` in a subprocess, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "phifilter", *map(str, args)],
        capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"phifilter {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def bundled_model():
    from phifilter import EduClassifier

    return EduClassifier.load(device="cpu")


@pytest.fixture(scope="session")
def embedder(bundled_model):
    return bundled_model.embedder_


def default_score(doc: str) -> int:
    """The ``chat_server`` fixture's rating: a score a test can recompute from the document."""
    return sum(doc.encode()) % 6


@pytest.fixture
def chat_server():
    """The product's loopback chat endpoint (phifilter.label.StandinServer) rating by
    :func:`default_score`; tests script faults with ``queue``/``script`` and count requests."""
    from phifilter.label.standin import StandinServer

    with StandinServer(rate=lambda doc: (default_score(doc), "Readable code with some explanation"),
                       model="test-model") as server:
        yield server


def pytest_collection_modifyitems(config, items):
    """Tests marked ``longest`` first: pytest-xdist hands each worker a slice of the collection
    in order, so the bundled model's rebuild (many minutes) starts at once on one worker and the
    rest of the suite runs beside it, instead of the rebuild starting last and setting the wall time."""
    items.sort(key=lambda item: item.get_closest_marker("longest") is None)  # stable: the rest keep their order
