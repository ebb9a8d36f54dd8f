import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifilter.corpus import (
    OutputLock,
    ShardWriter,
    check_output_dir,
    check_text_column,
    find_shards,
    iter_batches,
    texts_from_array,
)
from phifilter.atomic import remove_stale_temporaries
from phifilter.errors import InputError, OutputError

from conftest import write_shard


def test_find_shards_folder_recursive_and_names(tmp_path):
    write_shard(tmp_path / "in" / "b.parquet", ["x"])
    write_shard(tmp_path / "in" / "sub" / "a.parquet", ["y"])
    write_shard(tmp_path / "in" / ".hidden.parquet", ["z"])
    write_shard(tmp_path / "in" / "_tmp" / "c.parquet", ["z"])
    (tmp_path / "in" / "notes.txt").write_text("not a shard")
    shards = find_shards(tmp_path / "in")
    assert [str(s.name) for s in shards] == ["b.parquet", "sub/a.parquet"]


def test_find_shards_glob_file_and_dedup(tmp_path):
    a = write_shard(tmp_path / "d" / "part-1.parquet", ["x"])
    write_shard(tmp_path / "d" / "part-2.parquet", ["y"])
    shards = find_shards([str(tmp_path / "d" / "part-*.parquet"), str(a)])
    assert [str(s.name) for s in shards] == ["part-1.parquet", "part-2.parquet"]


def test_find_shards_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no \\*.parquet files"):
        find_shards(tmp_path / "empty")
    with pytest.raises(InputError, match="no such file or folder"):
        find_shards(tmp_path / "missing")
    with pytest.raises(InputError, match="matches no files"):
        find_shards(str(tmp_path / "*.parquet"))
    write_shard(tmp_path / "x" / "s.parquet", ["a"])
    write_shard(tmp_path / "y" / "s.parquet", ["b"])
    with pytest.raises(InputError, match="same output name"):
        find_shards([tmp_path / "x", tmp_path / "y"])


def test_output_may_not_be_or_lie_in_input(tmp_path):
    write_shard(tmp_path / "in" / "s.parquet", ["a"])
    for out in (tmp_path / "in", tmp_path / "in" / "scored"):
        with pytest.raises(OutputError, match="may not be the input folder"):
            check_output_dir([tmp_path / "in"], out)
    with pytest.raises(OutputError):
        check_output_dir([tmp_path / "in" / "s.parquet"], tmp_path / "in")
    assert check_output_dir([tmp_path / "in"], tmp_path / "out") == (tmp_path / "out").resolve()


def test_text_column_checks(tmp_path):
    schema = pa.schema([("content", pa.string()), ("n", pa.int64())])
    with pytest.raises(InputError, match="no column 'text'; columns are: content, n"):
        check_text_column(schema, "text", "f.parquet")
    with pytest.raises(InputError, match="type int64"):
        check_text_column(schema, "n", "f.parquet")
    for t in (pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())):
        check_text_column(pa.schema([("text", t)]), "text", "f.parquet")


def test_texts_from_array_nulls_dictionary_and_bad_utf8():
    assert texts_from_array(pa.array(["a", None, ""])) == ["a", "", ""]
    assert texts_from_array(pa.array(["x", "y", "x"]).dictionary_encode()) == ["x", "y", "x"]
    assert texts_from_array(pa.chunked_array([pa.array(["a"], pa.large_string()), pa.array(["b"], pa.large_string())])) == ["a", "b"]
    bad = pa.array([b"ok", b"\xed\xa0\x80!"], pa.binary()).view(pa.string())
    out = texts_from_array(bad)
    assert out[0] == "ok" and out[1].endswith("!") and "\ufffd" in out[1]


def test_iter_batches_streams_and_reports_corruption(tmp_path):
    p = write_shard(tmp_path / "s.parquet", [f"doc {i}" for i in range(1000)], row_group_size=100)
    batches = list(iter_batches(p, batch_size=128))
    assert sum(b.num_rows for b in batches) == 1000 and max(b.num_rows for b in batches) <= 128
    data = p.read_bytes()
    (tmp_path / "trunc.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.parquet: not a readable Parquet file"):
        list(iter_batches(tmp_path / "trunc.parquet"))


def test_shard_writer_is_atomic(tmp_path):
    schema = pa.schema([("text", pa.string())])
    target = tmp_path / "out" / "s.parquet"
    with ShardWriter(target, schema) as w:
        w.write_batch(pa.record_batch([pa.array(["old"])], schema=schema))
    with pytest.raises(RuntimeError):
        with ShardWriter(target, schema) as w:
            w.write_batch(pa.record_batch([pa.array(["new"])], schema=schema))
            raise RuntimeError("killed halfway")
    assert pq.read_table(target).column("text").to_pylist() == ["old"]
    assert os.listdir(target.parent) == ["s.parquet"]


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".s.parquet.tmp-123").write_bytes(b"half")
    (tmp_path / "keep.parquet").write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == 1
    assert os.listdir(tmp_path) == ["keep.parquet"]


def test_output_lock_refuses_second_holder(tmp_path):
    with OutputLock(tmp_path):
        with pytest.raises(OutputError, match="another phifilter process"):
            with OutputLock(tmp_path):
                pass
    with OutputLock(tmp_path):  # released
        pass
