"""The model as one estimator (issue 23): ``EduClassifier(...).fit(texts, scores)`` learns the whole
recipe, the cascade's novelty rule, what a model folder records, and the small user-facing fixes.

Models are fitted here on 144 real seed documents (MiniLM at 48 tokens, a small fastText).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifilter import EduClassifier, InputError, ModelError
from phifilter.classifier import read_model_meta
from phifilter.embed import Embedder

from conftest import BOILERPLATE, GOOD_CODE, REPO, run_cli, write_shard

SEED = REPO / "data" / "seed" / "edu_seed.parquet"
LICENCES = Path("/usr/share/common-licenses")
RECIPE = dict(head="svr", lexical="fasttext", lexical_params={"labels": "binary", "bucket": 20_000},
              expensive_share=0.2, novelty_share=0.1, threshold="auto", cv_folds=3)


def _seed(per_score: int, skip: int = 0):
    t = pq.read_table(SEED, columns=["text", "score", "domain"])
    scores = t.column("score").to_numpy()
    idx = sorted(i for s in range(6) for i in np.flatnonzero(scores == s)[skip:skip + per_score])
    t = t.take(idx)
    return t.column("text").to_pylist(), t.column("score").to_numpy().astype(float), t.column("domain").to_pylist()


@pytest.fixture(scope="module")
def small_embedder():
    return Embedder(device="cpu", max_length=48)


@pytest.fixture(scope="module")
def fitted(small_embedder):
    texts, scores, domains = _seed(24)
    clf = EduClassifier(embedder=small_embedder, **RECIPE)
    assert clf.fit(texts, scores, domains=domains) is clf
    return clf


def test_fit_learns_the_whole_recipe(fitted):
    clf = fitted
    # every part was learned by fit, nothing was set by hand afterwards
    assert clf.lexical_ is not None and clf.combiner_.inputs == ("lexical", "embedding")
    assert clf.cascade_.uses_novelty and 0 < clf.cascade_.novelty_ < 1
    lo, hi = clf.cascade_.band_
    assert 0 <= lo <= hi <= 1
    assert isinstance(clf.threshold, float) and 0 < clf.threshold < 1  # "auto" became the chosen value
    assert clf.metrics_["threshold_chosen_by"] == "max out-of-fold F1"
    assert clf.metrics_["overall"]["n"] == 144 and clf.metrics_["cv_folds"] == 3
    assert set(clf.metrics_["per_domain"]) == {"code", "web"}
    fig = clf.metrics_["parts"]["cascade"]
    assert 0 < fig["share_novel"] < 0.3 and fig["share_embedded"] >= 0.2 - 1e-9
    assert clf.score_map_ is not None and len(clf.oof_["edu_score"]) == 144
    p = clf.edu_score([GOOD_CODE, BOILERPLATE])
    assert p.shape == (2,) and ((0 <= p) & (p <= 1)).all()


def test_estimator_is_at_most_25_methods_and_fit_returns_self():
    import ast
    import inspect

    import phifilter.classifier as module

    tree = ast.parse(inspect.getsource(module))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EduClassifier")
    methods = [b.name for b in cls.body if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assert len(methods) <= 25, methods
    for gone in ("save_parts", "scoring_stages_impl", "tensor_head", "score_batch", "set_parts", "fit_calibration"):
        assert gone not in methods


def test_novelty_rule_sends_unfamiliar_documents_to_the_embedder(fitted):
    clf = fitted
    unfamiliar = " ".join(f"zqxv{i} wobbleth{i} krant{i}" for i in range(60))  # no token the scorer saw
    familiar = _seed(24)[0][0]  # a training document: every token seen
    texts = [familiar, unfamiliar]
    p_high, unseen = clf.lexical_.high_and_unseen(texts)
    # the code tokeniser also emits the digit runs and "<i0>" layout tokens, which it has seen
    assert unseen[0] == 0.0 and unseen[1] > 0.6 and unseen[1] > clf.cascade_.novelty_
    route = clf.route(texts)
    assert 1 in route.embed.tolist()  # embedded whatever its lexical score
    from phifilter.cascade import Cascade

    band_only = Cascade.from_dict({k: v for k, v in clf.cascade_.to_dict().items() if k != "novelty"})
    assert not band_only.uses_novelty
    rule, clf.cascade_ = clf.cascade_, band_only
    try:  # without the rule its lexical score alone decides
        assert (1 in clf.route(texts).embed.tolist()) == bool(band_only.in_band(p_high)[1])
    finally:
        clf.cascade_ = rule
    # the rule costs little on documents like the training ones: about novelty_share of them
    texts2, _, _ = _seed(8, skip=30)
    share = np.mean(clf.lexical_.unseen_share(texts2) > clf.cascade_.novelty_)
    assert share < 0.5


def test_folder_records_only_the_parameters_of_its_parts(fitted, small_embedder, tmp_path):
    fitted.save(tmp_path / "svr")
    meta = read_model_meta(tmp_path / "svr")
    params = meta["params"]
    for forest_only in ("n_estimators", "max_depth", "min_samples_leaf", "max_features", "class_weight"):
        assert forest_only not in params, forest_only
    assert "C" not in params and "cv_folds" not in params
    assert params["head"] == "svr" and params["lexical"] == "fasttext" and params["novelty_share"] == 0.1
    assert meta["cascade"]["novelty"] == {"measure": "unseen_token_share", "share": 0.1,
                                          "threshold": fitted.cascade_.novelty_}
    texts, scores, _ = _seed(6)
    forest = EduClassifier(embedder=small_embedder, n_estimators=20, cv_folds=0).fit(texts, scores)
    forest.save(tmp_path / "forest")
    fp = read_model_meta(tmp_path / "forest")["params"]
    assert fp["n_estimators"] == 20 and "lexical" not in fp and "expensive_share" not in fp
    assert "novelty_share" not in fp and "C" not in fp
    # both load and score as they scored before saving
    for folder, clf in (("svr", fitted), ("forest", forest)):
        back = EduClassifier.load(tmp_path / folder, device="cpu")
        np.testing.assert_allclose(back.edu_score([GOOD_CODE, BOILERPLATE]), clf.edu_score([GOOD_CODE, BOILERPLATE]),
                                   atol=1e-4)


@pytest.mark.parametrize("edit, message", [
    (lambda n: n.update(threshold="abc"), "cascade.novelty.threshold"),
    (lambda n: n.update(share=1.5), "cascade.novelty.share"),
    (lambda n: n.update(measure="perplexity"), "cascade.novelty.measure"),
    (lambda n: n.pop("threshold"), r"cascade.novelty.threshold.*the field is missing"),
])
def test_novelty_fields_are_checked_on_load(fitted, tmp_path, edit, message):
    folder = tmp_path / "m"
    fitted.save(folder)
    meta_file = folder / "phifilter.json"
    meta = json.loads(meta_file.read_text())
    edit(meta["cascade"]["novelty"])
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=message):
        EduClassifier.load(folder, device="cpu")


def test_edu_score_refuses_a_bare_string(fitted):
    with pytest.raises(InputError, match=r"pass \[text\]"):
        fitted.edu_score(GOOD_CODE)
    with pytest.raises(InputError, match="list of texts"):
        EduClassifier().edu_score("abc")  # before anything else: no model needed to say so
    with pytest.raises(InputError, match="list of texts"):
        fitted.fit("abc", [1, 2, 3])
    assert fitted.edu_score([GOOD_CODE]).shape == (1,)


def test_train_with_no_options_is_the_bundled_recipe():
    from phifilter.train import RECIPES, recipe_config

    meta = read_model_meta(REPO / "phifilter" / "models" / "default")
    cfg = recipe_config()
    bundled = meta["params"]
    assert (cfg.head, cfg.lexical, cfg.expensive_share) == (bundled["head"], bundled["lexical"], bundled["expensive_share"])
    assert cfg.lexical_params == bundled["lexical_params"] and cfg.doc_mode == bundled["doc_mode"]
    paper = recipe_config("paper")
    assert (paper.head, paper.lexical, paper.expensive_share, paper.novelty_share) == ("forest", None, None, None)
    assert recipe_config("paper", head="svr").head == "svr"
    assert recipe_config(lexical="none").expensive_share is None  # no lexical scorer: no cascade
    assert RECIPES["default"]["novelty_share"] == cfg.novelty_share


@pytest.mark.skipif(not LICENCES.is_dir(), reason="no /usr/share/common-licenses (not a Debian system)")
@pytest.mark.xfail(strict=True,
                   reason="issue 23 target not met: after the retrain on rounds 1-5, 16 of Debian's 17 licence "
                          "texts score below the threshold 0.323, but Artistic scores 0.662 (0.884 before)")
def test_no_common_licence_text_is_kept_by_the_bundled_model(bundled_model):
    """Licence texts are boilerplate (rubric: 'license text'); a model that never saw them kept
    16 of 17 in the top 30% of a user's corpus. Every text Debian ships must score below the threshold."""
    files = sorted(p for p in LICENCES.iterdir() if p.is_file())
    assert len(files) >= 5
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    p = bundled_model.edu_score(texts)
    kept = {f.name: round(float(s), 3) for f, s in zip(files, p) if s >= bundled_model.threshold}
    assert not kept, f"licences above the threshold {bundled_model.threshold}: {kept}"


