"""pipeline.io: every source and sink, lined up with the input rows, against the simulator."""

from __future__ import annotations

import csv
import json
import math
import sys

import pandas as pd
import polars as pl
import pytest

from pipeline import OpenAIService, io, run
from pipeline.errors import ConfigError, InputError, TemplateKeyError
from pipeline.simulator import Simulator


def echo(endpoint, body):
    """The simulated model answers with the prompt it got: alignment becomes checkable."""
    if "messages" in body:
        return body["messages"][-1]["content"]
    return str(body.get("prompt"))


@pytest.fixture(scope="module")
def sim():
    with Simulator(latency=0.0, responder=echo) as simulator:
        yield simulator


@pytest.fixture
async def service(sim):
    async with OpenAIService(api_key="sk-test-io", base_url=sim.base_url) as svc:
        yield svc


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def chat(service, prompt="Q: {text}"):
    return service.chat(model="gpt-4o-mini", prompt=prompt, max_tokens=50)


# ------------------------------------------------------------------------------ sources
def test_read_iterable_numbers_rows_by_position():
    source = io.read(["a", "b", "c"])
    assert [(r.index, r.row) for r in source] == [(0, "a"), (1, "b"), (2, "c")]
    assert len(source) == 3
    assert [r.index for r in source.records(skip={1})] == [0, 2]


