"""The loopback stand-in LLM endpoint: speaks the chat API, rates with a transparent heuristic."""

from __future__ import annotations

import http.client
import json

import pyarrow.parquet as pq
from conftest import BOILERPLATE, GOOD_CODE, write_shard

from phifilter.label import LabelConfig, OpenAIChatBackend, StandinServer, heuristic_rating, label_file


def test_heuristic_prefers_explained_code():
    good, why = heuristic_rating(GOOD_CODE)
    bad, _ = heuristic_rating(BOILERPLATE)
    assert good >= 3 and "worked examples" in why
    assert bad <= 1
    assert heuristic_rating("") == (0, "empty document")


def test_label_file_through_the_standin(tmp_path):
    seed = write_shard(tmp_path / "seed.parquet", [GOOD_CODE, BOILERPLATE, "x = 1\n"], id=["a", "b", "c"])
    with StandinServer() as server:
        backend = OpenAIChatBackend(server.url, server.model, api_key="unused", concurrency=2)
        summary = label_file(seed, tmp_path / "labels.parquet", backend, LabelConfig(rubric="code"), progress=False)
        assert server.count() == 3 and [r.status for r in server.requests] == [200] * 3
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/v1/models")
        assert json.loads(conn.getresponse().read())["data"][0]["id"] == "standin-heuristic"
        conn.request("POST", "/v1/other", body=b"{}", headers={"Content-Length": "2"})
        assert conn.getresponse().status == 404
    labels = pq.read_table(tmp_path / "labels.parquet").to_pydict()
    assert labels["llm_score"] == [heuristic_rating(t)[0] for t in [GOOD_CODE, BOILERPLATE, "x = 1\n"]]
    assert labels["llm_model"] == ["standin-heuristic"] * 3
    assert "worked examples" in labels["llm_reason"][0]
    assert summary.answered == 3 and summary.remaining == 0 and summary.unparsed == 0


def test_custom_rater(tmp_path):
    seed = write_shard(tmp_path / "seed.parquet", ["short", "a much longer document"])
    with StandinServer(rate=lambda doc: min(5, len(doc) // 5), model="by-length") as server:
        label_file(seed, tmp_path / "l.parquet", OpenAIChatBackend(server.url, server.model, api_key="k"),
                   LabelConfig(rubric="web"), progress=False)
    assert pq.read_table(tmp_path / "l.parquet").column("llm_score").to_pylist() == [1, 4]


def test_heuristic_marks_down_legal_headers():
    # The same number of comment lines, so only the legal header differs.
    licensed = "# Copyright (C) 2005 Someone\n" + GOOD_CODE
    noted = "# Searching a sorted list\n" + GOOD_CODE
    assert heuristic_rating(licensed)[0] == heuristic_rating(noted)[0] - 1
