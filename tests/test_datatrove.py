"""phifilter.datatrove in a real datatrove pipeline: JsonlReader -> EduScorer -> EduFilter -> JsonlWriter,
whose scores equal `phifilter score`'s on the same documents (1e-4)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import BOILERPLATE, GOOD_CODE, run_cli

pytest.importorskip("datatrove")

TEXTS = [GOOD_CODE, BOILERPLATE, "Photosynthesis turns light into chemical energy. Each step is explained below.",
         "buy now free offer click here", "def f(x):\n    return x * 2\n", "A list keeps items in order."]


def write_jsonl(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")


def read_jsonl_gz(folder):
    rows = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    return rows


def run_pipeline(steps, tmp_path, name):
    from datatrove.executor import LocalPipelineExecutor

    LocalPipelineExecutor(pipeline=steps, tasks=1, workers=1, logging_dir=str(tmp_path / f"logs-{name}")).run()


def test_edu_scorer_in_a_local_pipeline_equals_phifilter_score(tmp_path):
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from phifilter.datatrove import EduFilter, EduScorer

    write_jsonl(tmp_path / "in" / "part.jsonl", TEXTS)
    run_pipeline([JsonlReader(str(tmp_path / "in")), EduScorer(device="cpu"),
                  JsonlWriter(str(tmp_path / "dt-scored"))], tmp_path, "score")
    rows = read_jsonl_gz(tmp_path / "dt-scored")
    assert [r["text"] for r in rows] == TEXTS
    dt = np.array([r["metadata"]["edu_score"] for r in rows])

    run_cli("score", tmp_path / "in", "-o", tmp_path / "pf", "--output-format", "parquet", "--device", "cpu")
    pf = np.asarray(pq.read_table(tmp_path / "pf" / "part.parquet").column("edu_score").to_pylist())
    assert np.abs(dt - pf).max() < 1e-4
    assert np.ptp(pf) > 0.1

    run_pipeline([JsonlReader(str(tmp_path / "in")), EduScorer(device="cpu"), EduFilter(threshold=0.5),
                  JsonlWriter(str(tmp_path / "dt-kept"))], tmp_path, "filter")
    kept = [r["text"] for r in read_jsonl_gz(tmp_path / "dt-kept")]
    assert kept == [t for t, s in zip(TEXTS, pf) if s >= 0.5]


def test_edu_scorer_with_foreign_and_several_scorers(tmp_path):
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from phifilter.datatrove import EduScorer
    from tinymodels import bert_reference, build_bert, fasttext_reference, train_fasttext

    reg = build_bert(tmp_path / "reg")
    ft = train_fasttext(tmp_path / "ft.bin")
    write_jsonl(tmp_path / "in" / "part.jsonl", TEXTS)
    model = {"fw": str(reg), "dclm": f"fasttext:{ft}#hq"}
    run_pipeline([JsonlReader(str(tmp_path / "in")), EduScorer(model=model, device="cpu"),
                  JsonlWriter(str(tmp_path / "out"))], tmp_path, "multi")
    rows = read_jsonl_gz(tmp_path / "out")
    fw = np.array([r["metadata"]["fw"] for r in rows])
    dclm = np.array([r["metadata"]["dclm"] for r in rows])
    assert np.abs(fw - bert_reference(reg, TEXTS)).max() < 1e-4
    assert np.abs(dclm - fasttext_reference(ft, TEXTS)).max() < 1e-4


def test_edu_filter_without_scores_says_what_to_do():
    from datatrove.data import Document

    from phifilter.datatrove import EduFilter

    with pytest.raises(ValueError, match="put EduScorer"):
        EduFilter().filter(Document(text="x", id="1"))
