"""Sinks: records (or journal entries) out as frames and files, one result per input row.

Every sink works on *entries*: one plain dict per input position with the result columns

    answer (or embedding) | status | error | tokens | latency

so a finished run (a list of records) and a resumed one (entries read back from its journal)
are written by the same code. Results are lined up with the input by position, never by
completion order; an input column with the same name as a result column keeps its name and
the result column gets a ``_result`` suffix.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec

from pipeline.errors import APIError, InputError
from pipeline.io._sources import BatchRequest, Source, format_of, read
from pipeline.record import Record

__all__ = [
    "RESULT_COLUMNS",
    "batch_output_line",
    "entries_of",
    "entry",
    "to_pandas",
    "to_polars",
    "write",
    "write_entries",
]

#: The result columns added to the input's, in order (``answer`` is ``embedding`` for
#: embeddings jobs).
RESULT_COLUMNS = ("answer", "status", "error", "tokens", "latency")

_encoder = msgspec.json.Encoder(enc_hook=str)  # dates, decimals, numpy scalars: as text


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def entry(record: Record, *, embeddings: bool = False, keep_body: bool = False
          ) -> dict[str, Any]:
    """The result of one record as a plain dict (a journal line, a row of the output).

    ``keep_body`` adds what the Batch output format needs (status code, request id, body).

    >>> entry(Record(index=3, row="x"))
    {'i': 3, 'answer': None, 'status': 'pending', 'error': None, 'tokens': None, 'latency': None}
    """
    response = record.response
    usage = response.usage if response is not None else None
    out: dict[str, Any] = {
        "i": record.index,
        ("embedding" if embeddings else "answer"):
            record.embedding if embeddings else record.text,
        "status": record.status,
        "error": _error_text(record.error),
        "tokens": usage.total_tokens if usage is not None else None,
        "latency": round(response.latency, 4) if response is not None else None,
    }
    if keep_body:
        error = record.error
        if record.ok and response is not None:
            out["status_code"] = response.status
            out["request_id"] = response.headers.get("x-request-id", "")
            out["body"] = response.body
        elif isinstance(error, APIError) and error.status is not None:
            out["status_code"] = error.status
            out["request_id"] = error.headers.get("x-request-id", "")
            out["body"] = error.body if isinstance(error.body, dict) else {"error": {
                "message": str(error), "type": type(error).__name__, "code": error.code}}
    return out


def _is_embeddings(records: Iterable[Record]) -> bool:
    for record in records:
        if record.endpoint is not None:
            return record.endpoint.strip("/") == "embeddings"
    return False


def entries_of(records: Sequence[Record], *, keep_body: bool = False) -> list[dict[str, Any]]:
    """One entry per record, in input order (records may come in any order)."""
    embeddings = _is_embeddings(records)
    out = [entry(r, embeddings=embeddings, keep_body=keep_body) for r in records]
    out.sort(key=lambda e: e["i"])
    return out


def _answer_column(entries: Sequence[dict[str, Any] | None]) -> str:
    for e in entries:
        if e is not None:
            return "embedding" if "embedding" in e else "answer"
    return "answer"


def _result_names(columns: Iterable[str], answer: str) -> dict[str, str]:
    """Result column -> its name in the output (suffixed when the input has that name)."""
    taken = set(columns)
    names = {}
    for name in (answer, *RESULT_COLUMNS[1:]):
        names[name] = f"{name}_result" if name in taken else name
    return names


def _aligned(entries: Sequence[dict[str, Any] | None], n: int) -> list[dict[str, Any] | None]:
    """Entries by position 0..n-1 (a missing position is ``None``)."""
    out: list[dict[str, Any] | None] = [None] * n
    for e in entries:
        if e is not None and 0 <= e["i"] < n:
            out[e["i"]] = e
    return out


def _result_values(aligned: Sequence[dict[str, Any] | None], answer: str
                   ) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {name: [] for name in (answer, *RESULT_COLUMNS[1:])}
    for e in aligned:
        for name, values in columns.items():
            if e is None:
                values.append("pending" if name == "status" else None)
            else:
                values.append(e.get(name))
    return columns


# ------------------------------------------------------------------------------ frames
def to_pandas(results: Sequence[Record], like: Any) -> Any:
    """``like`` (a pandas DataFrame) plus the result columns, row for row, same index.

    >>> # frame = to_pandas(await pipeline.run(read(df), job), df)
    """
    entries = _aligned(entries_of(results), len(like))
    answer = _answer_column(entries)
    names = _result_names(map(str, like.columns), answer)
    import pandas as pd

    out = like.copy()
    for name, values in _result_values(entries, answer).items():
        # Positional: an array ignores the frame's index labels, so any index lines up.
        column = pd.array(values, dtype="Int64") if name == "tokens" else values
        out[names[name]] = column
    return out


def _polars_results(entries: Sequence[dict[str, Any] | None], answer: str,
                    names: dict[str, str]) -> Any:
    import polars as pl

    types: dict[str, Any] = {
        "answer": pl.String, "embedding": pl.List(pl.Float64), "status": pl.String,
        "error": pl.String, "tokens": pl.Int64, "latency": pl.Float64}
    values = _result_values(entries, answer)
    return pl.DataFrame([pl.Series(names[k], v, dtype=types[k]) for k, v in values.items()])


def to_polars(results: Sequence[Record], like: Any) -> Any:
    """``like`` (a Polars DataFrame or LazyFrame) plus the result columns, row for row.

    A LazyFrame is collected here, at the end of the run (the rows were streamed in batches).
    """
    frame = like.collect() if type(like).__name__ == "LazyFrame" else like
    entries = _aligned(entries_of(results), frame.height)
    answer = _answer_column(entries)
    names = _result_names(frame.columns, answer)
    return frame.hstack(_polars_results(entries, answer, names).get_columns())


# ------------------------------------------------------------------------------ files
def batch_output_line(e: dict[str, Any] | None, custom_id: str | None, index: int
                      ) -> dict[str, Any]:
    """One line of the OpenAI Batch output format for an entry kept with ``keep_body``."""
    line: dict[str, Any] = {"id": f"batch_req_{index:012d}", "custom_id": custom_id,
                            "response": None, "error": None}
    if e is not None and "status_code" in e:
        line["response"] = {"status_code": e["status_code"], "request_id": e["request_id"],
                            "body": e["body"]}
    elif e is None or e.get("error") is None:
        line["error"] = {"code": "not_run", "message": "this request was not sent yet"}
    else:
        kind, _, message = str(e["error"]).partition(": ")
        line["error"] = {"code": kind, "message": message or kind}
    return line


def _row_fields(row: Any) -> dict[str, Any]:
    if isinstance(row, dict):
        return row
    if isinstance(row, BatchRequest):
        if isinstance(row.source_row, dict):
            return row.source_row
        fields: dict[str, Any] = {}
        if row.custom_id is not None:
            fields["custom_id"] = row.custom_id
        fields["request"] = row.body
        if row.metadata is not None:
            fields["metadata"] = row.metadata
        return fields
    if row is None:
        return {}
    to_dict = getattr(row, "to_dict", None)
    return to_dict() if callable(to_dict) else {"input": row}


def _input_fields(record: Record) -> dict[str, Any]:
    """The input columns of a record's row ({} for a line that could not be read at all)."""
    if record.error is None or isinstance(record.row, dict | BatchRequest):
        return _row_fields(record.row)
    return {}