def test_read_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(InputError, match="not found"):
        io.read(tmp_path / "missing.csv")
    (tmp_path / "rows.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"unknown file format '\.xlsx'"):
        io.read(tmp_path / "rows.xlsx")
    with pytest.raises(InputError, match="cannot read rows from int"):
        io.read(42)


def test_polars_lazyframe_streams_every_row_in_order(monkeypatch):
    from pipeline.io import _frames

    monkeypatch.setattr(_frames, "BATCH_SIZE", 7)  # many batches
    lazy = pl.LazyFrame({"n": list(range(50))}).with_columns(sq=pl.col("n") ** 2)
    source = io.read(lazy)
    assert source.kind == "polars-lazy" and source.length is None
    assert [r.row["n"] for r in source] == list(range(50))
    assert [r.index for r in source] == list(range(50))


def test_csv_reads_empty_cells_as_missing_and_ragged_lines_as_failed_rows(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("text,n\nhello,1\n\n,2\nx,3,extra\n")
    source = io.read(path)
    assert len(source) == 3  # counted up front (the progress bar's total); blank lines skipped
    records = list(source)
    assert [r.row for r in records[:2]] == [{"text": "hello", "n": "1"}, {"text": None, "n": "2"}]
    assert records[2].status == "failed"
    assert "line 5: 3 fields, the header has 2" in str(records[2].error)


def test_jsonl_kinds_are_recognised(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a"}\n\n{"text": "b"}\n')
    assert io.read(rows).kind == "jsonl"
    assert [r.row for r in io.read(rows)] == [{"text": "a"}, {"text": "b"}]
    cookbook = tmp_path / "requests.jsonl"
    cookbook.write_text(json.dumps({"model": "m", "input": "hi", "metadata": {"row": 1}}) + "\n")
    request = next(iter(io.read(cookbook))).row
    assert isinstance(request, io.BatchRequest)
    assert (request.path, request.body, request.metadata) == (
        "embeddings", {"model": "m", "input": "hi"}, {"row": 1})


# ------------------------------------------------------------------------------ frames
async def test_pandas_frame_keeps_a_non_default_index_and_lines_up_with_nulls(service):
    df = pd.DataFrame({"text": ["one", None, "three", float("nan"), "five"],
                       "n": [1, 2, 3, 4, 5]}, index=[50, 7, "x", 7.5, -1])
    out = await io.run_frame(df, chat(service))
    assert list(out.index) == list(df.index)
    assert list(out.columns) == ["text", "n", "answer", "status", "error", "tokens", "latency",
                                 "cost"]
    pd.testing.assert_frame_equal(out[["text", "n"]], df)
    assert out["cost"].dtype == "Float64"  # USD per row, as results.cost counts it
    assert out.loc[50, "answer"] == "Q: one" and out.loc[-1, "answer"] == "Q: five"
    assert list(out["status"]) == ["succeeded", "failed", "succeeded", "failed", "succeeded"]
    assert "needs column 'text', but its value is missing" in out.loc[7, "error"]
    assert out["tokens"].dtype == "Int64" and out.loc[50, "tokens"] > 0
    assert pd.isna(out.loc[7.5, "tokens"]) and pd.isna(out.loc["x", "error"])


@pytest.mark.parametrize("lazy", [False, True])
async def test_polars_frames_line_up_with_nulls(service, lazy):
    df = pl.DataFrame({"text": ["a", None, "c"], "k": [1, 2, None]})
    out = await io.run_frame(df.lazy() if lazy else df, chat(service))
    assert isinstance(out, pl.DataFrame)
    assert out.select("text", "k").equals(df)
    assert out["answer"].to_list() == ["Q: a", None, "Q: c"]
    assert out["status"].to_list() == ["succeeded", "failed", "succeeded"]
    assert out.schema["tokens"] == pl.Int64 and out.schema["latency"] == pl.Float64
    assert out.schema["cost"] == pl.Float64  # io.run_frame costs each row like results do


async def test_embeddings_frame_gets_an_embedding_column(service):
    df = pl.DataFrame({"text": ["a", "b"]})
    out = await io.run_frame(df, service.embeddings(model="text-embedding-3-small",
                                                    input="{text}", dimensions=4))
    assert "answer" not in out.columns
    vectors = out["embedding"].to_list()
    assert [len(v) for v in vectors] == [4, 4]


async def test_a_result_column_name_taken_by_the_input_gets_a_suffix(service):
    df = pd.DataFrame({"text": ["a"], "status": ["draft"]})
    out = await io.run_frame(df, chat(service))
    assert out.loc[0, "status"] == "draft" and out.loc[0, "status_result"] == "succeeded"


async def test_a_column_the_frame_lacks_is_refused_once_before_anything_is_sent(service, sim):
    before = sim.stats().requests
    with pytest.raises(TemplateKeyError, match="needs column 'text', which the input lacks; "
                                               "its columns are 'body'"):
        await io.run_frame(pd.DataFrame({"body": ["a", "b"]}), chat(service))
    assert sim.stats().requests == before


async def test_a_row_that_lacks_a_column_fails_alone_with_a_did_you_mean(service):
    results = await run([{"text": "a"}, {"txt": "b"}], chat(service))
    assert [r.status for r in results] == ["succeeded", "failed"]
    assert "needs column 'text', which the row lacks (did you mean 'txt'?); the row has " \
        "'txt'" in str(results[1].error)


# ------------------------------------------------------------------------------ files
async def test_csv_round_trip(tmp_path, service):
    source = tmp_path / "in.csv"
    source.write_text('id,text\n1,"hello, world"\n2,\n3,bye\n4,x,y\n')
    summary = await io.run_file(source, tmp_path / "out.csv", chat(service))
    assert (summary.rows, summary.succeeded, summary.failed) == (4, 2, 2)
    rows = read_csv(tmp_path / "out.csv")
    assert [r["id"] for r in rows] == ["1", "2", "3", ""]
    assert rows[0]["text"] == "hello, world" and rows[0]["answer"] == "Q: hello, world"
    assert rows[1]["status"] == "failed" and "value is missing" in rows[1]["error"]
    assert rows[2]["answer"] == "Q: bye" and int(rows[2]["tokens"]) > 0
    assert rows[3]["status"] == "failed" and "fields, the header has 2" in rows[3]["error"]


async def test_parquet_round_trip_keeps_input_types(tmp_path, service):
    df = pl.DataFrame({"text": ["a", None, "c"], "n": [1, None, 3], "f": [0.5, 1.5, None]})
    df.write_parquet(tmp_path / "in.parquet")
    await io.run_file(tmp_path / "in.parquet", tmp_path / "out.parquet", chat(service))
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out.select(df.columns).equals(df)
    assert out["answer"].to_list() == ["Q: a", None, "Q: c"]


async def test_jsonl_rows_round_trip_with_an_unreadable_line(tmp_path, service):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a", "tags": [1, 2]}\n{oops\n[1, 2]\n{"text": "d"}\n')
    await io.run_file(path, tmp_path / "out.jsonl", chat(service))
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 4
    assert lines[0]["tags"] == [1, 2] and lines[0]["answer"] == "Q: a"
    assert lines[1]["status"] == "failed" and "line 2: not valid JSON" in lines[1]["error"]
    assert "line 3: a row must be a JSON object" in lines[2]["error"]
    assert lines[3]["answer"] == "Q: d"


async def test_results_written_from_memory_line_up_with_the_source(tmp_path, service):
    source = io.read(pd.DataFrame({"text": ["a", "b", "c"]}))
    results = await run(source, chat(service), concurrency=3)
    io.write(results, tmp_path / "out.csv", source)
    assert [r["answer"] for r in read_csv(tmp_path / "out.csv")] == ["Q: a", "Q: b", "Q: c"]
    io.write(results, tmp_path / "plain.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "plain.jsonl").read_text().splitlines()]
    assert [x["answer"] for x in lines] == ["Q: a", "Q: b", "Q: c"]


def _batch_line(i, body, url="/v1/chat/completions"):
    return {"custom_id": f"task-{i}", "method": "POST", "url": url, "body": body}


#: The Batch API's line shapes (the spec in ../shared has no component for them).
BATCH_OUTPUT_LINE = {
    "type": "object",
    "required": ["id", "custom_id", "response", "error"],
    "properties": {
        "id": {"type": "string"}, "custom_id": {"type": ["string", "null"]},
        "response": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["status_code", "request_id", "body"],
            "properties": {"status_code": {"type": "integer"}, "request_id": {"type": "string"},
                           "body": {"type": "object"}}}]},
        "error": {"type": ["object", "null"]},
    },
}


async def test_batch_chat_file_round_trip_matches_the_openapi_shapes(tmp_path, service,
                                                                    validate_schema):
    import jsonschema

    bodies = [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {i}"}],
               "max_tokens": 20} for i in range(3)]
    lines = [_batch_line(i, b) for i, b in enumerate(bodies)]
    lines.insert(2, _batch_line(9, "not json at all"))
    for line in lines:
        if isinstance(line["body"], dict):
            assert validate_schema(line["body"], "CreateChatCompletionRequest") == []
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "{broken\n")
    summary = await io.run_file(path, tmp_path / "out.jsonl", chat(service, "unused {text}"))
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (summary.rows, summary.failed) == (5, 2)
    assert [x["custom_id"] for x in out] == ["task-0", "task-1", "task-9", "task-2", None]
    for x in out:
        jsonschema.validate(x, BATCH_OUTPUT_LINE)
        if x["response"] is not None:
            assert x["response"]["status_code"] == 200 and x["error"] is None
            assert validate_schema(x["response"]["body"], "CreateChatCompletionResponse") == []
        else:
            assert validate_schema(x["error"], "BatchError") == []
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "hi 0"
    assert "body is not JSON" in out[2]["error"]["message"]
    assert "line 5: not valid JSON" in out[4]["error"]["message"]


