"""`phifilter sample`: uniform, deterministic, stratified, deduplicated, decontaminated."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phifilter.errors import InputError, OutputError
from phifilter.exclude import load_exclusions
from phifilter.chunking import excerpt
from phifilter.sample import SampleConfig, allocate, sample_shards

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "data" / "eval"


def doc(i: int) -> str:
    return f"def function_{i}(value):\n    \"\"\"Return value times {i}.\"\"\"\n    return value * {i}\n"


def write_shards(folder: Path, texts, per_shard=50, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(0, len(texts), per_shard):
        cols = {"text": texts[k : k + per_shard], "row": list(range(k, min(k + per_shard, len(texts))))}
        for name, values in extra.items():
            cols[name] = values[k : k + per_shard]
        pq.write_table(pa.table(cols), folder / f"part-{k // per_shard:03d}.parquet")
    return folder


def drawn(path: Path, column="text") -> list:
    return pq.read_table(path).column(column).to_pylist()


# ---------------------------------------------------------------------------------------------
# excerpts


def test_excerpt_cuts_at_the_last_line_break():
    text = "line one\nline two\nline three\n"
    assert excerpt(text, 100) == text
    assert excerpt(text, 20) == "line one\nline two\n"
    assert excerpt(text, 9) == "line one\n"
    assert excerpt("word " * 10, 12) == "word word "  # no line break: the last space
    assert excerpt("x" * 50, 10) == "x" * 10  # nothing to cut at
    assert excerpt(text, None) == text


@given(st.text(alphabet="ab \n", max_size=200), st.integers(1, 60))
@settings(max_examples=200, deadline=None)
def test_excerpt_is_a_bounded_prefix(text, limit):
    cut = excerpt(text, limit)
    assert text.startswith(cut) and len(cut) <= limit
    if len(text) > limit and "\n" in text[1:limit]:
        assert cut.endswith("\n")


# ---------------------------------------------------------------------------------------------
# the draw


def test_same_seed_same_sample_whatever_the_sharding(tmp_path):
    texts = [doc(i) for i in range(300)]
    a = sample_shards(write_shards(tmp_path / "a", texts, per_shard=17), tmp_path / "a.parquet",
                      SampleConfig(n=40, seed=7, read_batch_rows=5), progress=False)
    sample_shards(write_shards(tmp_path / "b", texts[::-1], per_shard=100), tmp_path / "b.parquet",
                  SampleConfig(n=40, seed=7), progress=False)
    sample_shards(tmp_path / "a", tmp_path / "c.parquet", SampleConfig(n=40, seed=8), progress=False)
    assert a.drawn == 40 and a.rows_read == 300
    assert drawn(tmp_path / "a.parquet") == drawn(tmp_path / "b.parquet")  # same rows, same order
    assert set(drawn(tmp_path / "a.parquet")) != set(drawn(tmp_path / "c.parquet"))


@pytest.mark.slow
def test_every_document_is_equally_likely(tmp_path):
    texts = [doc(i) for i in range(60)]
    src = write_shards(tmp_path / "in", texts, per_shard=25)
    counts = Counter()
    runs = 150
    for seed in range(runs):
        out = tmp_path / f"s{seed}.parquet"
        sample_shards(src, out, SampleConfig(n=15, seed=seed), progress=False)
        counts.update(drawn(out))
        out.unlink()
    expected = runs * 15 / 60  # 37.5 draws per document
    assert set(counts) == set(texts)
    chi2 = sum((counts[t] - expected) ** 2 / expected for t in texts)
    # 59 degrees of freedom: the 99.9th percentile is about 99; an order or shard bias is far above.
    assert chi2 < 99, chi2
    # the order of the rows is not the corpus order
    assert drawn(sample_shards(src, tmp_path / "x.parquet", SampleConfig(n=60), progress=False).output) != texts


def test_exact_duplicates_are_drawn_once(tmp_path):
    texts = [doc(i % 10) for i in range(100)] + ["   \n", ""]
    summary = sample_shards(write_shards(tmp_path / "in", texts), tmp_path / "s.parquet",
                            SampleConfig(n=50), progress=False)
    out = drawn(tmp_path / "s.parquet")
    assert sorted(out) == sorted(doc(i) for i in range(10))
    assert summary.duplicates > 0 and summary.blank == 2


def test_duplicates_after_excerpting_are_drawn_once(tmp_path):
    head = "".join(f"line {k}\n" for k in range(20))
    texts = [head + f"tail {i}\n" * 50 for i in range(5)]
    sample_shards(write_shards(tmp_path / "in", texts), tmp_path / "s.parquet",
                  SampleConfig(n=5, max_chars=len(head) + 3), progress=False)
    assert drawn(tmp_path / "s.parquet") == [head]


def test_ids_are_added_when_absent_and_kept_when_present(tmp_path):
    texts = [doc(i) for i in range(5)]
    sample_shards(write_shards(tmp_path / "in", texts), tmp_path / "s.parquet", SampleConfig(n=5), progress=False)
    t = pq.read_table(tmp_path / "s.parquet")
    assert t.column_names == ["id", "text", "row"] and len(set(t.column("id").to_pylist())) == 5
    write_shards(tmp_path / "in2", texts, id=[f"mine-{i}" for i in range(5)])
    sample_shards(tmp_path / "in2", tmp_path / "s2.parquet", SampleConfig(n=5), progress=False)
    assert sorted(drawn(tmp_path / "s2.parquet", "id")) == [f"mine-{i}" for i in range(5)]


# ---------------------------------------------------------------------------------------------
# strata


def test_stratified_proportional_and_equal(tmp_path):
    texts = [doc(i) for i in range(1000)]
    sources = ["big"] * 900 + ["small"] * 97 + ["tiny"] * 3
    src = write_shards(tmp_path / "in", texts, per_shard=300, source=sources)
    prop = sample_shards(src, tmp_path / "p.parquet", SampleConfig(n=100, stratify_by="source"), progress=False)
    assert Counter(drawn(tmp_path / "p.parquet", "source")) == {"big": 90, "small": 10}
    assert prop.strata == {"big": (900, 90), "small": (97, 10), "tiny": (3, 0)}
    sample_shards(src, tmp_path / "e.parquet", SampleConfig(n=90, stratify_by="source", allocation="equal"),
                  progress=False)
    # tiny has only 3: its unused share goes to the others
    assert Counter(drawn(tmp_path / "e.parquet", "source")) == {"big": 44, "small": 43, "tiny": 3}


@given(st.integers(0, 500), st.dictionaries(st.sampled_from("abcdefg"), st.integers(0, 200), min_size=1),
       st.booleans())
@settings(max_examples=200, deadline=None)
def test_allocate_never_exceeds_what_is_there(n, available, equal):
    weights = {s: 1.0 if equal else float(v) for s, v in available.items()}
    shares = allocate(n, available, weights)
    assert sum(shares.values()) == min(n, sum(available.values()))
    assert all(0 <= shares[s] <= available[s] for s in available)


def test_allocate_is_proportional():
    assert allocate(10, {"a": 100, "b": 100}, {"a": 3.0, "b": 1.0}) == {"a": 8, "b": 2}  # 7.5 / 2.5, ties by name
    assert allocate(10, {"a": 100, "b": 1}, {"a": 1.0, "b": 1.0}) == {"a": 9, "b": 1}


# ---------------------------------------------------------------------------------------------
# evaluation data never drawn


PROMPT = 'def running_median(values):\n    """Return the median of every prefix of values.\n    >>> running_median([3, 1, 2])\n    [3, 2.0, 2]\n    """\n'
SOLUTION = "    result = []\n    for k in range(1, len(values) + 1):\n        window = sorted(values[:k])\n        middle = k // 2\n        result.append(window[middle] if k % 2 else (window[middle - 1] + window[middle]) / 2)\n    return result\n"
SHORT = "Write a function to count the vowels in a sentence."


def write_eval(path: Path) -> Path:
    records = [{"task_id": "T/0", "prompt": PROMPT, "canonical_solution": SOLUTION, "entry_point": "running_median"},
               {"task_id": 1, "text": SHORT, "code": "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s)",
                "test_list": ["assert count_vowels('banana') == 3"]}]
    with gzip.open(path, "wt") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def test_documents_overlapping_evaluation_data_are_never_drawn(tmp_path):
    leaks = [
        PROMPT + SOLUTION,  # the problem, whole
        "# my homework\n" + SOLUTION.replace("    ", "\t") + "\nprint('done')\n",  # reindented solution
        "  " + SHORT.upper() + "\n",  # the short MBPP prompt, shouted: too short for a 13-word run, an exact copy
    ]
    clean = [doc(i) for i in range(40)] + ["def running_median(values):\n    return sorted(values)\n"]
    src = write_shards(tmp_path / "in", clean + leaks)
    summary = sample_shards(src, tmp_path / "s.parquet",
                            SampleConfig(n=100, exclude=[str(write_eval(tmp_path / "eval.jsonl.gz"))]), progress=False)
    out = drawn(tmp_path / "s.parquet")
    assert sorted(out) == sorted(clean)  # every clean document, including one sharing only a name
    assert summary.excluded == 3


def test_exclusion_checks_the_whole_text_not_the_excerpt(tmp_path):
    leak = "".join(f"note {k}\n" for k in range(30)) + SOLUTION
    src = write_shards(tmp_path / "in", [leak, doc(1)])
    sample_shards(src, tmp_path / "s.parquet", SampleConfig(n=5, max_chars=100, exclude=[str(write_eval(tmp_path / "e.jsonl.gz"))]),
                  progress=False)
    assert drawn(tmp_path / "s.parquet") == [doc(1)]


def test_exclusion_from_parquet_and_json(tmp_path):
    pq.write_table(pa.table({"question": [PROMPT], "n": [1]}), tmp_path / "eval.parquet")
    (tmp_path / "eval.json").write_text(json.dumps([{"answer": SOLUTION}]))
    ex = load_exclusions([tmp_path / "eval.parquet", tmp_path / "eval.json"])
    assert len(ex) == 2 and ex.matches("x = 1\n" + PROMPT) and ex.matches(SOLUTION) and not ex.matches(doc(3))


@pytest.mark.skipif(not (EVAL / "HumanEval.jsonl.gz").exists(), reason="../shared/data/eval is not available")
def test_real_humaneval_and_mbpp_are_excluded(tmp_path):
    problems = [json.loads(line) for line in gzip.open(EVAL / "HumanEval.jsonl.gz", "rt")][:20]
    mbpp = [json.loads(line) for line in open(EVAL / "mbpp.jsonl")][:20]
    leaks = [p["prompt"] + p["canonical_solution"] for p in problems] + [m["code"].replace("\r\n", "\n") for m in mbpp]
    clean = [doc(i) for i in range(30)]
    src = write_shards(tmp_path / "in", clean + leaks)
    summary = sample_shards(src, tmp_path / "s.parquet", SampleConfig(
        n=1000, exclude=[str(EVAL / "HumanEval.jsonl.gz"), str(EVAL / "mbpp.jsonl")]), progress=False)
    assert sorted(drawn(tmp_path / "s.parquet")) == sorted(clean)
    assert summary.excluded == len(set(leaks))


def test_bad_exclusion_files(tmp_path):
    with pytest.raises(InputError, match="exclusion files must be"):
        load_exclusions([tmp_path / "eval.csv"])
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\nnot json\n')
    with pytest.raises(InputError, match="line 2 is not JSON"):
        load_exclusions([tmp_path / "bad.jsonl"])
    with pytest.raises(InputError, match="no such file"):
        load_exclusions([tmp_path / "absent.jsonl"])


# ---------------------------------------------------------------------------------------------
# bad input and outputs


def test_bad_inputs_and_outputs(tmp_path):
    src = write_shards(tmp_path / "in", [doc(i) for i in range(5)])
    with pytest.raises(OutputError, match="lies inside the input folder"):
        sample_shards(src, src / "seed.parquet", SampleConfig(n=2), progress=False)
    with pytest.raises(OutputError, match="ending in .parquet"):
        sample_shards(src, tmp_path / "seed.csv", SampleConfig(n=2), progress=False)
    with pytest.raises(InputError, match="no column 'body'"):
        sample_shards(src, tmp_path / "s.parquet", SampleConfig(n=2, text_column="body"), progress=False)
    with pytest.raises(InputError, match="no column 'source' to stratify by"):
        sample_shards(src, tmp_path / "s.parquet", SampleConfig(n=2, stratify_by="source"), progress=False)
    blank = write_shards(tmp_path / "blank", ["", "  "])
    with pytest.raises(InputError, match="no documents to sample"):
        sample_shards(blank, tmp_path / "s.parquet", SampleConfig(n=2), progress=False)
    assert not (tmp_path / "s.parquet").exists()


def test_a_killed_runs_temporary_is_removed_but_a_live_ones_kept(tmp_path):
    src = write_shards(tmp_path / "in", [doc(i) for i in range(5)])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".s.parquet.tmp-{dead.stdout.strip()}"
    live = tmp_path / f".s.parquet.tmp-{os.getppid()}"
    stale.write_bytes(b"half a file")
    live.write_bytes(b"another run's file")
    sample_shards(src, tmp_path / "s.parquet", SampleConfig(n=5), progress=False)
    assert not stale.exists() and live.exists() and len(drawn(tmp_path / "s.parquet")) == 5


def test_cli(tmp_path):
    src = write_shards(tmp_path / "in", [doc(i) for i in range(30)], source=["a"] * 20 + ["b"] * 10)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "phifilter", "sample", str(src), "-n", "6", "-o", str(tmp_path / "s.parquet"),
                        "--stratify-by", "source", "--exclude", str(write_eval(tmp_path / "e.jsonl.gz")), "--seed", "3"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "sampled 6 of 30 documents from 1 shard(s)" in r.stdout
    assert Counter(drawn(tmp_path / "s.parquet", "source")) == {"a": 4, "b": 2}
