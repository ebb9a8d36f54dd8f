"""Issue 12: every command writes only what it owns, validates before working, never keeps stale data.

Each test here failed before its fix (the issue item is named in the docstring).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BOILERPLATE, GOOD_CODE, REPO, run_cli, write_shard

SEED = REPO / "data" / "seed" / "edu_seed.parquet"


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def one_error(proc) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


def labels_file(path: Path, scores, texts=None) -> Path:
    texts = texts or [GOOD_CODE + f"# {i}" if i % 2 else BOILERPLATE + f"# {i}" for i in range(len(scores))]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts, "llm_score": pa.array(scores)}), path)
    return path


# --- item 1: train -o DIR never empties a folder it did not write --------------------------------


def test_train_refuses_a_folder_holding_its_own_labels(tmp_path):
    """Item 1: `train labels/lab.parquet -o labels` emptied labels/ and exited 0."""
    lab = labels_file(tmp_path / "labels" / "lab.parquet", [5, 0] * 6)
    before = tree_digest(tmp_path / "labels")
    err = one_error(run_cli("train", lab, "-o", tmp_path / "labels", "--cv-folds", "0", check=False))
    assert "labels" in err
    assert tree_digest(tmp_path / "labels") == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    err = one_error(run_cli("train", lab, "-o", tmp_path / "notes", "--cv-folds", "0", check=False))
    assert "did not write" in err and "todo.txt" in err
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


# --- item 9/10: labels validated before any embedding ---------------------------------------------


@pytest.mark.parametrize("scores, match", [
    ([5.0, 0.0, float("nan"), 1.0], "not a number"),
    ([7, 0, 1, 5], "outside 0-5"),
    ([-1, 0, 1, 5], "outside 0-5"),
    ([2.5, 0.0, 1.0, 5.0], "whole numbers"),
    ([0, 1, 2, 1], "one side of --positive-threshold"),
])
def test_train_validates_labels_before_any_work(tmp_path, monkeypatch, scores, match):
    """Items 9 and 10: NaN scores crashed; 7, -1, 2.5 were accepted; one class failed after embedding."""
    from phifilter import train as T
    from phifilter.errors import InputError

    lab = labels_file(tmp_path / "lab.parquet", scores)

    def no_embedding(*a, **k):
        raise AssertionError("embedded before validating the labels")

    monkeypatch.setattr(T, "labelled_embeddings", no_embedding)
    with pytest.raises(InputError, match=match):
        T.train_model(lab, tmp_path / "m", T.TrainConfig(cv_folds=0))
    assert not (tmp_path / "m").exists()


# --- filter: items 1, 2, 4 -------------------------------------------------------------------------


def _scored_shard(path: Path, scores, texts=None):
    texts = texts or [f"doc {path.stem} {i}" for i in range(len(scores))]
    write_shard(path, texts, edu_score=pa.array(scores, pa.float64()))
    return path


@pytest.mark.parametrize("opt", [["--threshold", "0.5"], ["--top-fraction", "0.5"]])
def test_filter_never_keeps_nan_or_null_scores_and_reports_them(tmp_path, opt):
    """Item 4: NaN scores were kept with --threshold and with --top-fraction."""
    _scored_shard(tmp_path / "in" / "a.parquet", [float("nan"), 0.9, None, 0.1, 0.8, float("nan"), 0.2])
    proc = run_cli("filter", tmp_path / "in", "-o", tmp_path / "out", *opt)
    kept = pq.read_table(tmp_path / "out" / "a.parquet").column("edu_score").to_pylist()
    assert kept and all(v is not None and not math.isnan(v) for v in kept)
    assert sorted(kept) == [0.8, 0.9]
    assert "dropped 3 rows without a score" in proc.stdout


def test_filter_string_score_column_is_one_line(tmp_path):
    """Items 4 and 9: a string score column gave a traceback."""
    write_shard(tmp_path / "in" / "a.parquet", ["x", "y"], edu_score=pa.array(["0.9", "abc"]))
    err = one_error(run_cli("filter", tmp_path / "in", "-o", tmp_path / "out", "--threshold", "0.5", check=False))
    assert "expected numbers" in err and "a.parquet" in err


def test_filter_redoes_a_shard_whose_input_changed_and_says_why(tmp_path):
    """Item 2: a changed input of the same name and size kept its stale output."""
    from phifilter import filter_shards

    src = _scored_shard(tmp_path / "in" / "a.parquet", [0.9, 0.1], ["keep me", "drop me"])
    filter_shards(tmp_path / "in", tmp_path / "out", threshold=0.5)
    st = os.stat(src)
    _scored_shard(src, [0.1, 0.9], ["keep me", "drop me"])
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only the content differs
    s = filter_shards(tmp_path / "in", tmp_path / "out", threshold=0.5)
    assert pq.read_table(tmp_path / "out" / "a.parquet").column("text").to_pylist() == ["drop me"]
    assert s.redone == ["input changed"] and "1 redone: input changed" in str(s)


def test_filter_refuses_a_folder_it_did_not_write(tmp_path):
    """Item 1: filter wrote into (and could replace files in) any folder."""
    _scored_shard(tmp_path / "in" / "a.parquet", [0.9, 0.1])
    (tmp_path / "out").mkdir()
    pq.write_table(pa.table({"x": [1]}), tmp_path / "out" / "a.parquet")  # somebody else's file
    before = tree_digest(tmp_path / "out")
    err = one_error(run_cli("filter", tmp_path / "in", "-o", tmp_path / "out", "--threshold", "0.5", check=False))
    assert "did not write" in err
    assert tree_digest(tmp_path / "out") == before
