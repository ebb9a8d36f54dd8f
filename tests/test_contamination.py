"""`phifilter contamination`: known answers (HumanEval solutions planted in real code, verbatim and
renamed without docstrings), unrelated library code below the documented thresholds, resume,
settings, bad input. Every corpus is built in tmp_path from TheAlgorithms and the standard
library; evaluation data is never part of a training corpus."""

from __future__ import annotations

import ast
import builtins
import gzip
import json
import random
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SHARED, run_cli
from phifilter.contamination import EMBEDDING_NEAR_COPY, SYNTAX_NEAR_COPY, run_contamination
from phifilter.pretrain.evalsets import default_eval_dir

# HumanEval problems whose solution has enough structure to be evidence (24+ node 4-grams; a
# one-line solution such as `return len(string)` is in every library and proves nothing).
PLANTED = ["HumanEval/0", "HumanEval/1", "HumanEval/5", "HumanEval/9", "HumanEval/18", "HumanEval/20",
           "HumanEval/36", "HumanEval/40", "HumanEval/46", "HumanEval/63", "HumanEval/69", "HumanEval/94"]
BACKGROUND = 60  # TheAlgorithms documents (the embedder makes each one cost)
ALGORITHMS = SHARED / "data" / "corpora" / "thealgorithms.parquet"


def humaneval() -> dict[str, dict]:
    with gzip.open(default_eval_dir() / "HumanEval.jsonl.gz", "rt") as f:
        return {r["task_id"]: r for r in map(json.loads, f)}


def renamed_without_docstrings(source: str) -> str:
    """Every name the code defines (functions, arguments, variables) renamed; docstrings dropped."""
    tree = ast.parse(source)
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    defined |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    defined |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    defined -= set(dir(builtins))
    new = {name: f"v{i}_{name[::-1]}q" for i, name in enumerate(sorted(defined))}
    for n in ast.walk(tree):
        if isinstance(n, ast.FunctionDef):
            n.name = new.get(n.name, n.name)
            body = n.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                n.body = body[1:] or [ast.Pass()]
        elif isinstance(n, ast.arg):
            n.arg = new.get(n.arg, n.arg)
        elif isinstance(n, ast.Name):
            n.id = new.get(n.id, n.id)
    return ast.unparse(tree)


def algorithms(n: int) -> list[str]:
    if not ALGORITHMS.is_file():
        pytest.skip(f"{ALGORITHMS}: the shared TheAlgorithms corpus is absent")
    texts = pq.read_table(ALGORITHMS, columns=["text"]).column("text").to_pylist()
    return random.Random(0).sample(texts, n)


