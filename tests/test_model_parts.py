"""A model made of parts (format 4): lexical scorer + embedding head + stacked combiner, and the cascade.

Models are trained here on 72 real seed documents with a small fastText and forest; documents
the model never saw are scored.
"""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import phifilter.chunking
from phifilter import EduClassifier, ModelError
from phifilter.classifier import read_model_meta
from phifilter.train import TrainConfig, train_model

from conftest import REPO, run_cli

SEED = REPO / "data" / "seed" / "edu_seed.parquet"
LEXICAL = {"bucket": 20_000}  # LexicalScorer defaults, fewer hash slots: a small file


def _seed_rows():
    t = pq.read_table(SEED, columns=["text", "score", "domain"])
    scores = t.column("score").to_numpy()
    train, held = [], []
    for s in range(6):
        idx = np.flatnonzero(scores == s)
        train += list(idx[:12])
        held += list(idx[12:20])
    return t.take(sorted(train)), t.take(sorted(held))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(cascade model folder, ensemble-without-cascade folder, held-out texts and scores)."""
    tmp = tmp_path_factory.mktemp("cascade")
    train, held = _seed_rows()
    pq.write_table(train, tmp / "labels.parquet")
    common = dict(n_estimators=30, cv_folds=3, device="cpu", lexical="fasttext", lexical_params=LEXICAL)
    train_model(tmp / "labels.parquet", tmp / "cascade", TrainConfig(expensive_share=0.3, **common))
    train_model(tmp / "labels.parquet", tmp / "full", TrainConfig(**common))
    texts = held.column("text").to_pylist() + ["", "   \n"]  # blank texts score 0 without a scorer
    return tmp / "cascade", tmp / "full", texts, held.column("score").to_numpy()


def count_embedded(monkeypatch) -> list:
    """Documents handed to the embedder, counted where every path lays them out."""
    seen = []
    original = phifilter.chunking.layout_documents

    def counting(emb, texts, *a, **k):
        seen.append(len(texts))
        return original(emb, texts, *a, **k)

    monkeypatch.setattr(phifilter.chunking, "layout_documents", counting)
    return seen


@pytest.mark.slow
def test_format_4_folder_declares_its_parts(models):
    cascade, full, _, _ = models
    meta = read_model_meta(cascade)
    assert meta["format_version"] == 4
    assert [s["name"] for s in meta["scorers"]] == ["lexical", "embedding"]
    assert set(meta["files"]) == {"forest.skops", "lexical.bin"}
    assert meta["combiner"]["inputs"] == ["lexical", "embedding"] and len(meta["combiner"]["coef"]) == 2
    lo, hi = meta["cascade"]["band"]
    assert 0 <= lo <= hi <= 1 and meta["cascade"]["expensive_share"] == 0.3
    parts = meta["metrics"]["parts"]
    assert abs(parts["cascade"]["share_embedded"] - 0.3) < 0.05  # the budget, on the training documents
    assert parts["cascade"]["agreement"] > 0.7 and parts["combined"]["roc_auc"] > 0.6
    assert "cascade" not in read_model_meta(full)
    card = (cascade / "README.md").read_text()
    assert "## Parts" in card and "cascade" in card and "combiner" in card
    info = run_cli("info", cascade).stdout
    assert "scorer lexical: fasttext" in info and "combiner: logistic" in info and "cascade: lexical score band" in info


@pytest.mark.slow
def test_cascade_embeds_only_the_band_and_matches_the_full_ensemble_there(models, monkeypatch):
    cascade_dir, full_dir, texts, _ = models
    cascade = EduClassifier.load(cascade_dir, device="cpu")
    full = EduClassifier.load(full_dir, device="cpu")
    # the same parts without the band: the full ensemble of the cascade model itself
    everything = EduClassifier.load(cascade_dir, device="cpu")
    everything.cascade_ = None
    seen = count_embedded(monkeypatch)
    p_full = everything.edu_score(texts)
    assert sum(seen) == len(texts) - 2  # every non-blank text is embedded without a cascade
    seen.clear()
    p = cascade.edu_score(texts)
    route = cascade.route(texts)
    band = np.zeros(len(texts), bool)
    band[route.embed] = True
    assert sum(seen) == band.sum()  # out-of-band documents never reach the embedder
    assert 0 < band.sum() < len(texts) - 2
    np.testing.assert_allclose(p[band], p_full[band], atol=1e-5)  # in the band: the full ensemble's score
    out = ~band & ~route.blank
    np.testing.assert_allclose(p[out], cascade.cascade_.cheap_decision(route.cheap[out]).astype(np.float32))
    assert (p[route.blank] == 0).all() and p.dtype == np.float32
    # a model with parts keeps the public API
    assert full.predict(texts).shape == (len(texts),) and full.predict_proba(texts).shape == (len(texts), 2)


@pytest.mark.slow
def test_pipeline_sends_only_band_documents_through_the_embedder(models, tmp_path, monkeypatch):
    cascade_dir, _, texts, _ = models
    clf = EduClassifier.load(cascade_dir, device="cpu")
    expected = clf.edu_score(texts)
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": texts, "id": list(range(len(texts)))}), tmp_path / "in" / "s.parquet")
    seen = count_embedded(monkeypatch)
    from phifilter.scoring import score_shards

    score_shards(tmp_path / "in", tmp_path / "out", model=cascade_dir, device="cpu", read_batch_rows=7,
                 int_score_column="int_score")
    assert sum(seen) == len(clf.route(texts).embed)
    out = pq.read_table(tmp_path / "out" / "s.parquet")
    np.testing.assert_allclose(out.column("edu_score").to_numpy(), expected, atol=1e-5)
    ints = out.column("int_score").to_numpy()
    assert out.schema.field("int_score").type == pa.int8() and ints.min() >= 0 and ints.max() <= 5
    np.testing.assert_array_equal(ints, clf.int_scores(out.column("edu_score").to_numpy()))
    # FineWeb-Edu style filtering on the int score
    proc = run_cli("filter", tmp_path / "out", "-o", tmp_path / "kept", "--min-int-score", "2")
    kept = pq.read_table(tmp_path / "kept" / "s.parquet")
    assert kept.num_rows == int((ints >= 2).sum()) and "cut-off int_score >= 2" in proc.stdout


def test_int_score_needs_a_model_with_a_score_map(tmp_path):
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": ["def f():\n    return 1\n"]}), tmp_path / "in" / "s.parquet")
    model = tmp_path / "old"
    shutil.copytree(REPO / "phifilter" / "models" / "default", model)
    meta = json.loads((model / "phifilter.json").read_text())
    meta.pop("int_score_map", None)  # as every model trained before the map existed
    (model / "phifilter.json").write_text(json.dumps(meta))
    proc = run_cli("score", tmp_path / "in", "-o", tmp_path / "out", "-m", model, "--int-score-column", "int_score",
                   check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: ") and "0-5 score map" in proc.stderr
    proc = run_cli("filter", tmp_path / "in", "-o", tmp_path / "k", "--min-int-score", "3", check=False)
    assert proc.returncode == 1 and "no column 'int_score'" in proc.stderr


@pytest.mark.slow
def test_a_tampered_lexical_file_is_refused(models, tmp_path):
    folder = shutil.copytree(models[0], tmp_path / "m")
    with open(folder / "lexical.bin", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="lexical.bin: SHA-256"):
        EduClassifier.load(folder)


def test_cascade_options_are_checked(tmp_path):
    proc = run_cli("train", SEED, "-o", tmp_path / "m", "--lexical", "none", "--expensive-share", "0.2", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: ") and "--lexical" in proc.stderr
    with pytest.raises(ModelError, match="expensive-share"):
        EduClassifier(lexical="fasttext", expensive_share=1.5).check_options()
