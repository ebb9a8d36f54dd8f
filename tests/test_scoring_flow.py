"""The scoring package: one flow for every engine, partitioned runs, status, run records, stats."""

from __future__ import annotations

import json
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BOILERPLATE, GOOD_CODE, write_shard
from phifilter import ScoreConfig, score_shards
from phifilter.corpus import PartialShard, find_shards
from phifilter.errors import InputError, OutputError
from phifilter.scoring.config import partition_of
from phifilter.scoring.flow import output_schema
from phifilter.scoring.partition import assign
from phifilter.scoring.status import scoring_status


class LengthModel:
    """A model that is not an EduClassifier: it declares its own two stages (as a cascade or a
    fastText model would), and the flow must run them without knowing what they do."""

    threshold = 0.5

    def __init__(self):
        self.stage_threads = set()

    def scoring_identity(self):
        return {"model": "length", "version": 1}

    def scoring_stages(self, tensor_forest=None):
        def count(batch):
            self.stage_threads.add(threading.current_thread().name)
            batch.work = np.array([len(t) for t in batch.texts], np.float32)
            batch.tokens = int(batch.work.sum())
            return batch

        def head(batch):
            self.stage_threads.add(threading.current_thread().name)
            batch.scores, batch.work = np.minimum(batch.work / 100.0, 1.0).astype(np.float32), None
            return batch

        return [("count", count), ("head", head)]


def _texts(k: int, n: int) -> list[str]:
    return [("x" * (7 * i + k)) if i % 3 else (GOOD_CODE if i % 2 else BOILERPLATE) for i in range(n)]


def test_a_model_declaring_its_own_stages_runs_in_the_flow(tmp_path):
    write_shard(tmp_path / "in" / "a.parquet", _texts(1, 9), row_group_size=4, id=pa.array(range(9)))
    model = LengthModel()
    cfg = ScoreConfig(read_batch_rows=4)
    summary = score_shards(tmp_path / "in", tmp_path / "out", model=model, config=cfg)
    out = pq.read_table(tmp_path / "out" / "a.parquet")
    want = np.minimum(np.array([len(t) for t in _texts(1, 9)], np.float32) / 100.0, 1.0)
    np.testing.assert_array_equal(out.column("edu_score").to_numpy(), want)
    assert {"phifilter-count", "phifilter-head"} <= model.stage_threads  # each stage in its own thread
    assert summary.shards_scored == 1 and summary.rows_scored == 9 and summary.outcomes[0].tokens == int(
        sum(len(t) for t in _texts(1, 9)))
    assert cfg == ScoreConfig(read_batch_rows=4)  # the caller's config is not changed
    # the rerun recognises the model by its identity and skips the shard
    again = score_shards(tmp_path / "in", tmp_path / "out", model=LengthModel(), config=cfg)
    assert again.shards_skipped == 1 and again.shards_scored == 0


def test_score_shards_does_not_change_the_callers_config(tmp_path):
    write_shard(tmp_path / "in" / "a.parquet", [GOOD_CODE, BOILERPLATE])
    cfg = ScoreConfig()
    score_shards(tmp_path / "in", tmp_path / "out", model=LengthModel(), config=cfg, devices="cpu", embed_batch_size=8)
    assert cfg == ScoreConfig()  # read_batch_rows, device, embed_batch_size all untouched
    with pytest.raises(TypeError, match="unexpected option"):
        score_shards(tmp_path / "in", tmp_path / "out", model=LengthModel(), no_such_option=1)


def test_partition_is_balanced_fixed_and_defaults_to_slurm(tmp_path):
    sizes = [50, 9, 40, 1, 30, 20, 8, 7]
    for k, n in enumerate(sizes):
        write_shard(tmp_path / f"s{k}.parquet", ["y" * 1000 * n])
    shards = find_shards(tmp_path)
    owner = assign(shards, 3)
    assert owner == assign(list(reversed(shards))[::-1], 3)  # depends on the shard list only
    load = [sum((tmp_path / s.name).stat().st_size for s, t in zip(shards, owner) if t == task) for task in range(3)]
    assert max(load) - min(load) <= max((tmp_path / s.name).stat().st_size for s in shards)
    assert set(owner) == {0, 1, 2}
    assert partition_of(ScoreConfig(), {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "8"}) == (4, 8)
    assert partition_of(ScoreConfig(), {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "8",
                                        "SLURM_ARRAY_TASK_MIN": "1"}) == (7, 8)
    assert partition_of(ScoreConfig(task_index=1, num_tasks=2), {"SLURM_ARRAY_TASK_ID": "4"}) == (1, 2)
    assert partition_of(ScoreConfig(), {}) == (0, 1)
    with pytest.raises(InputError, match="--task-index 3: must be in 0..2"):
        partition_of(ScoreConfig(task_index=3, num_tasks=3), {})


