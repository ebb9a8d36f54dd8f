"""`ablate --prune-similar`: the arms retrained without the documents most like HumanEval/MBPP.

The corpus is the ablation tests' templated corpus plus three renamed, docstring-free HumanEval
solutions with a high score (they pass the 13-word decontamination, since every name differs):
the filtered arm keeps them, its pruned twin must not."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ablate_corpus import eval_dir, make_corpus  # noqa: F401  (eval_dir is a fixture)
from conftest import run_cli
from test_contamination import humaneval, renamed_without_docstrings

PLANTED = ["HumanEval/0", "HumanEval/20", "HumanEval/46"]


@pytest.mark.slow
def test_prune_similar_retrains_every_arm_without_near_copies_and_reports_it(tmp_path, eval_dir):
    corpus, out = tmp_path / "scored", tmp_path / "report"
    make_corpus(corpus, eval_dir, n_docs=160)
    problems = humaneval()
    texts = [renamed_without_docstrings(problems[t]["prompt"] + problems[t]["canonical_solution"]) for t in PLANTED]
    pq.write_table(pa.table({"id": [f"plant{i}" for i in range(3)], "text": texts,
                             "edu_score": pa.array([0.97, 0.98, 0.99], pa.float32())}), corpus / "part-2.parquet")
    args = ["ablate", corpus, "-o", out, "--preset", "micro", "--seeds", "2", "--eval-dir", eval_dir,
            "--arms", "filtered,random", "--val-fraction", "0.05", "--pass-samples", "0", "--threads", "1",
            "--prune-similar", "0.9", "-q"]
    run_cli(*args)
    results = json.loads((out / "results.json").read_text())
    arms = results["data"]["arms"]
    assert set(results["arms"]) == {"filtered", "random", "filtered@0.9", "random@0.9"}
    assert results["data"]["similarity_methods"] == ["syntax"]  # ablate's own measure: the cheap one
    # The planted near copies were kept by the filter and are gone from its pruned twin.
    assert arms["filtered"]["similarity"]["max"] > 0.9 and arms["filtered"]["similarity"]["above"]["0.9"] >= 2
    assert arms["filtered@0.9"]["similarity"]["max"] <= 0.9
    assert arms["filtered@0.9"]["removed_docs"] == arms["filtered"]["similarity"]["above"]["0.9"]
    assert arms["filtered@0.9"]["train_docs"] == arms["filtered"]["train_docs"] - arms["filtered@0.9"]["removed_docs"]
    # The random twin draws from the pruned pool, sized by the pruned filtered arm.
    for draw in arms["random@0.9"]["per_seed"].values():
        assert abs(draw["train_tokens"] - arms["filtered@0.9"]["train_tokens"]) < 200
        assert draw["similarity"]["max"] <= 0.9
    comp = results["comparisons"]["filtered@0.9_minus_random@0.9"]["humaneval_loss"]
    assert comp["n"] == 2 and len(comp["per_seed"]) == 2 and comp["ci95"] is not None
    md = (out / "report.md").read_text()
    assert "## Pruned: filtered − random" in md and "## Similarity of each arm" in md
    pruned_rows = [line for line in md.splitlines() if line.startswith("| 0.9 |") or line.startswith("| none |")]
    assert len(pruned_rows) == 2
    assert "| filtered@0.9 |" in md and "| random@0.9 |" in md
    assert (out / "data" / "similarity.npz").is_file()
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "filtered.s0", "filtered.s1", "filtered@0.9.s0", "filtered@0.9.s1",
        "random.s0", "random.s1", "random@0.9.s0", "random@0.9.s1"]

    # Another threshold later trains only its own runs; the similarities are not measured again.
    more = run_cli(*args[:-1], "--prune-similar", "0.6")
    assert more.stderr.count("finished earlier, skipped") == 8
    assert "measuring each document's similarity" not in more.stderr
    again = json.loads((out / "results.json").read_text())
    assert {"filtered@0.6", "random@0.6"} <= set(again["arms"])
    assert again["data"]["arms"]["filtered@0.6"]["removed_docs"] >= again["data"]["arms"]["filtered@0.9"]["removed_docs"]


def test_prune_similar_out_of_range_is_a_usage_error(tmp_path):
    proc = run_cli("ablate", tmp_path, "-o", tmp_path / "o", "--prune-similar", "1.5", check=False)
    assert proc.returncode == 2 and "--prune-similar" in proc.stderr


def test_similarity_from_an_audit_of_other_inputs_is_refused(tmp_path):
    from phifilter.contamination import run_contamination
    from phifilter.corpus import find_shards
    from phifilter.errors import InputError
    from phifilter.pretrain.prune import corpus_similarity

    for name, n in (("a", 3), ("b", 4)):
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({"text": [f"def f{i}(x):\n    return x + {i}\n" for i in range(n)]}),
                       tmp_path / name / "s.parquet")
    run_contamination([tmp_path / "a"], tmp_path / "audit", methods=["syntax"])
    folder = tmp_path / "data"
    folder.mkdir()
    with pytest.raises(InputError, match="audits other inputs"):
        corpus_similarity(find_shards([tmp_path / "b"]), folder, "text", False, audit=str(tmp_path / "audit"))
    values, methods = corpus_similarity(find_shards([tmp_path / "a"]), folder, "text", False,
                                        audit=str(tmp_path / "audit"))
    assert methods == ["syntax"] and len(values) == 3
    expected = pq.read_table(tmp_path / "audit" / "contamination.parquet").column("max_similarity").to_pylist()
    assert values.tolist() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(InputError, match="contamination.json"):
        corpus_similarity(find_shards([tmp_path / "a"]), tmp_path, "text", False, audit=str(tmp_path / "a"))


def test_random_arm_similarity_averages_only_thresholds_every_draw_has():
    from phifilter.pretrain.ablation_report import _mean_distribution
    from phifilter.pretrain.prune import distribution

    a = distribution(np.array([0.1, 0.25, 0.35], np.float32), taus=(0.3, 0.2))  # a draw of a run with two TAUs
    b = distribution(np.array([0.1, 0.2, 0.5], np.float32), taus=(0.2,))
    mean = _mean_distribution([a, b, None])
    assert "0.3" in a["above"] and "0.3" not in b["above"]
    assert "0.3" not in mean["above"] and mean["above"]["0.2"] == pytest.approx(1.5)  # (2 + 1) / 2: 0.2 is not above
    assert mean["max"] == pytest.approx((0.35 + 0.5) / 2, abs=1e-6)
    # float32 figures compare as the pruning compares: a document at exactly TAU is not above it
    assert distribution(np.array([0.2], np.float32))["above"]["0.5"] == 0
    assert distribution(np.array([0.2], np.float32), taus=(0.2,))["above"]["0.2"] == 0
