"""Foreign scorers (a Hugging Face folder, a fastText .bin) and several scorers in one pass,
with small real models built here; every column must equal the model's own prediction (1e-4)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import BOILERPLATE, GOOD_CODE, run_cli, write_shard
from tinymodels import bert_reference, build_bert, fasttext_reference, train_fasttext

TOL = 1e-4
TEXTS = [GOOD_CODE, BOILERPLATE, "this example explains how each step works\n\n  and why", "",
         None, "   \n\t ", "buy now free offer click here", "def f(x):\n    return x + 1\n" * 30]


def as_texts(texts):
    return ["" if t is None else t for t in texts]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    return {
        "reg": build_bert(root / "reg"),
        "cls": build_bert(root / "cls", num_labels=3, labels=["low", "mid", "high"], seed=1),
        "ft": train_fasttext(root / "ft.bin"),
    }


@pytest.fixture()
def shards(tmp_path):
    write_shard(tmp_path / "in" / "a.parquet", TEXTS, id=list(range(len(TEXTS))))
    return tmp_path / "in"


def column(path, name):
    return np.asarray(pq.read_table(path).column(name).to_pylist(), dtype=np.float64)


def test_hf_regression_column_is_the_models_output(models, shards, tmp_path):
    out = tmp_path / "out"
    run_cli("score", shards, "-o", out, "--model", f"fw={models['reg']}", "--int-score-column", "int_score",
            "--device", "cpu")
    got = column(out / "a.parquet", "fw")
    want = bert_reference(models["reg"], as_texts(TEXTS), max_length=512)
    assert np.abs(got - want).max() < TOL
    assert np.ptp(want[[0, 1, 2, 6, 7]]) > 0.01  # the model really tells documents apart
    ints = np.asarray(pq.read_table(out / "a.parquet").column("int_score").to_pylist())
    assert (ints == np.rint(np.clip(got, 0, 5))).all()
    assert "edu_score" not in pq.read_table(out / "a.parquet").column_names


def test_hf_max_length_changes_truncation(models, shards, tmp_path):
    run_cli("score", shards, "-o", tmp_path / "out", "--model", f"fw={models['reg']}", "--max-length", "16",
            "--device", "cpu")
    got = column(tmp_path / "out" / "a.parquet", "fw")
    want = bert_reference(models["reg"], as_texts(TEXTS), max_length=16)
    assert np.abs(got - want).max() < TOL
    assert abs(got[7] - bert_reference(models["reg"], as_texts(TEXTS), max_length=512)[7]) > 1e-6


def test_hf_classifier_probability_of_named_label(models, shards, tmp_path):
    out = tmp_path / "out"
    run_cli("score", shards, "-o", out, "--model", f"{models['cls']}#high", "--device", "cpu")
    got = column(out / "a.parquet", "edu_score")  # a bare spec writes --score-column
    want = bert_reference(models["cls"], as_texts(TEXTS), label_index=2)
    assert np.abs(got - want).max() < TOL
    assert ((got >= 0) & (got <= 1)).all()


def test_fasttext_label_probability_on_one_line(models, shards, tmp_path):
    out = tmp_path / "out"
    run_cli("score", shards, "-o", out, "--model", f"dclm=fasttext:{models['ft']}#hq")
    got = column(out / "a.parquet", "dclm")
    want = fasttext_reference(models["ft"], as_texts(TEXTS))
    assert np.abs(got - want).max() < TOL
    assert want[2] > 0.5 > want[6]  # trained: the good words score high, the spam low


def test_three_scorers_one_pass_and_provenance(models, shards, tmp_path, bundled_model):
    out = tmp_path / "out"
    args = ["score", shards, "-o", out, "--device", "cpu", "-m", "edu_score=bundled",
            "-m", f"fw={models['reg']}", "-m", f"dclm=fasttext:{models['ft']}#__label__hq"]
    first = run_cli(*args)
    table = pq.read_table(out / "a.parquet")
    assert table.column_names == ["text", "id", "edu_score", "fw", "dclm", "fw_int_score"]
    texts = as_texts(TEXTS)
    assert np.abs(column(out / "a.parquet", "edu_score") - bundled_model.edu_score(texts)).max() < TOL
    assert np.abs(column(out / "a.parquet", "fw") - bert_reference(models["reg"], texts)).max() < TOL
    assert np.abs(column(out / "a.parquet", "dclm") - fasttext_reference(models["ft"], texts)).max() < TOL
    record = json.loads(pq.read_metadata(out / "a.parquet").metadata[b"phifilter.run"])
    files = record["model"]["files"]
    from phifilter.hashing import sha256_file

    assert files["dclm/ft.bin"] == sha256_file(models["ft"])
    assert files["fw/model.safetensors"] == sha256_file(models["reg"] / "model.safetensors")
    assert any(k.startswith("edu_score/") for k in files)
    scorers = record["model"]["options"]["scorers"]
    assert set(scorers) == {"edu_score", "fw", "dclm"}
    assert record["columns"]["scores"] == ["fw", "dclm", "fw_int_score"]
    # each column's range, threshold and int score column, as report and filter read them
    assert scorers["fw"]["scale"] == [0.0, 5.0] and scorers["fw"]["int_column"] == "fw_int_score"
    assert scorers["fw"]["threshold"] == 3.0 and scorers["dclm"]["scale"] == [0.0, 1.0]
    assert "int_column" not in scorers["dclm"] and "int_column" not in scorers["edu_score"]
    assert "1 scored" in first.stdout or "scored" in first.stdout
    again = run_cli(*args)
    assert "1 already complete" in again.stdout or "skipped" in again.stdout.lower()
    # status, report and filter read any of the columns
    status = run_cli("status", out, shards, "--score-column", "dclm", "--json")
    assert json.loads(status.stdout)["shards"][0]["state"] == "done"
    kept = tmp_path / "kept"
    run_cli("filter", out, "-o", kept, "--score-column", "fw", "--threshold", "1.0")
    assert (column(kept / "a.parquet", "fw") >= 1.0).all()
    assert len(pq.read_table(kept / "a.parquet")) == int((column(out / "a.parquet", "fw") >= 1.0).sum())


def test_changed_member_redoes_the_output(models, shards, tmp_path):
    out = tmp_path / "out"
    ft = tmp_path / "ft.bin"
    shutil.copy(models["ft"], ft)
    run_cli("score", shards, "-o", out, "-m", f"a=fasttext:{ft}#hq", "-m", f"b={models['reg']}", "--device", "cpu")
    train_fasttext(ft, seed=3)
    again = run_cli("score", shards, "-o", out, "-m", f"a=fasttext:{ft}#hq", "-m", f"b={models['reg']}",
                    "--device", "cpu")
    assert "model changed" in again.stdout
    assert np.abs(column(out / "a.parquet", "a") - fasttext_reference(ft, as_texts(TEXTS))).max() < TOL


def test_resume_inside_a_shard_keeps_every_column(models, tmp_path):
    """A run killed after some row groups resumes from its checkpoint with all columns intact."""
    from phifilter.scoring import score_shards

    texts = [f"this example explains step {i} of the function" for i in range(300)]
    write_shard(tmp_path / "in" / "big.parquet", texts)
    spec = {"a": f"fasttext:{models['ft']}#hq", "b": str(models["reg"])}
    calls = {"n": 0}
    from phifilter.foreign import FastTextScorer

    original = FastTextScorer.edu_score

    def dying(self, batch_texts):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return original(self, batch_texts)

    FastTextScorer.edu_score = dying
    try:
        with pytest.raises(RuntimeError, match="killed"):
            score_shards(tmp_path / "in", tmp_path / "out", model=spec, read_batch_rows=64, device="cpu")
    finally:
        FastTextScorer.edu_score = original
    summary = score_shards(tmp_path / "in", tmp_path / "out", model=spec, read_batch_rows=64, device="cpu")
    assert summary.rows_resumed == 128
    table = pq.read_table(tmp_path / "out" / "big.parquet")
    assert np.abs(np.asarray(table.column("a").to_pylist()) - fasttext_reference(models["ft"], texts)).max() < TOL
    assert np.abs(np.asarray(table.column("b").to_pylist()) - bert_reference(models["reg"], texts)).max() < TOL


@pytest.mark.parametrize("break_it, message", [
    (lambda d: ((d / "model.safetensors").unlink(), (d / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")),
     "pickled weights"),
    (lambda d: _edit_config(d, auto_map={"AutoModel": "evil.Model"}), "custom code"),
    (lambda d: _edit_config(d, num_labels="3"), "num_labels"),
    (lambda d: _edit_config(d, model_type="../../x"), "model_type"),
    (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
])
def test_untrusted_hf_folder_is_refused(models, shards, tmp_path, break_it, message):
    bad = tmp_path / "bad"
    shutil.copytree(models["reg"], bad)
    break_it(bad)
    proc = run_cli("score", shards, "-o", tmp_path / "out", "-m", f"x=hf:{bad}", check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("Error: ") and message in proc.stderr and str(bad) in proc.stderr
    assert not (tmp_path / "out" / "a.parquet").exists()


def _edit_config(folder, **fields):
    config = json.loads((folder / "config.json").read_text())
    config.update(fields)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("spec, message, code", [
    ("x=fasttext:{ft}#nope", "no label '__label__nope'", 1),
    ("x=fasttext:{ft}", "fasttext:PATH#LABEL", 2),  # the option's value cannot be read: a usage error
    ("x={cls}", "needs the label to score", 1),
    ("x={cls}#absent", "no label 'absent'", 1),
    ("x={reg}#high", "regression", 1),
])
def test_bad_specs_are_one_error_line(models, shards, tmp_path, spec, message, code):
    spec = spec.format(ft=models["ft"], cls=models["cls"], reg=models["reg"])
    proc = run_cli("score", shards, "-o", tmp_path / "out", "-m", spec, check=False)
    assert proc.returncode == code and message in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and (code == 2 or proc.stderr.count("\n") == 1)
    if code == 2:
        assert "--model" in errors[0]


def test_several_models_need_names_and_distinct_columns(models, shards, tmp_path):
    proc = run_cli("score", shards, "-o", tmp_path / "o", "-m", str(models["reg"]), "-m", f"b={models['reg']}",
                   check=False)
    assert proc.returncode == 2 and "NAME=SPEC" in proc.stderr
    proc = run_cli("score", shards, "-o", tmp_path / "o", "-m", f"id={models['reg']}", "-m", f"b={models['reg']}",
                   check=False)
    assert proc.returncode == 1 and "already has a column 'id'" in proc.stderr


# -- each regression scorer's int score; ranges in the run record; engines (issue 21's gaps) ------

def varied_texts(n: int, seed: int = 0) -> list[str]:
    """n texts of 5-40 words drawn from the tiny models' vocabulary (their scores spread out)."""
    import random

    from tinymodels import WORDS

    rng = random.Random(seed)
    spam = "buy now free offer click here subscribe login".split()
    return [" ".join(rng.choice(WORDS + spam * (i % 3)) for _ in range(rng.randint(5, 40))) for i in range(n)]


