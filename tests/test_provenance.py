"""The run record: fingerprints, model identity, Parquet metadata round trip, stale reasons."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from phifilter import provenance as P


def _write(path, texts, record=None):
    table = pa.table({"text": texts})
    schema = P.with_record(table.schema, record) if record else table.schema
    pq.write_table(table.cast(schema), path)


def test_fingerprint_changes_with_content_not_with_copy(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    _write(a, ["x", "y"])
    b.write_bytes(a.read_bytes())
    assert P.fingerprint(str(a)) == P.fingerprint(b)  # accepts a str; a copy is the same input
    _write(b, ["x", "z"])  # same size, other content
    assert P.fingerprint(a) != P.fingerprint(b)


def test_large_parquet_uses_its_footer(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "FULL_HASH_BYTES", 16)
    a = tmp_path / "a.parquet"
    _write(a, ["x", "y"])
    fp = P.fingerprint(a)
    assert set(fp) == {"size", "footer_sha256"}
    (tmp_path / "notes.txt").write_text("not parquet at all, long enough")
    assert set(P.fingerprint(tmp_path / "notes.txt")) == {"size", "sha256"}


def test_record_round_trip_and_reasons(tmp_path):
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    _write(src, ["a", "b"])
    model = P.model_identity({"forest.skops": "00" * 32}, max_length=256)
    want = P.run_record(src, model=model, columns={"text": "text", "score": "edu_score"})
    assert P.read_record(out) is None
    _write(out, ["a", "b"], want)
    assert P.read_record(out) == want
    assert P.stale_reason(out, want) is None
    _write(src, ["a", "c"])
    assert P.stale_reason(out, P.run_record(src, model=model, columns=want["columns"])) == "input changed"
    other = P.model_identity({"forest.skops": "11" * 32}, max_length=256)
    assert P.stale_reason(want, {**want, "model": other}) == "model changed"
    assert P.stale_reason(want, {**want, "model": P.model_identity({"forest.skops": "00" * 32}, max_length=128)}) == "model changed"
    assert P.stale_reason(want, {**want, "columns": {"text": "body"}}) == "columns changed"
    assert P.stale_reason(want, {**want, "threshold": 0.5}) == "settings changed"
    assert P.stale_reason(None, want) == "no run record"
    assert P.stale_reason(src, want) == "no run record"  # a Parquet file without a record


def test_model_hashes_and_summary(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "phifilter.json").write_text("{}")
    (tmp_path / "m" / ".hidden").write_text("x")
    assert list(P.file_hashes(tmp_path / "m")) == ["phifilter.json"]
    assert P.describe_redone([]) == ""
    assert P.describe_redone(["input changed", "input changed"]) == "2 redone: input changed"
    assert P.describe_redone(["input changed", "model changed", "input changed"]) == \
        "3 redone: input changed (2), model changed (1)"
