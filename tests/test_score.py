import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifilter import InputError, OutputError, score_shards
from phifilter.classifier import EduClassifier

from conftest import BOILERPLATE, GOOD_CODE, REPO, cli_env, run_cli, write_shard


def test_known_answer_textbook_code_beats_boilerplate(bundled_model):
    good, bad = bundled_model.edu_score([GOOD_CODE, BOILERPLATE])
    assert good > bundled_model.threshold > bad


def test_example_shard_separates_sources(tmp_path, bundled_model):
    summary = score_shards(REPO / "examples" / "shards", tmp_path / "out", model=bundled_model)
    t = pq.read_table(tmp_path / "out" / "example-00000.parquet")
    src = np.array(t.column("source").to_pylist())
    s = t.column("edu_score").to_numpy()
    assert summary.rows_scored == 120 and summary.shards_scored == 1
    # TheAlgorithms is textbook-style Python; stdlib modules are mostly plumbing.
    assert s[src == "thealgorithms"].mean() > s[src == "cpython-stdlib"].mean() + 0.15


def test_outputs_keep_rows_order_columns(tmp_path, bundled_model):
    texts = [GOOD_CODE, None, "", "   \n", BOILERPLATE, "x = 1\n" * 3]
    write_shard(tmp_path / "in" / "sub" / "a.parquet", texts,
                id=pa.array(range(6), pa.int64()),
                meta=pa.array([{"k": i} for i in range(6)]),
                tags=pa.array([["a"], [], None, ["b", "c"], [], ["d"]]))
    write_shard(tmp_path / "in" / "b.parquet", pa.array(["a", "b"] * 5).dictionary_encode(), row_group_size=3)
    summary = score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model, read_batch_rows=4)
    assert summary.shards_scored == 2 and summary.rows == 16
    src = pq.read_table(tmp_path / "in" / "sub" / "a.parquet")
    out = pq.read_table(tmp_path / "out" / "sub" / "a.parquet")
    assert out.schema.names == src.schema.names + ["edu_score"]
    assert out.schema.field("edu_score").type == pa.float32()
    assert out.drop_columns(["edu_score"]).equals(src)
    s = out.column("edu_score").to_numpy()
    assert np.all((s >= 0) & (s <= 1))
    assert s[1] == s[2] == s[3] == 0.0  # null, empty and blank text: defined score 0
    assert s[0] > s[4]
    b = pq.read_table(tmp_path / "out" / "b.parquet")
    assert pa.types.is_dictionary(b.schema.field("text").type) and b.num_rows == 10


def test_scores_do_not_depend_on_batching(tmp_path, bundled_model):
    texts = [GOOD_CODE[: 40 * i] or "print(1)" for i in range(1, 12)]
    write_shard(tmp_path / "in" / "s.parquet", texts)
    score_shards(tmp_path / "in", tmp_path / "o1", model=bundled_model, read_batch_rows=3)
    one = pq.read_table(tmp_path / "o1" / "s.parquet").column("edu_score").to_numpy()
    direct = bundled_model.edu_score(texts)
    np.testing.assert_allclose(one, direct, atol=1e-5)


def test_rerun_skips_complete_and_redoes_partial(tmp_path, bundled_model):
    for name in ("a", "b"):
        write_shard(tmp_path / "in" / f"{name}.parquet", [GOOD_CODE, BOILERPLATE, "y = 2"])
    first = score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model)
    assert first.shards_scored == 2
    before = (tmp_path / "out" / "a.parquet").stat().st_mtime_ns
    # b's output is replaced by a shorter (stale) file and a temporary from a killed run lies around
    pq.write_table(pq.read_table(tmp_path / "out" / "b.parquet").slice(0, 1), tmp_path / "out" / "b.parquet")
    (tmp_path / "out" / ".a.parquet.tmp-99999").write_bytes(b"half a file")
    second = score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model)
    assert (second.shards_scored, second.shards_skipped) == (1, 1)
    assert second.rows == 6 and second.histogram.sum() == 6
    assert (tmp_path / "out" / "a.parquet").stat().st_mtime_ns == before
    assert pq.read_table(tmp_path / "out" / "b.parquet").num_rows == 3
    assert sorted(os.listdir(tmp_path / "out")) == ["a.parquet", "b.parquet"]  # nothing but Parquet