def _scored_shard(path: Path, scores, threshold: float, name: str, **columns) -> Path:
    from phifilter.provenance import model_identity, run_record, with_record

    texts = [f"document {i}\n" * (i + 1) for i in range(len(scores))]
    table = pa.table({"text": texts, **columns, "edu_score": pa.array(scores, pa.float32())})
    identity = model_identity({"forest": "0" * 64})
    identity.update(threshold=threshold, name=name)
    record = run_record({"path": "x", "size": 1}, model=identity, columns={"text": "text", "score": "edu_score"},
                        command="score")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(with_record(table.schema, record).metadata), path)
    return path


def test_report_takes_the_threshold_from_the_run_record(tmp_path):
    from phifilter.report import ReportConfig, collect

    scores = np.linspace(0, 1, 20)
    _scored_shard(tmp_path / "a" / "part-0.parquet", scores, 0.293, "model 0123456789ab")
    data = collect(tmp_path / "a", ReportConfig())
    assert data.threshold == pytest.approx(0.293) and "model 0123456789ab" in data.threshold_source
    assert data.overall.kept_docs == int((scores.astype(np.float32) >= np.float32(0.293)).sum())
    # --threshold and --model still win
    assert collect(tmp_path / "a", ReportConfig(threshold=0.5)).threshold == 0.5
    # shards of two models with different thresholds: one report cannot apply one threshold to both
    _scored_shard(tmp_path / "a" / "part-1.parquet", scores, 0.6, "model ffff")
    with pytest.raises(InputError, match="different|report them separately"):
        collect(tmp_path / "a", ReportConfig())
    # no run record: the bundled model's threshold, saying so
    write_shard(tmp_path / "b" / "part-0.parquet", ["x", "y"], edu_score=pa.array([0.1, 0.9], pa.float32()))
    data = collect(tmp_path / "b", ReportConfig())
    assert data.threshold == read_model_meta(REPO / "phifilter" / "models" / "default")["threshold"]
    assert "bundled model" in data.threshold_source


