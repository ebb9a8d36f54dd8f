"""The fast paths give the same answers as the plain ones: token-budget batches, the threaded
pipeline, several worker processes (--devices cpu,cpu) and the Ray engine (on a local Ray)."""

import importlib.util
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifilter import InputError, ModelError, score_shards
from phifilter.errors import OptionError
from phifilter.classifier import EduClassifier, make_calibrator
from phifilter.embed import Embedder, _int8_linear_layers
from phifilter.pipeline import background, stage
from phifilter.scoring.model import splits_into_stages

from conftest import BOILERPLATE, GOOD_CODE, run_cli, write_shard

MIXED = [GOOD_CODE, "x", BOILERPLATE, "", "def f():\n    return 1\n", GOOD_CODE * 3, "   ", "import os\n" * 40,
         "a longer docstring about heaps and priority queues " * 7, "print('hi')"]


def _shards(folder, n=3, rows=5):
    rng = np.random.default_rng(1)
    for k in range(n):
        texts = [MIXED[j] + f"\n# {k}.{i}" for i, j in enumerate(rng.integers(0, len(MIXED), rows))]
        write_shard(folder / f"part-{k}.parquet", texts, row_group_size=2, id=pa.array(range(rows), pa.int64()))
    return folder


def test_token_budget_batches_cover_every_row_once_longest_first(embedder):
    emb = Embedder(device="cpu", max_length=64, tokens_per_batch=150)
    plan = emb.prepare(MIXED)
    seen, longest_before = [], None
    for idx, features in plan.batches:
        mask = features["attention_mask"]
        rows, width = mask.shape
        assert rows == len(idx) and int(mask.sum(1).max()) == width  # trimmed to the longest row
        assert rows * width <= 150 or rows == 1
        if longest_before is not None:
            assert width <= longest_before
        longest_before = width
        seen.extend(idx.tolist())
    blank = {i for i, t in enumerate(MIXED) if not t.strip()}
    assert sorted(seen) == [i for i in range(len(MIXED)) if i not in blank]
    assert len(plan.batches) > 2  # the budget really split the texts


def test_budget_and_windows_do_not_change_embeddings(embedder):
    reference = embedder._load().encode(MIXED, convert_to_numpy=True)
    emb = Embedder(device="cpu")
    for budget, window in ((None, 2048), (200, 3), (10_000, 4)):
        emb.tokens_per_batch, emb.window = budget, window
        got = emb.encode(MIXED)
        blank = [i for i, t in enumerate(MIXED) if not t.strip()]
        assert np.all(got[blank] == 0)
        keep = [i for i in range(len(MIXED)) if i not in blank]
        np.testing.assert_allclose(got[keep], reference[keep], atol=1e-5)


def test_background_stage_keeps_order_and_reraises():
    assert list(stage(lambda x: x * x, range(50), depth=3)) == [x * x for x in range(50)]

    def boom():
        yield 1
        raise InputError("shard.parquet: bad")

    out = stage(lambda x: x + 1, background(boom()))
    assert next(out) == 2
    with pytest.raises(InputError, match="shard.parquet: bad"):
        next(out)


def test_background_stops_its_thread_when_the_consumer_stops():
    before = threading.active_count()
    it = stage(lambda x: x, background(iter(range(10**9)), depth=2), depth=2)
    assert next(it) == 0
    it.close()
    assert threading.active_count() == before


def test_pipeline_matches_plain_edu_score(tmp_path, bundled_model):
    _shards(tmp_path / "in", n=2, rows=7)
    score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model, read_batch_rows=3, tokens_per_batch=300)
    # the GPU forest path, forced onto the CPU: the same scores as scikit-learn's
    score_shards(tmp_path / "in", tmp_path / "tensor", model=bundled_model, read_batch_rows=3, tensor_forest=True)
    for k in range(2):
        src = pq.read_table(tmp_path / "in" / f"part-{k}.parquet")
        out = pq.read_table(tmp_path / "out" / f"part-{k}.parquet")
        assert out.drop_columns(["edu_score"]).equals(src)
        np.testing.assert_allclose(out.column("edu_score").to_numpy(),
                                   bundled_model.edu_score(src.column("text").to_pylist()), atol=1e-5)
        tensor = pq.read_table(tmp_path / "tensor" / f"part-{k}.parquet")
        np.testing.assert_allclose(tensor.column("edu_score").to_numpy(), out.column("edu_score").to_numpy(), atol=1e-6)


