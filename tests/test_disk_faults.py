"""A full disk while writing: previous output stays intact, the command ends with one `Error:` line.

Two ways to fill the disk: an injected ``OSError(ENOSPC)`` in the Parquet writer (runs
anywhere), and a real 2 MB tmpfs (needs root and mount; skipped with the reason otherwise).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from conftest import BOILERPLATE, GOOD_CODE, write_shard
from killresume import temporaries
from phifilter.cli import main
from phifilter.errors import OutputError


def _digest(folder: Path) -> dict[str, str]:
    """Content hash of every visible file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def _one_error_line(result) -> str:
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


# ---------------------------------------------------------------------------------------------
# injected ENOSPC


def test_injected_enospc_mid_shard_keeps_outputs_and_checkpoints(tmp_path, bundled_model, monkeypatch):
    from phifilter.scoring import score_shards

    texts = [GOOD_CODE + f"# {i}" if i % 2 else BOILERPLATE + f"# {i}" for i in range(32)]
    write_shard(tmp_path / "in" / "a.parquet", texts[:8])
    write_shard(tmp_path / "in" / "b.parquet", texts, row_group_size=8)
    score_shards(tmp_path / "in", tmp_path / "ref", model=bundled_model, read_batch_rows=8)
    score_shards(tmp_path / "in" / "a.parquet", tmp_path / "out", model=bundled_model, read_batch_rows=8)
    before = _digest(tmp_path / "out")

    real = pq.ParquetWriter.write_batch
    writes = []

    def full_disk(self, batch, *a, **k):
        writes.append(batch.num_rows)
        if len(writes) > 2:  # two row groups fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, batch, *a, **k)

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", full_disk)
    with pytest.raises(OutputError, match="no space left on device.*rerun to resume"):
        score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model, read_batch_rows=8)
    assert _digest(tmp_path / "out") == before  # a.parquet untouched, no b.parquet
    assert json.loads((tmp_path / "out" / ".b.parquet.partial" / "manifest.json").read_text())["rows"] == 16
    assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp-" in p.name]
    monkeypatch.setattr(pq.ParquetWriter, "write_batch", real)
    summary = score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model, read_batch_rows=8)
    assert summary.rows_resumed == 16  # the two row groups written before the disk filled
    for name in ("a.parquet", "b.parquet"):
        a, b = pq.read_table(tmp_path / "ref" / name), pq.read_table(tmp_path / "out" / name)
        assert a.drop_columns(["edu_score"]).equals(b.drop_columns(["edu_score"]))
        np.testing.assert_allclose(a["edu_score"].to_numpy(), b["edu_score"].to_numpy(), atol=1e-5)
    assert not temporaries([tmp_path / "out"])


def test_injected_enospc_in_model_save_keeps_the_old_model(tmp_path, monkeypatch):
    import skops.io as sio

    from phifilter.classifier import EduClassifier, default_model_path

    clf = EduClassifier.load(default_model_path())
    target = clf.save(tmp_path / "model")
    before = _digest(target)

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sio, "dump", full_disk)
    with pytest.raises(OutputError, match="no space left on device"):
        clf.save(target)
    assert _digest(target) == before
    assert not temporaries([target])


# ---------------------------------------------------------------------------------------------
# a real full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs at tmp_path/disk (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Fill the disk up to ``leave`` free bytes."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "filler.bin", "ab") as f:
        f.write(b"\0" * max(0, free - leave))