def _input_columns(source: Source) -> list[str]:
    if source.columns is not None:
        return list(source.columns)
    seen: dict[str, None] = {}
    for record in source.records():
        if record.error is None:
            for key in _row_fields(record.row):
                seen.setdefault(str(key), None)
    return list(seen)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def _rows_with_results(source: Source, entries: Sequence[dict[str, Any] | None]
                       ) -> Iterator[tuple[int, Any, dict[str, Any] | None]]:
    by_index = {e["i"]: e for e in entries if e is not None}
    for record in source.records():
        yield record.index, record, by_index.get(record.index)


def write_entries(entries: Sequence[dict[str, Any] | None], source: Source,
                  path: str | os.PathLike[str]) -> int:
    """Write the input's rows with their results to ``path`` (format from its extension).

    Written to a temporary file first and renamed, so ``path`` is never half written.
    JSONL output of an OpenAI Batch input is in the Batch output format. Returns the row count.
    """
    target = os.fspath(path)
    kind = format_of(target)
    answer = _answer_column(entries)
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(target))
    os.close(fd)
    try:
        if kind == "jsonl":
            count = _write_jsonl(tmp, source, entries, answer)
        elif kind in ("csv", "tsv"):
            count = _write_csv(tmp, source, entries, answer, "," if kind == "csv" else "\t")
        else:
            count = _write_parquet(tmp, source, entries, answer)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return count