def test_tensor_forest_equals_predict_proba():
    from sklearn.ensemble import RandomForestClassifier

    from phifilter.tensor_forest import TensorForest

    # a forest head as `phifilter train --head forest` fits it (the bundled model's head is svr)
    rng = np.random.default_rng(0)
    fit_X = rng.normal(size=(300, 384)).astype(np.float32)
    forest = RandomForestClassifier(n_estimators=40, min_samples_leaf=3, random_state=0).fit(fit_X, fit_X[:, 0] > 0.5)
    X = rng.normal(size=(700, forest.n_features_in_)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X[:5] = 0.0  # blank documents embed to zeros
    want = forest.predict_proba(X)[:, list(forest.classes_).index(True)]
    got = TensorForest(forest, True).predict_positive(X, batch_rows=256)
    assert np.abs(got - want).max() < 1e-12
    assert np.array_equal(got.astype(np.float32), want.astype(np.float32))


@pytest.mark.slow
def test_two_cpu_workers_equal_one_process_and_resume(tmp_path, bundled_model):
    _shards(tmp_path / "in", n=3)
    single = score_shards(tmp_path / "in", tmp_path / "one", model=bundled_model)
    # through the CLI, as a user would run it; part-1 is already done and must not be rewritten
    (tmp_path / "two").mkdir()
    pq.write_table(pq.read_table(tmp_path / "one" / "part-1.parquet"), tmp_path / "two" / "part-1.parquet")
    before = (tmp_path / "two" / "part-1.parquet").stat().st_mtime_ns
    proc = run_cli("score", tmp_path / "in", "-o", tmp_path / "two", "--devices", "cpu,cpu")
    assert "shards: 2 scored, 1 already complete, 0 failed" in proc.stdout
    assert (tmp_path / "two" / "part-1.parquet").stat().st_mtime_ns == before
    for k in range(3):
        a = pq.read_table(tmp_path / "one" / f"part-{k}.parquet")
        b = pq.read_table(tmp_path / "two" / f"part-{k}.parquet")
        assert a.drop_columns(["edu_score"]).equals(b.drop_columns(["edu_score"]))
        np.testing.assert_allclose(a.column("edu_score").to_numpy(), b.column("edu_score").to_numpy(), atol=1e-6)
    assert single.rows_scored == 15
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "part-0.parquet", "part-1.parquet", "part-2.parquet"]


def test_devices_are_checked(tmp_path, bundled_model):
    _shards(tmp_path / "in", n=1)
    with pytest.raises(OptionError, match="expected auto, cpu"):
        score_shards(tmp_path / "in", tmp_path / "o", model=bundled_model, devices="cpu,tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="--devices all: no CUDA device"):
            score_shards(tmp_path / "in", tmp_path / "o", model=bundled_model, devices="all")
        with pytest.raises(OptionError, match="no CUDA device"):
            score_shards(tmp_path / "in", tmp_path / "o", model=bundled_model, devices="cuda:0,cuda:1")


def test_int8_is_cpu_only_and_close_to_float32(bundled_model):
    with pytest.raises(OptionError, match="CPU only"):
        _int8_linear_layers(None, "int8", "cuda:0")
    with pytest.raises(OptionError, match="expected int8"):
        _int8_linear_layers(None, "int4", "cpu")
    q = EduClassifier.load(device="cpu")
    q.embedder_.quantize = "int8"
    texts = [GOOD_CODE, BOILERPLATE, MIXED[8]]
    a, b = (m.embed_documents(texts, count=False).pooled() for m in (bundled_model, q))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    # measured 0.91-0.95: int8 moves embeddings noticeably (hence opt-in), but not far
    assert np.all(cos > 0.85) and not np.allclose(a, b, atol=1e-6)
    assert q.edu_score([GOOD_CODE])[0] > q.threshold > q.edu_score([BOILERPLATE])[0]


def test_int8_on_an_already_loaded_embedder_is_refused(tmp_path, bundled_model):
    _shards(tmp_path / "in", n=1)
    with pytest.raises(Exception, match="already loaded"):
        score_shards(tmp_path / "in", tmp_path / "o", model=bundled_model, quantize="int8")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'phifilter[ray]')")
