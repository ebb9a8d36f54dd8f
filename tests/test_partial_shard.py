"""Row-group checkpoints: iter_batches(skip_rows=...) and corpus.PartialShard."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phifilter.corpus import PartialShard, iter_batches, partial_dir_for
from phifilter.provenance import fingerprint as input_fingerprint
from phifilter.errors import InputError

SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])


def _batch(start: int, n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"id": list(range(start, start + n)), "text": [f"t{i}" for i in range(start, start + n)]},
                                      schema=SCHEMA)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(0, 60), group=st.integers(1, 13), batch=st.integers(1, 17), data=st.data())
def test_skip_rows_starts_exactly_there(tmp_path_factory, rows, group, batch, data):
    path = tmp_path_factory.mktemp("skip") / "s.parquet"
    pq.write_table(pa.table({"id": list(range(rows))}), path, row_group_size=group)
    skip = data.draw(st.integers(0, rows))
    got = [v for b in iter_batches(path, batch_size=batch, skip_rows=skip) for v in b.column("id").to_pylist()]
    assert got == list(range(skip, rows))
    assert all(b.num_rows <= batch for b in iter_batches(path, batch_size=batch, skip_rows=skip))


def test_partial_shard_resumes_and_finishes_atomically(tmp_path):
    out = tmp_path / "out" / "s.parquet"
    key = {"input": "x", "model": "m"}
    with pytest.raises(KeyboardInterrupt):
        with PartialShard(out, SCHEMA, key) as w:
            w.write_batch(_batch(0, 5))
            w.write_batch(_batch(5, 5))
            raise KeyboardInterrupt
    assert not out.exists()
    folder = partial_dir_for(out)
    assert json.loads((folder / "manifest.json").read_text())["rows"] == 10
    (folder / "000002.parquet").write_bytes(b"a chunk written after the last manifest update")
    with PartialShard(out, SCHEMA, key) as w:
        assert w.rows == w.resumed_rows == 10
        assert w.checkpointed_column("id").to_pylist() == list(range(10))
        assert not (folder / "000002.parquet").exists()  # unlisted chunk dropped
        w.write_batch(_batch(10, 3))
    assert pq.read_table(out).column("id").to_pylist() == list(range(13))
    assert not folder.exists()


def test_other_key_or_damaged_checkpoints_start_over(tmp_path):
    out = tmp_path / "s.parquet"
    with pytest.raises(RuntimeError):
        with PartialShard(out, SCHEMA, {"k": 1}) as w:
            w.write_batch(_batch(0, 4))
            raise RuntimeError
    with PartialShard(out, SCHEMA, {"k": 2}) as w:  # another input or model: not reused
        assert w.rows == 0
        w.write_batch(_batch(0, 2))
    assert pq.read_table(out).num_rows == 2
    with pytest.raises(RuntimeError):
        with PartialShard(out.with_name("t.parquet"), SCHEMA, {"k": 1}) as w:
            w.write_batch(_batch(0, 4))
            raise RuntimeError
    folder = partial_dir_for(out.with_name("t.parquet"))
    (folder / "000000.parquet").write_bytes(b"truncated")
    with PartialShard(out.with_name("t.parquet"), SCHEMA, {"k": 1}) as w:
        assert w.rows == 0
    (folder / "manifest.json").parent.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text("[1, 2]")  # not a manifest at all
    with PartialShard(out.with_name("t.parquet"), SCHEMA, {"k": 1}) as w:
        assert w.rows == 0


def test_input_error_discards_checkpoints(tmp_path):
    out = tmp_path / "s.parquet"
    with pytest.raises(InputError):
        with PartialShard(out, SCHEMA, {}) as w:
            w.write_batch(_batch(0, 4))
            raise InputError("corrupt input")
    assert not partial_dir_for(out).exists() and not out.exists()


def test_fingerprint_changes_when_the_input_is_rewritten(tmp_path):
    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), p)
    first = input_fingerprint(p)
    assert input_fingerprint(p) == first
    pq.write_table(pa.table({"a": [1, 3]}), p)
    assert input_fingerprint(p) != first
