"""phifilter.hashing: one definition of a document's hash and id, and the strings already on disk
(sample ids, label-cache keys, embedding-cache keys) stay exactly what earlier versions wrote."""

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq

from phifilter.hashing import document_id, document_ids, sha256_file, text_hash
from phifilter.label.prompt import document_sha
from phifilter.sample import SampleConfig, sample_shards

from conftest import write_shard

ADD = "def add(a, b):\n    return a + b\n"


def test_document_id_is_the_16_hex_sample_id_of_earlier_versions():
    assert document_id(ADD) == "ba1a531f581d2e60"  # what `phifilter sample` wrote before issue 14
    odd = "caf\u00e9 \ud800 lone surrogate"  # JSON Lines can carry one; it must hash, not fail
    assert document_id(odd) == hashlib.sha256(odd.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def test_label_cache_key_and_embedding_cache_ids_are_unchanged():
    assert document_sha(ADD) == hashlib.sha256(ADD.encode()).hexdigest() == text_hash(ADD)
    assert text_hash(ADD, "sha1") == "17cbf0e5983535d1f0c59dcd6cd4555fe70aa8b1"
    table = pa.table({"id": ["a", None], "text": [ADD, "x = 1\n"]})
    assert document_ids(table, "id", [ADD, "x = 1\n"]) == ["a", "sha1:" + hashlib.sha1(b"x = 1\n").hexdigest()]
    assert document_ids(table, None, [ADD]) == ["sha1:17cbf0e5983535d1f0c59dcd6cd4555fe70aa8b1"]


def test_sample_fills_missing_ids_with_document_id(tmp_path):
    texts = [f"def f{i}(x):\n    return x * {i}\n" for i in range(6)]
    write_shard(tmp_path / "in" / "a.parquet", texts)
    sample_shards(tmp_path / "in", tmp_path / "s.parquet", SampleConfig(n=6), progress=False)
    t = pq.read_table(tmp_path / "s.parquet")
    got = dict(zip(t.column("text").to_pylist(), t.column("id").to_pylist()))
    assert got == {x: hashlib.sha256(x.encode()).hexdigest()[:16] for x in texts}


def test_sha256_file_reads_in_blocks(tmp_path):
    p = tmp_path / "big.bin"
    data = bytes(range(256)) * 9000  # more than one 1 MiB block
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()
