"""A small scored code corpus for the ablation tests, built from templates (no downloads).

"Good" documents are short, documented functions (edu_score near 0.9); "poor" ones are
undocumented configuration and glue code (edu_score near 0.1). One document embeds a HumanEval
reference solution and one equals an MBPP solution, so decontamination has work to do.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

GOOD = '''def {name}(values):
    """Return the {what} of a list of numbers.

    >>> {name}([1, 2, 3])
    {example}
    """
    result = {init}
    for value in values:
        result = {update}
    return result
'''
POOR = '''{a}_cfg = {{"{b}": {n1}, "{c}": "{d}", "retry": {n2}}}
def _h{n3}(x, *a, **k):
    if x is None: return {a}_cfg.get("{b}")
    return [k.get(i, {n1}) for i in a if i != "{d}"] or x
'''
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "zeta", "theta", "lambda_"]
KINDS = [("total", "0", "result + value", "6"), ("product", "1", "result * value", "6"),
         ("largest", "float('-inf')", "max(result, value)", "3"),
         ("smallest", "float('inf')", "min(result, value)", "1")]


def make_corpus(folder: Path, eval_dir: Path, n_docs: int = 240, seed: int = 0) -> dict:
    """Write two scored shards into ``folder``; returns counts of what was written."""
    rng = random.Random(seed)
    texts, scores = [], []
    for i in range(n_docs):
        if i % 2 == 0:
            what, init, update, example = rng.choice(KINDS)
            texts.append(GOOD.format(name=f"{what}_of_{rng.choice(WORDS)}_{i}", what=what, init=init,
                                     update=update, example=example))
            scores.append(0.8 + 0.15 * rng.random())
        else:
            texts.append(POOR.format(a=rng.choice(WORDS), b=rng.choice(WORDS), c=rng.choice(WORDS),
                                     d=rng.choice(WORDS), n1=rng.randint(0, 99), n2=rng.randint(0, 9), n3=i))
            scores.append(0.05 + 0.2 * rng.random())
    with gzip.open(eval_dir / "HumanEval.jsonl.gz", "rt") as f:
        he = json.loads(f.readline())
    with open(eval_dir / "mbpp.jsonl") as f:
        mbpp = json.loads(f.readline())
    texts.append("# utilities copied from somewhere\n\n" + he["prompt"] + he["canonical_solution"] + "\n\nprint('ok')\n")
    scores.append(0.9)
    texts.append(mbpp["code"])
    scores.append(0.9)
    half = len(texts) // 2
    folder.mkdir(parents=True, exist_ok=True)
    for k, (lo, hi) in enumerate(((0, half), (half, len(texts)))):
        table = pa.table({"id": [f"doc{i}" for i in range(lo, hi)], "text": texts[lo:hi],
                          "edu_score": pa.array(scores[lo:hi], pa.float32())})
        pq.write_table(table, folder / f"part-{k}.parquet")
    return {"docs": len(texts), "good": (n_docs + 1) // 2 + 2, "contaminated": 2}



REPO = Path(__file__).resolve().parent.parent
EVAL_DIR = REPO.parent / "shared" / "data" / "eval"


@pytest.fixture
def eval_dir() -> Path:
    """The shared HumanEval/MBPP copies (tests only; the package ships its own)."""
    if not (EVAL_DIR / "HumanEval.jsonl.gz").is_file() or not (EVAL_DIR / "mbpp.jsonl").is_file():
        pytest.skip(f"{EVAL_DIR}: the shared HumanEval/MBPP copies are absent")
    return EVAL_DIR
