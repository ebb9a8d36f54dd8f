import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifilter import InputError, OutputError, filter_shards

from conftest import run_cli, write_shard


def _scored(tmp_path, scores_per_shard):
    for k, scores in enumerate(scores_per_shard):
        n = len(scores)
        write_shard(tmp_path / "scored" / f"s{k}.parquet", [f"doc {k}-{i}" for i in range(n)],
                    edu_score=pa.array(scores, pa.float32()))
    return tmp_path / "scored"


def _kept(folder):
    return sorted(t for p in sorted(folder.glob("*.parquet")) for t in pq.read_table(p).column("text").to_pylist())


def test_threshold_keeps_rows_at_or_above(tmp_path):
    src = _scored(tmp_path, [[0.1, 0.5, 0.9], [0.49, 0.51]])
    s = filter_shards(src, tmp_path / "out", threshold=0.5)
    assert _kept(tmp_path / "out") == ["doc 0-1", "doc 0-2", "doc 1-1"]
    assert (s.rows_in, s.rows_kept) == (5, 3)
    assert s.bytes_in == sum(len(f"doc {k}-{i}") for k, n in ((0, 3), (1, 2)) for i in range(n))
    assert pq.read_table(tmp_path / "out" / "s0.parquet").schema.names == ["text", "edu_score"]


def test_top_fraction_is_exact_with_ties_and_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    shards = [np.round(rng.random(200), 1) for _ in range(3)]  # heavy ties: 11 distinct values
    src = _scored(tmp_path, shards)
    s = filter_shards(src, tmp_path / "out", top_fraction=0.25)
    assert s.rows_kept == 150
    all_scores = np.sort(np.concatenate(shards))[::-1]
    kept = np.concatenate([pq.read_table(p).column("edu_score").to_numpy() for p in sorted((tmp_path / "out").glob("*.parquet"))])
    np.testing.assert_allclose(np.sort(kept)[::-1], all_scores[:150], atol=1e-6)
    filter_shards(src, tmp_path / "out2", top_fraction=0.25)
    assert _kept(tmp_path / "out") == _kept(tmp_path / "out2")


def test_rerun_resumes_and_redoes_other_settings_saying_why(tmp_path):
    """Issue 24: each shard carries its run record (rule and cut-off included); a rerun with the
    same rule skips every shard and still counts it, one with another rule redoes every shard."""
    src = _scored(tmp_path, [[0.1, 0.9], [0.8, 0.2]])
    filter_shards(src, tmp_path / "out", threshold=0.5)
    again = filter_shards(src, tmp_path / "out", threshold=0.5)
    assert again.shards_skipped == 2 and again.rows_kept == 2 and again.shards == 0
    other = filter_shards(src, tmp_path / "out", threshold=0.85)
    assert other.shards == 2 and other.redone == ["settings changed", "settings changed"] and other.rows_kept == 1
    assert "2 redone: settings changed" in str(other)
    assert _kept(tmp_path / "out") == ["doc 0-1"]


def test_an_old_manifest_folder_is_refused_with_one_line(tmp_path):
    """A folder filtered before the shard job (one _phifilter_filter.json) is refused, unchanged."""
    from phifilter.select import MANIFEST

    src = _scored(tmp_path, [[0.1, 0.9]])
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text('{"settings": {"threshold": 0.5}, "shards": {}}')
    proc = run_cli("filter", src, "-o", out, "--threshold", "0.5", check=False)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("Error: ") and "\n" not in proc.stderr.strip()
    assert MANIFEST in proc.stderr and "new output folder" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST]


def test_unscored_input_and_bad_options(tmp_path):
    write_shard(tmp_path / "raw" / "s.parquet", ["x"])
    with pytest.raises(InputError, match="run `phifilter score` first"):
        filter_shards(tmp_path / "raw", tmp_path / "out", threshold=0.5)
    with pytest.raises(InputError, match="exactly one"):
        filter_shards(tmp_path / "raw", tmp_path / "out")
    proc = run_cli("filter", tmp_path / "raw", "-o", tmp_path / "o", "--threshold", "0.5", check=False)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("Error: ") and "\n" not in proc.stderr.strip()