def test_ray_engine_equals_local_engine(tmp_path, bundled_model):
    _shards(tmp_path / "in", n=3, rows=4)
    score_shards(tmp_path / "in", tmp_path / "local", model=bundled_model)
    (tmp_path / "ray").mkdir()
    pq.write_table(pq.read_table(tmp_path / "local" / "part-0.parquet"), tmp_path / "ray" / "part-0.parquet")
    summary = score_shards(tmp_path / "in", tmp_path / "ray", engine="ray", num_threads=1)
    assert (summary.shards_scored, summary.shards_skipped, summary.rows) == (2, 1, 12)
    for k in range(3):
        a = pq.read_table(tmp_path / "local" / f"part-{k}.parquet")
        b = pq.read_table(tmp_path / "ray" / f"part-{k}.parquet")
        assert a.drop_columns(["edu_score"]).equals(b.drop_columns(["edu_score"]))
        np.testing.assert_allclose(a.column("edu_score").to_numpy(), b.column("edu_score").to_numpy(), atol=1e-6)
    assert not list((tmp_path / "ray").glob(".*tmp-*"))


def test_bfloat16_on_cpu_is_close_to_float32_through_score_shards(tmp_path, bundled_model):
    # bfloat16 is the fast CPU option (benchmarks/README.md): scores must move by ~1e-3, not more
    _shards(tmp_path / "in", n=1, rows=6)
    fp32, bf16 = EduClassifier.load(device="cpu"), EduClassifier.load(device="cpu")
    for clf in (fp32, bf16):  # every document through the embedder: without the bundled model's cascade
        clf.cascade_ = None
    score_shards(tmp_path / "in", tmp_path / "fp32", model=fp32)
    score_shards(tmp_path / "in", tmp_path / "bf16", model=bf16, dtype="bfloat16")
    assert bf16.embedder_.dtype == "bfloat16"
    a = pq.read_table(next((tmp_path / "fp32").glob("*.parquet"))).column("edu_score").to_numpy()
    b = pq.read_table(next((tmp_path / "bf16").glob("*.parquet"))).column("edu_score").to_numpy()
    assert len(a) == len(b) == 6
    assert np.abs(a - b).max() < 0.05 and not np.array_equal(a, b)


@pytest.mark.parametrize("doc_mode,calibrate,features,head", [
    ("chunk-weighted", False, "mean", "forest"), ("chunk-score-max", False, "mean", "forest"),
    ("chunk-mean", True, "mean", "forest"), ("chunk-mean", False, "mean+first+max", "forest"),
    ("chunk-mean", False, "mean+first+max", "svr")])
def test_chunked_models_run_split_stages_with_edu_score_results(tmp_path, doc_mode, calibrate, features, head):
    # chunk layout in the tokenise stage, pooling in the head stage: same scores as edu_score,
    # also with the GPU forest walk forced onto the CPU (used only where the head allows it)
    texts = MIXED * 2
    labels = np.array([5, 0, 1, 0, 3, 5, 0, 1, 4, 2] * 2, float)
    clf = EduClassifier(embedder=Embedder(device="cpu", max_length=32), doc_mode=doc_mode, features=features,
                        head=head, n_estimators=20, random_state=0).fit(texts, labels)
    if calibrate:
        clf.calibrator_ = make_calibrator(clf.raw_scores(clf.embed_documents(texts)), labels >= 3)
    assert clf.embed_documents(texts).chunked >= 4  # the short window really cuts documents
    assert splits_into_stages(clf)
    _shards(tmp_path / "in", n=2, rows=7)
    score_shards(tmp_path / "in", tmp_path / "out", model=clf, read_batch_rows=3, tokens_per_batch=100)
    score_shards(tmp_path / "in", tmp_path / "tensor", model=clf, read_batch_rows=4, tensor_forest=True)
    for k in range(2):
        src = pq.read_table(tmp_path / "in" / f"part-{k}.parquet").column("text").to_pylist()
        out = pq.read_table(tmp_path / "out" / f"part-{k}.parquet").column("edu_score").to_numpy()
        np.testing.assert_allclose(out, clf.edu_score(src), atol=1e-5)
        tensor = pq.read_table(tmp_path / "tensor" / f"part-{k}.parquet").column("edu_score").to_numpy()
        np.testing.assert_allclose(tensor, out, atol=1e-5)
