import json

import numpy as np
import pytest
import skops.io as sio

from phifilter import EduClassifier, ModelError
from phifilter.classifier import HEAD_FILE, META_FILE, _sha256_file, default_model_path, read_model_meta

from conftest import BOILERPLATE, GOOD_CODE


class NotAForest:
    """A type skops does not trust: loading a file that holds it must be refused."""


def test_fit_predict_save_load_round_trip(tmp_path, embedder):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, embedder.dim)).astype(np.float32)
    scores = np.array([0, 1, 4, 5] * 10)
    clf = EduClassifier(embedder=embedder, n_estimators=20, random_state=0)
    assert clf.fit(["t"] * 40, scores, embeddings=X) is clf
    assert clf.head_.n_features_in_ == embedder.dim and type(clf.head_).__name__ == "RandomForestClassifier"  # a forest head
    clf.save(tmp_path / "m", metrics={"note": "test"})
    loaded = EduClassifier.load(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(clf.score_doc_embeddings(X), loaded.score_doc_embeddings(X))
    texts = [GOOD_CODE, BOILERPLATE, ""]
    np.testing.assert_array_equal(clf.edu_score(texts), loaded.edu_score(texts))
    assert loaded.edu_score(texts)[2] == 0.0
    assert loaded.predict_proba(texts).shape == (3, 2)
    meta = read_model_meta(tmp_path / "m")
    assert meta["embedder"]["dim"] == embedder.dim and meta["metrics"] == {"note": "test"}
    assert set(meta["embedder"]["sha256"]) >= {"model.safetensors", "tokenizer.json", "config.json"}


def test_one_class_labels_are_refused(embedder):
    with pytest.raises(ModelError, match="one side"):
        EduClassifier(embedder=embedder).fit(["a", "b"], [1, 2], embeddings=np.zeros((2, embedder.dim)))


def test_unfitted_classifier_says_so():
    with pytest.raises(ModelError, match="not fitted"):
        EduClassifier().edu_score(["x"])


def test_bundled_model_metadata():
    meta = read_model_meta(default_model_path())
    assert meta["embedder"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["metrics"]["overall"]["roc_auc"] > 0.8
    assert (default_model_path() / "README.md").read_text().startswith("# phifilter model card")


def _copy_model(tmp_path):
    import shutil

    return shutil.copytree(default_model_path(), tmp_path / "m")


def test_foreign_folder_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ModelError, match="not a phifilter model folder"):
        EduClassifier.load(tmp_path / "x")
    (tmp_path / "x" / META_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelError, match="not a phifilter model"):
        EduClassifier.load(tmp_path / "x")
    with pytest.raises(ModelError, match="no such model folder"):
        EduClassifier.load(tmp_path / "nowhere")


def test_tampered_forest_is_refused(tmp_path):
    m = _copy_model(tmp_path)
    with open(m / HEAD_FILE, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="SHA-256 does not match"):
        EduClassifier.load(m)


def test_untrusted_types_are_refused_even_with_matching_hash(tmp_path):
    m = _copy_model(tmp_path)
    sio.dump(NotAForest(), m / HEAD_FILE)
    meta = json.loads((m / META_FILE).read_text())
    meta["files"][HEAD_FILE] = _sha256_file(m / HEAD_FILE)
    (m / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="untrusted types .*NotAForest"):
        EduClassifier.load(m)


def test_embedder_with_other_hashes_is_refused(tmp_path):
    m = _copy_model(tmp_path)
    meta = json.loads((m / META_FILE).read_text())
    meta["embedder"]["sha256"]["model.safetensors"] = "0" * 64
    (m / META_FILE).write_text(json.dumps(meta))
    clf = EduClassifier.load(m, device="cpu")
    with pytest.raises(ModelError, match="model.safetensors has SHA-256"):
        clf.edu_score(["x"])


def test_dimension_mismatch_is_refused(tmp_path):
    m = _copy_model(tmp_path)
    meta = json.loads((m / META_FILE).read_text())
    meta["embedder"]["dim"] = 768
    (m / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="dimension 768"):
        EduClassifier.load(m)
