"""URL outputs for model folders (`train -o`) and evaluation folders (`evaluate -o`), on memory://."""

import json

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from phifilter.corpus import staged_folder
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
        with staged_folder("memory:///i13b-stage/failed") as out:
            (out / "a.txt").write_text("x")
            raise RuntimeError("boom")
    assert not fs.exists("/i13b-stage/failed/a.txt")
    with staged_folder("memory:///i13b-stage/ok", last=("b.txt",)) as out:
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
def test_train_and_evaluate_write_to_a_url(labels, tmp_path):
    from click.testing import CliRunner

    from phifilter.cli import main
    from phifilter.modelfolder import read_model_meta

    runner = CliRunner()
    result = runner.invoke(main, ["train", str(labels), "-o", "memory:///i13b-train/model", "--n-estimators", "20",
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
    result = runner.invoke(main, ["train", str(labels), "-o", "memory:///i13b-train/model", "--n-estimators", "20",
                                  "--cv-folds", "2", "--device", "cpu", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