def test_a_scoring_run_records_the_threshold_and_report_uses_it(tmp_path, small_embedder):
    """End to end: a model with its own threshold scores shards; report applies that threshold."""
    from phifilter import score_shards
    from phifilter.report import ReportConfig, collect

    texts, scores, _ = _seed(4)
    clf = EduClassifier(embedder=small_embedder, n_estimators=10, cv_folds=0, threshold=0.271).fit(texts, scores)
    write_shard(tmp_path / "in" / "part-0.parquet", [GOOD_CODE, BOILERPLATE, "x"])
    summary = score_shards(tmp_path / "in", tmp_path / "out", model=clf, stats_json=str(tmp_path / "stats.json"))
    data = collect(tmp_path / "out", ReportConfig())
    assert data.threshold == pytest.approx(0.271) and "EduClassifier" in data.threshold_source
    # item 5: the run says how many documents went to the embedder (no cascade: all of them)
    assert (summary.embedded, summary.embedded_of) == (3, 3) and "embedded: 3 of 3" in str(summary)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["embedded"] == {"documents": 3, "of": 3, "share": 1.0}


def test_report_samples_name_the_id_and_path_of_each_row(tmp_path):
    from phifilter.report import ReportConfig, collect

    n = 12
    (tmp_path / "s").mkdir()
    pq.write_table(pa.table({"text": [f"text {i}" for i in range(n)], "id": [f"doc-{i}" for i in range(n)],
                             "path": [f"src/file{i}.py" for i in range(n)],
                             "edu_score": pa.array(np.linspace(0, 1, n), pa.float32())}),
                   tmp_path / "s" / "part-0.parquet")
    data = collect(tmp_path / "s", ReportConfig(threshold=0.5, samples_per_band=2))
    top = data.samples.highest()[0]
    assert top.where == "part-0.parquet row 11 · id doc-11 · path src/file11.py"
    write_shard(tmp_path / "t" / "part-0.parquet", ["a", "b"], edu_score=pa.array([0.2, 0.8], pa.float32()))
    plain = collect(tmp_path / "t", ReportConfig(threshold=0.5, samples_per_band=1)).samples.highest()[0]
    assert plain.where == "part-0.parquet row 1"


