"""Formats and inputs as a hostile user gives them (issue 20, item 5).

JSON Lines lines of any length up to the documented cap are read (a 10 MB document is scored,
a 70 MB one is read with bounded memory), symbolic links to sub-folders are followed (a loop is
one Error line), a column whose type drifts between rows or shards is one Error line in every
command before anything is published, and a module that cannot load under a memory limit is
one Error line, not a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO, cli_env, run_cli, write_shard
from killresume import temporaries


def _one_error(proc, *needles):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# long lines


def test_jsonl_with_a_ten_megabyte_line_is_scored(tmp_path):
    big = "def f(x):\n    return x\n" * (10_000_000 // 24)
    src = _jsonl(tmp_path / "in" / "a.jsonl", [{"id": "small", "text": "x = 1"}, {"id": "big", "text": big},
                                              {"id": "after", "text": "print(2)"}])
    out = tmp_path / "out"
    run_cli("score", src, "-o", out, "--device", "cpu", "--max-length", "32", "-q")
    rows = [json.loads(line) for line in (out / "a.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["small", "big", "after"]
    assert rows[1]["text"] == big and all(0.0 <= r["edu_score"] <= 1.0 for r in rows)


def test_jsonl_with_a_seventy_megabyte_line_is_read_with_bounded_memory(tmp_path):
    """Read through the reader in a fresh process: every row comes back, and the peak memory
    stays a small multiple of the line (the line is joined once, not re-copied per block)."""
    line_mb = 70
    src = tmp_path / "big.jsonl.gz"
    import gzip

    with gzip.open(src, "wt", compresslevel=1) as f:
        f.write(json.dumps({"id": "a", "text": "short"}) + "\n")
        f.write(json.dumps({"id": "b", "text": "y" * (line_mb << 20)}) + "\n")
        f.write(json.dumps({"id": "c", "text": "short"}) + "\n")
    probe = (
        "import json, resource, sys\n"
        "from phifilter.corpus import open_shard\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "f = open_shard(sys.argv[1])\n"
        "lengths = [len(t) for b in f.iter_batches(2, columns=['text']) for t in b.column(0).to_pylist()]\n"
        "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) >> 10\n"
        "print(json.dumps([f.metadata.num_rows, lengths, grown]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe, str(src)], capture_output=True, text=True, env=cli_env(),
                          cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows, lengths, grown_mib = json.loads(proc.stdout)
    assert rows == 3 and lengths == [5, line_mb << 20, 5]
    assert int(grown_mib) < 8 * line_mb, f"reading a {line_mb} MiB line grew memory by {grown_mib} MiB"


def test_a_line_over_the_cap_is_one_error_naming_the_file(tmp_path, monkeypatch):
    from phifilter import formats
    from phifilter.corpus import open_shard
    from phifilter.errors import InputError

    src = _jsonl(tmp_path / "a.jsonl", [{"text": "x"}, {"text": "z" * (3 << 20)}])
    monkeypatch.setattr(formats, "BLOCK_BYTES", 1 << 16)  # the line spans many reads
    monkeypatch.setattr(formats, "MAX_LINE_BYTES", 2 << 20)
    with pytest.raises(InputError, match=r"a\.jsonl: a line is longer than 2 MiB"):
        open_shard(src)
    monkeypatch.setattr(formats, "MAX_LINE_BYTES", 4 << 20)  # under the cap: read, however small the blocks
    f = open_shard(tmp_path / "a.jsonl")
    assert [len(t) for b in f.iter_batches(10) for t in b.column("text").to_pylist()] == [1, 3 << 20]


def test_the_line_cap_is_at_least_64_mib_and_documented():
    from phifilter.formats import MAX_LINE_BYTES

    assert MAX_LINE_BYTES >= 64 << 20
    doc = (REPO / "docs" / "reliability.md").read_text()
    assert f"{MAX_LINE_BYTES >> 20} MiB" in doc


# ---------------------------------------------------------------------------------------------
# symbolic links


def test_symlinked_sub_folders_are_followed(tmp_path):
    from phifilter.corpus import find_shards

    real = tmp_path / "elsewhere"
    write_shard(real / "deep" / "b.parquet", ["x = 1", "y = 2"])
    src = tmp_path / "in"
    write_shard(src / "a.parquet", ["z = 3"])
    (src / "linked").symlink_to(real, target_is_directory=True)
    assert [str(s.name) for s in find_shards(src)] == ["a.parquet", "linked/deep/b.parquet"]
    out = tmp_path / "out"
    run_cli("sample", src, "-o", out / "s.parquet", "-n", "10", "-q")
    assert pq.read_table(out / "s.parquet").num_rows == 3


def test_a_symlink_loop_is_one_error_line(tmp_path):
    src = tmp_path / "in"
    write_shard(src / "sub" / "a.parquet", ["x = 1"])
    (src / "sub" / "back").symlink_to(src, target_is_directory=True)
    proc = run_cli("sample", src, "-o", tmp_path / "s.parquet", "-n", "1", check=False)
    _one_error(proc, "symbolic link loop", str(src / "sub" / "back"))
    assert not (tmp_path / "s.parquet").exists()


# ---------------------------------------------------------------------------------------------
# type drift, in every command


def _drift_inputs(tmp_path, kind: str):
    src = tmp_path / "in"
    rows = [{"id": f"r{i}", "text": f"def f{i}():\n    return {i}\n", "edu_score": 0.1 * i, "meta": "m"}
            for i in range(6)]
    if kind == "text_number_in_some_rows":
        bad = [dict(r) for r in rows]
        bad[4]["text"] = 12345
        _jsonl(src / "a.jsonl", bad)
    elif kind == "column_type_changes_between_shards":
        _jsonl(src / "a.jsonl", rows)
        _jsonl(src / "b.jsonl", [{**r, "id": r["id"] + "b", "meta": 7} for r in rows])
    elif kind == "text_is_numbers_in_the_second_shard":
        _jsonl(src / "a.jsonl", rows)
        _jsonl(src / "b.jsonl", [{**r, "id": r["id"] + "b", "text": 5} for r in rows])
    return src


COMMANDS = {
    "score": lambda src, out, _: ["score", src, "-o", out / "o", "--device", "cpu", "-q"],
    "filter": lambda src, out, _: ["filter", src, "-o", out / "o", "--threshold", "0.2", "-q"],
    "sample": lambda src, out, _: ["sample", src, "-o", out / "o" / "s.parquet", "-n", "3", "-q"],
    "report": lambda src, out, _: ["report", src, "-o", out / "o" / "r.html", "--threshold", "0.3", "-q"],
    "embed": lambda src, out, _: ["embed", src, "-o", out / "o", "--device", "cpu", "-q"],
    "label": lambda src, out, url: ["label", src, "-o", out / "o" / "labels.parquet", "--base-url", url,
                                    "--model", "m", "-q"],
}


@pytest.mark.parametrize("kind", ["text_number_in_some_rows", "column_type_changes_between_shards",
                                  "text_is_numbers_in_the_second_shard"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_type_drift_is_one_error_line_before_anything_is_published(tmp_path, chat_server, command, kind):
    src = _drift_inputs(tmp_path, kind)
    if command == "label":
        src = sorted(src.glob("*.jsonl"))[-1]  # label reads one file: the drifting one
        if kind == "column_type_changes_between_shards":  # one file holding both shards' rows
            rows = [json.loads(x) for p in sorted((tmp_path / "in").glob("*.jsonl")) for x in p.read_text().splitlines()]
            src = _jsonl(tmp_path / "one" / "all.jsonl", rows)
    out = tmp_path / "out"
    env = {**cli_env(), "OPENAI_API_KEY": "sk-test"}
    proc = subprocess.run([sys.executable, "-m", "phifilter", *map(str, COMMANDS[command](src, out, chat_server.url))],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    _one_error(proc)
    published = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not published, published
    assert sum(chat_server.per_doc().values()) == 0  # label asked nothing
    assert not temporaries([out])


# ---------------------------------------------------------------------------------------------
# a memory limit


@pytest.mark.parametrize("limit_kib", [600_000, 1_000_000])
def test_an_import_failure_under_a_memory_limit_is_one_error_line(tmp_path, limit_kib):
    """Under `ulimit -v` the command line starts but scipy or torch cannot map their libraries."""
    src = write_shard(tmp_path / "in" / "a.parquet", ["x = 1"])
    proc = subprocess.run(["bash", "-c", f'ulimit -v {limit_kib}; exec "$0" -m phifilter score "$1" -o "$2" -q',
                           sys.executable, str(src), str(tmp_path / "out")],
                          capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=300)
    _one_error(proc, "ulimit -v")
