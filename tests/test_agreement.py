"""`phifilter agreement`: pairing by id or row order, the figures, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifilter.errors import InputError
from phifilter.label import compare_labels
from phifilter.label.standin import Canned

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, **cols) -> Path:
    pq.write_table(pa.table(cols), path)
    return path


def quadratic_kappa(a, b, k=6) -> float:
    """Cohen's quadratic-weighted kappa from its definition (independent of scikit-learn)."""
    observed = np.zeros((k, k))
    for i, j in zip(a, b):
        observed[i, j] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    weights = np.array([[(i - j) ** 2 for j in range(k)] for i in range(k)]) / (k - 1) ** 2
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def test_figures_on_a_known_example(tmp_path):
    a = [0, 1, 2, 3, 4, 5, 3, 2, 1, 0]
    b = [0, 1, 3, 3, 2, 5, 4, 2, 0, 0]
    r = compare_labels(write(tmp_path / "a.parquet", llm_score=pa.array(a, pa.int8())),
                       write(tmp_path / "b.parquet", score=b))
    assert r.pairs == 10 and r.paired_by == "row order" and (r.column_a, r.column_b) == ("llm_score", "score")
    assert r.exact == pytest.approx(0.6)  # 6 of 10 equal
    assert r.within_one == pytest.approx(0.9)  # only 4 vs 2 is two apart
    assert r.mean_abs_diff == pytest.approx(0.5)
    assert r.quadratic_kappa == pytest.approx(quadratic_kappa(a, b))
    assert r.confusion[4][2] == 1 and r.confusion[3][3] == 1 and sum(map(sum, r.confusion)) == 10
    # binary at 3: a -> [0,0,0,1,1,1,1,0,0,0], b -> [0,0,1,1,0,1,1,0,0,0]: 8 of 10 agree
    assert r.binary_agreement == pytest.approx(0.8)
    assert "quadratic-weighted kappa" in str(r) and "A=4" in str(r)


def test_pairs_by_id_whatever_the_order_and_counts_the_unpaired(tmp_path):
    a = write(tmp_path / "a.parquet", id=["x", "y", "z", "only-a"], llm_score=[1, 2, None, 4])
    b = write(tmp_path / "b.parquet", id=["z", "y", "x", "only-b", "w"], llm_score=[5, 2, 1, 0, 3])
    r = compare_labels(a, b)
    assert r.paired_by == "column 'id'"
    assert r.pairs == 2 and r.exact == 1.0  # x and y; z is unscored in A
    assert r.missing_a == 1 + 2  # z unscored in A; only-b and w absent from A
    assert r.missing_b == 1  # only-a absent from B
    assert r.quadratic_kappa == pytest.approx(1.0)


def test_identical_constant_labels_have_no_kappa(tmp_path):
    a = write(tmp_path / "a.parquet", score=[3, 3, 3])
    r = compare_labels(a, a)
    assert r.exact == 1.0 and r.quadratic_kappa is None and "n/a" in str(r)


def test_bad_inputs(tmp_path):
    a = write(tmp_path / "a.parquet", score=[1, 2, 3])
    with pytest.raises(InputError, match="rows are paired by position"):
        compare_labels(a, write(tmp_path / "b.parquet", score=[1, 2]))
    with pytest.raises(InputError, match=r"no score column \(llm_score or score\); columns are: text"):
        compare_labels(a, write(tmp_path / "c.parquet", text=["t"] * 3))
    with pytest.raises(InputError, match="expected whole scores 0-5"):
        compare_labels(a, write(tmp_path / "d.parquet", score=[1, 2, 7]))
    with pytest.raises(InputError, match="repeats the value 'x'"):
        dup = write(tmp_path / "e.parquet", id=["x", "x", "y"], score=[1, 2, 3])
        compare_labels(dup, dup)
    with pytest.raises(InputError, match="no document has a score in both"):
        compare_labels(a, write(tmp_path / "f.parquet", score=pa.array([None] * 3, pa.int8())))


def test_cli_json(tmp_path):
    a = write(tmp_path / "a.parquet", id=["1", "2", "3"], llm_score=[0, 3, 5])
    b = write(tmp_path / "b.parquet", id=["1", "2", "3"], llm_score=[1, 3, 5])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "phifilter", "agreement", str(a), str(b), "--json"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    figures = json.loads(r.stdout)
    assert figures["pairs"] == 3 and figures["exact"] == pytest.approx(2 / 3) and figures["within_one"] == 1.0


def test_shipped_seed_against_itself(tmp_path):
    seed = ROOT / "data" / "seed" / "edu_seed.parquet"
    if not seed.exists():
        pytest.skip("data/seed/edu_seed.parquet is not in this checkout")
    r = compare_labels(seed, seed)
    assert r.pairs == pq.read_metadata(seed).num_rows and r.exact == 1.0 and r.quadratic_kappa == pytest.approx(1.0)


def test_answer_formats_are_counted_per_model(tmp_path, chat_server):
    """Labels made by `phifilter label` (a real run against the loopback server) report llm_parse counts."""
    from phifilter.label import LabelConfig, OpenAIChatBackend, label_file

    texts = [f"def f{i}(x):\n    return x + {i}\n" for i in range(5)]
    replies = {texts[0]: "Fine.\nEducational score: 2", texts[1]: "Short.\nEducational score: 1",
               texts[2]: "The educational score is 3.", texts[3]: "Rating: 4/5", texts[4]: "No idea."}
    chat_server.script = lambda doc, body: Canned(text=replies[doc])
    src = write(tmp_path / "seed.parquet", id=[f"d{i}" for i in range(5)], text=texts,
                score=pa.array([2, 1, 3, 3, 0], pa.int8()))
    out = tmp_path / "labels.parquet"
    summary = label_file(src, out, OpenAIChatBackend(chat_server.url, "model-x"), LabelConfig(retry_delay=0.01),
                         progress=False)
    assert summary.parses == {"strict": 2, "fallback": 2, "none": 1}
    assert "answer formats of model-x: strict 2, fallback 2, none 1" in str(summary)
    r = compare_labels(src, out)
    assert r.formats_a == {} and r.formats_b == {"model-x": {"strict": 2, "fallback": 2, "none": 1, "repaired": 0}}
    assert r.pairs == 4 and r.missing_b == 1
    cli = subprocess.run([sys.executable, "-m", "phifilter", "agreement", str(src), str(out)], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert cli.returncode == 0, cli.stderr
    assert "answer formats in B, model-x: strict 2, fallback 2, none 1" in cli.stdout
