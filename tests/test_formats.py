"""JSON Lines (plain, .gz, .zst, .bz2) and save_to_disk shards: read in blocks, scored, written back
in the same format with every field, nested value and character kept, and the same scores as
the same rows in Parquet."""

from __future__ import annotations

import bz2
import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BOILERPLATE, GOOD_CODE, write_shard
from phifilter.corpus import find_shards, iter_batches, open_parquet
from phifilter.errors import InputError

ROWS = [
    {"id": "a-0", "text": GOOD_CODE, "meta": {"lang": "python", "stars": 12, "tags": ["sort", "search"],
                                            "seen": "2024-01-01T00:00:00"}, "score": 1.5},
    {"id": "a-1", "text": "Ünïcödé — текст, 漢字 and 🙂\n\tescapes \" \\ \u2028", "meta": {"lang": "ру́сский", "stars": None,
                                                                                "tags": [], "seen": "x"}, "score": None},
    {"id": "a-2", "text": BOILERPLATE, "meta": {"lang": None, "stars": 3, "tags": ["ü"], "seen": None}, "score": 2.0},
    {"id": "a-3", "text": "", "meta": {"lang": "md", "stars": 0, "tags": ["a", "b", "c"], "seen": "2020"}, "score": -0.25},
]


def write_jsonl(path, rows, compression=None):
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    if compression == "gzip":
        data = gzip.compress(data)
    elif compression == "zstd":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    elif compression == "bz2":
        data = bz2.compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_jsonl(path):
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    elif path.name.endswith(".zst"):
        import zstandard

        assert raw[:4] == b"\x28\xb5\x2f\xfd"
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    elif path.name.endswith(".bz2"):
        assert raw[:3] == b"BZh"
        raw = bz2.decompress(raw)
    return [json.loads(line) for line in raw.decode("utf-8").split("\n") if line]  # not splitlines: U+2028


NAMES = {"plain.jsonl": None, "plain.json": None, "g.jsonl.gz": "gzip", "z.jsonl.zst": "zstd", "b.jsonl.bz2": "bz2"}


def test_jsonl_in_every_compression_round_trips_exactly_with_parquet_scores(tmp_path, bundled_model):
    from phifilter.scoring import score_shards

    src = tmp_path / "in"
    for name, compression in NAMES.items():
        write_jsonl(src / name, ROWS, compression)
    pq.write_table(pa.Table.from_pylist(ROWS), src / "p.parquet")
    summary = score_shards([src / n for n in [*NAMES, "p.parquet"]], tmp_path / "out", model=bundled_model)
    assert summary.shards_scored == 6 and not summary.failures
    expected = pq.read_table(tmp_path / "out" / "p.parquet").column("edu_score").to_numpy()
    for name in NAMES:
        out = read_jsonl(tmp_path / "out" / name)  # also checks the compression is the input's
        assert [{k: v for k, v in r.items() if k != "edu_score"} for r in out] == ROWS, name
        assert list(out[0]) == [*ROWS[0], "edu_score"]  # field order kept, score last
        scores = np.array([r["edu_score"] for r in out], dtype=np.float32)
        np.testing.assert_array_equal(scores, expected)  # bit-identical to the Parquet input's
    assert out[3]["edu_score"] == 0.0  # blank text
    # a rerun reads the JSON outputs back and skips them
    again = score_shards([src / n for n in NAMES], tmp_path / "out", model=bundled_model)
    assert again.shards_skipped == 5 and again.shards_scored == 0


def test_output_format_converts_both_ways(tmp_path, bundled_model):
    from phifilter.scoring import score_shards

    write_jsonl(tmp_path / "in" / "z.jsonl.zst", ROWS, "zstd")
    score_shards(tmp_path / "in", tmp_path / "pq", model=bundled_model, output_format="parquet")
    table = pq.read_table(tmp_path / "pq" / "z.parquet")
    assert table.drop_columns(["edu_score"]).to_pylist() == ROWS
    score_shards(tmp_path / "pq", tmp_path / "js", model=bundled_model, output_format="jsonl",
                 score_column="edu_score_2")
    back = read_jsonl(tmp_path / "js" / "z.jsonl")
    assert [{k: v for k, v in r.items() if k not in ("edu_score", "edu_score_2")} for r in back] == ROWS
    assert [r["edu_score"] for r in back] == [float(x) for x in table.column("edu_score").to_pylist()]


def test_jsonl_blocks_unify_types_and_resume_at_a_row(tmp_path, monkeypatch):
    import phifilter.formats as formats

    monkeypatch.setattr(formats, "BLOCK_BYTES", 64)  # many blocks: a field null at first, a key late
    rows = [{"text": f"doc {i}", "lic": None} for i in range(30)]
    rows += [{"text": "late", "lic": "mit", "extra": {"k": [1, 2]}}]
    path = write_jsonl(tmp_path / "a.jsonl.gz", rows, "gzip")
    pf = open_parquet(path)
    assert pf.metadata.num_rows == 31
    assert pf.schema_arrow.field("lic").type == pa.string() and "extra" in pf.schema_arrow.names
    texts = [t for b in iter_batches(path, batch_size=4, skip_rows=27, parquet_file=pf) for t in b.column("text").to_pylist()]
    assert texts == ["doc 27", "doc 28", "doc 29", "late"]
    assert all(b.num_rows <= 4 for b in iter_batches(path, batch_size=4))


