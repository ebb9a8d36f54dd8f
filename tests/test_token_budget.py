"""`filter --token-budget N`: the best documents up to N tokens of a named tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BOILERPLATE, GOOD_CODE, run_cli, write_shard
from phifilter import InputError, filter_shards

TEXTS = [GOOD_CODE, BOILERPLATE, "x = 1\n" * 30, "def f():\n    return 2\n", "import os\n" * 12, "",
         "print('hello world')\n" * 5, GOOD_CODE[:200], "y = [i * i for i in range(10)]\n", "z"]
SCORES = [0.91, 0.12, 0.55, 0.83, float("nan"), 0.99, 0.47, 0.72, 0.64, 0.3]


def _scored(folder):
    write_shard(folder / "a.parquet", TEXTS[:6], edu_score=pa.array(SCORES[:6], pa.float32()), id=pa.array(range(6)))
    write_shard(folder / "b.parquet", TEXTS[6:], edu_score=pa.array(SCORES[6:], pa.float32()), id=pa.array(range(6, 10)))
    return folder


def _oracle(budget, embedder):
    """Best first, while the running total fits (scores here fall in distinct bins)."""
    tokens = embedder.count_tokens(TEXTS)
    order = [i for i in np.argsort([-s for s in SCORES], kind="stable") if np.isfinite(SCORES[i])]
    kept, total = [], 0
    for i in order:
        if total + tokens[i] > budget:
            break
        kept.append(int(i))
        total += int(tokens[i])
    return sorted(kept), total


@pytest.mark.parametrize("budget", [1, 60, 150, 10_000])
def test_token_budget_keeps_the_best_documents_that_fit(tmp_path, embedder, budget):
    src = _scored(tmp_path / "in")
    summary = filter_shards(src, tmp_path / "out", token_budget=budget)
    ids = sorted(pq.read_table(tmp_path / "out" / "a.parquet").column("id").to_pylist()
                 + pq.read_table(tmp_path / "out" / "b.parquet").column("id").to_pylist())
    want, total = _oracle(budget, embedder)
    assert ids == want
    assert summary.tokens_kept == total <= budget
    assert 4 not in ids  # a NaN score is never kept
    assert f"kept tokens: {total:,} of a budget of {budget:,}" in str(summary)


@pytest.mark.slow
def test_token_budget_cli_stats_rerun_and_bad_options(tmp_path, embedder):
    src = _scored(tmp_path / "in")
    out, stats = tmp_path / "out", tmp_path / "stats.json"
    proc = run_cli("filter", src, "-o", out, "--token-budget", "150", "--stats-json", stats)
    want, total = _oracle(150, embedder)
    assert f"kept tokens: {total:,}" in proc.stdout
    doc = json.loads(stats.read_text())
    assert doc["tokens"] == {"kept": total, "budget": 150, "tokenizer": "sentence-transformers/all-MiniLM-L6-v2"}
    assert doc["rows"] == {"in": 10, "kept": len(want)} and [s["name"] for s in doc["per_shard"]] == ["a.parquet", "b.parquet"]
    again = filter_shards(src, out, token_budget=150)
    assert again.shards_skipped == 2 and again.tokens_kept == total
    with pytest.raises(InputError, match="exactly one of"):
        filter_shards(src, tmp_path / "o2", threshold=0.5, token_budget=10)
    bad = run_cli("filter", src, "-o", tmp_path / "o3", "--token-budget", "10", "--tokenizer", tmp_path / "nope.json",
                  check=False)
    assert bad.returncode == 1 and bad.stderr.count("Error: ") == 1 and "Traceback" not in bad.stderr
