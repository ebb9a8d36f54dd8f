"""Issue 24 item 4: every path a command writes is claimed before any work.

An existing file at an output path (``-o``, ``--stats-json``, ``report -o``, label's answer
cache, ablate's files) that is an input, or that phifilter did not write, is refused with one
``Error:`` line, exit 1, and stays byte for byte as it was. Each case is tried the way an
attacker (or a tired user) would: the path of an input shard, of the label cache, of an
unrelated file, of a shard-named file in the output folder.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import GOOD_CODE, REPO, run_cli, write_shard

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_error(proc) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


def _scored(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_shard(folder / "a.parquet", [f"{GOOD_CODE}\n# {i}" for i in range(12)],
                       edu_score=pa.array(rng.random(12).astype(np.float32)), id=pa.array([str(i) for i in range(12)]))


def _commands(tmp_path: Path, stats: Path) -> dict:
    src = _scored(tmp_path / "in")
    raw = write_shard(tmp_path / "raw" / "r.parquet", [GOOD_CODE, "x = 1"])
    return {
        "score": ["score", raw, "-o", tmp_path / "scored", "--stats-json", stats, "-q"],
        "filter": ["filter", src, "-o", tmp_path / "kept", "--threshold", "0.5", "--stats-json", stats, "-q"],
        "sample": ["sample", src, "-o", tmp_path / "sample.parquet", "-n", "3", "--stats-json", stats, "-q"],
        "report": ["report", src, "-o", tmp_path / "report.html", "--stats-json", stats, "-q"],
    }


@pytest.mark.parametrize("command", ["score", "filter", "sample", "report"])
def test_stats_json_pointed_at_an_input_shard_is_refused_and_the_shard_kept(tmp_path, command):
    """Before: the input shard was replaced with JSON and the command exited 0."""
    victim = {"score": tmp_path / "raw" / "r.parquet"}.get(command, tmp_path / "in" / "a.parquet")
    argv = _commands(tmp_path, victim)[command]
    before = digest(victim)
    err = one_error(run_cli(*argv, check=False))
    assert str(victim) in err and "--stats-json" in err
    assert digest(victim) == before


@pytest.mark.parametrize("command", ["score", "filter", "sample", "report"])
def test_stats_json_never_replaces_a_file_phifilter_did_not_write(tmp_path, command):
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}\n')
    argv = _commands(tmp_path, notes)[command]
    before = digest(notes)
    err = one_error(run_cli(*argv, check=False))
    assert "did not write" in err and "--stats-json" in err
    assert digest(notes) == before
    # the command's own statistics from an earlier run are replaced: reruns keep working
    ours = tmp_path / "stats.json"
    run_cli(*_commands(tmp_path, ours)[command][:-3], "--stats-json", ours, "-q")
    first = json.loads(ours.read_text())
    assert first["phifilter_stats"] == 1 and first["command"] == command
    run_cli(*_commands(tmp_path, ours)[command][:-3], "--stats-json", ours, "-q")
    assert json.loads(ours.read_text())["command"] == command


def test_stats_json_with_a_shard_name_inside_the_output_folder_is_refused(tmp_path):
    raw = write_shard(tmp_path / "raw" / "r.parquet", [GOOD_CODE])
    err = one_error(run_cli("score", raw, "-o", tmp_path / "out", "--stats-json", tmp_path / "out" / "x.parquet",
                            check=False))
    assert "shard's name" in err
    assert not (tmp_path / "out").exists()


def test_stats_json_the_same_as_the_sample_output_is_refused(tmp_path):
    src = _scored(tmp_path / "in")
    err = one_error(run_cli("sample", src, "-o", tmp_path / "s.parquet", "-n", "2",
                            "--stats-json", tmp_path / "s.parquet", check=False))
    assert "--stats-json" in err and not (tmp_path / "s.parquet").exists()


def test_report_never_replaces_an_unrelated_file_but_replaces_its_own(tmp_path):
    """Before: `report -o notes.html` replaced an unrelated page."""
    src = _scored(tmp_path / "in")
    page = tmp_path / "notes.html"
    page.write_text("<!DOCTYPE html>\n<html><body>my notes</body></html>\n")
    before = digest(page)
    err = one_error(run_cli("report", src, "-o", page, "-q", check=False))
    assert "did not write" in err and "-o" in err
    assert digest(page) == before
    mine = tmp_path / "report.html"
    run_cli("report", src, "-o", mine, "-q")
    assert "<!-- written by phifilter report -->" in mine.read_text()[:200]
    run_cli("report", src, "-o", mine, "-q")  # a rerun replaces the page it wrote


def test_sample_never_replaces_a_foreign_parquet_file(tmp_path):
    src = _scored(tmp_path / "in")
    foreign = write_shard(tmp_path / "mine.parquet", ["my", "labels"], llm_score=pa.array([1, 2]))
    before = digest(foreign)
    err = one_error(run_cli("sample", src, "-o", foreign, "-n", "2", "-q", check=False))
    assert "did not write" in err
    assert digest(foreign) == before
    out = tmp_path / "sample.parquet"
    run_cli("sample", src, "-o", out, "-n", "2", "-q")
    run_cli("sample", src, "-o", out, "-n", "3", "-q")  # its own sample: replaced
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 3


def test_label_stats_json_at_the_answer_cache_is_refused_and_the_answers_kept(tmp_path, chat_server):
    """Before: --stats-json at label's cache replaced the paid answers with JSON, exit 0."""
    import subprocess
    import sys

    from conftest import cli_env

    src = write_shard(tmp_path / "in.parquet", [GOOD_CODE, "x = 1"])
    out = tmp_path / "labels.parquet"
    cache = tmp_path / "labels.cache.sqlite"

    def label(*extra):
        return subprocess.run([sys.executable, "-m", "phifilter", "label", str(src), "-o", str(out),
                               "--base-url", chat_server.url, "--model", "m", "--retry-delay", "0.01", "-q",
                               *map(str, extra)],
                              env={**cli_env(), "OPENAI_API_KEY": "sk-test"}, capture_output=True, text=True, cwd=REPO)

    first = label()
    assert first.returncode == 0, first.stderr
    before = digest(cache)
    rows = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert rows == 2
    err = one_error(label("--stats-json", cache))
    assert str(cache) in err and "--stats-json" in err
    assert digest(cache) == before
    err = one_error(label("--stats-json", src))  # nor the input
    assert "input" in err


