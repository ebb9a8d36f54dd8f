"""URL outputs for model folders (`train -o`) and evaluation folders (`evaluate -o`), on memory://."""

import hashlib
import json

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from phifilter.location import store_of
from phifilter.location import RemotePath
from phifilter.modelfolder import META_FILE, write_model_folder

from conftest import REPO

SEED = REPO / "data" / "seed" / "edu_seed.parquet"


def _mem():
    return fsspec.filesystem("memory")


def test_model_folder_to_a_url_is_published_with_its_metadata_last(monkeypatch):
    fs = _mem()
    order = []
    real_copy = fs.copy
    monkeypatch.setattr(fs, "copy", lambda src, dst, **kw: (order.append(dst), real_copy(src, dst, **kw))[1])

    def parts(with_calibration):
        def write(tmp):
            (tmp / "forest.skops").write_bytes(b"head")
            if with_calibration:
                (tmp / "calibration.skops").write_bytes(b"cal")
        return write

    dest = write_model_folder("memory:///i13b-models/m", parts(True), {"format": "phifilter-edu-classifier"}, "card")
    assert isinstance(dest, RemotePath)
    assert sorted(fs.ls("/i13b-models/m", detail=False)) == [
        "/i13b-models/m/README.md", "/i13b-models/m/calibration.skops", "/i13b-models/m/forest.skops",
        "/i13b-models/m/phifilter.json"]
    published = [p.rsplit("/", 1)[-1] for p in order]
    assert len(published) == 4 and published[-1] == META_FILE  # the completion marker goes last
    meta = json.loads(fs.cat_file("/i13b-models/m/phifilter.json"))
    assert set(meta["files"]) == {"forest.skops", "calibration.skops"}
    # a second save without a calibrator leaves no stale calibration.skops behind
    write_model_folder("memory:///i13b-models/m", parts(False), {"format": "phifilter-edu-classifier"}, "card")
    assert "/i13b-models/m/calibration.skops" not in fs.ls("/i13b-models/m", detail=False)
    assert set(json.loads(fs.cat_file("/i13b-models/m/phifilter.json"))["files"]) == {"forest.skops"}


def test_staged_folder_publishes_only_on_success():
    fs = _mem()
    with pytest.raises(RuntimeError):
        with store_of("memory:///i13b-stage/failed").staged_folder("memory:///i13b-stage/failed") as out:
            (out / "a.txt").write_text("x")
            raise RuntimeError("boom")
    assert not fs.exists("/i13b-stage/failed/a.txt")
    with store_of("memory:///i13b-stage/ok").staged_folder("memory:///i13b-stage/ok", last=("b.txt",)) as out:
        (out / "b.txt").write_text("b")
        (out / "sub").mkdir()
        (out / "sub" / "a.txt").write_text("a")
    assert fs.cat_file("/i13b-stage/ok/sub/a.txt") == b"a" and fs.cat_file("/i13b-stage/ok/b.txt") == b"b"


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    t = pq.read_table(SEED)
    scores = t.column("score").to_numpy()
    picked = sorted(i for s in range(6) for i in np.flatnonzero(scores == s)[:5])
    path = tmp_path_factory.mktemp("labels") / "labels.parquet"
    pq.write_table(t.take(picked), path)
    return path