def test_bad_inputs(tmp_path, bundled_model):
    write_shard(tmp_path / "nocol" / "s.parquet", ["x"]).rename(tmp_path / "nocol" / "s.parquet")
    pq.write_table(pa.table({"content": ["x"], "id": [1]}), tmp_path / "nocol" / "s.parquet")
    with pytest.raises(InputError, match="no column 'text'; columns are: content, id"):
        score_shards(tmp_path / "nocol", tmp_path / "o", model=bundled_model)
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    with pytest.raises(InputError, match="ints.parquet: column 'text' has type int64"):
        score_shards(tmp_path / "ints.parquet", tmp_path / "o2", model=bundled_model)
    write_shard(tmp_path / "has" / "s.parquet", ["x"], edu_score=pa.array([0.5]))
    with pytest.raises(InputError, match="already has a column 'edu_score'"):
        score_shards(tmp_path / "has", tmp_path / "o3", model=bundled_model)
    with pytest.raises(OutputError):
        score_shards(tmp_path / "has", tmp_path / "has", model=bundled_model)


def test_corrupt_shard_among_good_ones(tmp_path, bundled_model):
    write_shard(tmp_path / "in" / "a.parquet", [GOOD_CODE])
    write_shard(tmp_path / "in" / "c.parquet", [BOILERPLATE])
    data = write_shard(tmp_path / "x.parquet", ["z" * 5000] * 50).read_bytes()
    (tmp_path / "in" / "b.parquet").write_bytes(data[:-200])  # truncated: no footer
    with pytest.raises(InputError, match="b.parquet"):
        score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model)
    summary = score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model, on_error="skip")
    assert [p for p, _ in summary.failures] == [str(tmp_path / "in" / "b.parquet")]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.parquet")) == ["a.parquet", "c.parquet"]


def test_huge_control_and_surrogate_texts(tmp_path, bundled_model):
    huge = ("def f(x):\n    return x * 2\n" * 200_000)[: 5 * 1024 * 1024]
    weird = "\x00\x01\x1b[31m red \u202e rtl \ufeff bom " + "\U0001F600" * 10
    bad_utf8 = pa.array([b"\xed\xa0\x80 lone surrogate bytes"], pa.binary()).view(pa.string())
    texts = pa.concat_arrays([pa.array([huge, weird]), bad_utf8])
    write_shard(tmp_path / "in" / "s.parquet", texts)
    score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model)
    s = pq.read_table(tmp_path / "out" / "s.parquet").column("edu_score").to_numpy()
    assert len(s) == 3 and np.all(np.isfinite(s))


def test_empty_shard_gives_empty_output(tmp_path, bundled_model):
    write_shard(tmp_path / "in" / "s.parquet", pa.array([], pa.string()))
    score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model)
    assert pq.read_table(tmp_path / "out" / "s.parquet").num_rows == 0


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path, bundled_model):
    rng = np.random.default_rng(0)
    pieces = [GOOD_CODE, BOILERPLATE, "import os\n", "for i in range(3):\n    print(i)\n"]
    for k in range(4):
        texts = ["\n".join(rng.choice(pieces, 3)) + f"\n# {k}-{i}" for i in range(40)]
        write_shard(tmp_path / "in" / f"s{k}.parquet", texts, row_group_size=10)
    reference = score_shards(tmp_path / "in", tmp_path / "ref", model=bundled_model)
    assert reference.rows == 160
    proc = subprocess.Popen([sys.executable, "-m", "phifilter", "score", str(tmp_path / "in"),
                             "-o", str(tmp_path / "out"), "--read-batch-rows", "8", "-q"],
                            env=cli_env(), cwd=REPO)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "out").glob("s1.parquet")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_cli("score", tmp_path / "in", "-o", tmp_path / "out", "-q")
    for k in range(4):
        a = pq.read_table(tmp_path / "ref" / f"s{k}.parquet")
        b = pq.read_table(tmp_path / "out" / f"s{k}.parquet")
        assert a.drop_columns(["edu_score"]).equals(b.drop_columns(["edu_score"]))
        np.testing.assert_allclose(a.column("edu_score").to_numpy(), b.column("edu_score").to_numpy(), atol=1e-5)
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp-" in p.name]
