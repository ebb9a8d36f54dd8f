import subprocess
import sys

import pyarrow.parquet as pq

from conftest import GOOD_CODE, REPO, cli_env, run_cli, write_shard


def test_help_is_light():
    code = ("import sys, phifilter.cli; heavy = {'torch', 'sklearn', 'sentence_transformers', 'polars', "
            "'transformers', 'numpy', 'pyarrow'} & set(m.split('.')[0] for m in sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, env=cli_env(), cwd=REPO)
    out = run_cli("--help").stdout
    for cmd in ("score", "train", "filter", "info"):
        assert cmd in out
    assert run_cli("--version").stdout.startswith("phifilter, version")


def test_every_command_has_an_example():
    import click

    from phifilter.cli import main

    for name, cmd in main.commands.items():
        assert "Example:" in (cmd.help or ""), name


def test_score_cli_end_to_end_with_summary(tmp_path):
    write_shard(tmp_path / "in" / "s.parquet", [GOOD_CODE, "", "import os"])
    proc = run_cli("score", tmp_path / "in", "-o", tmp_path / "out", "--device", "cpu")
    assert "shards: 1 scored" in proc.stdout and "docs/s" in proc.stdout and "above threshold" in proc.stdout
    assert pq.read_table(tmp_path / "out" / "s.parquet").num_rows == 3
    proc = run_cli("score", tmp_path / "in", "-o", tmp_path / "out", "-q")
    assert proc.stdout == "" and "scoring" not in proc.stderr


def test_library_errors_are_one_clean_line(tmp_path):
    write_shard(tmp_path / "in" / "s.parquet", ["x"])
    cases = [
        ("score", tmp_path / "missing", "-o", tmp_path / "o"),
        ("score", tmp_path / "in", "-o", tmp_path / "in"),
        ("score", tmp_path / "in", "-o", tmp_path / "o", "--text-column", "body"),
        ("score", tmp_path / "in", "-o", tmp_path / "o", "--model", tmp_path),
        ("info", tmp_path),
    ]
    for args in cases:
        proc = run_cli(*args, check=False)
        err = proc.stderr.strip()
        assert proc.returncode == 1, (args, proc.stderr)
        assert err.startswith("Error: ") and "\n" not in err and "Traceback" not in err, (args, err)
    # a bad option value is a usage error, as click shows its own: the usage line, then one Error line
    proc = run_cli("score", tmp_path / "in", "-o", tmp_path / "o", "--device", "cuda:7", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines[0].startswith("Usage: ") and "Traceback" not in proc.stderr, proc.stderr
    assert [l for l in lines if l.startswith("Error: ")] == [lines[-1]] and lines[-1].startswith("Error: --device cuda:7: ")


def test_info_shows_bundled_model():
    out = run_cli("info").stdout
    assert "all-MiniLM-L6-v2" in out and "cross-validated" in out
