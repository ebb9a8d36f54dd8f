"""hf:// (Hugging Face Hub datasets, read through huggingface_hub's HfFileSystem) against a local
Hub stand-in (tests/hubserver.py on 127.0.0.1): the CLI in a subprocess with HF_ENDPOINT pointing
there (huggingface_hub reads it once, at import), HF_HUB_OFFLINE unset and a fresh HF_HOME.

Scoring Parquet and .jsonl.gz shards from the Hub gives exactly the outputs of the same local
files; sample reads there too; a missing repository or file, a private repository without a
token and a refused token are one Error line; a token from --storage-options or HF_TOKEN works;
outputs to hf:// are refused before any work (phifilter only reads the Hub)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BOILERPLATE, GOOD_CODE, REPO, write_shard
from hubserver import HubServer, hub_env

pytest.importorskip("huggingface_hub", reason="hf:// tests need huggingface_hub (pip install 'phifilter[remote]')")

PIECES = [GOOD_CODE, BOILERPLATE, "import os\n", "for i in range(3):\n    print(i)\n", "", None]
URL = "hf://datasets/test/corpus/data/"
MODEL_FILES = sorted(p.name for p in (REPO / "phifilter" / "models" / "default").iterdir() if p.is_file())


def _repo(root: Path) -> Path:
    """The dataset repository test/corpus: data/ holds two Parquet and two .jsonl.gz shards
    (one in a subfolder each), plus a README.md that is not a shard."""
    repo = root / "test" / "corpus"
    for k, sub in enumerate(("", "more/")):
        texts = [p if p is None else p + f"\n# {k}-{i}" for i, p in enumerate(PIECES)]
        write_shard(repo / "data" / f"{sub}part-{k}.parquet", texts, row_group_size=2,
                    id=pa.array([f"p{k}-{i}" for i in range(len(texts))]))
        rows = [{"id": f"j{k}-{i}", "text": t, "meta": {"lang": "py", "tags": ["a", "ü"]}} for i, t in enumerate(texts)]
        path = repo / "data" / f"{sub}web-{k}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (repo / "README.md").write_text("# test corpus\n")
    return repo


def _cli(hub, tmp_path, *args, **env) -> subprocess.CompletedProcess:
    env = hub_env(hub, tmp_path / "hf-home", PYTHONPATH=str(REPO), PHIFILTER_CACHE_DIR=str(tmp_path / "cache"), **env)
    return subprocess.run([sys.executable, "-m", "phifilter", *map(str, args)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def _one_error_line(proc) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def _files(folder: Path) -> list[str]:
    """Visible files (a JSON Lines output's record is a hidden file beside it)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_hf_score_parquet_and_jsonl_gz_equal_the_local_files(tmp_path, bundled_model):
    """...with the model folder read from the Hub as well (a copy of the bundled one)."""
    from phifilter.scoring import score_shards

    repo = _repo(tmp_path / "hub")
    shutil.copytree(REPO / "phifilter" / "models" / "default", tmp_path / "hub" / "test" / "model")
    score_shards(repo / "data", tmp_path / "ref", model=bundled_model)
    with HubServer(tmp_path / "hub") as hub:
        proc = _cli(hub, tmp_path, "score", URL, "-o", tmp_path / "out", "-q", "--model", "hf://datasets/test/model")
        assert proc.returncode == 0, proc.stderr
        fetched = [(path, rng) for _, path, _, rng in hub.requests if "/resolve/" in path]
    names = ["more/part-1.parquet", "more/web-1.jsonl.gz", "part-0.parquet", "web-0.jsonl.gz"]
    assert _files(tmp_path / "out") == _files(tmp_path / "ref") == names
    # the model's files, then every shard (README.md is not one); Parquet by ranges (footer, row groups)
    corpus = "/datasets/test/corpus/resolve/main/data/"
    assert {p[len(corpus):] for p, _ in fetched if p.startswith(corpus)} == set(names)
    assert len([p for p, _ in fetched if not p.startswith(corpus)]) == len(MODEL_FILES)
    assert {p.rsplit("/", 1)[-1] for p, _ in fetched if not p.startswith(corpus)} == set(MODEL_FILES)
    assert any(p.endswith("/part-0.parquet") and rng for p, rng in fetched)
    for name in names:
        if name.endswith(".parquet"):
            got, want = pq.read_table(tmp_path / "out" / name), pq.read_table(tmp_path / "ref" / name)
            assert got.equals(want), name
            assert got.column("edu_score").to_pylist() == want.column("edu_score").to_pylist()
        else:
            got = gzip.decompress((tmp_path / "out" / name).read_bytes()).decode()
            assert got == gzip.decompress((tmp_path / "ref" / name).read_bytes()).decode(), name
            rows = [json.loads(line) for line in got.splitlines()]
            assert [r["meta"] for r in rows] == [{"lang": "py", "tags": ["a", "ü"]}] * len(PIECES)
            assert all(0.0 <= r["edu_score"] <= 1.0 for r in rows)
    # a glob on the Hub names outputs relative to its fixed part, as locally
    with HubServer(tmp_path / "hub") as hub:
        proc = _cli(hub, tmp_path, "score", "hf://datasets/test/corpus/data/**/*.jsonl.gz", "-o", tmp_path / "globbed", "-q")
        assert proc.returncode == 0, proc.stderr
    assert _files(tmp_path / "globbed") == ["more/web-1.jsonl.gz", "web-0.jsonl.gz"]
    assert (tmp_path / "globbed" / "web-0.jsonl.gz").read_bytes() == (tmp_path / "ref" / "web-0.jsonl.gz").read_bytes()


def test_hf_sample_equals_the_local_sample(tmp_path):
    repo = _repo(tmp_path / "hub")
    with HubServer(tmp_path / "hub") as hub:
        local = _cli(hub, tmp_path, "sample", repo / "data", "-n", "4", "--seed", "3", "-o", tmp_path / "local.parquet", "-q")
        assert local.returncode == 0, local.stderr
        assert hub.requests == []
        remote = _cli(hub, tmp_path, "sample", URL, "-n", "4", "--seed", "3", "-o", tmp_path / "hub.parquet", "-q",
                      "--stats-json", tmp_path / "stats.json")
        assert remote.returncode == 0, remote.stderr
        assert hub.requests
    got, want = pq.read_table(tmp_path / "hub.parquet"), pq.read_table(tmp_path / "local.parquet")
    assert got.num_rows == 4 and got.equals(want)
    assert json.loads((tmp_path / "stats.json").read_text())["shards"]["read"] == 4


def test_hf_missing_repository_or_file_is_one_error_line(tmp_path):
    _repo(tmp_path / "hub")
    with HubServer(tmp_path / "hub") as hub:
        for url in ("hf://datasets/test/nosuch/data/", "hf://datasets/test/corpus/data/nosuch.parquet",
                    "hf://datasets/test/corpus@v9/data/"):
            line = _one_error_line(_cli(hub, tmp_path, "score", url, "-o", tmp_path / "out"))
            assert line.startswith(f"Error: {url}: ") and "HF_TOKEN" in line, line
        line = _one_error_line(_cli(hub, tmp_path, "score", "hf://datasets/test/corpus/data/*.zst", "-o", tmp_path / "out"))
        assert line.startswith("Error: hf://datasets/test/corpus/data/*.zst: the pattern matches no files"), line
    assert not (tmp_path / "out").exists()


def test_hf_private_repository_needs_a_token(tmp_path):
    repo = _repo(tmp_path / "hub")
    with HubServer(tmp_path / "hub", token="hf_secret") as hub:
        line = _one_error_line(_cli(hub, tmp_path, "sample", URL, "-n", "3", "-o", tmp_path / "a.parquet"))
        assert line.startswith(f"Error: {URL}: ") and "private" in line and "HF_TOKEN" in line, line
        line = _one_error_line(_cli(hub, tmp_path, "sample", URL, "-n", "3", "-o", tmp_path / "a.parquet",
                                    HF_TOKEN="hf_wrong"))
        assert line.startswith(f"Error: {URL}: cannot list (") and "401" in line and "HF_TOKEN" in line, line
        assert not (tmp_path / "a.parquet").exists()
        by_option = _cli(hub, tmp_path, "sample", URL, "-n", "3", "-o", tmp_path / "a.parquet", "-q",
                         "--storage-options", json.dumps({"token": "hf_secret"}))
        assert by_option.returncode == 0, by_option.stderr
        by_env = _cli(hub, tmp_path, "sample", URL, "-n", "3", "-o", tmp_path / "b.parquet", "-q", HF_TOKEN="hf_secret")
        assert by_env.returncode == 0, by_env.stderr
        # the endpoint as a storage option too (HF_ENDPOINT pointing nowhere)
        by_endpoint = _cli(hub, tmp_path, "sample", URL, "-n", "3", "-o", tmp_path / "c.parquet", "-q",
                           "--storage-options", json.dumps({"token": "hf_secret", "endpoint": hub.url}),
                           HF_ENDPOINT="http://127.0.0.1:9")
        assert by_endpoint.returncode == 0, by_endpoint.stderr
        sent = [had_token for _, _, had_token, _ in hub.requests]
    assert sent[0] is False and all(sent[2:])
    want = pq.read_table(tmp_path / "a.parquet")
    assert want.num_rows == 3
    assert pq.read_table(tmp_path / "b.parquet").equals(want) and pq.read_table(tmp_path / "c.parquet").equals(want)
    texts = {t for f in (repo / "data").rglob("*.parquet") for t in pq.read_table(f).column("text").to_pylist()}
    texts |= {json.loads(line)["text"] for f in (repo / "data").rglob("*.jsonl.gz")
              for line in gzip.decompress(f.read_bytes()).decode().splitlines()}
    assert set(want.column("text").to_pylist()) <= texts


def test_outputs_to_hf_are_refused_before_any_work(tmp_path):
    from phifilter.errors import OutputError
    from phifilter.location import RemotePath
    from phifilter.scoring import score_shards

    repo = _repo(tmp_path / "hub")
    with HubServer(tmp_path / "hub") as hub:
        for args in (("score", repo / "data", "-o", "hf://datasets/test/corpus/scored"),
                     ("filter", repo / "data", "-o", "hf://datasets/test/corpus/kept", "--threshold", "0.5"),
                     ("sample", repo / "data", "-o", "hf://datasets/test/corpus/seed.parquet"),
                     ("sample", repo / "data", "-o", tmp_path / "seed.parquet", "--stats-json", "hf://datasets/test/corpus/s.json"),
                     ("label", repo / "data" / "part-0.parquet", "-o", "hf://datasets/test/corpus/labels.parquet",
                      "--base-url", "http://127.0.0.1:9/v1", "--model", "m"),
                     ("train", repo / "data" / "part-0.parquet", "-o", "hf://datasets/test/corpus/model")):
            line = _one_error_line(_cli(hub, tmp_path, *args))
            assert "does not write to the Hugging Face Hub" in line and "hf upload" in line, line
            assert line.startswith("Error: hf://datasets/test/corpus/"), line
        assert hub.requests == []  # refused before the Hub was asked anything
        # the library refuses too, and a RemotePath never writes there
        with pytest.raises(OutputError, match="does not write to the Hugging Face Hub"):
            score_shards(repo / "data", "hf://datasets/test/corpus/scored")
        with pytest.raises(OutputError, match="does not write to the Hugging Face Hub"):
            RemotePath("hf://datasets/test/corpus/x.json").write_bytes(b"{}")
        assert hub.requests == []
    assert not (tmp_path / "seed.parquet").exists()
    assert _files(repo) == sorted(["README.md", "data/more/part-1.parquet", "data/more/web-1.jsonl.gz",
                                   "data/part-0.parquet", "data/web-0.jsonl.gz"])
