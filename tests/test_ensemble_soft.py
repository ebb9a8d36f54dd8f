"""`phifilter ensemble` (Nemotron-CC percentile buckets), `filter --min-bucket` and
`filter --sample-by-score`, with small real models built in the test."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, write_shard
from tinymodels import bert_reference, build_bert, fasttext_reference, train_fasttext

TOL = 1e-4


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    good = "this example explains how each step of the function works and why we use a list".split()
    bad = "click here buy now free offer subscribe login cookie banner sale deal".split()
    out = []
    for i in range(n):
        words = good if rng.random() < 0.5 else bad
        out.append(" ".join(rng.choice(words, size=int(rng.integers(3, 30)))) + f" {i}")
    return out


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    return {"reg": build_bert(root / "reg"), "ft": train_fasttext(root / "ft.bin")}


def test_ensemble_fit_score_and_min_bucket(members, tmp_path):
    ref = write_shard(tmp_path / "ref" / "r.parquet", corpus(200, seed=1))
    texts = corpus(120, seed=2)
    write_shard(tmp_path / "in" / "a.parquet", texts)
    ens = tmp_path / "ens"
    specs = [f"fw={members['reg']}", f"dclm=fasttext:{members['ft']}#hq"]
    proc = run_cli("ensemble", ref, "-o", ens, *sum((["--member", s] for s in specs), []), "--device", "cpu")
    assert "ensemble of 2 (max) fitted on 200 documents" in proc.stdout
    meta = json.loads((ens / "ensemble.json").read_text())
    ref_texts = corpus(200, seed=1)
    # the percentiles are the members' own scores' percentiles on the reference sample
    for m, ref_scores in zip(meta["members"], (bert_reference(members["reg"], ref_texts),
                                               fasttext_reference(members["ft"], ref_texts))):
        assert np.abs(np.asarray(m["quantiles"]) - np.quantile(ref_scores, np.linspace(0, 1, 21))).max() < TOL
    out = tmp_path / "out"
    run_cli("score", tmp_path / "in", "-o", out, "-m", f"ens={ens}", "-m", specs[0], "-m", specs[1], "--device", "cpu")
    table = pq.read_table(out / "a.parquet")
    assert table.column_names == ["text", "ens", "fw", "dclm", "fw_int_score", "ens_bucket"]
    scorers = json.loads(pq.read_metadata(out / "a.parquet").metadata[b"phifilter.run"])["model"]["options"]["scorers"]
    assert scorers["ens"]["scale"] == [0.0, 20.0] and scorers["ens"]["bucket_column"] == "ens_bucket"
    ens_scores = np.asarray(table.column("ens").to_pylist())
    bucket = np.asarray(table.column("ens_bucket").to_pylist())
    # recomputed here from the definition in docs/howto/ensembles.md
    pos = []
    for m, name in zip(meta["members"], ("fw", "dclm")):
        q = np.asarray(m["quantiles"])
        x = np.asarray(table.column(name).to_pylist())
        b = np.array([sum(v >= e for e in q[1:20]) for v in x])
        width = q[b + 1] - q[b]
        frac = np.where(width > 0, (x - q[b]) / np.where(width > 0, width, 1), 0)
        pos.append(b + np.clip(frac, 0, 1 - 1e-5))
    want = np.maximum(pos[0], pos[1])
    assert np.abs(ens_scores - want).max() < 1e-3
    assert (bucket == np.minimum(19, np.floor(ens_scores))).all()
    assert bucket.min() >= 0 and bucket.max() <= 19 and len(set(bucket)) > 5
    kept = tmp_path / "kept"
    run_cli("filter", out, "-o", kept, "--score-column", "ens", "--min-bucket", "12")
    k = pq.read_table(kept / "a.parquet")
    assert len(k) == int((bucket >= 12).sum()) and min(k.column("ens_bucket").to_pylist()) >= 12
    # the ensemble's score lies on [0, 20]: a threshold past it is refused, the report bins over it
    proc = run_cli("filter", out, "-o", tmp_path / "k2", "--score-column", "ens", "--threshold", "21", check=False)
    assert proc.returncode == 2 and "[0, 20]" in proc.stderr
    run_cli("report", out, "-o", tmp_path / "r.html", "--score-column", "ens", "--stats-json", tmp_path / "r.json")
    stats = json.loads((tmp_path / "r.json").read_text())
    assert stats["histogram"]["edges"] == [2.0 * i for i in range(11)] and stats["threshold"] == 10.0
    assert stats["histogram"]["counts"] == np.bincount(np.minimum(ens_scores // 2, 9).astype(int), minlength=10).tolist()


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["members"][0]["quantiles"].__setitem__(3, math.nan), "finite"),
    (lambda m: m["members"][0]["quantiles"].reverse(), "must not decrease"),
    (lambda m: m.__setitem__("combine", "median"), "combine"),
    (lambda m: m.__setitem__("bins", 10), "bins"),
    (lambda m: m["members"][0].__setitem__("quantiles", [0.0] * 5), "21 finite numbers"),
    (lambda m: m.__setitem__("format_version", 99), "newer"),
])
def test_tampered_ensemble_folder_is_refused(members, tmp_path, edit, message):
    ref = write_shard(tmp_path / "ref" / "r.parquet", corpus(40))
    ens = tmp_path / "ens"
    run_cli("ensemble", ref, "-o", ens, "--member", f"dclm=fasttext:{members['ft']}#hq")
    meta = json.loads((ens / "ensemble.json").read_text())
    edit(meta)
    (ens / "ensemble.json").write_text(json.dumps(meta).replace("NaN", "NaN"))
    proc = run_cli("score", ref.parent, "-o", tmp_path / "out", "-m", f"e={ens}", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: ") and message in proc.stderr, proc.stderr


def test_ensemble_refuses_a_changed_member(members, tmp_path):
    ref = write_shard(tmp_path / "ref" / "r.parquet", corpus(40))
    ft = tmp_path / "ft.bin"
    shutil.copy(members["ft"], ft)
    run_cli("ensemble", ref, "-o", tmp_path / "ens", "--member", f"d=fasttext:{ft}#hq", "--combine", "mean")
    train_fasttext(ft, seed=5)
    proc = run_cli("score", ref.parent, "-o", tmp_path / "out", "-m", f"e={tmp_path / 'ens'}", check=False)
    assert proc.returncode == 1 and "refit the ensemble" in proc.stderr


def test_sample_by_score_is_the_documented_function_of_score_and_hash(tmp_path):
    texts = corpus(400, seed=3)
    scores = np.linspace(0, 1, len(texts))[np.random.default_rng(0).permutation(len(texts))]
    write_shard(tmp_path / "in" / "a.parquet", texts, edu_score=scores.astype(np.float32))
    proc = run_cli("filter", tmp_path / "in", "-o", tmp_path / "kept", "--sample-by-score", "0.25:0.75")
    p = np.clip((scores.astype(np.float32).astype(np.float64) - 0.25) / 0.5, 0, 1)
    u = np.array([int(hashlib.sha256(t.encode()).hexdigest()[:13], 16) / 2 ** 52 for t in texts])
    want = [t for t, keep in zip(texts, u < p) if keep]
    got = pq.read_table(tmp_path / "kept" / "a.parquet").column("text").to_pylist()
    assert got == want
    assert 0 < len(got) < len(texts)
    assert "expected token share: " in proc.stdout
    share = float(proc.stdout.split("expected token share: ")[1].split("%")[0])
    from phifilter.token_budget import token_counter

    tokens = token_counter(None).count(texts)
    assert abs(share - 100 * (p * tokens).sum() / tokens.sum()) < 0.06
    again = run_cli("filter", tmp_path / "in", "-o", tmp_path / "kept2", "--sample-by-score", "0.25:0.75")
    assert pq.read_table(tmp_path / "kept2" / "a.parquet").column("text").to_pylist() == want
    assert "expected token share" in again.stdout


@pytest.mark.parametrize("value", ["0.8:0.2", "x:1", "0.5", "nan:1"])
def test_sample_by_score_bad_curve_is_a_usage_error(tmp_path, value):
    write_shard(tmp_path / "in" / "a.parquet", ["a"], edu_score=np.array([0.5], np.float32))
    proc = run_cli("filter", tmp_path / "in", "-o", tmp_path / "kept", "--sample-by-score", value, check=False)
    assert proc.returncode == 2 and "--sample-by-score" in proc.stderr


@pytest.mark.parametrize("rule", [["--top-fraction", "0.3"], ["--token-budget", "100"]])
def test_unit_interval_rules_refuse_other_scales(tmp_path, rule):
    """A 0-5 regression column would all fall in the top bin of --top-fraction: refused, not wrong."""
    write_shard(tmp_path / "in" / "a.parquet", ["a", "b", "c"], fw=np.array([0.5, 3.2, 4.9], np.float32))
    proc = run_cli("filter", tmp_path / "in", "-o", tmp_path / "kept", "--score-column", "fw", *rule, check=False)
    assert proc.returncode == 1 and "outside [0, 1]" in proc.stderr and "--threshold" in proc.stderr, proc.stderr
    assert not (tmp_path / "kept" / "a.parquet").exists()
    run_cli("filter", tmp_path / "in", "-o", tmp_path / "kept", "--score-column", "fw", "--threshold", "3")
    assert pq.read_table(tmp_path / "kept" / "a.parquet").column("text").to_pylist() == ["b", "c"]


@pytest.mark.parametrize("fields, flag, message", [
    ({"members": ()}, "--member", "NAME=SPEC"),
    ({"members": ("bundled",)}, "--member", "NAME=SPEC"),
    ({"members": ("a=bundled", "a=x")}, "--member", "its own NAME"),
    ({"members": ("a=bundled",), "combine_rule": "median"}, "--combine", "max, mean"),
    ({"members": ("a=bundled",), "sample": 5}, "--sample", "at least 20"),
])
def test_ensemble_options_are_option_errors(tmp_path, fields, flag, message):
    """EnsembleConfig refuses a bad value when it is built (nothing loaded, nothing written);
    the command shows it as a usage error naming the flag."""
    from phifilter import EnsembleConfig
    from phifilter.errors import OptionError

    with pytest.raises(OptionError, match=message) as e:
        EnsembleConfig(**fields)
    assert e.value.option == flag


def test_ensemble_cli_usage_errors_name_the_flag(tmp_path):
    write_shard(tmp_path / "in" / "a.parquet", corpus(30))
    for args, flag in ((["--member", "a=bundled", "--member", "a=bundled"], "--member"),
                       (["--member", "bundled"], "--member")):
        proc = run_cli("ensemble", tmp_path / "in", "-o", tmp_path / "ens", *args, check=False)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
        assert proc.returncode == 2 and len(errors) == 1 and flag in errors[0], proc.stderr
        assert not (tmp_path / "ens").exists()


def test_min_bucket_out_of_range_is_an_option_error(tmp_path):
    from phifilter.errors import OptionError
    from phifilter.select import filter_shards

    write_shard(tmp_path / "in" / "a.parquet", ["a"], ens=np.array([3.5], np.float32),
                ens_bucket=np.array([3], np.int8))
    with pytest.raises(OptionError, match="a bucket is in 0..19") as e:
        filter_shards(tmp_path / "in", tmp_path / "kept", score_column="ens", min_bucket=20)
    assert e.value.option == "--min-bucket" and not (tmp_path / "kept").exists()