def test_bad_json_and_broken_compression_name_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(InputError, match=r"bad.jsonl: not valid JSON Lines near row 1"):
        open_parquet(bad)
    trunc = tmp_path / "t.jsonl.gz"
    trunc.write_bytes(gzip.compress(b'{"text": "x"}\n' * 1000)[:60])
    with pytest.raises(InputError, match=r"t.jsonl.gz: "):
        open_parquet(trunc)
    changes = tmp_path / "c.jsonl"
    changes.write_text('{"text": "a", "n": 1}\n{"text": "b", "n": {"x": 1}}\n')
    with pytest.raises(InputError, match=r"c.jsonl: "):
        open_parquet(changes)


def test_folder_search_takes_jsonl_and_save_to_disk_but_not_metadata_json(tmp_path):
    write_shard(tmp_path / "c" / "p.parquet", ["x"])
    write_jsonl(tmp_path / "c" / "j.jsonl.zst", ROWS, "zstd")
    (tmp_path / "c" / "meta.json").write_text('{"about": "not a shard"}')
    hf = save_to_disk_layout(tmp_path / "c" / "hf", [ROWS[:3], ROWS[3:]])
    names = [str(s.name) for s in find_shards(tmp_path / "c")]
    assert names == ["hf/data-00000-of-00002.arrow", "hf/data-00001-of-00002.arrow", "j.jsonl.zst", "p.parquet"]
    assert [str(s.name) for s in find_shards(tmp_path / "c" / "meta.json")] == ["meta.json"]  # named: read
    assert open_parquet(hf / "data-00000-of-00002.arrow").metadata.num_rows == 3


def save_to_disk_layout(folder, parts):
    """The files `datasets.Dataset.save_to_disk` writes: Arrow IPC streams + state.json + dataset_info.json."""
    folder.mkdir(parents=True)
    files = []
    for i, rows in enumerate(parts):
        name = f"data-{i:05d}-of-{len(parts):05d}.arrow"
        table = pa.Table.from_pylist(rows)
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=2):
                writer.write_batch(batch)
        files.append({"filename": name})
    (folder / "state.json").write_text(json.dumps({"_data_files": files, "_fingerprint": "f", "_format_type": None,
                                                   "_split": None}))
    (folder / "dataset_info.json").write_text(json.dumps({"features": {}}))
    return folder


def test_save_to_disk_folder_is_scored_to_parquet(tmp_path, bundled_model, monkeypatch):
    from phifilter.scoring import score_shards

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets  # the dev extra installs it
    # the real writer, not a copy of its layout
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"), num_shards=2)
    summary = score_shards(tmp_path / "ds", tmp_path / "out", model=bundled_model, read_batch_rows=2)
    assert summary.rows == 4
    got = pa.concat_tables([pq.read_table(tmp_path / "out" / f"data-0000{i}-of-00002.parquet") for i in (0, 1)])
    assert got.drop_columns(["edu_score"]).to_pylist() == ROWS
    back = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out"), split="train")
    assert back["id"] == [r["id"] for r in ROWS]


def test_cli_bad_jsonl_is_one_error_line(tmp_path):
    from conftest import run_cli

    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"text": "ok"}\n{"text": \n'))
    proc = run_cli("sample", bad, "-o", tmp_path / "s.parquet", "-n", "1", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"Error: {bad}: not valid JSON Lines near row 1 "
                                                 f"{proc.stderr.split('near row 1 ', 1)[1].strip()}"]
    assert "Traceback" not in proc.stderr and not (tmp_path / "s.parquet").exists()


@pytest.mark.slow
def test_jsonl_score_killed_mid_shard_then_rerun_equals_uninterrupted(tmp_path, bundled_model):
    from killresume import KillResumeCase, run_kill_resume

    from phifilter.scoring import score_shards

    pieces = [GOOD_CODE, BOILERPLATE, "import os\n", "x = 1\n"]
    rows = [{"id": i, "text": pieces[i % 4] + f"# {i} ü", "meta": {"n": [i, i + 1]}} for i in range(48)]
    write_jsonl(tmp_path / "in" / "a.jsonl.zst", rows, "zstd")
    score_shards(tmp_path / "in", tmp_path / "ref", model=bundled_model, read_batch_rows=8)
    out = tmp_path / "out"

    def progress():
        done = out / "a.jsonl.zst"
        if done.exists():
            return len(rows)
        try:
            return json.loads((out / ".a.jsonl.zst.partial" / "manifest.json").read_text())["rows"]
        except (OSError, ValueError, KeyError):
            return 0

    def compare():
        got, ref = read_jsonl(out / "a.jsonl.zst"), read_jsonl(tmp_path / "ref" / "a.jsonl.zst")
        assert [{k: v for k, v in r.items() if k != "edu_score"} for r in got] == rows
        np.testing.assert_allclose([r["edu_score"] for r in got], [r["edu_score"] for r in ref], atol=1e-5)

    case = KillResumeCase(argv=["score", tmp_path / "in", "-o", out, "--read-batch-rows", "8", "--device", "cpu", "-q"],
                          progress=progress, total=len(rows), compare=compare, outputs=[out])
    assert run_kill_resume(case, seed=2, kills=2).kills >= 1
