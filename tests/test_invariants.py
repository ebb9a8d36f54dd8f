"""Property test (issue 12): every command, driven with generated valid and broken inputs, keeps
the four promises of docs/reliability.md:

1. it exits 0 with a correct output, or exits 1 (2 for a usage error) with exactly one `Error:`
   line and no traceback;
2. every file that existed before the run (inputs, someone else's files, model folders) is
   byte-identical afterwards;
3. no file it did not write is changed or removed (a foreign file planted in the output folder);
4. nothing half-written is left where it could be taken as complete: every visible output is
   readable whole, and no temporary is left behind.

Workspaces are tiny (a few rows) so the cheap commands get many examples; the commands that
load the embedding model or train a GPT get a few (marked slow).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO

from phifilter.cli import main

MODEL = REPO / "phifilter" / "models" / "default"
CHEAP = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
HEAVY = settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

TEXTS = st.sampled_from([b"def f(x):\n    return x\n", b"print('hi')", b"", b"  ", b"bad \xff\xfe utf8",
                         b"The sun is a star. " * 5, b"\x00nul"])
SCORES = st.one_of(st.floats(0, 1), st.sampled_from([float("nan"), None, 0.0, 1.0]))
LABELS = st.one_of(st.integers(0, 5), st.sampled_from([None, 7, -1, 2.5, float("nan")]))
IDS = st.sampled_from(["0", "1", "2", None])

rows = st.lists(st.tuples(TEXTS, SCORES, LABELS, IDS), min_size=0, max_size=6)
shard_kind = st.sampled_from(["valid", "valid", "valid", "garbage", "truncated", "no_text", "string_score"])
output_kind = st.sampled_from(["new", "new", "foreign", "input_folder", "inside_input", "is_a_file"])


def _table(data, kind: str) -> pa.Table:
    text = pa.array([t for t, _, _, _ in data], pa.binary()).view(pa.string())
    score = pa.array([s for _, s, _, _ in data], pa.float64())
    label = pa.array([lab for _, _, lab, _ in data], pa.float64())
    ids = pa.array([i for _, _, _, i in data], pa.string())
    cols = {"text": text, "edu_score": score, "llm_score": label, "id": ids}
    if kind == "no_text":
        cols["body"] = cols.pop("text")
    if kind == "string_score":
        cols["edu_score"] = pa.array([str(s) for _, s, _, _ in data], pa.string())
    return pa.table(cols)


def _write_input(path: Path, data, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "garbage":
        path.write_bytes(b"PAR1 this is not parquet PAR1")
        return
    pq.write_table(_table(data, kind), path)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: max(8, path.stat().st_size // 2)])


def make_workspace(root: Path, data, kind: str, twin: bool, out_kind: str, out_name: str) -> tuple[list[str], Path]:
    """x/a.parquet (and y/a.parquet when ``twin``); the output path for ``out_kind``."""
    _write_input(root / "x" / "a.parquet", data, kind)
    inputs = [str(root / "x")]
    if twin:
        _write_input(root / "y" / "a.parquet", list(reversed(data)), "valid")
        inputs.append(str(root / "y"))
    (root / "notes").mkdir()
    (root / "notes" / "keep.txt").write_text("someone else's file")
    out = {
        "new": root / "out" / out_name,
        "foreign": root / "notes" / out_name if "." in out_name else root / "notes",
        "input_folder": root / "x" if "." not in out_name else root / "x" / "a.parquet",
        "inside_input": root / "x" / "sub" / out_name,
        "is_a_file": root / "notes" / "keep.txt" / out_name,
    }[out_kind]
    return inputs, out


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run(args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], env={"HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": None},
                                catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("crash:\n" + "".join(traceback.format_exception(result.exception))
                             + "\n" + result.output)
    return result.exit_code, result.output


def check_invariants(root: Path, before: dict[str, str], code: int, output: str, allow_replace=()) -> None:
    assert "Traceback" not in output, output
    assert code in (0, 1, 2), (code, output)  # 2: click's usage error (a bad option value)
    if code in (1, 2):
        errors = [line for line in output.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, output
    after = snapshot(root)
    for name, digest in before.items():
        if any(name == a or name.startswith(a + "/") for a in allow_replace):
            continue
        assert after.get(name) == digest, f"{name} was changed or removed by a run that did not write it\n{output}"
    for p in root.rglob("*"):
        assert ".tmp-" not in p.name, f"temporary left behind: {p}"
        rel = p.relative_to(root)
        if (p.is_file() and p.suffix == ".parquet" and str(rel) not in before
                and not any(part.startswith(".") for part in rel.parts)):
            pq.read_table(p)  # a file this run made visible is whole


def _tree(case_dir: Path) -> Path:
    if case_dir.exists():
        shutil.rmtree(case_dir)
    case_dir.mkdir(parents=True)
    return case_dir


# ---------------------------------------------------------------------------------------------
# commands that need no model: many examples


@CHEAP
@given(data=rows, kind=shard_kind, twin=st.booleans(), out_kind=output_kind,
       mode=st.sampled_from([["--threshold", "0.5"], ["--top-fraction", "0.5"], ["--threshold", "0"]]))
def test_filter_keeps_every_promise(tmp_path_factory, data, kind, twin, out_kind, mode):
    root = _tree(tmp_path_factory.getbasetemp() / "inv-filter")
    inputs, out = make_workspace(root, data, kind, twin, out_kind, "")
    before = snapshot(root)
    code, output = run(["filter", *inputs, "-o", out, *mode])
    check_invariants(root, before, code, output)
    if code == 0:
        for p in out.rglob("*.parquet"):
            kept = pq.read_table(p).column("edu_score").to_pylist()
            assert all(v is not None and math.isfinite(v) for v in kept), kept
            if mode[0] == "--threshold":
                assert all(v >= float(mode[1]) for v in kept)
        code2, output2 = run(["filter", *inputs, "-o", out, *mode])  # a rerun resumes, changes nothing
        assert code2 == 0, output2
        assert "0 filtered" in output2


@CHEAP
@given(data=rows, kind=shard_kind, twin=st.booleans(), out_kind=output_kind,
       cmd=st.sampled_from(["sample", "report", "label"]))
def test_single_file_commands_keep_every_promise(tmp_path_factory, data, kind, twin, out_kind, cmd):
    root = _tree(tmp_path_factory.getbasetemp() / "inv-file")
    name = {"sample": "s.parquet", "report": "r.html", "label": "l.parquet"}[cmd]
    inputs, out = make_workspace(root, data, kind, twin, out_kind, name)
    args = {
        "sample": ["sample", *inputs, "-n", "3", "-o", out, "--max-chars", "10"],
        "report": ["report", *inputs, "-o", out, "--samples", "1"],
        "label": ["label", str(Path(inputs[0]) / "a.parquet"), "-o", out, "--model", "m", "--dry-run",
                  "--max-chars", "10"],
    }[cmd]
    before = snapshot(root)
    code, output = run(args)
    check_invariants(root, before, code, output)
    if code == 0 and cmd == "sample":
        assert pq.read_table(out).num_rows <= 3
    if code == 0 and cmd == "report":
        assert out.read_text().rstrip().endswith("</html>")


@CHEAP
@given(data=rows, kind=shard_kind, edit=st.sampled_from([None, ("threshold", "abc"), ("threshold", 2.0),
                                                          ("max_chunks", -3), ("head", 5), ("files", {})]))
def test_info_and_agreement_keep_every_promise(tmp_path_factory, data, kind, edit):
    root = _tree(tmp_path_factory.getbasetemp() / "inv-info")
    shutil.copytree(MODEL, root / "model")
    if edit:
        meta = json.loads((root / "model" / "phifilter.json").read_text())
        key, value = edit
        (meta["params"] if key == "max_chunks" else meta)[key] = value
        (root / "model" / "phifilter.json").write_text(json.dumps(meta))
    _write_input(root / "a.parquet", data, kind)
    _write_input(root / "b.parquet", list(reversed(data)), "valid")
    before = snapshot(root)
    for args in (["info", root / "model"], ["agreement", root / "a.parquet", root / "b.parquet"]):
        code, output = run(args)
        check_invariants(root, before, code, output)


# ---------------------------------------------------------------------------------------------
# commands that load the embedding model or train: a few examples each


@pytest.mark.slow
@pytest.mark.parametrize("cmd", ["score", "embed", "train", "evaluate", "suggest", "ablate"])
@HEAVY
@given(data=rows, kind=st.sampled_from(["valid"] * 4 + ["garbage", "no_text"]),
       out_kind=st.sampled_from(["new"] * 3 + ["foreign", "inside_input"]))
def test_model_commands_keep_every_promise(tmp_path_factory, data, kind, out_kind, cmd):
    root = _tree(tmp_path_factory.getbasetemp() / f"inv-{cmd}")
    name = "n.parquet" if cmd == "suggest" else ""
    inputs, out = make_workspace(root, data, kind, False, out_kind, name)
    labels = Path(inputs[0]) / "a.parquet"
    args = {
        "score": ["score", *inputs, "-o", out, "--max-length", "32", "--device", "cpu", "--score-column", "q"],
        "embed": ["embed", *inputs, "-o", out, "--max-length", "32", "--device", "cpu"],
        "train": ["train", labels, "-o", out, "--recipe", "paper", "--cv-folds", "0", "--max-length", "32", "--n-estimators", "5",
                  "--doc-mode", "truncate", "--device", "cpu"],
        "evaluate": ["evaluate", MODEL, labels, "-o", out, "--bootstrap", "0", "--device", "cpu"],
        "suggest": ["suggest", MODEL, *inputs, "-n", "2", "-o", out, "--device", "cpu"],
        "ablate": ["ablate", *inputs, "-o", out, "--preset", "micro", "--seeds", "1", "--arms", "unfiltered",
                   "--pass-samples", "0", "--threads", "1", "--tokens", "2K"],
    }[cmd]
    before = snapshot(root)
    code, output = run(["-q", *args])
    check_invariants(root, before, code, output)
    if code == 0 and cmd == "score":
        t = pq.read_table(out / "a.parquet")
        assert t.num_rows == len(data) and all(0 <= v <= 1 for v in t.column("q").to_pylist())
    if code == 0 and cmd == "train":
        from phifilter.classifier import read_model_meta

        read_model_meta(out)
    if code == 0 and cmd == "evaluate":
        json.loads((out / "metrics.json").read_text())