@pytest.mark.slow
def test_partitioned_runs_together_equal_one_run(tmp_path, bundled_model):
    for k in range(5):
        write_shard(tmp_path / "in" / f"p{k}.parquet", _texts(k, 2 + k))
    write_shard(tmp_path / "in" / "sub" / "q.parquet", _texts(9, 3))
    one = score_shards(tmp_path / "in", tmp_path / "one", model=bundled_model)
    status = scoring_status(tmp_path / "parts", [tmp_path / "in"])
    assert status.count("missing") == 6 and not status.complete
    seen = []
    for task in (2, 0, 1):  # any order, one shared folder
        s = score_shards(tmp_path / "in", tmp_path / "parts", model=bundled_model, task_index=task, num_tasks=3)
        assert s.task == (task, 3) and s.shards_scored + s.shards_elsewhere == 6
        seen += [o.name for o in s.outcomes]
        if task == 2:
            mid = scoring_status(tmp_path / "parts", [tmp_path / "in"])
            assert mid.count("done") == s.shards_scored and mid.count("missing") == 6 - s.shards_scored
    assert sorted(seen) == sorted(str(x.name) for x in find_shards(tmp_path / "in"))  # each shard exactly once
    for shard in find_shards(tmp_path / "in"):
        assert pq.read_table(tmp_path / "parts" / shard.name).equals(pq.read_table(tmp_path / "one" / shard.name))
    assert scoring_status(tmp_path / "parts", [tmp_path / "in"]).complete
    assert not list((tmp_path / "parts").glob(".*"))  # every task gave back its leases; nothing hidden is left
    assert one.shards_scored == 6


@pytest.mark.slow
def test_rerun_redoes_a_shard_whose_input_changed_and_says_why(tmp_path, bundled_model):
    write_shard(tmp_path / "in" / "a.parquet", [GOOD_CODE, "x = 1"])
    write_shard(tmp_path / "in" / "b.parquet", [BOILERPLATE, "y = 2"])
    score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model)
    write_shard(tmp_path / "in" / "b.parquet", [GOOD_CODE, "z = 3"])  # same name, same rows, new content
    assert [s.state for s in scoring_status(tmp_path / "out", [tmp_path / "in"]).shards] == ["done", "stale"]
    summary = score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model)
    assert summary.shards_skipped == 1 and summary.shards_scored == 1
    assert summary.redone == ["input changed"] and "1 redone: input changed" in str(summary)
    score_shards(tmp_path / "in" / "b.parquet", tmp_path / "fresh", model=bundled_model)
    assert pq.read_table(tmp_path / "out" / "b.parquet").equals(pq.read_table(tmp_path / "fresh" / "b.parquet"))
    # another model: every shard is redone
    other = score_shards(tmp_path / "in", tmp_path / "out", model=LengthModel())
    assert other.redone == ["model changed", "model changed"]