async def test_batch_embeddings_file_uses_the_endpoint_of_its_urls(tmp_path, service,
                                                                   validate_schema):
    body = {"model": "text-embedding-3-small", "input": "hello", "dimensions": 3}
    assert validate_schema(body, "CreateEmbeddingRequest") == []
    path = tmp_path / "batch.jsonl"
    path.write_text(json.dumps(_batch_line(0, body, url="/v1/embeddings")) + "\n")
    source = io.read(path)
    assert source.kind == "batch" and source.endpoint == "embeddings"
    await io.run_file(source, tmp_path / "out.jsonl",
                      service.embeddings(model="text-embedding-3-small"))
    line = json.loads((tmp_path / "out.jsonl").read_text())
    assert validate_schema(line["response"]["body"], "CreateEmbeddingResponse") == []


async def test_an_api_error_becomes_a_batch_response_with_its_status(tmp_path, sim,
                                                                    validate_schema):
    too_long = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 1_000_000}
    path = tmp_path / "batch.jsonl"
    path.write_text(json.dumps(_batch_line(0, too_long)) + "\n")
    async with OpenAIService(api_key="sk-test-io", base_url=sim.base_url) as svc:
        await io.run_file(path, tmp_path / "out.jsonl", chat(svc), attempts=1)
    line = json.loads((tmp_path / "out.jsonl").read_text())
    assert line["response"]["status_code"] == 400 and line["error"] is None
    assert validate_schema(line["response"]["body"], "ErrorResponse") == []


