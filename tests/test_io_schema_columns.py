"""Structured answers as typed columns in every sink (pipeline.io's writers, pipeline.io.resume):
pandas and Polars frames, CSV/JSONL/Parquet files and resumed runs; failed rows get nulls
plus their error; empty and all-failed frames are typed too. Against the simulator."""

from __future__ import annotations

import csv
import json

import msgspec
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

import pipeline
from pipeline import io
from pipeline.io.resume import run_file
from pipeline.runner import Results
from pipeline.simulator import Simulator
from pipeline.state.status import StatusTracker


class Place(msgspec.Struct):
    city: str


class Review(msgspec.Struct):
    label: str
    score: int
    p: float
    ok: bool
    topics: list[str]
    place: Place | None = None


SCHEMA = pipeline.output_schema(Review)
TYPES = {"label": "string", "score": "Int64", "p": "Float64", "ok": "boolean",
         "topics": "object", "place.city": "string"}
POLARS = {"label": pl.String, "score": pl.Int64, "p": pl.Float64, "ok": pl.Boolean,
          "topics": pl.List(pl.String), "place.city": pl.String}


def _frame(n: int = 12) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"review {i}" for i in range(n)], "score": range(n)},
                        index=[f"r{i}" for i in range(n)])


async def _run(df, invalid: float = 0.0, reasks: int = 2, **kw):
    with Simulator(invalid_json=invalid, seed=2, latency=0) as sim:
        async with pipeline.OpenAIService(api_key="sk-test", base_url=sim.base_url) as svc:
            job = svc.chat(model="gpt-4o-mini", prompt="Review: {text}", schema=Review,
                           max_tokens=400)
            return await io.run_frame(df, job, reasks=reasks, **kw)


@pytest.mark.timeout(120)
async def test_pandas_gets_one_typed_column_per_field_lined_up_with_the_index():
    df = _frame()
    out = await _run(df)
    assert list(out.index) == list(df.index) and (out["status"] == "succeeded").all()
    # the input has a `score` column: the answer's gets the suffix
    assert out["score"].tolist() == list(range(12))
    types = {**TYPES, "score_result": "Int64"}
    del types["score"]
    assert {k: str(out[k].dtype) for k in types} == types
    decoded = [SCHEMA.decode(text) for text in out["answer"]]
    assert out["label"].tolist() == [v.label for v in decoded]
    assert out["score_result"].tolist() == [v.score for v in decoded]


@pytest.mark.timeout(120)
async def test_polars_gets_typed_columns():
    out = await _run(pl.from_pandas(_frame(6).reset_index(drop=True)))
    assert {k: out.schema[k] for k in POLARS if k != "score"} == \
        {k: v for k, v in POLARS.items() if k != "score"}
    assert out.schema["score_result"] == pl.Int64 and out["status"].to_list() == \
        ["succeeded"] * 6


@pytest.mark.timeout(120)
async def test_an_all_failed_frame_is_typed_with_nulls_and_errors():
    out = await _run(_frame(4).drop(columns="score"), invalid=1.0, reasks=0)
    assert (out["status"] == "failed").all()
    assert out["error"].str.startswith("SchemaValidationError").all()
    assert {k: str(out[k].dtype) for k in TYPES} == TYPES
    assert out[list(TYPES)].isna().all().all()
    polars = await _run(pl.DataFrame({"text": ["a", "b"]}), invalid=1.0, reasks=0)
    assert {k: polars.schema[k] for k in POLARS} == POLARS
    assert polars["score"].null_count() == 2


def test_an_empty_run_gives_typed_empty_columns():
    results = Results([], StatusTracker(), schema=SCHEMA)
    frame = results.to_pandas(pd.DataFrame({"text": pd.Series([], dtype="object")}))
    assert len(frame) == 0 and {k: str(frame[k].dtype) for k in TYPES} == TYPES
    polars = results.to_polars(pl.DataFrame({"text": pl.Series([], dtype=pl.String)}))
    assert polars.height == 0 and {k: polars.schema[k] for k in POLARS} == POLARS


@pytest.mark.timeout(120)
async def test_files_get_the_columns_and_a_resumed_run_writes_them_from_its_journal(
        tmp_path):
    rows = [{"id": str(i), "text": f"review {i}"} for i in range(10)]
    source = tmp_path / "in.csv"
    pd.DataFrame(rows).to_csv(source, index=False)
    with Simulator(invalid_json=0.3, seed=4, latency=0) as sim:
        async with pipeline.OpenAIService(api_key="sk-test", base_url=sim.base_url) as svc:
            job = svc.chat(model="gpt-4o-mini", prompt="Review: {text}", schema=Review,
                           max_tokens=400)
            for name in ("out.csv", "out.jsonl", "out.parquet"):
                # One cache: the three files hold the same answers (a re-ask's answer depends
                # on the answer that did not fit, which the simulator spoils at random).
                summary = await run_file(source, tmp_path / name, job, reasks=10,
                                         cache=tmp_path / "cache")
                assert summary.succeeded == 10, name
            sent = sim.stats().requests
            again = await run_file(source, tmp_path / "out.parquet", job)
            assert again.resumed == 10 and sim.stats().requests == sent  # nothing sent
    table = list(csv.DictReader((tmp_path / "out.csv").read_text().splitlines()))
    assert list(table[0])[-6:] == list(TYPES) and all(r["label"] for r in table)
    assert json.loads(table[0]["topics"]) == SCHEMA.decode(table[0]["answer"]).topics
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(isinstance(line["score"], int) for line in lines)
    assert [line["label"] for line in lines] == [r["label"] for r in table]
    parquet = pq.read_table(tmp_path / "out.parquet")
    assert str(parquet.schema.field("score").type) == "int64"
    assert parquet.schema.field("topics").type.value_type == "string"
    assert str(parquet.schema.field("ok").type) == "bool"
    assert parquet.column("label").to_pylist() == [r["label"] for r in table]


def test_the_journal_fingerprint_changes_with_the_schema():
    class Other(msgspec.Struct):
        label: str

    service = pipeline.OpenAIService(api_key="sk-test", base_url="http://127.0.0.1:9")
    one = service.chat(model="m", prompt="{text}", schema=Review)
    same = service.chat(model="m", prompt="{text}", schema=Review)
    other = service.chat(model="m", prompt="{text}", schema=Other)
    assert repr(one.builder) == repr(same.builder) != repr(other.builder)