@pytest.mark.slow
def test_train_and_evaluate_write_to_a_url(labels, tmp_path, monkeypatch):
    monkeypatch.setenv("PHIFILTER_CACHE_DIR", str(tmp_path / "cache"))
    from click.testing import CliRunner

    from phifilter.cli import main
    from phifilter.modelfolder import read_model_meta

    runner = CliRunner()
    result = runner.invoke(main, ["train", str(labels), "-o", "memory:///i13b-train/model", "--n-estimators", "20", "--recipe", "paper",
                                  "--cv-folds", "2", "--device", "cpu", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    meta = read_model_meta("memory:///i13b-train/model")
    assert meta["training_data"]["rows"] == 30
    result = runner.invoke(main, ["evaluate", "memory:///i13b-train/model", str(labels), "-o", "memory:///i13b-train/eval",
                                  "--bootstrap", "0", "--device", "cpu", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    fs = _mem()
    assert json.loads(fs.cat_file("/i13b-train/eval/metrics.json"))["groups"]["all"]["n"] == 30
    assert fs.cat_file("/i13b-train/eval/pr_curve.png")[:4] == b"\x89PNG"
    # a rerun replaces the folders it wrote (they are ours)
    result = runner.invoke(main, ["train", str(labels), "-o", "memory:///i13b-train/model", "--n-estimators", "20", "--recipe", "paper",
                                  "--cv-folds", "2", "--device", "cpu", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _put(local, url_path):
    _mem().put_file(str(local), url_path)


def test_agreement_reads_urls(tmp_path):
    import pyarrow as pa
    from click.testing import CliRunner

    from phifilter.cli import main

    pq.write_table(pa.table({"id": ["a", "b", "c", "d"], "score": [0, 3, 4, 5]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": ["d", "c", "b", "a"], "score": [5, 4, 2, 0]}), tmp_path / "b.parquet")
    _put(tmp_path / "a.parquet", "/i13b-agree/a.parquet")
    _put(tmp_path / "b.parquet", "/i13b-agree/b.parquet")
    runner = CliRunner()
    local = runner.invoke(main, ["agreement", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), "--json"])
    remote = runner.invoke(main, ["agreement", "memory:///i13b-agree/a.parquet", "memory:///i13b-agree/b.parquet", "--json"])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    strip = lambda d: {k: v for k, v in d.items() if k not in ("a", "b")}  # noqa: E731 (a, b: the paths)
    assert strip(json.loads(remote.output)) == strip(json.loads(local.output))
    assert json.loads(remote.output)["a"] == "memory:///i13b-agree/a.parquet"


def test_local_folder_of_one_file_url(tmp_path, monkeypatch):
    from phifilter.location import local_folder

    monkeypatch.setenv("PHIFILTER_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "x.bin").write_bytes(b"12345")
    _put(tmp_path / "x.bin", "/i13b-one/x.bin")
    copy = local_folder("memory:///i13b-one/x.bin")
    assert copy.name == "x.bin" and copy.read_bytes() == b"12345"
    assert local_folder("memory:///i13b-one/x.bin") == copy  # downloaded once


def test_embeddings_option_takes_a_url_and_still_checks_local_paths(tmp_path):
    from click.testing import CliRunner

    from phifilter.cli import main

    result = CliRunner().invoke(main, ["train", str(tmp_path / "l.parquet"), "-o", str(tmp_path / "m"),
                                       "--embeddings", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(main, ["train", str(SEED), "-o", str(tmp_path / "m"),
                                       "--embeddings", "memory:///i13b-none/emb"])
    assert result.exit_code == 1 and result.output.count("Error:") == 1 and "i13b-none" in result.output


@pytest.mark.slow
def test_embedding_cache_from_a_url(tmp_path, embedder, labels, monkeypatch):
    from phifilter.embcache import EmbeddingCache, embed_shards

    monkeypatch.setenv("PHIFILTER_CACHE_DIR", str(tmp_path / "cache"))
    embed_shards([str(labels)], tmp_path / "emb", embedder, max_chunks=2)
    for f in (tmp_path / "emb").rglob("*.parquet"):
        _put(f, f"/i13b-emb/emb/{f.relative_to(tmp_path / 'emb').as_posix()}")
    local, remote = EmbeddingCache.open(tmp_path / "emb"), EmbeddingCache.open("memory:///i13b-emb/emb")
    assert np.array_equal(local.vectors, remote.vectors) and local.ident == remote.ident


@pytest.mark.slow
def test_model_folder_and_stats_json_on_s3(s3, tmp_path, monkeypatch):
    from phifilter.modelfolder import FORMAT, read_model_meta
    from phifilter.outputs import claim_folder, is_model_file
    from phifilter.stats import write_stats

    def parts(tmp):
        (tmp / "forest.skops").write_bytes(b"head")

    monkeypatch.setenv("PHIFILTER_CACHE_DIR", str(tmp_path / "cache"))
    url = s3.url("models/m")
    write_model_folder(url, parts, {"format": FORMAT}, "card")
    keys = sorted(p.rsplit("/", 1)[-1] for p in s3.fs.find(f"{s3.bucket}/models/m"))
    assert keys == ["README.md", "forest.skops", "phifilter.json"]  # no temporaries left
    assert read_model_meta(url)["files"] == {"forest.skops": hashlib.sha256(b"head").hexdigest()}
    claim_folder(url, is_model_file, "a model folder")  # ours: a rerun may replace it
    write_stats(s3.url("stats/run.json"), {"rows": 3})
    from phifilter.outputs import STATS_MARK

    # the mark is how a rerun knows the file is ours to replace (docs/reliability.md)
    assert json.loads(s3.fs.cat_file(f"{s3.bucket}/stats/run.json")) == {STATS_MARK: 1, "rows": 3}


from s3server import s3  # noqa: E402,F401  (fixture)
from s3server import _moto_endpoint  # noqa: E402,F401  (fixture)