def _incompressible(n_chars: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n", dtype=np.uint8)
    return rng.choice(letters, n_chars).tobytes().decode()


def test_full_tmpfs_score_keeps_finished_shards(tmp_path, tiny_disk):
    write_shard(tmp_path / "in" / "a.parquet", ["def f():\n    return 1\n", "x = 2"])
    write_shard(tmp_path / "in" / "b.parquet", [_incompressible(200_000, i) for i in range(4)])
    out = tiny_disk / "scored"
    runner = CliRunner()
    ok = runner.invoke(main, ["score", str(tmp_path / "in" / "a.parquet"), "-o", str(out), "--device", "cpu",
                              "--max-length", "16", "-q"])
    assert ok.exit_code == 0, ok.output
    before = _digest(out)
    _fill(tiny_disk, leave=150_000)
    result = runner.invoke(main, ["score", str(tmp_path / "in"), "-o", str(out), "--device", "cpu",
                                  "--max-length", "16", "-q"])
    line = _one_error_line(result)
    assert "b.parquet: no space left on device" in line
    assert _digest(out) == before
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_full_tmpfs_filter_sample_label_train_keep_previous_outputs(tmp_path, tiny_disk):
    from phifilter.label.standin import StandinServer

    runner = CliRunner()
    rows = 40
    texts = [_incompressible(20_000, i) for i in range(rows)]
    scores = pa.array(np.linspace(0, 1, rows), pa.float32())
    write_shard(tmp_path / "scored" / "s.parquet", texts, edu_score=scores, domain=pa.array(["code"] * rows))
    write_shard(tmp_path / "small" / "s.parquet", texts[:2], edu_score=scores[:2], domain=pa.array(["code"] * 2))

    # previous outputs, written while there is room
    assert runner.invoke(main, ["filter", str(tmp_path / "small"), "-o", str(tiny_disk / "kept"), "--threshold", "0", "-q"]).exit_code == 0
    assert runner.invoke(main, ["sample", str(tmp_path / "small"), "-o", str(tiny_disk / "seed.parquet"), "-n", "2", "-q"]).exit_code == 0
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"text": [GOOD_CODE, BOILERPLATE] * 6, "llm_score": pa.array([5, 0] * 6, pa.int8())}), labels)
    r = runner.invoke(main, ["train", str(labels), "-o", str(tiny_disk / "model"), "--recipe", "paper", "--n-estimators", "5", "--cv-folds", "0",
                             "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    server = StandinServer().start()
    try:
        assert runner.invoke(main, ["label", str(tmp_path / "small" / "s.parquet"), "-o", str(tiny_disk / "labels.parquet"),
                                    "--base-url", server.url, "--model", "m", "-q"], env={"OPENAI_API_KEY": "k"}).exit_code == 0
        before = _digest(tiny_disk)
        _fill(tiny_disk, leave=64_000)
        before_fill = {k: v for k, v in before.items()}

        results = {
            "filter": runner.invoke(main, ["filter", str(tmp_path / "scored"), "-o", str(tiny_disk / "kept"),
                                           "--threshold", "0", "-q"]),
            "sample": runner.invoke(main, ["sample", str(tmp_path / "scored"), "-o", str(tiny_disk / "seed.parquet"),
                                           "-n", "40", "-q"]),
            "label": runner.invoke(main, ["label", str(tmp_path / "scored" / "s.parquet"), "-o", str(tiny_disk / "labels.parquet"),
                                          "--base-url", server.url, "--model", "m", "-q"], env={"OPENAI_API_KEY": "k"}),
            "train": runner.invoke(main, ["train", str(labels), "-o", str(tiny_disk / "model"), "--recipe", "paper",
                                          "--n-estimators", "50", "--cv-folds", "0", "--device", "cpu", "-q"]),
        }
    finally:
        server.stop()
    for name, result in results.items():
        line = _one_error_line(result)
        assert "no space left on device" in line.lower() or "disk is full" in line.lower(), (name, line)
    after = _digest(tiny_disk)
    for name, digest in before_fill.items():
        if name.endswith(".cache.sqlite") or name == "filler.bin":
            continue  # the label cache is a database that grows; the filler is ours
        assert after.get(name) == digest, f"{name} changed or vanished after a full-disk failure"
    assert not [p for p in tiny_disk.rglob("*") if ".tmp-" in p.name]