@pytest.fixture(scope="module")
def regression_run(models, tmp_path_factory):
    """60 varied documents scored by a regression, a classifier and a fastText model in one pass."""
    root = tmp_path_factory.mktemp("ranges")
    write_shard(root / "in" / "a.parquet", varied_texts(60), id=list(range(60)))
    run_cli("score", root / "in", "-o", root / "out", "--device", "cpu", "-m", f"fw={models['reg']}",
            "-m", f"cls={models['cls']}#high", "-m", f"dclm=fasttext:{models['ft']}#hq")
    return root


def test_each_regression_scorer_writes_its_int_score(models, shards, tmp_path):
    reg2 = build_bert(tmp_path / "reg2", seed=2)
    out = tmp_path / "out"
    run_cli("score", shards, "-o", out, "--device", "cpu", "-m", f"a={models['reg']}", "-m", f"b={reg2}",
            "-m", f"c={models['cls']}#high", "-m", f"d=fasttext:{models['ft']}#hq")
    table = pq.read_table(out / "a.parquet")
    assert table.column_names == ["text", "id", "a", "b", "c", "d", "a_int_score", "b_int_score"]
    texts = as_texts(TEXTS)
    for name, folder in (("a", models["reg"]), ("b", reg2)):
        scores = column(out / "a.parquet", name)
        assert np.abs(scores - bert_reference(folder, texts)).max() < TOL
        ints = table.column(f"{name}_int_score")
        assert str(ints.type) == "int8"
        assert (np.asarray(ints.to_pylist()) == np.rint(np.clip(scores, 0, 5))).all()
    assert len(set(table.column("a_int_score").to_pylist()) | set(table.column("b_int_score").to_pylist())) >= 2
    scorers = json.loads(pq.read_metadata(out / "a.parquet").metadata[b"phifilter.run"])["model"]["options"]["scorers"]
    assert scorers["a"]["int_column"] == "a_int_score" and scorers["b"]["int_column"] == "b_int_score"
    assert "int_column" not in scorers["c"] and "int_column" not in scorers["d"]