def test_embed_and_ablate_claim_their_stats_json_before_any_work(tmp_path):
    from phifilter.embcache import embed_shards
    from phifilter.errors import OutputError
    from phifilter.pretrain.ablate import run_ablation

    src = _scored(tmp_path / "in")
    before = digest(src)
    # no embedder and no training is needed to be refused: the claim comes first
    with pytest.raises(OutputError, match="--stats-json"):
        embed_shards([str(src)], tmp_path / "emb", None, stats_json=src)
    with pytest.raises(OutputError, match="--stats-json"):
        run_ablation([str(src)], tmp_path / "abl", stats_json=src)
    assert digest(src) == before
    assert not (tmp_path / "emb").exists() and not (tmp_path / "abl").exists()


def test_write_stats_itself_refuses_a_foreign_file_that_appeared_after_the_claim(tmp_path):
    from phifilter.errors import OutputError
    from phifilter.stats import write_stats

    target = tmp_path / "s.json"
    write_stats(target, {"command": "score", "seconds": 1.0})
    write_stats(target, {"command": "score", "seconds": 2.0})  # ours: replaced
    target.write_bytes(b"PAR1 someone else's file")
    with pytest.raises(OutputError, match="did not write"):
        write_stats(target, {"command": "score", "seconds": 3.0})
    assert target.read_bytes() == b"PAR1 someone else's file"


def test_label_never_replaces_a_parquet_file_it_did_not_write(tmp_path, chat_server):
    import subprocess
    import sys

    from conftest import cli_env

    src = write_shard(tmp_path / "in.parquet", [GOOD_CODE, "x = 1"])
    foreign = write_shard(tmp_path / "mine.parquet", ["my", "labels"], llm_score=pa.array([1, 2]))
    before = digest(foreign)

    def label(out):
        return subprocess.run([sys.executable, "-m", "phifilter", "label", str(src), "-o", str(out),
                               "--base-url", chat_server.url, "--model", "m", "--retry-delay", "0.01", "-q"],
                              env={**cli_env(), "OPENAI_API_KEY": "sk-test"}, capture_output=True, text=True, cwd=REPO)

    err = one_error(label(foreign))
    assert "did not write" in err and digest(foreign) == before
    assert not chat_server.requests  # refused before anything was asked (or paid for)
    out = tmp_path / "labels.parquet"
    assert label(out).returncode == 0
    assert label(out).returncode == 0  # its own labels: a rerun replaces them


def test_a_model_folder_with_a_lexical_part_is_ours_to_replace(tmp_path):
    """The default recipe writes lexical.bin beside the head: a rerun of train
    into the same folder must find them ours (they are listed in phifilter.json), while a file
    the metadata does not list, or any file beside a foreign phifilter.json, stays foreign."""
    import shutil

    from phifilter.modelfolder import default_model_path
    from phifilter.errors import OutputError
    from phifilter.outputs import claim_folder, is_model_file

    model = Path(shutil.copytree(default_model_path(), tmp_path / "model"))
    names = {p.name for p in model.iterdir()}
    assert "lexical.bin" in names  # the bundled recipe has a lexical part
    assert all(is_model_file(model / n) for n in names)
    claim_folder(model, is_model_file, "a model folder")  # a rerun may replace it
    (model / "notes.txt").write_text("mine")
    assert not is_model_file(model / "notes.txt")
    with pytest.raises(OutputError, match="notes.txt"):
        claim_folder(model, is_model_file, "a model folder")
    (model / "notes.txt").unlink()
    (model / "phifilter.json").write_text(json.dumps({"format": "someone-else"}))
    assert not is_model_file(model / "lexical.bin")


def test_sample_claims_its_output_and_stats_json_before_any_work(tmp_path):
    """sample claims with the shard job's claim_output, then reads: a foreign --stats-json is the
    error, not the missing --exclude file read after the claims, and no sample is written."""
    src = _scored(tmp_path / "in")
    notes, out = tmp_path / "notes.json", tmp_path / "sample.parquet"
    notes.write_text('{"my": "notes"}\n')
    before = digest(notes)
    err = one_error(run_cli("sample", src, "-o", out, "-n", "2", "--stats-json", notes,
                            "--exclude", tmp_path / "missing.jsonl", check=False))
    assert "did not write" in err and "--stats-json" in err and "missing.jsonl" not in err
    assert not out.exists() and digest(notes) == before
    run_cli("sample", src, "-o", out, "-n", "2", "--stats-json", tmp_path / "st.json", "-q")  # ours: finish() wrote it
    stats = json.loads((tmp_path / "st.json").read_text())
    assert stats["command"] == "sample" and stats["seconds"] > 0 and stats["phifilter_stats"] == 1