def test_stats_json_and_status_of_a_partial_shard(tmp_path):
    write_shard(tmp_path / "in" / "a.parquet", _texts(0, 6), row_group_size=2)
    write_shard(tmp_path / "in" / "b.parquet", _texts(1, 5))
    (tmp_path / "in" / "bad.parquet").write_bytes(b"not parquet")
    stats_path = tmp_path / "stats" / "score.json"
    summary = score_shards(tmp_path / "in", tmp_path / "out", model=LengthModel(), read_batch_rows=2,
                           on_error="skip", stats_json=str(stats_path))
    stats = json.loads(stats_path.read_text())
    assert stats["rows"]["total"] == 11 == sum(stats["histogram"]["counts"])
    assert stats["shards"] == {"scored": 2, "skipped": 0, "failed": 1, "redone": 0, "leased": 0}
    assert [s["name"] for s in stats["per_shard"]] == ["a.parquet", "b.parquet", "bad.parquet"]
    assert stats["tokens"] == sum(len(t) for t in _texts(0, 6) + _texts(1, 5))
    assert stats["bytes"] == sum((tmp_path / "in" / n).stat().st_size for n in ("a.parquet", "b.parquet"))
    assert all(s["seconds"] >= 0 for s in stats["per_shard"]) and stats["failures"][0]["path"].endswith("bad.parquet")
    assert stats["histogram"]["counts"] == summary.histogram.tolist()
    # a checkpointed shard an interrupted run left behind is "partial", with its rows
    (tmp_path / "out" / "b.parquet").unlink()
    schema = output_schema(pq.read_schema(tmp_path / "in" / "b.parquet"), "edu_score")
    part = PartialShard(tmp_path / "out" / "b.parquet", schema, key={}).__enter__()
    part.write_batch(pa.RecordBatch.from_pylist([{"text": "t", "edu_score": 0.5}], schema=schema))
    part.__exit__(KeyboardInterrupt, None, None)  # killed: the checkpoint stays
    report = scoring_status(tmp_path / "out")
    assert [(s.name, s.state, s.rows) for s in report.shards] == [("a.parquet", "done", 6), ("b.parquet", "partial", 1)]
    assert "1 partial" in str(report)
    from click.testing import CliRunner

    from phifilter.cli import main

    shown = CliRunner().invoke(main, ["status", str(tmp_path / "out"), str(tmp_path / "in" / "a.parquet"),
                                      str(tmp_path / "in" / "b.parquet"), "--json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.output)
    assert doc["counts"] == {"done": 1, "partial": 1, "stale": 0, "missing": 0} and not doc["complete"]
    assert [(s["name"], s["rows"], s["expected"]) for s in doc["shards"]] == [("a.parquet", 6, 6), ("b.parquet", 1, 5)]
    with pytest.raises(OutputError, match="no such output folder"):
        scoring_status(tmp_path / "nowhere")


@pytest.mark.slow
def test_a_failing_write_stops_every_stage_thread(tmp_path, bundled_model, monkeypatch):
    # issue 12 item 7: a full disk must end with the clean error, not with stage threads still
    # running inside torch or Arrow when the interpreter exits (that aborts the process)
    import errno

    write_shard(tmp_path / "in" / "a.parquet", [GOOD_CODE + f"# {i}" for i in range(12)], row_group_size=2)
    real = pq.ParquetWriter.write_batch

    def full_disk(self, batch, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", full_disk)
    try:
        score_shards(tmp_path / "in", tmp_path / "out", model=bundled_model, read_batch_rows=2)
    except OutputError as e:  # checked here, where the CLI prints the error and exits
        assert "no space left on device" in str(e)
        assert [t.name for t in threading.enumerate() if t.name.startswith("phifilter-")] == []
    else:
        raise AssertionError("the full disk was not reported")
    monkeypatch.setattr(pq.ParquetWriter, "write_batch", real)


def test_a_model_whose_json_changed_and_parts_stayed_is_another_model(tmp_path):
    """The combiner, cascade band and score map live in phifilter.json, not in a hashed part file:
    a model retrained into the same parts with another combiner scores differently, so a rerun
    must redo its shards (its id once covered only the part files, and the rerun skipped them)."""
    import shutil

    from phifilter import EduClassifier
    from phifilter.modelfolder import default_model_path

    folder = tmp_path / "model"
    shutil.copytree(default_model_path(), folder)
    write_shard(tmp_path / "in" / "a.parquet", [GOOD_CODE, BOILERPLATE, "x = 1"])
    first = score_shards(tmp_path / "in", tmp_path / "out", model=EduClassifier.load(folder, device="cpu"))
    assert first.shards_scored == 1
    before = pq.read_table(tmp_path / "out" / "a.parquet").column("edu_score").to_numpy()
    meta = json.loads((folder / "phifilter.json").read_text())
    meta["combiner"]["intercept"] += 2.0  # the parts' bytes and hashes stay as they were; both
    meta["cascade"]["cheap_mapping"]["intercept"] += 2.0  # the embedded and the cheap path rise
    (folder / "phifilter.json").write_text(json.dumps(meta))
    again = score_shards(tmp_path / "in", tmp_path / "out", model=EduClassifier.load(folder, device="cpu"))
    assert again.redone == ["model changed"] and again.shards_scored == 1
    after = pq.read_table(tmp_path / "out" / "a.parquet").column("edu_score").to_numpy()
    assert (after > before + 1e-4).all()  # a higher intercept raises every score
