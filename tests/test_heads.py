"""Each head fits, saves and loads; calibration is stored and used; thresholds for targets."""

import json

import numpy as np
import pytest

from phifilter import EduClassifier
from phifilter.chunking import DocEmbeddings
from phifilter.classifier import CALIBRATION_FILE, HEAD_FILE, META_FILE, make_calibrator, read_model_meta
from phifilter.train import precision_threshold, share_threshold


def labelled_chunks(dim, n_docs=60, seed=0):
    """Documents of 1-3 chunks whose first embedding coordinate carries the 0-5 score."""
    rng = np.random.default_rng(seed)
    scores = np.tile(np.arange(6), n_docs // 6)
    n_chunks = rng.integers(1, 4, n_docs)
    doc = np.repeat(np.arange(n_docs), n_chunks)
    vectors = rng.normal(scale=0.3, size=(len(doc), dim)).astype(np.float32)
    vectors[:, 0] += scores[doc]
    E = DocEmbeddings(vectors, doc, rng.integers(5, 50, len(doc)), rng.integers(5, 200, n_docs), "chunk",
                      np.zeros(n_docs, bool))
    return E, scores


@pytest.mark.parametrize("head", ["forest", "forest-regressor", "logistic", "ridge", "svr"])
@pytest.mark.parametrize("doc_mode", ["chunk-weighted", "chunk-score-max"])
def test_each_head_fits_saves_and_loads(tmp_path, embedder, head, doc_mode):
    E, scores = labelled_chunks(embedder.dim)
    clf = EduClassifier(embedder=embedder, head=head, doc_mode=doc_mode, n_estimators=25, random_state=0)
    clf.fit(["unused"] * E.n_docs, scores, embeddings=E)
    p = clf.score_doc_embeddings(E)
    assert p.dtype == np.float32 and p.shape == (E.n_docs,) and ((0 <= p) & (p <= 1)).all()
    y = scores >= 3
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, p) > 0.9 and p[y].mean() > p[~y].mean()  # it learned the signal
    clf.save(tmp_path / "m")
    meta = read_model_meta(tmp_path / "m")
    assert meta["format_version"] == (3 if head in ("ridge", "svr") else 2)  # 2 still describes the others
    assert meta["doc_mode"] == doc_mode and meta["calibration"] is None
    assert meta["head"] == {"forest": "random_forest_classifier", "forest-regressor": "random_forest_regressor",
                            "logistic": "logistic_regression", "ridge": "ridge_regression",
                            "svr": "support_vector_regression"}[head]
    loaded = EduClassifier.load(tmp_path / "m", device="cpu")
    assert (loaded.head, loaded.doc_mode) == (head, doc_mode)
    np.testing.assert_array_equal(loaded.score_doc_embeddings(E), p)
    spread = loaded.disagreement(E)
    assert spread.shape == (E.n_docs,) and (spread >= 0).all() and spread.std() > 0


def test_calibration_is_stored_and_used(tmp_path, embedder):
    E, scores = labelled_chunks(embedder.dim, seed=1)
    # n_jobs=1: a forest predicting in threads adds its trees in whatever order they finish, so
    # its floats may differ in the last bit between two calls, and the exact comparison below
    # (stored calibration = the one used) must not depend on thread timing
    clf = EduClassifier(embedder=embedder, head="forest-regressor", doc_mode="chunk-mean", n_estimators=25, n_jobs=1)
    clf.fit(["unused"] * E.n_docs, scores, embeddings=E)
    raw = clf.raw_scores(E)
    clf.calibrator_ = make_calibrator(raw, scores >= 3)
    p = clf.score_doc_embeddings(E)
    np.testing.assert_allclose(p, clf.calibrator_.predict(raw).astype(np.float32), atol=1e-6)
    assert not np.allclose(p, raw.astype(np.float32))
    clf.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / META_FILE).read_text())
    assert meta["calibration"] == "isotonic" and set(meta["files"]) == {HEAD_FILE, CALIBRATION_FILE}
    loaded = EduClassifier.load(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(loaded.score_doc_embeddings(E), p)
    with open(tmp_path / "m" / CALIBRATION_FILE, "ab") as f:  # a tampered calibration is refused too
        f.write(b"\0")
    from phifilter import ModelError

    with pytest.raises(ModelError, match="calibration.skops: SHA-256"):
        EduClassifier.load(tmp_path / "m")


def test_threshold_for_a_target_precision():
    y = np.array([0, 0, 1, 0, 1, 1, 1, 1], bool)
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    # at >= 0.5 precision is 4/4; at >= 0.4 it is 4/5; at >= 0.3 it is 5/6
    assert precision_threshold(y, p, 1.0) == 0.5
    assert precision_threshold(y, p, 0.8) == 0.3
    assert precision_threshold(y, p, 0.99) == 0.5


def test_threshold_for_a_share_of_documents_or_tokens():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert share_threshold(p, 0.4) == 0.8  # the best 2 of 5 documents
    tokens = np.array([10, 10, 10, 10, 60])
    assert share_threshold(p, 0.3, tokens) == 0.7  # 30 of 100 tokens
    assert share_threshold(p, 1.0) == 0.5
