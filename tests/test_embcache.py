"""`phifilter embed` round trip, and train / evaluate / score reading the cache give the same results."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifilter import EduClassifier, InputError, score_shards
from phifilter.classifier import read_model_meta
from phifilter.embcache import META_KEY, EmbeddingCache
from phifilter.train import TrainConfig, train_model

from conftest import REPO, run_cli

SEED = REPO / "data" / "seed" / "edu_seed.parquet"
MAX_LENGTH = 64  # short, so most seed documents are chunked and the test stays quick


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    """24 real seed documents, 4 per score, code and web."""
    t = pq.read_table(SEED)
    scores = t.column("score").to_numpy()
    picked = sorted(i for s in range(6) for i in np.flatnonzero(scores == s)[:4])
    path = tmp_path_factory.mktemp("labels") / "labels.parquet"
    pq.write_table(t.take(picked), path)
    return path


@pytest.fixture(scope="module")
def cache(labels, tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "emb"
    proc = run_cli("embed", labels, "-o", out, "--chunking", "chunk", "--max-length", MAX_LENGTH, "--max-chunks", 3,
                   "--device", "cpu")
    assert "24 documents" in proc.stdout and "chunked" in proc.stdout
    return out


def test_sidecar_format(cache, labels):
    f = cache / "labels.parquet"
    t = pq.read_table(f)
    assert t.schema.field("embedding").type == pa.list_(pa.float16(), 384)
    assert t.column("id").to_pylist()[0] == pq.read_table(labels).column("id")[0].as_py()
    ident = EmbeddingCache.open(cache).ident
    assert ident["embedder"] == "sentence-transformers/all-MiniLM-L6-v2" and ident["chunking"] == "chunk"
    assert ident["max_length"] == MAX_LENGTH and len(ident["key"]) == 16 and META_KEY in t.schema.metadata
    per_doc = t.group_by("id").aggregate([("chunk", "count")])
    assert per_doc.num_rows == 24 and max(per_doc.column("chunk_count").to_pylist()) == 3
    # a rerun keeps the finished sidecar
    proc = run_cli("embed", labels, "-o", cache, "--chunking", "chunk", "--max-length", MAX_LENGTH, "--max-chunks", 3,
                   "--device", "cpu")
    assert "0 shards written, 1 already complete" in proc.stdout


def test_train_evaluate_score_with_and_without_the_cache_agree(cache, labels, tmp_path):
    from phifilter.evaluate import evaluate_model

    common = dict(doc_mode="chunk-weighted", max_length=MAX_LENGTH, max_chunks=3, cv_folds=3, n_estimators=30, device="cpu",
                  target_share=0.4)
    train_model(labels, tmp_path / "plain", TrainConfig(**common))
    train_model(labels, tmp_path / "cached", TrainConfig(embeddings=str(cache), **common))
    plain, cached = read_model_meta(tmp_path / "plain"), read_model_meta(tmp_path / "cached")
    assert plain["files"] == cached["files"] and plain["metrics"] == cached["metrics"]
    assert plain["metrics"]["threshold_chosen_by"] == "keeps 0.4 of documents"
    assert cached["metrics"]["documents"]["chunked"] > 12 and cached["metrics"]["documents"]["truncated"] > 0

    a = evaluate_model(tmp_path / "plain", labels, None, n_bootstrap=0, device="cpu")
    b = evaluate_model(tmp_path / "plain", labels, None, embeddings=str(cache), n_bootstrap=0, device="cpu")
    assert a.groups == b.groups and a.in_sample

    model = EduClassifier.load(tmp_path / "plain", device="cpu")
    score_shards([labels], tmp_path / "s1", model=model)
    model2 = EduClassifier.load(tmp_path / "plain", device="cpu")
    score_shards([labels], tmp_path / "s2", model=model2, embeddings=str(cache))
    s1 = pq.read_table(tmp_path / "s1" / "labels.parquet").column("edu_score").to_numpy()
    s2 = pq.read_table(tmp_path / "s2" / "labels.parquet").column("edu_score").to_numpy()
    np.testing.assert_array_equal(s1, s2)
    assert model2.embedding_cache_ is not None


def test_cache_of_other_settings_is_refused(cache, labels, tmp_path):
    cfg = TrainConfig(doc_mode="truncate", max_length=MAX_LENGTH, cv_folds=2, n_estimators=5, device="cpu",
                      embeddings=str(cache))
    with pytest.raises(InputError, match="differs in: chunking"):
        train_model(labels, tmp_path / "m", cfg)
    with pytest.raises(InputError, match="no embedding files"):
        EmbeddingCache.open(tmp_path)
