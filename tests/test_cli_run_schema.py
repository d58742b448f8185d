"""pipeline run --schema FILE.json --reasks N, end to end in subprocesses against the
simulator on 127.0.0.1: typed columns in CSV/JSONL/Parquet outputs; a bad schema is one line
and exit 2 before anything is sent."""

from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq
import pytest
from test_cli_run import KEY, pipeline_cli

from pipeline.simulator import Simulator

SCHEMA = {"type": "object", "title": "review", "properties": {
    "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
    "score": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["label", "score"]}


@pytest.fixture
def files(tmp_path):
    with open(tmp_path / "in.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows([[i, f"review {i}"] for i in range(12)])
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    return tmp_path


@pytest.mark.timeout(180)
def test_schema_end_to_end_gives_typed_columns_in_every_format(files):
    with Simulator(latency=0.0, api_key=KEY, invalid_json=0.3, seed=9) as sim:
        for name in ("out.csv", "out.jsonl", "out.parquet"):
            result = pipeline_cli("run", str(files / "in.csv"), "-o", str(files / name),
                                  "--template", "Classify: {text}", "--base-url",
                                  sim.base_url, "--schema", str(files / "schema.json"),
                                  "--reasks", "10", "--no-progress", "--no-cache")
            assert result.returncode == 0, result.stderr
            assert "re-asks" in result.stderr
        outcomes = sim.stats().outcomes
    assert outcomes.get("invalid_json", 0) > 0  # re-asks happened and were answered
    with open(files / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-2:] == ["label", "score"]
    assert all(r["label"] in ("positive", "negative", "neutral") and r["status"] ==
               "succeeded" for r in rows)
    lines = [json.loads(x) for x in (files / "out.jsonl").read_text().splitlines()]
    assert all(isinstance(x["score"], int) and 1 <= x["score"] <= 5 for x in lines)
    table = pq.read_table(files / "out.parquet")
    assert str(table.schema.field("score").type) == "int64"
    assert table.column("label").null_count == 0


@pytest.mark.timeout(120)
def test_answers_that_never_fit_fail_their_rows_with_the_reason(files):
    with Simulator(latency=0.0, api_key=KEY, invalid_json=1.0, seed=1) as sim:
        result = pipeline_cli("run", str(files / "in.csv"), "-o", str(files / "out.csv"),
                              "--template", "{text}", "--base-url", sim.base_url,
                              "--schema", str(files / "schema.json"), "--reasks", "1",
                              "--no-progress", "--no-cache")
        assert sim.stats().requests == 24
    assert result.returncode == 1
    assert "SchemaValidationError (12 rows)" in result.stderr
    with open(files / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["status"] == "failed" and r["label"] == "" and
               r["error"].startswith("SchemaValidationError") for r in rows)


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read it"),
    ("{not json", "not JSON"),
    ('["a list"]', "a JSON Schema is an object"),
    ('{"type": "object", "properties": {"x": {"type": "string", "minLength": 2}}}',
     "minLength"),
])
def test_a_bad_schema_is_one_line_and_exit_2_before_anything_is_sent(files, content,
                                                                     message):
    path = files / "bad.json"
    if content is not None:
        path.write_text(content)
    with Simulator(latency=0.0, api_key=KEY) as sim:
        result = pipeline_cli("run", str(files / "in.csv"), "-o", str(files / "out.csv"),
                              "--template", "{text}", "--base-url", sim.base_url,
                              "--schema", str(path), "--no-progress")
        assert sim.stats().requests == 0
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipeline run: error: --schema")
    assert message in lines[0]
    assert not (files / "out.csv").exists()