def test_chunk_summary_says_what_was_not_read():
    from phifilter.modelinfo import chunk_summary

    line = chunk_summary({"docs": 3783, "chunked": 2116, "truncated": 1, "chunks": 7631, "chunking": "chunk"})
    assert line == ("training documents: 2,116 of 3,783 were embedded in several chunks; 1 was longer than "
                    "the chunks the embedder reads (their tail was not embedded)")
    assert "with text not read" not in line


def _stderr_on_a_terminal(*args) -> str:
    """Run the CLI with stderr on a pseudo-terminal (where progress goes) and return what it printed."""
    import os
    import pty
    import subprocess
    import sys

    from conftest import cli_env

    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "phifilter", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=child, stdin=subprocess.DEVNULL, env=cli_env(), cwd=REPO)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=300)
    os.close(main)
    return out.decode("utf-8", "replace").replace("\r\n", "\n")


def test_cli_says_something_before_loading_the_model(tmp_path):
    """On a terminal a first line comes before the model is loaded (a missing model folder fails
    after it); piped, bad input is still one Error line and nothing else."""
    write_shard(tmp_path / "in" / "part-0.parquet", ["a"])
    lines = _stderr_on_a_terminal("score", tmp_path / "in", "-o", tmp_path / "out", "--model", tmp_path / "nope").splitlines()
    assert lines[0].startswith("scoring (loading the model first") and lines[-1].startswith("Error: ")
    piped = run_cli("score", tmp_path / "in", "-o", tmp_path / "out2", "--model", tmp_path / "nope", check=False)
    assert piped.returncode == 1 and piped.stderr.startswith("Error: ") and "loading the model" not in piped.stderr
    quiet = _stderr_on_a_terminal("score", tmp_path / "in", "-o", tmp_path / "out3", "--model", tmp_path / "nope", "-q")
    assert "loading the model" not in quiet and "Error: " in quiet


def test_the_run_summary_gives_the_share_the_cascade_embedded(fitted, tmp_path):
    from phifilter import score_shards

    texts, _, _ = _seed(5, skip=40)
    write_shard(tmp_path / "in" / "part-0.parquet", texts + [""])
    summary = score_shards(tmp_path / "in", tmp_path / "out", model=fitted, stats_json=str(tmp_path / "s.json"))
    route = fitted.route(texts + [""])
    assert summary.embedded == len(route.embed) and summary.embedded_of == len(texts) + 1
    assert 0 < summary.embedded < len(texts)  # the cascade embedded some, not all (and never the blank one)
    stats = json.loads((tmp_path / "s.json").read_text())["embedded"]
    assert stats["documents"] == summary.embedded and stats["share"] == pytest.approx(summary.embedded / (len(texts) + 1), abs=1e-6)
    assert f"embedded: {summary.embedded} of {len(texts) + 1} scored documents" in str(summary)


def test_heartbeat_redraws_the_bar_while_a_batch_is_in_the_model():
    import time

    from phifilter.scoring.run import heartbeat

    class Bar:
        refreshed = 0

        def refresh(self):
            self.refreshed += 1

    bar = Bar()
    with heartbeat(bar, True, every=0.01):
        time.sleep(0.2)  # a slow batch: nothing else updates the bar meanwhile
    assert bar.refreshed >= 2
    quiet = Bar()
    with heartbeat(quiet, False, every=0.01):
        time.sleep(0.05)
    assert quiet.refreshed == 0
