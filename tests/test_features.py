"""--features (mean, first chunk, max, length side by side) and the ridge head: fit, save, load, train."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from phifilter import EduClassifier, ModelError
from phifilter.chunking import DocEmbeddings
from phifilter.classifier import default_model_path, read_model_meta

from conftest import FLOAT_TOL, REPO, run_cli

SEED = REPO / "data" / "seed" / "edu_seed.parquet"


def first_chunk_carries_the_score(dim, n_docs=60, seed=0):
    """Documents of 2-4 chunks: only the FIRST chunk's first 16 coordinates say the 0-5 score."""
    rng = np.random.default_rng(seed)
    scores = np.tile(np.arange(6), n_docs // 6)
    n_chunks = rng.integers(2, 5, n_docs)
    doc = np.repeat(np.arange(n_docs), n_chunks)
    vectors = rng.normal(scale=0.5, size=(len(doc), dim)).astype(np.float32)
    vectors[np.searchsorted(doc, np.arange(n_docs)), :16] = scores[:, None] * 2.0
    tokens = rng.integers(5, 50, len(doc))
    return DocEmbeddings(vectors, doc, tokens, np.bincount(doc, weights=tokens).astype(np.int64), "chunk",
                         np.zeros(n_docs, bool)), scores


def test_feature_parts_are_the_pooled_vectors_side_by_side():
    vectors = np.array([[1, 0], [3, 4], [5, -2], [7, 7]], np.float32)
    E = DocEmbeddings(vectors, np.array([0, 0, 0, 1]), np.array([10, 10, 20, 5]), np.array([40, 5]), "chunk",
                      np.array([True, False]))
    clf = EduClassifier(doc_mode="chunk-mean", features="mean+first+max+length")
    X = clf.featurizer.transform(E)
    assert X.shape == (2, 2 + 2 + 2 + 3) and clf.featurizer.width(2) == 9
    np.testing.assert_allclose(X[0, :6], [3, 2 / 3, 1, 0, 5, 4], rtol=1e-3)  # mean, first chunk, max
    np.testing.assert_allclose(X[1, :6], [7, 7, 7, 7, 7, 7])
    np.testing.assert_allclose(X[:, 6:], [[np.log1p(40), np.log1p(3), 1], [np.log1p(5), np.log1p(1), 0]], rtol=1e-6)


@pytest.mark.parametrize("features, doc_mode, message", [
    ("mean+median", "chunk-mean", "expected distinct parts"),
    ("mean+mean", "chunk-mean", "expected distinct parts"),
    ("mean+first", "truncate", "needs --doc-mode chunk-mean"),
    ("max", "chunk-score-max", "needs --doc-mode chunk-mean"),
])
def test_bad_features_are_refused(features, doc_mode, message):
    with pytest.raises(ModelError, match=message):
        EduClassifier(features=features, doc_mode=doc_mode).check_options()


@pytest.mark.parametrize("head", ["ridge", "logistic"])  # linear heads: what the mean blurs is lost to them
def test_first_chunk_feature_finds_what_the_mean_blurs_and_round_trips(tmp_path, embedder, head):
    E, scores = first_chunk_carries_the_score(embedder.dim, n_docs=120)
    test_E, test_scores = first_chunk_carries_the_score(embedder.dim, seed=1)
    from sklearn.metrics import roc_auc_score

    auc = {}
    for features in ("mean", "mean+first+max"):
        clf = EduClassifier(embedder=embedder, head=head, doc_mode="chunk-mean", features=features)
        clf.fit(["unused"] * E.n_docs, scores, embeddings=E)
        auc[features] = roc_auc_score(test_scores >= 3, clf.score_doc_embeddings(test_E))
    assert auc["mean+first+max"] > 0.9 and auc["mean+first+max"] > auc["mean"] + 0.02, auc
    p = clf.score_doc_embeddings(test_E)
    clf.save(tmp_path / "m")
    meta = read_model_meta(tmp_path / "m")
    assert meta["format_version"] == 3 and meta["params"]["features"] == "mean+first+max"
    assert meta["n_features"] == embedder.dim  # the embedding's, not the head's (3x) width
    loaded = EduClassifier.load(tmp_path / "m", device="cpu")
    assert loaded.features == "mean+first+max" and loaded.head == head
    np.testing.assert_array_equal(loaded.score_doc_embeddings(test_E), p)
    spread = loaded.disagreement(test_E)
    assert spread.shape == (test_E.n_docs,) and (spread >= 0).all() and (spread <= 1).all()


def test_ridge_head_regresses_the_score_and_clips_to_unit_range(embedder):
    E, scores = first_chunk_carries_the_score(embedder.dim, n_docs=120)
    clf = EduClassifier(embedder=embedder, head="ridge", doc_mode="chunk-mean", features="first")
    clf.fit(["unused"] * E.n_docs, scores, embeddings=E)
    p = clf.score_doc_embeddings(E)
    assert ((0 <= p) & (p <= 1)).all()
    from scipy.stats import spearmanr

    assert spearmanr(p, scores).statistic > 0.9  # it ranks along the whole 0-5 scale, not just >= 3
    assert clf.head_[-1].alpha_ in clf.head_[-1].alphas  # the penalty was chosen by leave-one-out


def test_format_2_folders_still_load_and_score_as_before():
    """The bundled model until the format-4 default (a format-2 folder, forest on chunk-mean
    MiniLM embeddings) scores exactly what phifilter scored with it then: the reference scores
    were written by that version's code (tests/data/format2-reference.json says how)."""
    import json

    folder = REPO / "tests" / "data" / "format2-model"
    meta = read_model_meta(folder)
    assert meta["format_version"] == 2 and "features" not in meta["params"]
    clf = EduClassifier.load(folder, device="cpu")
    assert clf.features == "mean" and clf.featurizer.parts == ["mean"] and clf.head == "forest"
    ref = json.loads((REPO / "tests" / "data" / "format2-reference.json").read_text())
    np.testing.assert_array_equal(clf.edu_score(ref["texts"]), np.asarray(ref["edu_score"], np.float32))


def test_train_cli_with_svr_and_features(tmp_path):
    """Real seed documents (60), real embeddings, the CLI end to end; then scoring with the model."""
    t = pq.read_table(SEED)
    scores = t.column("score").to_numpy()
    picked = sorted(i for s in range(6) for i in np.flatnonzero(scores == s)[:10])
    pq.write_table(t.take(picked), tmp_path / "labels.parquet")
    run_cli("train", tmp_path / "labels.parquet", "-o", tmp_path / "m", "--recipe", "paper", "--head", "svr",
            "--features", "mean+first+max+length", "--cv-folds", "2", "-q")
    meta = read_model_meta(tmp_path / "m")
    assert meta["head"] == "support_vector_regression" and meta["params"]["features"] == "mean+first+max+length"
    assert meta["format_version"] == 3
    assert meta["metrics"]["overall"]["roc_auc"] > 0.6
    card = (tmp_path / "m" / "README.md").read_text()
    assert "features `mean+first+max+length`" in card and "support-vector regression" in card
    clf = EduClassifier.load(tmp_path / "m", device="cpu")
    texts = t.take(picked).column("text").to_pylist()[:6]
    p = clf.edu_score(texts)
    assert p.shape == (6,) and ((0 <= p) & (p <= 1)).all()
    bad = run_cli("train", tmp_path / "labels.parquet", "-o", tmp_path / "m2", "--features", "mean+first",
                  "--doc-mode", "truncate", check=False)
    assert bad.returncode != 0 and "needs --doc-mode chunk-mean" in bad.stderr and "Traceback" not in bad.stderr


def test_bundled_default_scores_what_it_scored_when_it_was_trained(tmp_path):
    """`phifilter score` with the bundled default (fastText, the cascade band and novelty rule,
    MiniLM chunk-mean + svr, the combiner) gives the example shard the scores written when the
    model was trained (tests/data/default-reference.json says how), within 1e-4: other CPUs
    round the embeddings slightly differently."""
    import hashlib
    import json

    ref = json.loads((REPO / "tests" / "data" / "default-reference.json").read_text())
    src = REPO / ref["input"]
    assert hashlib.sha256(src.read_bytes()).hexdigest() == ref["input_sha256"]
    meta = read_model_meta(REPO / "phifilter" / "models" / "default")
    assert meta["files"] == ref["model_files"]  # the same model, or the reference says nothing
    run_cli("score", src.parent, "-o", tmp_path / "out", "--device", "cpu", "-q")
    out = pq.read_table(tmp_path / "out" / src.name)
    assert out.column("id").to_pylist() == ref["ids"]
    np.testing.assert_allclose(out.column("edu_score").to_numpy(), np.asarray(ref["edu_score"], np.float32),
                               rtol=0, atol=FLOAT_TOL)


# --- issue 23: the embedder reads the first 2,500 characters (max_chars) -------------------------


def _long_embedded_documents(clf, n=3):
    """Documents of the example shard longer than 3,000 characters that the cascade embeds."""
    t = pq.read_table(REPO / "examples" / "shards" / "example-00000.parquet")
    texts = [x for x in t.column("text").to_pylist() if len(x) > 3_000]
    routed = clf.route(texts).embed
    assert len(routed) >= 1, "the example shard no longer holds a long document the cascade embeds"
    return [texts[k] for k in routed[:n]]


def test_bundled_default_reads_only_the_first_2500_characters(bundled_model):
    """The seed labels describe a file's first 2,500 characters and the fastText part reads
    those: the embedder of the bundled model reads them too (cut at a line break), so what
    follows cannot move the score. A tail from another document is pasted after character
    2,500: the score stays (within 1e-4); the same model reading whole documents moves it."""
    from phifilter.chunking import excerpt

    clf = bundled_model
    assert clf.max_chars == 2500 and read_model_meta(default_model_path())["params"]["max_chars"] == 2500
    docs = _long_embedded_documents(clf)
    other = (REPO / "phifilter" / "cli.py").read_text()[:20_000]
    swapped = [d[:2500] + other for d in docs]
    assert clf.route(swapped).embed.tolist() == list(range(len(docs)))  # both reach the embedder
    np.testing.assert_allclose(clf.edu_score(swapped), clf.edu_score(docs), rtol=0, atol=FLOAT_TOL)
    assert all(len(excerpt(d, 2500)) <= 2500 and d.startswith(excerpt(d, 2500)) for d in docs)
    assert all(excerpt(d, 2500).endswith("\n") for d in docs if "\n" in d[:2500])
    whole = EduClassifier.load(device="cpu")
    whole.max_chars = None  # the model as it was: up to 8 chunks of the whole document
    assert np.abs(whole.edu_score(swapped) - whole.edu_score(docs)).max() > 1e-3


def test_an_embedding_cache_of_whole_texts_is_not_used_for_an_excerpt(tmp_path, bundled_model):
    """`phifilter embed` stores embeddings of whole texts; the bundled model reads only the first
    2,500 characters, so for a longer text it embeds that start itself: the same scores with the
    cache as without (within 1e-4)."""
    import pyarrow as pa

    from phifilter.embcache import embed_shards

    clf = bundled_model
    docs = _long_embedded_documents(clf) + ["def add(a, b):\n    return a + b\n"]
    ids = [f"doc-{k}" for k in range(len(docs))]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ids, "text": docs}), tmp_path / "in" / "part.parquet")
    embed_shards(tmp_path / "in", tmp_path / "emb", clf.embedder_, chunking="chunk", max_chunks=clf.max_chunks)
    cached = EduClassifier.load(device="cpu").use_embedding_cache(tmp_path / "emb")
    np.testing.assert_allclose(cached.edu_score(docs, ids=ids), clf.edu_score(docs), rtol=0, atol=FLOAT_TOL)


def test_max_chars_is_recorded_and_older_folders_read_whole_documents(tmp_path):
    """A folder written before max_chars existed loads with None (whole documents, as it was
    trained); `train --max-chars 0` means the whole document; a bad value is one line."""
    from phifilter.train import recipe_config

    old = EduClassifier.load(REPO / "tests" / "data" / "format2-model", device="cpu")
    assert old.max_chars is None and old.featurizer.read(["x" * 5000]) == ["x" * 5000]
    assert recipe_config().max_chars == 2500 and recipe_config("paper").max_chars is None
    assert recipe_config(max_chars=0).max_chars is None and recipe_config("paper", max_chars=100).max_chars == 100
    with pytest.raises(ModelError, match="--max-chars 0"):
        EduClassifier(max_chars=0).check_options()