@pytest.mark.parametrize("args, flag", [
    (["-m", "fw={reg}", "-m", "fw_int_score=fasttext:{ft}#hq"], "--model"),
    (["-m", "fw={reg}", "-m", "b=fasttext:{ft}#hq", "--int-score-column", "fw_int_score"], "--int-score-column"),
])
def test_an_int_score_column_written_twice_is_refused(models, shards, tmp_path, args, flag):
    args = [a.format(reg=models["reg"], ft=models["ft"]) for a in args]
    proc = run_cli("score", shards, "-o", tmp_path / "out", "--device", "cpu", *args, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 2 and len(errors) == 1 and flag in errors[0] and "fw_int_score" in errors[0], proc.stderr
    assert not (tmp_path / "out" / "a.parquet").exists()


def test_report_bins_a_regression_column_over_its_range(regression_run, tmp_path):
    scored = regression_run / "out"
    fw = column(scored / "a.parquet", "fw")
    run_cli("report", scored, "-o", tmp_path / "fw.html", "--score-column", "fw", "--stats-json", tmp_path / "fw.json")
    stats = json.loads((tmp_path / "fw.json").read_text())
    lo, hi = min(0.0, float(fw.min())), max(5.0, float(fw.max()))  # the recorded 0-5, widened to the scores
    edges = np.asarray(stats["histogram"]["edges"])
    assert np.abs(edges - np.linspace(lo, hi, 11)).max() < 1e-6
    want = np.bincount(np.clip(((fw - lo) / (hi - lo) * 10).astype(np.int64), 0, 9), minlength=10)
    assert stats["histogram"]["counts"] == want.tolist()
    assert (want > 0).sum() >= 3  # spread over the bars, not piled into the top one as on [0, 1]
    assert stats["threshold"] == 3.0  # the regression scorer's own, from the run record
    assert stats["rows"]["kept"] == int((fw >= 3.0).sum())
    assert f"over [{lo:g}, {hi:g}]" in (tmp_path / "fw.html").read_text()
    # a probability column keeps [0, 1]; another threshold in range is taken
    run_cli("report", scored, "-o", tmp_path / "c.html", "--score-column", "cls", "--stats-json", tmp_path / "c.json",
            "--threshold", "0.4")
    stats = json.loads((tmp_path / "c.json").read_text())
    assert stats["histogram"]["edges"] == [i / 10 for i in range(11)]
    assert stats["rows"]["kept"] == int((column(scored / "a.parquet", "cls") >= 0.4).sum())


@pytest.mark.parametrize("command", ["report", "filter"])
@pytest.mark.parametrize("score_column, threshold", [("fw", "above"), ("fw", "below"), ("cls", "1.5"), ("dclm", "-0.1")])
def test_threshold_outside_the_recorded_range_is_refused(regression_run, tmp_path, command, score_column, threshold):
    fw = column(regression_run / "out" / "a.parquet", "fw")
    lo, hi = (min(0.0, float(fw.min())), max(5.0, float(fw.max()))) if score_column == "fw" else (0.0, 1.0)
    threshold = {"above": f"{hi + 0.5:g}", "below": f"{lo - 0.5:g}"}.get(threshold, threshold)
    target = tmp_path / ("r.html" if command == "report" else "kept")
    proc = run_cli(command, regression_run / "out", "-o", target, "--score-column", score_column,
                   "--threshold", threshold, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "--threshold" in errors[0] and f"[{lo:g}, {hi:g}]" in errors[0] and "run record" in errors[0]
    assert not target.exists() or not any(target.iterdir())


def test_filter_keeps_a_regression_column_at_a_threshold_in_its_range(regression_run, tmp_path):
    scored = regression_run / "out" / "a.parquet"
    fw, ints = column(scored, "fw"), column(scored, "fw_int_score")
    run_cli("filter", regression_run / "out", "-o", tmp_path / "k", "--score-column", "fw", "--threshold", "3.5")
    assert len(pq.read_table(tmp_path / "k" / "a.parquet")) == int((fw >= 3.5).sum())
    run_cli("filter", regression_run / "out", "-o", tmp_path / "i", "--min-int-score", "3",
            "--int-score-column", "fw_int_score")
    assert len(pq.read_table(tmp_path / "i" / "a.parquet")) == int((ints >= 3).sum())


@pytest.mark.parametrize("several", [True, False])
def test_embeddings_refuse_foreign_scorers(models, shards, tmp_path, several):
    (tmp_path / "emb").mkdir()
    spec = ["-m", f"fw={models['reg']}", "-m", f"dclm=fasttext:{models['ft']}#hq"] if several else ["-m", models["reg"]]
    proc = run_cli("score", shards, "-o", tmp_path / "out", "--embeddings", tmp_path / "emb", *spec, "--device", "cpu",
                   check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "--embeddings" in errors[0], proc.stderr
    assert "not foreign or several scorers" in errors[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def same_scored_shard(one, other) -> None:
    """Two runs' outputs of one shard with three scorers: the same columns and rows, every score
    within 1e-4, the int score equal except where a score sits within 1e-4 of a .5 (rint)."""
    a, b = pq.read_table(one), pq.read_table(other)
    assert a.column_names == b.column_names == ["text", "id", "fw", "cls", "dclm", "fw_int_score"]
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    for name in ("fw", "cls", "dclm"):
        got, want = np.asarray(b.column(name).to_pylist()), np.asarray(a.column(name).to_pylist())
        assert np.abs(got - want).max() < TOL
    fw = np.clip(np.asarray(a.column("fw").to_pylist()), 0, 5)
    clear = np.abs(fw - np.floor(fw) - 0.5) > TOL
    assert (np.asarray(a.column("fw_int_score").to_pylist())[clear]
            == np.asarray(b.column("fw_int_score").to_pylist())[clear]).all()


@pytest.mark.slow
def test_ray_with_several_foreign_scorers_equals_one_process_and_reruns_skip(models, tmp_path):
    """Ray actors get each member's files through the object store (not the driver's paths): the
    columns equal the local run's (1e-4), and a rerun finds the same run record and skips."""
    pytest.importorskip("ray")
    for k in range(2):
        write_shard(tmp_path / "in" / f"s{k}.parquet", varied_texts(20, seed=k), id=list(range(20)))
    spec = ["-m", f"fw={models['reg']}", "-m", f"cls={models['cls']}#high", "-m", f"dclm=fasttext:{models['ft']}#hq"]
    run_cli("score", tmp_path / "in", "-o", tmp_path / "one", "--device", "cpu", *spec)
    run_cli("score", tmp_path / "in", "-o", tmp_path / "ray", "--engine", "ray", "--num-threads", "1", *spec)
    for k in range(2):
        same_scored_shard(tmp_path / "one" / f"s{k}.parquet", tmp_path / "ray" / f"s{k}.parquet")
    again = run_cli("score", tmp_path / "in", "-o", tmp_path / "ray", "--engine", "ray", "--num-threads", "1", *spec)
    assert "shards: 0 scored, 2 already complete" in again.stdout, again.stdout


def test_devices_cpu_cpu_with_several_scorers_equals_one_process(models, tmp_path):
    """Two worker processes, three scorers: every column as the one-process run writes it (1e-4)."""
    for k in range(3):
        write_shard(tmp_path / "in" / f"s{k}.parquet", varied_texts(25, seed=k), id=list(range(25)))
    spec = ["-m", f"fw={models['reg']}", "-m", f"cls={models['cls']}#high", "-m", f"dclm=fasttext:{models['ft']}#hq"]
    run_cli("score", tmp_path / "in", "-o", tmp_path / "one", "--device", "cpu", *spec)
    two = run_cli("score", tmp_path / "in", "-o", tmp_path / "two", "--devices", "cpu,cpu", *spec)
    assert "shards: 3 scored" in two.stdout, two.stdout
    for k in range(3):
        same_scored_shard(tmp_path / "one" / f"s{k}.parquet", tmp_path / "two" / f"s{k}.parquet")
