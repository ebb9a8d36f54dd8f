"""``filter`` and ``embed`` with ``--task-index/--num-tasks`` (issue 24), as score has them.

On one output (a local folder, and a prefix on the moto S3 server) a full run, task 0/2 and
task 1/3 are started together as real processes, then a full run reruns. Every output shard
must equal a clean single run's (embed: byte for byte; filter: the same rows and run record),
each shard must have been written exactly once over the three runs (the rerun writes none),
nothing may be left behind (no temporary, checkpoint or lease), and every run must exit 0,
saying "left to another run: ..." for a shard another live run was writing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BOILERPLATE, GOOD_CODE, REPO, cli_env, write_shard
from phifilter.provenance import read_record
from s3server import _moto_endpoint, s3  # noqa: F401  (fixtures)
from test_shard_jobs import scored_corpus

RUNS = {"full": [], "task 0/2": ["--task-index", "0", "--num-tasks", "2"],
        "task 1/3": ["--task-index", "1", "--num-tasks", "3"]}
SHARDS = 6


def code_corpus(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    for k in range(SHARDS):
        texts = ["\n".join(rng.choice([GOOD_CODE, BOILERPLATE, "x = 1\n"], 2)) + f"\n# {k}-{i}" for i in range(16 + 4 * k)]
        write_shard(folder / f"s{k}.parquet", texts, id=pa.array([f"{k}-{i}" for i in range(len(texts))]))
    return folder


TINY = []  # the folder of a small BERT built here (embed's --embedder mean-pool:FOLDER), once made


def tiny_embedder(folder: Path) -> Path:
    """A 2-layer BERT, randomly initialised (seeded), with a tokenizer trained here: embeds as the
    default embedder does, loads in a fraction of its time."""
    import torch
    from transformers import BertConfig, BertModel

    from test_hf_embed import build_tokenizer

    torch.manual_seed(0)
    vocab = build_tokenizer(folder, "bert")
    BertModel(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    return folder


COMMANDS = {  # command -> (make the inputs, its options, the stats key counting shards written)
    "filter": (lambda folder: scored_corpus(folder, shards=SHARDS, rows=3000), lambda: ["--threshold", "0.6"],
               "filtered"),
    "embed": (code_corpus, lambda: ["--device", "cpu", "--embedder", f"mean-pool:{TINY[0]}", "--max-length", "32"],
              "written"),
}


def argv(command: str, src, out, stats: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "phifilter", command, str(src), "-o", str(out), *COMMANDS[command][1](), "-q",
            "--stats-json", str(stats), *extra]


def race_then_rerun(command: str, src, out, env: dict, stats_dir: Path) -> list[dict]:
    """The three runs at once, then a rerun; each run's statistics (the rerun's last)."""
    procs = {name: subprocess.Popen(argv(command, src, out, stats_dir / f"{k}.json", *extra), env=env, cwd=REPO,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, (name, extra) in enumerate(RUNS.items())}
    for name, p in procs.items():
        _, err = p.communicate(timeout=300)
        # exit 0; the only thing said with -q: a shard left to another live run writing it
        assert p.returncode == 0, (name, err)
        assert all(line.startswith("left to another run: ") for line in err.splitlines()), (name, err)
    rerun = subprocess.run(argv(command, src, out, stats_dir / "rerun.json"), env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and rerun.stderr == "", rerun.stderr
    return [json.loads((stats_dir / f"{k}.json").read_text()) for k in [*range(len(RUNS)), "rerun"]]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """clean(command): its inputs and a clean single run's output (made on first use)."""
    root = tmp_path_factory.mktemp("tasks")
    made = {}

    def get(command: str):
        if command not in made:
            if command == "embed" and not TINY:
                TINY[:] = [tiny_embedder(root / "tiny-bert")]
            make, options, _ = COMMANDS[command]
            src, ref = make(root / command / "in"), root / command / "ref"
            subprocess.run([sys.executable, "-m", "phifilter", command, str(src), "-o", str(ref), *options(), "-q"],
                           env=cli_env(), cwd=REPO, check=True, capture_output=True)
            made[command] = (src, ref)
        return made[command]

    return get


def check(command: str, ref: Path, stats: list[dict], names: list[str], read) -> None:
    expected = sorted(p.name for p in ref.glob("*.parquet"))
    assert names == expected, names  # no temporary, checkpoint or lease left, no shard missing
    key = COMMANDS[command][2]
    written = [s["shards"][key] for s in stats]
    print(f"{command}: " + "; ".join(f"{name}: wrote {s['shards'][key]}, left {s['shards']['leased']} to another run"
                                     for name, s in zip([*RUNS, "rerun"], stats)))
    assert sum(written[:-1]) == SHARDS and written[-1] == 0, written  # each shard written once, by one run
    for name in expected:
        data = read(name)
        if command == "embed":
            assert data == (ref / name).read_bytes(), name
        else:  # the same rows, run record and stored counts as a clean run
            got = pq.read_table(pa.BufferReader(data))
            assert got.equals(pq.read_table(ref / name)), name
            assert got.schema.metadata == pq.read_schema(ref / name).metadata, name


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_full_run_and_two_partitions_on_one_local_output(tmp_path, clean, command):
    src, ref = clean(command)
    out = tmp_path / "out"
    stats = race_then_rerun(command, src, out, cli_env(), tmp_path)
    check(command, ref, stats, sorted(str(p.relative_to(out)) for p in out.rglob("*")),
          lambda name: (out / name).read_bytes())
    assert read_record(out / "s0.parquet") == read_record(ref / "s0.parquet")


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_full_run_and_two_partitions_on_one_s3_output(tmp_path, clean, s3, command):
    src, ref = clean(command)
    stats = race_then_rerun(command, src, s3.url("out"), {**cli_env(), **s3.env}, tmp_path)
    keys = sorted(k.split(f"{s3.bucket}/out/", 1)[1] for k in s3.fs.find(f"{s3.bucket}/out"))
    check(command, ref, stats, keys, lambda name: s3.fs.cat_file(f"{s3.bucket}/out/{name}"))


def test_tasks_take_disjoint_shares_and_an_ordered_rule_refuses_a_partition(tmp_path, clean):
    from phifilter import filter_shards
    from phifilter.errors import OptionError

    src, ref = clean("filter")
    shares = [filter_shards(src, tmp_path / "out", threshold=0.6, task_index=i, num_tasks=3) for i in range(3)]
    assert [s.shards for s in shares] == [2, 2, 2] and all(s.shards_skipped == 0 for s in shares)
    for p in sorted(ref.glob("*.parquet")):
        assert pq.read_table(tmp_path / "out" / p.name).equals(pq.read_table(p)), p.name
    with pytest.raises(OptionError, match="--top-fraction keeps the boundary documents in corpus order"):
        filter_shards(src, tmp_path / "top", top_fraction=0.3, task_index=0, num_tasks=2)
    with pytest.raises(OptionError, match="--task-index 2: must be in 0..1"):
        filter_shards(src, tmp_path / "bad", threshold=0.6, task_index=2, num_tasks=2)
    assert not (tmp_path / "top").exists() and not (tmp_path / "bad").exists()
    refused = subprocess.run([sys.executable, "-m", "phifilter", "embed", str(src), "-o", str(tmp_path / "emb"),
                              "--task-index", "3", "--num-tasks", "2"], env=cli_env(), cwd=REPO,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "--task-index 3: must be in 0..1" in refused.stderr, refused.stderr