async def test_cookbook_requests_keep_their_metadata(tmp_path, service):
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps({"model": "gpt-4o-mini", "max_tokens": 20,
                                        "messages": [{"role": "user", "content": f"m{i}"}],
                                        "metadata": {"row_id": i}}) + "\n" for i in range(3)))
    await io.run_file(path, tmp_path / "out.csv", chat(service, "unused {text}"))
    rows = read_csv(tmp_path / "out.csv")
    assert [json.loads(r["metadata"]) for r in rows] == [{"row_id": i} for i in range(3)]
    assert [r["answer"] for r in rows] == ["m0", "m1", "m2"]


async def test_missing_file_or_unknown_output_format_sends_nothing(tmp_path, sim, service):
    before = sim.stats().requests
    with pytest.raises(InputError, match="not found"):
        await io.run_file(tmp_path / "nope.csv", tmp_path / "out.csv", chat(service))
    (tmp_path / "in.csv").write_text("text\na\n")
    with pytest.raises(InputError, match="unknown file format"):
        await io.run_file(tmp_path / "in.csv", tmp_path / "out.xlsx", chat(service))
    assert sim.stats().requests == before


def test_entry_of_an_unfinished_record_is_pending():
    from pipeline.core.record import Record

    e = io.entry(Record(index=2, row={"a": 1}))
    assert e.status == "pending" and e.index == 2
    assert not any(isinstance(v, float) and math.isnan(v) for v in e.cells())


def test_frames_line_records_up_by_index_whatever_their_order():
    from pipeline.core.record import Record
    from pipeline.core.request import Response

    def answered(i):
        return Record(index=i, response=Response(status=200, body={"choices": [
            {"message": {"content": f"a{i}"}}], "usage": {"prompt_tokens": 1,
                                                        "completion_tokens": 1,
                                                        "total_tokens": 2}}))

    records = [answered(3), answered(0), Record(index=1, error=ValueError("bad")),
               answered(9)]  # position 2 has no record; 9 is past the frame
    like = pd.DataFrame({"text": list("abcd")}, index=[10, 11, 12, 13])
    for out in (io.to_pandas(records, like), io.to_polars(records, pl.from_pandas(like))):
        frame = out if isinstance(out, pd.DataFrame) else out.to_pandas()
        assert list(frame["answer"].replace({float("nan"): None})) == ["a0", None, None, "a3"]
        assert list(frame["status"]) == ["succeeded", "failed", "pending", "succeeded"]
        assert list(frame["tokens"].fillna(-1)) == [2, -1, -1, 2]
        assert frame["error"].iloc[1] == "ValueError: bad"


async def test_a_column_of_ready_request_bodies_is_sent_as_it_is(tmp_path, service):
    bodies = [json.dumps({"model": "gpt-4o-mini", "max_tokens": 20,
                          "messages": [{"role": "user", "content": f"body {i}"}]})
              for i in range(3)]
    bodies[1] = "{not json"
    df = pd.DataFrame({"id": [7, 8, 9], "request": bodies}, index=["a", "b", "c"])
    source = io.read(df, request_column="request")
    assert source.ready_requests
    out = io.to_pandas(await run(source, chat(service, "unused {text}")), df)
    assert out.loc["a", "answer"] == "body 0" and out.loc["c", "answer"] == "body 2"
    assert pd.isna(out.loc["b", "answer"])
    assert "row 1, column 'request': not a JSON request body" in out.loc["b", "error"]
    with pytest.raises(InputError, match="no column 'payload'"):
        io.read(df, request_column="payload")


