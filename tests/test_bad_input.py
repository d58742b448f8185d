"""Bad input against the simulator: text that is not valid, duplicate columns, values that
are not text in a template, a template column nobody has, and what io.write() writes.

The simulated model echoes the prompt it got, so what a template made of each value is read
from the answer; what was sent is counted from the simulator's log.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import json
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from pipeline import OpenAIService, io, run
from pipeline.errors import InputError, PayloadError, TemplateKeyError
from pipeline.payloads import Template
from pipeline.simulator import Simulator

KEY = "sk-test-bad-input-0123456789"
BAD = "x\ud800"  # a lone surrogate: UTF-8 cannot encode it


def echo(endpoint, body):
    return body["messages"][-1]["content"]


@pytest.fixture(scope="module")
def server():
    with Simulator(latency=0.0, responder=echo, api_key=KEY) as simulator:
        yield simulator


@pytest.fixture
def sim(server):
    server.reset()
    return server


@pytest.fixture
async def service(sim):
    async with OpenAIService(api_key=KEY, base_url=sim.base_url) as svc:
        yield svc


def chat(service, prompt="Q: {text}"):
    return service.chat(model="gpt-4o-mini", prompt=prompt, max_tokens=20)


def sent(sim):
    return len(sim.log())


def read_csv(path):
    return list(csv.DictReader(StringIO(Path(path).read_text(encoding="utf-8"))))


def statuses(results):
    return [r.status for r in results]


# ------------------------------------------------------------------- 19.6: not valid text
@pytest.mark.parametrize("cached", [False, True], ids=["no-cache", "cache"])
async def test_a_lone_surrogate_fails_its_row_alone(sim, service, tmp_path, cached):
    rows = [{"text": "a"}, {"text": BAD}, {"text": "c"}]
    cache = tmp_path / "cache" if cached else None  # the cache key encodes the body too
    results = await run(rows, chat(service), cache=cache)
    assert statuses(results) == ["succeeded", "failed", "succeeded"]
    assert [r.text for r in results] == ["Q: a", None, "Q: c"]
    error = results[1].error
    assert isinstance(error, PayloadError) and error.field == "text"
    assert "column 'text' is not valid text: character 1 is '\\ud800'" in str(error)
    assert results[1].attempts == 0
    assert sent(sim) == 2


async def test_a_lone_surrogate_in_a_pandas_frame_fails_its_row_alone(sim, service):
    index = ["p", "q", "r"]
    df = pd.DataFrame({"id": [1, 2, 3],
                       "text": pd.Series(["a", BAD, "c"], dtype=object, index=index)})
    out = await io.run_frame(df, chat(service))
    assert list(out["status"]) == ["succeeded", "failed", "succeeded"]
    assert "column 'text' is not valid text" in out.loc["q", "error"]
    assert out.loc["q", "text"] == BAD  # the user's own frame, as it was
    assert sent(sim) == 2


def test_polars_refuses_text_that_is_not_valid_itself():
    # So a Polars frame never brings a lone surrogate to run_frame.
    with pytest.raises(UnicodeEncodeError):
        pl.DataFrame({"text": ["a", BAD]})


async def test_a_lone_surrogate_in_a_column_of_ready_request_bodies(sim, service):
    bodies = [{"body": {"model": "gpt-4o-mini", "max_tokens": 5,
                        "messages": [{"role": "user", "content": t}]}} for t in ("a", BAD, "c")]
    results = await run(io.read(bodies, request_column="body"), chat(service))
    assert statuses(results) == ["succeeded", "failed", "succeeded"]
    assert "column 'body' at ['messages'][0]['content'] is not valid text" in str(
        results[1].error)
    assert sent(sim) == 2


async def test_a_lone_surrogate_from_an_odd_encoding_and_every_output_format(sim, service,
                                                                          tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,text\n1,hello\n2,x+2AA-\n3,bye\n")  # UTF-7: +2AA- is \ud800
    source = io.read(path, encoding="utf-7")
    results = await run(source, chat(service))
    assert statuses(results) == ["succeeded", "failed", "succeeded"]
    assert sent(sim) == 2
    # The failed row is written with the others, its bad character escaped.
    io.write(results, tmp_path / "out.csv", source)
    written = read_csv(tmp_path / "out.csv")
    assert [r["text"] for r in written] == ["hello", "x\\ud800", "bye"]
    assert "not valid text" in written[1]["error"]
    io.write(results, tmp_path / "out.jsonl", source)
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["status"] for x in lines] == ["succeeded", "failed", "succeeded"]
    io.write(results, tmp_path / "out.parquet", source)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out.parquet").column("text").to_pylist()[1] == "x\\ud800"
    assert results.to_pandas()["status"].tolist()[1] == "failed"
    assert results.to_polars()["text"].to_list()[1] == "x\\ud800"


# --------------------------------------------------------------- 19.12: duplicate columns
def test_duplicate_columns_in_a_csv_or_tsv_are_refused_naming_the_column(tmp_path):
    (tmp_path / "in.csv").write_text("id,text,text\n1,a,b\n")
    with pytest.raises(InputError, match=r"has 2 columns named 'text' \(columns 2 and 3\)"):
        io.read(tmp_path / "in.csv")
    (tmp_path / "in.tsv").write_text("text\tid\ttext\na\t1\tb\n")
    with pytest.raises(InputError, match=r"columns named 'text' \(columns 1 and 3\)"):
        io.read(tmp_path / "in.tsv")


def test_duplicate_columns_in_a_parquet_file_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table([pa.array(["a"]), pa.array(["b"])], names=["text", "text"])
    pq.write_table(table, tmp_path / "in.parquet")
    with pytest.raises(InputError, match="2 columns named 'text'"):
        io.read(tmp_path / "in.parquet")


async def test_a_pandas_frame_with_two_columns_of_one_name_is_refused_before_sending(
        sim, service):
    df = pd.DataFrame([["a", "b"]], columns=["text", "text"])
    with pytest.raises(InputError, match="the pandas frame has 2 columns named 'text'"):
        await io.run_frame(df, chat(service))
    with pytest.raises(InputError, match="columns named 'text'"):
        await run(df, chat(service))
    assert sent(sim) == 0


def test_polars_refuses_duplicate_columns_itself():
    with pytest.raises(pl.exceptions.DuplicateError):
        pl.DataFrame([pl.Series("text", ["a"]), pl.Series("text", ["b"])])


async def test_a_jsonl_object_that_repeats_a_key_keeps_its_last_value(sim, service, tmp_path):
    # As json.loads, pandas and Polars read it (documented in io.read).
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "first", "text": "last"}\n')
    results = await run(io.read(path), chat(service))
    assert results[0].text == "Q: last"


def pipeline_cli(*args):
    env = dict(os.environ, OPENAI_API_KEY=KEY)
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_refuses_a_csv_with_duplicate_columns_and_sends_nothing(sim, tmp_path):
    (tmp_path / "in.csv").write_text("text,text\na,b\n")
    result = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"),
                          "--template", "Q: {text}", "--model", "gpt-4o-mini",
                          "--base-url", sim.base_url, "--no-progress")
    assert result.returncode == 2, result.stderr
    assert "2 columns named 'text'" in result.stderr
    assert "Traceback" not in result.stderr
    assert sent(sim) == 0 and not (tmp_path / "out.csv").exists()


# ------------------------------------------------- 19.13: values that are not text in a template
async def test_what_a_template_makes_of_each_type_of_value(sim, service):
    values = [
        ["a", "é"],                                       # list: compact JSON, non-ASCII kept
        {"k": 1, "v": [True, None]},                      # dict: compact JSON
        ("t", 2),                                         # tuple: a JSON array
        b"caf\xc3\xa9",                                   # bytes: as UTF-8 text
        np.int64(7),                                      # numpy scalars: their Python value
        np.float32(0.1),
        np.array([1, 2]),                                 # a numpy array (a pandas list cell)
        datetime.datetime(2024, 5, 1, 12, 30),            # datetimes: ISO 8601
        pd.Timestamp("2024-05-01 12:30"),
        datetime.date(2024, 5, 1),
        np.datetime64("2024-05-01T12:30"),
        decimal.Decimal("1.50"),
        3, 0.5, True,
        [datetime.date(2024, 5, 1), np.int64(2), b"x"],   # nested: the same rules
    ]
    expected = ['["a","é"]', '{"k":1,"v":[true,null]}', '["t",2]', "café", "7", "0.1",
                "[1,2]", "2024-05-01T12:30:00", "2024-05-01T12:30:00", "2024-05-01",
                "2024-05-01T12:30", "1.50", "3", "0.5", "True", '["2024-05-01",2,"x"]']
    results = await run([{"v": v} for v in values], chat(service, "{v}"))
    assert [r.text for r in results] == expected
    assert sent(sim) == len(values)


async def test_bytes_that_are_not_utf8_and_missing_values_fail_their_row(sim, service):
    rows = [{"v": b"\xff\xfe"}, {"v": None}, {"v": float("nan")}, {"v": pd.NA},
            {"v": pd.NaT}, {"v": "ok"}]
    results = await run(rows, chat(service, "{v}"))
    assert statuses(results) == ["failed"] * 5 + ["succeeded"]
    assert all(isinstance(r.error, PayloadError) and r.error.field == "v"
               for r in results[:5])
    assert "holds bytes that are not UTF-8 text (byte 0xff at position 0)" in str(
        results[0].error)
    assert all("its value is missing" in str(r.error) for r in results[1:5])
    assert sent(sim) == 1


async def test_a_pandas_frame_with_list_nan_and_date_cells(sim, service):
    df = pd.DataFrame({"tags": [["a", "b"], None], "when": pd.to_datetime(["2024-05-01",
                                                                           "2024-05-02"])})
    out = await io.run_frame(df, chat(service, "{tags} at {when}"))
    assert out["answer"][0] == '["a","b"] at 2024-05-01T00:00:00'
    assert out["status"][1] == "failed" and "'tags'" in out["error"][1]  # never "nan"/"None"


def test_a_field_with_a_format_spec_or_conversion_gets_the_value_as_it_is():
    when = datetime.datetime(2024, 5, 1, 12, 30)
    template = Template("{when:%Y} {score:.1f} {tags!r} {day}")
    filled = template.fill({"when": when, "score": np.float64(0.25), "tags": ["a"], "day": when})
    assert filled == "2024 0.2 ['a'] 2024-05-01T12:30:00"


# --------------------------------------------- 20.14: a template column the rows lack, up front
async def test_run_refuses_a_frame_without_the_template_column_before_sending(sim, service):
    df = pd.DataFrame({"review": ["a", "b"]})
    with pytest.raises(TemplateKeyError, match=r"needs column 'text'.*its columns are 'review'"):
        await run(df, chat(service))
    with pytest.raises(TemplateKeyError, match="needs column 'text'"):
        await run(pl.DataFrame({"review": ["a"]}).lazy(), chat(service))
    assert sent(sim) == 0


async def test_run_refuses_a_list_of_rows_none_of_which_has_the_column(sim, service):
    rows = [{"review": "a", "id": 1}, {"review": "b", "id": 2}]
    with pytest.raises(TemplateKeyError) as caught:
        await run(rows, chat(service, "Q: {reveiw}"))
    message = str(caught.value)
    assert "needs column 'reveiw', which no row has (did you mean 'review'?)" in message
    assert "the first row has 'review', 'id'" in message
    assert caught.value.field == "reveiw"
    assert sent(sim) == 0


async def test_rows_that_differ_or_an_iterator_still_fail_one_by_one(sim, service):
    # The first row lacks the column but another has it: only the rows without it fail.
    results = await run([{"id": 1}, {"text": "b"}], chat(service))
    assert statuses(results) == ["failed", "succeeded"]
    assert isinstance(results[0].error, TemplateKeyError)
    # An iterator is not read ahead: every row fails alone, nothing is sent for them.
    results = await run(iter([{"id": 1}, {"id": 2}]), chat(service))
    assert statuses(results) == ["failed", "failed"]
    assert sent(sim) == 1


# ------------------------------------------------ 20.15: io.write without source= keeps the rows
async def test_write_without_a_source_writes_the_rows_own_columns(sim, service, tmp_path):
    rows = [{"id": 1, "text": "a"}, {"text": "b", "id": 2, "lang": "fr"}]
    results = await run(rows, chat(service))
    assert io.write(results, tmp_path / "w.csv") == 2
    written = read_csv(tmp_path / "w.csv")
    assert list(written[0])[:3] == ["id", "text", "lang"]  # first-seen order
    assert [(r["id"], r["text"], r["lang"], r["answer"]) for r in written] == [
        ("1", "a", "", "Q: a"), ("2", "b", "fr", "Q: b")]
    io.write(results, tmp_path / "w.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "w.jsonl").read_text().splitlines()]
    assert lines[1]["lang"] == "fr" and lines[1]["answer"] == "Q: b"


async def test_write_without_a_source_puts_string_rows_in_an_input_column(service, tmp_path):
    results = await run(["a", "b"], chat(service))
    io.write(results[1:], tmp_path / "w.csv")  # part of a run: written whole
    written = read_csv(tmp_path / "w.csv")
    assert [(r["input"], r["answer"]) for r in written] == [("b", "Q: b")]


# ----------------------------------------------------------- 20.18: line endings, "1 rows"
async def test_csv_and_tsv_outputs_end_lines_with_a_newline_only(service, tmp_path):
    results = await run([{"text": "a\nb"}, {"text": "c"}], chat(service))
    for name in ("w.csv", "w.tsv"):
        io.write(results, tmp_path / name)
        data = (tmp_path / name).read_bytes()
        assert b"\r" not in data and data.endswith(b"\n")
    reread = pd.read_csv(tmp_path / "w.tsv", sep="\t")
    assert reread["answer"].tolist() == ["Q: a\nb", "Q: c"]  # a newline in a cell survives


def test_cli_writes_tsv_with_newlines_and_says_1_row(sim, tmp_path):
    Path(tmp_path / "in.csv").write_text("text\nhello\n")
    result = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.tsv"),
                          "--template", "Q: {text}", "--model", "gpt-4o-mini",
                          "--base-url", sim.base_url, "--no-progress")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    # "1 rows" as a count, not inside a rate such as "55.1 rows/s" (that made this flaky).
    assert "wrote 1 row to" in output and not re.search(r"(?<![\d.,])1 rows\b", output)
    assert b"\r" not in (tmp_path / "out.tsv").read_bytes()
    assert sent(sim) == 1


def test_cli_runs_a_file_with_a_lone_surrogate_and_its_dry_run_counts_it(sim, tmp_path):
    (tmp_path / "in.csv").write_bytes(b"id,text\n1,hello\n2,x+2AA-\n3,bye\n")  # UTF-7
    args = ["run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"), "--encoding",
            "utf-7", "--template", "Q: {text}", "--model", "gpt-4o-mini", "--base-url",
            sim.base_url, "--no-progress"]
    dry = pipeline_cli(*args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "1 cannot be built" in dry.stdout and "Traceback" not in dry.stderr
    result = pipeline_cli(*args)
    assert result.returncode == 1, result.stderr  # a row failed: said, and written
    written = read_csv(tmp_path / "out.csv")
    assert [r["status"] for r in written] == ["succeeded", "failed", "succeeded"]
    assert "column 'text' is not valid text" in written[1]["error"]
    assert sent(sim) == 2
