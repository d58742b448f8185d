"""JSONL (``.jsonl``, ``.ndjson``): rows in, rows with their results out.

A JSONL file is read as one of three kinds, told from its first object: OpenAI Batch input
lines (:mod:`pipeline.io._batch`), request bodies (the cookbook's, :mod:`pipeline.io._cookbook`)
or plain rows, one object per line. Written out, each input row is one line: its input fields
plus the result columns (the ``jsonl`` layout), or a Batch output line (``batch``), or a
cookbook line (``cookbook``). Blank lines are not rows; a line that is not JSON is a row that
failed alone.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import Any

import msgspec

from pipeline.errors import InputError
from pipeline.io._batch import (
    batch_line,
    batch_output_line,
    custom_id_of,
    first_batch_endpoint,
    is_batch_line,
)
from pipeline.io._cookbook import common_endpoint, cookbook_line, is_request_line, request_line
from pipeline.io._row import (
    RESULT_COLUMNS,
    ResultRow,
    data_cells,
    data_columns,
    error_text,
    field_names,
)
from pipeline.io._source import Bad, Source, json_decode, row_fields, text_encoding, valid_text

__all__ = ["jsonl_source", "write_jsonl"]

_encoder = msgspec.json.Encoder(enc_hook=str)  # dates, decimals, numpy scalars: as text


def _jsonl_kind(path: str, encoding: str | None) -> str:
    """``batch``, ``requests`` or ``jsonl``, from the first line that decodes to an object."""
    for _, line in _lines(path, encoding):
        try:
            first = json_decode(line)
        except msgspec.DecodeError:
            continue
        if not isinstance(first, dict):
            continue
        if is_batch_line(first):
            return "batch"
        if is_request_line(first):
            return "requests"
        return "jsonl"
    return "jsonl"


def _lines(path: str, encoding: str | None) -> Iterator[tuple[int, bytes]]:
    """``(line number, UTF-8 bytes)`` per line that is not blank."""
    codec = None if encoding is None else text_encoding(encoding)
    if codec is None or codecs.lookup(codec).name == "utf-8":
        with open(path, "rb") as f:  # bytes straight to the JSON decoder, which reads UTF-8
            for number, line in enumerate(f, 1):
                if line.strip():  # blank lines are not rows
                    yield number, line
        return
    with open(path, encoding=codec, errors="replace", newline="") as text:
        for number, decoded in enumerate(text, 1):
            if decoded.strip():
                yield number, decoded.encode()


def jsonl_source(path: str, endpoint: str | None, encoding: str | None = None) -> Source:
    """The rows of a JSONL file (its kind told from the first object)."""
    kind = _jsonl_kind(path, encoding)

    def rows() -> Iterator[Any]:
        for number, line in _lines(path, encoding):
            where = f"{path} line {number}"
            try:
                value = json_decode(line)
            except msgspec.DecodeError as exc:
                text = line.decode("utf-8", "replace").strip()
                yield Bad(InputError(f"{where}: not valid JSON ({exc})"), text[:200])
                continue
            if kind == "batch":
                yield batch_line(value, where)
            elif kind == "requests":
                yield request_line(value, where, endpoint)
            elif isinstance(value, dict):
                yield value
            else:
                yield Bad(InputError(f"{where}: a row must be a JSON object, "
                                     f"not {type(value).__name__}"), value)

    found_endpoint = endpoint
    if kind == "batch" and found_endpoint is None:
        found_endpoint = first_batch_endpoint(rows())
    elif kind == "requests" and found_endpoint is None:
        found_endpoint = common_endpoint(_decoded_lines(path, encoding), repr(path))
    with open(path, "rb") as f:
        count = sum(1 for line in f if line.strip())
    return Source(kind, rows, path=path, endpoint=found_endpoint, length=count)


def _decoded_lines(path: str, encoding: str | None) -> Iterator[tuple[str, Any]]:
    for number, line in _lines(path, encoding):
        try:
            yield f"line {number}", json_decode(line)
        except msgspec.DecodeError:
            continue  # fails alone on its row


def write_jsonl(tmp: str, source: Source, rows: dict[int, ResultRow], answer: str,
                layout: str, schema: Any = None) -> int:
    """Write one line per input row of ``source`` to ``tmp`` in ``layout`` (``jsonl``,
    ``batch`` or ``cookbook``), each with its result from ``rows`` (by position)."""
    count = 0
    data = list(data_columns(rows.values(), ())) if layout == "jsonl" else []
    with open(tmp, "wb") as f:
        for record in source.records():
            index = record.index
            e = rows.get(index)
            line: Any
            if layout == "cookbook":
                line = cookbook_line(e, record)
            elif layout == "batch":
                line = batch_output_line(e, custom_id_of(record.row), index)
            else:
                line = dict(row_fields(record.row))
                cells = e.cells() if e is not None else (None, "pending", None, None, None)
                for key, value in zip((answer, *RESULT_COLUMNS[1:]), cells, strict=True):
                    line[f"{key}_result" if key in line else key] = value
                if e is None and record.error is not None:
                    line["status"], line["error"] = "failed", error_text(record.error)
                if schema is not None:
                    values = schema.columns(e.decoded if e is not None else None)
                    for name, column in field_names(schema, line).items():
                        line[column] = values[name]
                if data:  # your stages' record.data, last
                    for key, value in zip(data, data_cells(e, data), strict=True):
                        line[f"{key}_data" if key in line else key] = value
            try:
                encoded = _encoder.encode(line)
            except UnicodeEncodeError:  # a row that failed for a lone surrogate
                encoded = _encoder.encode(valid_text(line))
            f.write(encoded + b"\n")
            count += 1
    return count
