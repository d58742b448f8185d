"""Output files are byte for byte what they were: every output format (JSONL, CSV, TSV, the
OpenAI Batch output, the cookbook lines, Parquet's table), the journal lines and the frames,
for fixed records (answered, failed with and without an HTTP status, not run, an embedding,
a structured answer, a lone surrogate, an input column named like a result column).

The expected files in ``tests/golden/io/`` were written by the code before the io package
was reshaped by format (issue 22); ``PIPELINE_WRITE_GOLDEN=1`` writes them again."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import msgspec
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

import pipeline
from pipeline import io
from pipeline.core.record import Record
from pipeline.core.request import APIRequest, Response
from pipeline.errors import ServerError

GOLDEN = pathlib.Path(__file__).parent / "golden" / "io"
WRITE = os.environ.get("PIPELINE_WRITE_GOLDEN") == "1"


class Review(msgspec.Struct):
    label: str
    score: int
    topics: list[str]


def _chat(i: int, text: str, *, value: object = None) -> Record:
    body = {"id": f"chatcmpl-{i}", "choices": [{"index": 0, "message": {
        "role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    request = APIRequest(path="chat/completions", body={
        "model": "m", "messages": [{"role": "user", "content": f"row {i}"}]})
    return Record(index=i, path="chat/completions", request=request, value=value,
                  response=Response(status=200, body=body, latency=0.123456 + i,
                                    headers={"x-request-id": f"req-{i}"}))


def _failed_http(i: int) -> Record:
    error = ServerError("the server had an error", status=500, code="server_error",
                        body={"error": {"message": "boom", "type": "server_error"}},
                        headers={"x-request-id": f"req-{i}"})
    return Record(index=i, path="chat/completions", error=error)


def _records() -> list[Record]:
    # Out of input order on purpose; position 3 has no record (not run).
    return [_chat(2, "neutral"), _chat(0, "positive \u00e9"), _failed_http(1),
            Record(index=4, path="chat/completions", error=ValueError("bad, \"quoted\"")),
            Record(index=5, path="chat/completions", error=ValueError())]


ROWS = [{"text": "great", "status": "vip", "n": 1}, {"text": "awful", "status": None, "n": 2},
        {"text": "ok\nfine", "status": "x", "n": 3}, {"text": "later", "status": "y", "n": 4},
        {"text": "x\ud800", "status": "z", "n": 5}, {"text": "", "status": "w", "n": 6}]


def _check(name: str, data: bytes) -> None:
    path = GOLDEN / name
    if WRITE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert data == path.read_bytes(), f"{name} differs from what was written before"


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "tsv"])
def test_files_of_rows_are_written_as_before(tmp_path, suffix):
    out = tmp_path / f"out.{suffix}"
    assert io.write(_records(), out, ROWS) == 6
    _check(f"rows.{suffix}", out.read_bytes())
    mine = tmp_path / f"own.{suffix}"  # no source: the records' own rows
    io.write(_records()[:3], mine)
    _check(f"own.{suffix}", mine.read_bytes())


def test_parquet_holds_the_same_table_as_before(tmp_path):
    out = tmp_path / "out.parquet"
    io.write(_records(), out, ROWS)
    table = pq.read_table(out)
    _check("rows.parquet.json", json.dumps({"schema": str(table.schema).split("\n-- ")[0],
                                            "rows": table.to_pylist()}, indent=1).encode())


def test_structured_answers_are_written_as_before(tmp_path):
    schema = pipeline.output_schema(Review)
    records = [_chat(0, "{}", value=Review("good", 4, ["a", "b"])), _failed_http(1)]
    for suffix in ("jsonl", "csv"):
        out = tmp_path / f"out.{suffix}"
        io.write(records, out, ROWS[:3], schema=schema)
        _check(f"schema.{suffix}", out.read_bytes())
    out = tmp_path / "out.parquet"
    io.write(records, out, ROWS[:3], schema=schema)
    _check("schema.parquet.json", json.dumps(pq.read_table(out).to_pylist()).encode())


def _batch_input(tmp_path: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path("batch.jsonl")
    lines = [{"custom_id": f"c-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "m", "messages": [{"role": "user", "content": f"row {i}"}]}}
             for i in range(4)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    return path


def _requests_input(tmp_path: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path("requests.jsonl")
    lines = [{"model": "m", "messages": [{"role": "user", "content": f"row {i}"}],
              **({"metadata": {"row": i}} if i % 2 == 0 else {})} for i in range(4)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "[1, 2]\n")
    return path


def test_batch_and_cookbook_outputs_are_written_as_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # error messages name the input as given: a relative path
    records = _records()[:3]
    for name, source in (("batch", _batch_input(tmp_path)),
                         ("requests", _requests_input(tmp_path))):
        for layout in ("batch", "cookbook", "jsonl", "csv"):
            suffix = "csv" if layout == "csv" else "jsonl"
            out = tmp_path / f"{name}-{layout}.{suffix}"
            io.write(records, out, source, format=layout)
            _check(f"{name}-{layout}.{suffix}", out.read_bytes())
    # A cookbook output of template rows keeps the request that was sent.
    out = tmp_path / "rows-cookbook.jsonl"
    io.write(records, out, ROWS, format="cookbook")
    _check("rows-cookbook.jsonl", out.read_bytes())


def test_journal_lines_are_encoded_as_before():
    encode = msgspec.json.Encoder(enc_hook=str).encode
    lines = []
    for keep in (False, True):
        for record in _records():
            lines.append(encode(io.entry(record, keep_body=keep, keep_request=keep)))
    embedding = Record(index=0, path="embeddings", response=Response(status=200, body={
        "data": [{"index": 0, "embedding": [0.5, 0.25]}], "usage": {"total_tokens": 2}}))
    lines.append(encode(io.entry(embedding, embeddings=True)))
    lines.append(encode(io.entry(Record(index=1, path="embeddings", error=ValueError("x")),
                                 embeddings=True)))
    lines.append(encode(io.entry(_chat(3, "{}", value=Review("bad", 1, [])))))
    _check("journal.jsonl", b"\n".join(lines) + b"\n")


def test_frames_are_built_as_before():
    like = pd.DataFrame({k: [r[k] for r in ROWS[:4]] for k in ("text", "status", "n")},
                        index=list("abcd"))
    out = io.to_pandas(_records(), like)
    text = out.to_csv() + "\n" + "\n".join(f"{k} {v}" for k, v in out.dtypes.items())
    polars = io.to_polars(_records(), pl.from_pandas(like))
    text += "\n" + polars.write_csv() + "\n" + str(polars.schema)
    vectors = [Record(index=i, path="embeddings", response=Response(status=200, body={
        "data": [{"index": 0, "embedding": [0.5 * i, 1.0]}]})) for i in range(2)]
    frame = pd.DataFrame({"text": ["a", "b", "c"]})
    text += "\n" + repr(list(io.to_pandas(vectors, frame)["embedding"]))
    text += "\n" + str(io.to_polars(vectors, pl.from_pandas(frame)).schema)
    _check("frames.txt", text.encode())
    assert hashlib.sha256(text.encode()).hexdigest()  # the golden file is text


def test_a_journal_written_before_is_read_back_whole(tmp_path):
    from pipeline.io.resume import Journal

    lines = (GOLDEN / "journal.jsonl").read_bytes().splitlines()
    path = tmp_path / "out.csv.journal"
    path.write_bytes(b'{"journal":1,"fingerprint":"f"}\n' + b"\n".join(lines) + b"\n")
    rows = Journal(path, fingerprint="f").read()
    encode = msgspec.json.Encoder(enc_hook=str).encode
    # The latest line of a position wins, and each row is the line it was read from.
    latest = {json.loads(line)["i"]: line for line in lines}
    assert {i: encode(row) for i, row in rows.items()} == latest
    assert all(isinstance(row, io.ResultRow) for row in rows.values())