async def test_failed_rows_keep_their_input_columns_in_files(tmp_path, service):
    df = pd.DataFrame({"id": [1, 2], "request": ["{}", "[1]"]})
    source = io.read(df, request_column="request")
    await io.run_file(source, tmp_path / "out.csv", chat(service))
    rows = read_csv(tmp_path / "out.csv")
    assert [r["id"] for r in rows] == ["1", "2"]
    assert "must be a JSON object, not a list" in rows[1]["error"]


async def test_run_file_refuses_an_iterator_it_cannot_read_twice(tmp_path, service):
    with pytest.raises(InputError, match="reads its input twice"):
        await io.run_file(iter([{"text": "a"}]), tmp_path / "out.jsonl", chat(service))


# ------------------------------------------------------------------------------ issue 13
def write_lines(path, items):
    path.write_text("".join(json.dumps(x) + "\n" for x in items))


@pytest.mark.parametrize("body, endpoint", [
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "chat/completions"),
    ({"model": "m", "prompt": "x"}, "completions"),
    ({"model": "m", "input": "x"}, "embeddings"),
])
def test_the_endpoint_of_request_bodies_is_the_one_they_are_for(tmp_path, body, endpoint):
    write_lines(tmp_path / "in.jsonl", [{**body, "metadata": {"i": 0}}, body])
    source = io.read(tmp_path / "in.jsonl")
    assert source.kind == "requests" and source.endpoint == endpoint
    assert {r.row.path for r in source} == {endpoint}
    df = pd.DataFrame({"request": [json.dumps(body)] * 2})
    assert io.read(df, request_column="request").endpoint == endpoint


def test_request_bodies_for_mixed_endpoints_are_refused_unless_one_is_given(tmp_path):
    write_lines(tmp_path / "in.jsonl", [{"model": "m", "prompt": "x"},
                                        {"model": "m", "input": "x"}])
    with pytest.raises(InputError, match="several endpoints"):
        io.read(tmp_path / "in.jsonl")
    assert io.read(tmp_path / "in.jsonl", endpoint="completions").endpoint == "completions"
    with pytest.raises(InputError, match="several endpoints"):
        io.read(pd.DataFrame({"r": ['{"model": "m", "prompt": "x"}',
                                    '{"model": "m", "input": "x"}']}), request_column="r")


def test_a_body_that_names_no_endpoint_fails_alone(tmp_path):
    write_lines(tmp_path / "in.jsonl", [{"model": "m", "input": "x"}, {"model": "m"}])
    records = list(io.read(tmp_path / "in.jsonl"))
    assert records[0].error is None
    assert "cannot tell which endpoint this request body is for" in str(records[1].error)


async def test_a_cookbook_embeddings_file_gets_its_vectors_whatever_the_job(tmp_path, service):
    write_lines(tmp_path / "in.jsonl", [{"model": "text-embedding-3-small", "input": f"t{i}",
                                         "metadata": {"i": i}} for i in range(2)])
    await io.run_file(tmp_path / "in.jsonl", tmp_path / "out.jsonl", chat(service))
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(len(x["embedding"]) > 8 and x["status"] == "succeeded" for x in out)