def _write_jsonl(tmp: str, source: Source, entries: Sequence[dict[str, Any] | None],
                 answer: str) -> int:
    count = 0
    result_keys = (answer, *RESULT_COLUMNS[1:])
    with open(tmp, "wb") as f:
        for index, record, e in _rows_with_results(source, entries):
            if source.kind == "batch":
                custom_id = record.row.custom_id if isinstance(record.row, BatchRequest) else (
                    record.row.get("custom_id") if isinstance(record.row, dict) else None)
                line = batch_output_line(e, custom_id, index)
            else:
                line = dict(_row_fields(record.row))
                for key in result_keys:
                    name = f"{key}_result" if key in line else key
                    line[name] = e.get(key) if e is not None else (
                        "pending" if key == "status" else None)
                if e is None and record.error is not None:
                    line["status"], line["error"] = "failed", _error_text(record.error)
            f.write(_encoder.encode(line) + b"\n")
            count += 1
    return count


def _write_csv(tmp: str, source: Source, entries: Sequence[dict[str, Any] | None],
               answer: str, delimiter: str) -> int:
    columns = _input_columns(source)
    names = _result_names(columns, answer)
    count = 0
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow([*columns, *names.values()])
        for _, record, e in _rows_with_results(source, entries):
            fields = _input_fields(record)
            results = [e.get(k) if e is not None else None for k in names]
            if e is None:
                results[1] = "failed" if record.error is not None else "pending"
                results[2] = _error_text(record.error)
            writer.writerow([_cell(fields.get(c)) for c in columns] + [_cell(v) for v in results])
            count += 1
    return count


def _write_parquet(tmp: str, source: Source, entries: Sequence[dict[str, Any] | None],
                   answer: str) -> int:
    import polars as pl

    if source.kind == "parquet" and source.path is not None:
        inputs = pl.read_parquet(source.path)
    elif source.kind == "polars":
        inputs = source.data
    elif source.kind == "polars-lazy":
        inputs = source.data.collect()
    else:
        rows = [_input_fields(r) for r in source.records()]
        columns = _input_columns(source)
        try:
            inputs = pl.DataFrame(rows, schema=columns or None, infer_schema_length=None)
        except (TypeError, ValueError, pl.exceptions.PolarsError):  # mixed types in a column
            inputs = pl.DataFrame({c: [_cell(r.get(c)) or None for r in rows]
                                   for c in columns})
        if not columns:
            inputs = pl.DataFrame(schema={})
    aligned = _aligned(entries, inputs.height)
    names = _result_names(inputs.columns, answer)
    frame = inputs.hstack(_polars_results(aligned, answer, names).get_columns())
    frame.write_parquet(tmp)
    return int(frame.height)


def write(results: Sequence[Record], path: str | os.PathLike[str], source: Any = None) -> int:
    """Write a run's records, lined up with ``source`` (a :class:`Source`, file or frame).

    Without ``source`` the JSONL output is one result per record (no input columns).

    >>> # write(await pipeline.run(read("rows.csv"), job), "answers.parquet", "rows.csv")
    """
    if source is None:
        source = Source("iterable", lambda: iter([None] * len(results)), length=len(results))
    elif not isinstance(source, Source):
        source = read(source)
    if format_of(path) not in ("jsonl", "csv", "tsv", "parquet"):
        raise InputError(f"cannot write {os.fspath(path)!r}")
    keep_body = source.kind == "batch"
    return write_entries(entries_of(results, keep_body=keep_body), source, path)