def stdlib_files(n: int) -> list[str]:
    """Python files of this interpreter's standard library (no tests: real library code)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "test" not in str(p.relative_to(root))
                   and "site-packages" not in p.parts and "idlelib" not in p.parts)
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in random.Random(1).sample(files, n)]
    return [t for t in texts if t.strip()]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """TheAlgorithms documents, 12 of them with a verbatim HumanEval solution appended and 12 with
    a renamed, docstring-free copy appended; audited once with both methods."""
    tmp = tmp_path_factory.mktemp("planted")
    problems = humaneval()
    docs = algorithms(BACKGROUND)
    ids = [f"alg-{i}" for i in range(len(docs))]
    rng = random.Random(2)
    truth = {}
    for k, task in enumerate(PLANTED):
        source = problems[task]["prompt"] + problems[task]["canonical_solution"]
        for variant, code in (("verbatim", source), ("renamed", renamed_without_docstrings(source))):
            host = docs[rng.randrange(BACKGROUND)]  # an unplanted document
            docs.append(host.rstrip("\n") + "\n\n\n" + code + "\n")
            ids.append(f"{variant}-{k}")
            truth[ids[-1]] = task
    corpus = tmp / "corpus"
    corpus.mkdir()
    order = list(range(len(docs)))
    rng.shuffle(order)
    half = len(order) // 2
    for part, rows in (("a", order[:half]), ("b", order[half:])):
        pq.write_table(pa.table({"id": [ids[i] for i in rows], "text": [docs[i] for i in rows]}),
                       corpus / f"{part}.parquet")
    out = tmp / "audit"
    summary = run_contamination([corpus], out, stats_json=tmp / "stats.json")
    return {"out": out, "truth": truth, "summary": summary, "corpus": corpus, "tmp": tmp,
            "table": pq.read_table(out / "contamination.parquet").to_pylist()}


def test_planted_solutions_are_the_most_similar_and_matched_to_their_own_problems(planted):
    rows = sorted(planted["table"], key=lambda r: -r["max_similarity"])
    truth = planted["truth"]
    assert len(rows) == BACKGROUND + len(truth)
    top = rows[: len(truth)]
    assert {r["id"] for r in top} == set(truth), [(r["id"], round(r["max_similarity"], 3)) for r in rows[:30]]
    for r in top:
        assert r["nearest_problem"] == truth[r["id"]], r
        assert r["max_similarity"] >= SYNTAX_NEAR_COPY
    # The renamed, docstring-free copies are found by their syntax tree, exactly.
    for r in top:
        if r["id"].startswith("renamed"):
            assert r["syntax_problem"] == truth[r["id"]] and r["syntax_similarity"] == pytest.approx(1.0, abs=1e-4)
            assert r["method"] == "ast"
            host_lines = r["match_last_line"] - r["match_first_line"]
            assert 0 <= host_lines < 60  # the matched unit is the planted function, not the host file
    # Every host document without a plant stays below the near-copy thresholds.
    clean = [r for r in rows if r["id"] not in truth]
    assert max(r["syntax_similarity"] for r in clean) < SYNTAX_NEAR_COPY
    assert max(r["embedding_similarity"] for r in clean) < EMBEDDING_NEAR_COPY


def test_summary_shows_distribution_and_top_matches_side_by_side(planted):
    out = planted["out"]
    md = (out / "contamination.md").read_text()
    html = (out / "contamination.html").read_text()
    assert "## Distribution" in md and "max_similarity" in md and "Top 20 matches" in md
    assert md.count("<th>document</th><th>problem</th>") == 20
    first = planted["summary"]["top"][0]
    assert first["nearest_problem"] in md and first["nearest_problem"] in html
    assert "data:image/png;base64," in html and "<script" not in html
    # The problem's code is shown beside the document's matched lines.
    task = first["nearest_problem"]
    assert humaneval()[task]["canonical_solution"].strip().splitlines()[0].strip() in first["problem_code"]
    assert first["excerpt"].strip()
    stats = json.loads((planted["tmp"] / "stats.json").read_text())
    n = BACKGROUND + 2 * len(PLANTED)
    assert stats["rows"] == {"in": n, "computed": n, "resumed": 0}
    assert stats["seconds_per_document"] > 0 and stats["embedding_chunks"] >= n
    assert stats["syntax_full_comparisons"] >= 24


def test_unrelated_library_code_stays_below_the_documented_thresholds(tmp_path):
    """Installed standard-library code: no syntax near copy of any HumanEval/MBPP problem (300
    files) and no embedding near copy (15 files, 4 chunks each: the embedder is the slow part;
    the planted test's 60 host files are checked on all their chunks)."""
    texts = stdlib_files(300)
    pq.write_table(pa.table({"text": texts}), tmp_path / "stdlib.parquet")
    run_contamination([tmp_path / "stdlib.parquet"], tmp_path / "syntax", methods=["syntax"])
    table = pq.read_table(tmp_path / "syntax" / "contamination.parquet")
    syntax = table.column("syntax_similarity").to_pylist()
    assert len(syntax) == len(texts) and max(syntax) < SYNTAX_NEAR_COPY
    assert table.column("embedding_similarity").to_pylist() == [0.0] * len(texts)
    assert set(table.column("method").to_pylist()) <= {"ast", "tokens", None}

    pq.write_table(pa.table({"text": texts[:15]}), tmp_path / "few.parquet")
    run_contamination([tmp_path / "few.parquet"], tmp_path / "embedding", methods=["embedding"], max_chunks=4)
    emb = pq.read_table(tmp_path / "embedding" / "contamination.parquet").column("embedding_similarity").to_pylist()
    assert max(emb) < EMBEDDING_NEAR_COPY and min(emb) > 0.0


def test_code_that_does_not_parse_is_matched_by_its_tokens(tmp_path):
    """A renamed solution inside Markdown prose with a broken line is still found."""
    problems = humaneval()
    code = renamed_without_docstrings(problems["HumanEval/0"]["prompt"] + problems["HumanEval/0"]["canonical_solution"])
    doc = "Here is my answer:\n\n```python\n" + code + "\n```\n\nand it works :) def broken(:\n"
    noise = "Some notes about lists.\nNothing to see here def (x: \n" * 5
    pq.write_table(pa.table({"text": [doc, noise]}), tmp_path / "md.parquet")
    run_contamination([tmp_path / "md.parquet"], tmp_path / "out", methods=["syntax"])
    rows = pq.read_table(tmp_path / "out" / "contamination.parquet").to_pylist()
    assert rows[0]["syntax_problem"] == "HumanEval/0" and rows[0]["syntax_similarity"] > 0.9
    assert rows[0]["syntax_method"] == "ast"  # the fenced function parses on its own
    assert rows[1]["syntax_similarity"] < 0.3
    assert (rows[0]["shard"], rows[0]["row"], rows[1]["row"]) == ("md.parquet", 0, 1)


def test_a_function_that_does_not_parse_falls_back_to_tokens(tmp_path):
    """A renamed solution with a syntax error of its own: only the token sequence can match it."""
    problems = humaneval()
    code = renamed_without_docstrings(problems["HumanEval/20"]["prompt"] + problems["HumanEval/20"]["canonical_solution"])
    lines = code.splitlines()
    broken = "\n".join(lines[:3] + [lines[3] + " $"] + lines[4:])  # one stray character
    pq.write_table(pa.table({"text": [broken, "int main(void) { return 0; }\n"]}), tmp_path / "t.parquet")
    run_contamination([tmp_path / "t.parquet"], tmp_path / "out", methods=["syntax"])
    rows = pq.read_table(tmp_path / "out" / "contamination.parquet").to_pylist()
    assert rows[0]["syntax_method"] == "tokens" and rows[0]["syntax_problem"] == "HumanEval/20"
    assert rows[0]["syntax_similarity"] > SYNTAX_NEAR_COPY
    assert rows[1]["syntax_similarity"] < 0.3


def test_interrupted_run_resumes_from_its_parts_with_the_same_result(tmp_path, monkeypatch):
    from phifilter import contamination as C

    texts = stdlib_files(40)
    pq.write_table(pa.table({"text": texts}), tmp_path / "in.parquet")
    whole = tmp_path / "whole"
    run_contamination([tmp_path / "in.parquet"], whole, methods=["syntax"], batch_rows=8)
    expected = pq.read_table(whole / "contamination.parquet").to_pylist()

    calls = {"n": 0}
    real = C.Matcher.match

    def dies_on_third_batch(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, batch)

    out = tmp_path / "out"
    monkeypatch.setattr(C.Matcher, "match", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_contamination([tmp_path / "in.parquet"], out, methods=["syntax"], batch_rows=8)
    assert len(list((out / "parts").glob("*.parquet"))) == 2 and not (out / "contamination.parquet").exists()
    monkeypatch.setattr(C.Matcher, "match", real)
    summary = run_contamination([tmp_path / "in.parquet"], out, methods=["syntax"], batch_rows=8)
    assert summary["stats"]["rows"] == {"in": len(texts), "computed": len(texts) - 16, "resumed": 16}
    got = pq.read_table(out / "contamination.parquet").to_pylist()
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a["row"] == b["row"] and a["nearest_problem"] == b["nearest_problem"]
        assert a["max_similarity"] == pytest.approx(b["max_similarity"], abs=1e-4)
    assert not (out / "parts").exists()
    # Other settings in the same folder are refused, nothing changed.
    before = (out / "contamination.parquet").read_bytes()
    with pytest.raises(Exception, match="other settings"):
        run_contamination([tmp_path / "in.parquet"], out, methods=["syntax"], batch_rows=9)
    assert (out / "contamination.parquet").read_bytes() == before


def test_cli_eval_file_bad_input_and_foreign_folder(tmp_path):
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"task_id": "Mine/1", "code": (
        "def collatz_steps(n):\n    steps = 0\n    while n != 1:\n        if n % 2 == 0:\n            n = n // 2\n"
        "        else:\n            n = 3 * n + 1\n        steps += 1\n    return steps\n")}) + "\n")
    doc = ("def hops(k):\n    c = 0\n    while k != 1:\n        if k % 2 == 0:\n            k = k // 2\n"
           "        else:\n            k = 3 * k + 1\n        c += 1\n    return c\n")
    pq.write_table(pa.table({"text": [doc, "print('hello')\n"]}), tmp_path / "in.parquet")
    ok = run_cli("contamination", tmp_path / "in.parquet", "-o", tmp_path / "out", "--eval", mine,
                 "--no-shipped", "--methods", "syntax", "-q")
    assert ok.returncode == 0, ok.stderr
    rows = pq.read_table(tmp_path / "out" / "contamination.parquet").to_pylist()
    assert rows[0]["nearest_problem"] == "Mine/1" and rows[0]["max_similarity"] == pytest.approx(1.0, abs=1e-4)
    assert rows[1]["max_similarity"] == 0.0 and rows[1]["method"] is None

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "X/1", "answer": "def f(): pass"}\n')
    proc = run_cli("contamination", tmp_path / "in.parquet", "-o", tmp_path / "o2", "--eval", bad, "-q", check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "bad.jsonl" in last and "canonical_solution" in last

    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    proc = run_cli("contamination", tmp_path / "in.parquet", "-o", tmp_path / "foreign", "--methods", "syntax", "-q", check=False)
    assert proc.returncode == 1 and "notes.txt" in proc.stderr
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"

    proc = run_cli("contamination", tmp_path / "in.parquet", "-o", tmp_path / "o3", "--methods", "ngram", "-q", check=False)
    assert proc.returncode == 1 and "--methods" in proc.stderr