def test_read_a_csv_in_another_encoding(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes("text\nna\u00efve \u20ac5\n".encode("cp1252"))
    with pytest.raises(InputError, match=r"is not UTF-8 text: byte 0xef at byte position 7 "
                                         r"\(line 2\).*encoding="):
        io.read(path)
    assert [r.row for r in io.read(path, encoding="cp1252")] == [{"text": "na\u00efve \u20ac5"}]
    with pytest.raises(InputError, match="unknown encoding 'klingon'"):
        io.read(path, encoding="klingon")


def test_read_jsonl_in_another_encoding(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes('{"text": "\u00e9t\u00e9"}\n'.encode("utf-16"))
    assert [r.row for r in io.read(path, encoding="utf-16")] == [{"text": "\u00e9t\u00e9"}]


def test_missing_pyarrow_is_a_clear_error_naming_the_extra(tmp_path, monkeypatch):
    from pipeline.core.extras import MissingExtraError

    pl.DataFrame({"text": ["a"]}).write_parquet(tmp_path / "in.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingExtraError) as caught:
        io.read(tmp_path / "in.parquet")
    assert str(caught.value) == ('reading Parquet needs pyarrow, which is not installed: '
                                 'pip install "ratelimited-pipeline[parquet]"')
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, ConfigError)
    with pytest.raises(MissingExtraError, match="writing Parquet needs pyarrow"):
        io.check_output(tmp_path / "out.parquet")
    with pytest.raises(MissingExtraError, match="writing Parquet needs pyarrow"):
        io.write([], tmp_path / "out.parquet")


async def test_parquet_is_written_with_pyarrow_alone(tmp_path, service, monkeypatch):
    import pyarrow.parquet as pq

    rows = [{"id": i, "text": f"t{i}", "extra": [1, "mixed"] if i else None} for i in range(3)]
    results = await run(rows, chat(service))
    monkeypatch.setitem(sys.modules, "polars", None)
    assert io.write(results, tmp_path / "out.parquet", rows) == 3
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["id"] for r in table] == [0, 1, 2]
    assert [r["answer"] for r in table] == ["Q: t0", "Q: t1", "Q: t2"]
    assert table[1]["extra"] == '[1, "mixed"]'  # a column of mixed types is kept as text
    assert io.write(results, tmp_path / "bare.parquet") == 3  # no source: the records' rows
    assert pq.read_table(tmp_path / "bare.parquet").column_names == [
        "id", "text", "extra", *io.RESULT_COLUMNS]


async def test_write_in_the_cookbook_format(tmp_path, service):
    rows = [{"text": "a"}, {"text": None}]
    slim = await run(rows, chat(service))  # answers only, by default: the format says how
    with pytest.raises(ConfigError, match=r"run\(\.\.\., keep_responses=True\)"):
        io.write(slim, tmp_path / "out.jsonl", rows, format="cookbook")
    results = await run(rows, chat(service), keep_responses=True)
    io.write(results, tmp_path / "out.jsonl", rows, format="cookbook")
    first, second = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert first[0]["messages"][-1]["content"] == "Q: a"
    assert first[1]["choices"][0]["message"]["content"] == "Q: a" and len(first) == 2
    assert second[0] is None and "value is missing" in second[1][0]
    path = tmp_path / "requests.jsonl"
    write_lines(path, [{"model": "gpt-4o-mini", "max_tokens": 5, "metadata": {"k": 1},
                        "messages": [{"role": "user", "content": "hi"}]}])
    summary = await io.run_file(path, tmp_path / "cook.jsonl", chat(service),
                                output_format="cookbook")
    assert summary.succeeded == 1
    [line] = [json.loads(x) for x in (tmp_path / "cook.jsonl").read_text().splitlines()]
    assert line[0] == {"model": "gpt-4o-mini", "max_tokens": 5,
                       "messages": [{"role": "user", "content": "hi"}]}
    assert line[1]["object"] == "chat.completion" and line[2] == {"k": 1}
    with pytest.raises(InputError, match="unknown output format 'xml'"):
        io.write(results, tmp_path / "out.jsonl", rows, format="xml")


async def test_a_misspelt_template_column_of_a_file_is_refused_before_sending(tmp_path, sim,
                                                                            service):
    (tmp_path / "in.csv").write_text("id,review\n1,good\n")
    before = sim.stats().requests
    with pytest.raises(TemplateKeyError, match=r"needs column 'reveiw', which '.*in\.csv' "
                                               r"lacks \(did you mean 'review'\?\)"):
        await io.run_file(tmp_path / "in.csv", tmp_path / "out.csv",
                          chat(service, "Classify: {reveiw}"))
    assert sim.stats().requests == before
