"""--stats-json for the commands that process shards besides score and filter: sample, report, embed."""

import json

import pytest
from click.testing import CliRunner

from phifilter.cli import main

from conftest import write_shard

TEXTS_A = ["def add(a, b):\n    return a + b\n", "héllo wörld", "   ", "a third document"]
TEXTS_B = ["one more", "and the last one"]


def _shards(tmp_path):
    write_shard(tmp_path / "in" / "a.parquet", TEXTS_A, edu_score=[0.9, 0.2, 0.05, 0.55])
    write_shard(tmp_path / "in" / "b.parquet", TEXTS_B, edu_score=[1.0, 0.31])
    return tmp_path / "in"


def _utf8(texts):
    return sum(len(t.encode()) for t in texts)


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_sample_stats_json(tmp_path):
    shards = _shards(tmp_path)
    _run("sample", shards, "-o", tmp_path / "seed.parquet", "-n", 3, "--stats-json", tmp_path / "st" / "sample.json", "-q")
    stats = json.loads((tmp_path / "st" / "sample.json").read_text())
    assert stats["command"] == "sample"
    assert stats["rows"]["in"] == 6 and stats["rows"]["drawn"] == 3 and stats["rows"]["blank"] == 1
    assert stats["bytes"]["in"] == _utf8(TEXTS_A + TEXTS_B)
    assert [(s["name"], s["rows"]) for s in stats["per_shard"]] == [("a.parquet", 4), ("b.parquet", 2)]
    assert stats["shards"] == {"read": 2, "failed": 0} and stats["failures"] == []
    assert stats["docs_per_second"] >= 0
    assert not list((tmp_path / "st").glob(".*"))  # no temporary left beside it


def test_report_stats_json(tmp_path):
    shards = _shards(tmp_path)
    _run("report", shards, "-o", tmp_path / "r.html", "--threshold", 0.5, "--samples", 0,
         "--stats-json", tmp_path / "report.json", "-q")
    stats = json.loads((tmp_path / "report.json").read_text())
    assert stats["command"] == "report"
    assert stats["rows"] == {"in": 6, "kept": 3}
    assert stats["bytes"]["in"] == _utf8(TEXTS_A + TEXTS_B)
    assert stats["histogram"]["counts"] == [1, 0, 1, 1, 0, 1, 0, 0, 0, 2]
    assert sum(s["rows"] for s in stats["per_shard"]) == 6 and len(stats["per_shard"]) == 2
    assert (tmp_path / "r.html").is_file()


def test_stats_json_bad_path_is_one_error_line(tmp_path):
    shards = _shards(tmp_path)
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(main, ["sample", str(shards), "-o", str(tmp_path / "s.parquet"), "-n", "2",
                                       "--stats-json", str(tmp_path / "afile" / "s.json"), "-q"])
    assert result.exit_code == 1
    assert result.output.count("Error:") == 1 and "--stats-json" in result.output


@pytest.mark.slow
def test_embed_stats_json(tmp_path, embedder):
    from phifilter.embcache import embed_shards

    shards = _shards(tmp_path)
    summary = embed_shards([str(shards)], tmp_path / "emb", embedder, stats_json=tmp_path / "embed.json")
    stats = json.loads((tmp_path / "embed.json").read_text())
    assert stats["command"] == "embed" and stats["key"] == summary.key
    assert stats["rows"]["in"] == 6 and stats["shards"]["written"] == 2
    assert stats["bytes"]["in"] == _utf8(TEXTS_A + TEXTS_B)
    assert [(s["name"], s["rows"]) for s in stats["per_shard"]] == [("a.parquet", 4), ("b.parquet", 2)]
    again = embed_shards([str(shards)], tmp_path / "emb", embedder, stats_json=tmp_path / "embed2.json")
    assert again.shards_skipped == 2
    assert json.loads((tmp_path / "embed2.json").read_text())["shards"] == {"written": 0, "skipped": 2, "leased": 0, "failed": 0}


def test_stats_json_to_a_url(tmp_path):
    import fsspec

    shards = _shards(tmp_path)
    _run("sample", shards, "-o", tmp_path / "seed.parquet", "-n", 2, "--stats-json", "memory:///i13b-stats/sample.json", "-q")
    fs = fsspec.filesystem("memory")
    assert json.loads(fs.cat_file("/i13b-stats/sample.json"))["rows"]["in"] == 6
    assert fs.ls("/i13b-stats", detail=False) == ["/i13b-stats/sample.json"]  # the temporary was published, not left
