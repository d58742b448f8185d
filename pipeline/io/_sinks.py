"""Sinks: records (or journal entries) out as frames and files, one result per input row.

Every sink works on *entries*: one plain dict per input position with the result columns

    answer (or embedding) | status | error | tokens | latency

so a finished run (a list of records) and a resumed one (entries read back from its journal)
are written by the same code. A structured answer (a job with ``schema=``) adds ``value`` to
its entry (the decoded answer as JSON), and every sink then adds one typed column per field
of the schema (:meth:`~pipeline.payloads.structured.OutputSchema.column_types`): nulls for a
failed row, so even a frame whose rows all failed has the columns, typed.

Results are lined up with the input by position, never by completion order; an input column
with the same name as a result column keeps its name and the result column gets a ``_result``
suffix.

Output formats (:data:`OUTPUT_FORMATS`): the file formats, each the input's columns plus the
result columns, and two more JSONL layouts for tools that read them: ``batch`` (the OpenAI
Batch output format, the default for a Batch input) and ``cookbook`` (the lines the OpenAI
cookbook's ``api_request_parallel_processor.py`` writes: ``[request, response]``, or
``[request, [error strings]]`` for a failure, with the input line's ``metadata`` third when it
had one). Parquet is written with pyarrow; :func:`check_output` says before a run whether the
output can be written at all.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec

from pipeline.core.extras import require
from pipeline.core.record import Record
from pipeline.core.request import APIRequest
from pipeline.errors import APIError, InputError
from pipeline.io._sources import FORMATS, BatchRequest, Source, format_of, read
from pipeline.runner import Results

__all__ = [
    "OUTPUT_FORMATS",
    "RESULT_COLUMNS",
    "batch_output_line",
    "check_output",
    "cookbook_line",
    "entries_of",
    "entry",
    "to_pandas",
    "to_polars",
    "valid_text",
    "write",
    "write_entries",
]

#: The result columns added to the input's, in order (``answer`` is ``embedding`` for
#: embeddings jobs).
RESULT_COLUMNS = ("answer", "status", "error", "tokens", "latency")

#: What an output can be written as: the file formats, and the JSONL layouts ``batch`` and
#: ``cookbook`` (see the module docs).
OUTPUT_FORMATS = ("jsonl", "csv", "tsv", "parquet", "batch", "cookbook")
_LAYOUTS = {"batch": "jsonl", "cookbook": "jsonl"}  # layout -> its file format

_encoder = msgspec.json.Encoder(enc_hook=str)  # dates, decimals, numpy scalars: as text


def check_output(path: str | os.PathLike[str], format: str | None = None,
                 source: Source | None = None) -> str:
    """The output format for ``path`` (one of :data:`OUTPUT_FORMATS`), after checking that it
    can be written: a known format that fits the file name, and its packages installed.

    Call it before sending anything: a results file that cannot be written after the run
    means paying for answers that are then lost. ``format`` overrides the extension; without
    it a ``.jsonl`` output of a Batch ``source`` is ``"batch"``. Raises
    :class:`~pipeline.errors.InputError` or :class:`~pipeline.core.extras.MissingExtraError`.

    >>> check_output("answers.jsonl", "cookbook")
    'cookbook'
    >>> check_output("answers.csv", "cookbook")
    Traceback (most recent call last):
    ...
    pipeline.errors.InputError: the cookbook format is JSONL: name the output .jsonl, not \
'answers.csv'
    """
    target = os.fspath(path)
    if format is None:
        kind = format_of(target)
        layout = "batch" if kind == "jsonl" and source is not None and \
            source.kind == "batch" else kind
    elif format in OUTPUT_FORMATS:
        layout = format
        kind = _LAYOUTS.get(format, format)
        named = FORMATS.get(os.path.splitext(target)[1].lower())
        if named is not None and named != kind:
            what = f"the {format} format" if format in _LAYOUTS else format.upper()
            raise InputError(f"{what} is {kind.upper()}: name the output .{kind}, "
                             f"not {target!r}")
    else:
        raise InputError(f"unknown output format {format!r}; known: {', '.join(OUTPUT_FORMATS)}")
    if kind == "parquet":
        require("pyarrow.parquet", feature="writing Parquet")
    return layout


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def entry(record: Record, *, embeddings: bool = False, keep_body: bool = False,
          keep_request: bool = False) -> dict[str, Any]:
    """The result of one record as a plain dict (a journal line, a row of the output).

    ``keep_body`` adds what the Batch and cookbook formats need (status code, request id,
    body); ``keep_request`` the request body sent (for the cookbook format, when the input
    rows are not request bodies already).

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
    if keep_request:
        out["request"] = record.request.body if record.request is not None else None
    if record.value is not None and record.error is None:
        out["value"] = _json_value(record.value)
    return out


def _json_value(value: Any) -> Any:
    """A decoded answer (Struct, pydantic model, JSON value) as JSON-like builtins."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", by_alias=True)
    return msgspec.to_builtins(value, enc_hook=str)


def _field_names(schema: Any, taken: Iterable[str]) -> dict[str, str]:
    """Answer field column -> its name in the output (suffixed when already taken)."""
    used = set(taken)
    return {name: f"{name}_result" if name in used else name for name in schema.column_types()}


def _values(aligned: Sequence[dict[str, Any] | None]) -> list[Any]:
    return [None if e is None else e.get("value") for e in aligned]


def _is_embeddings(records: Iterable[Record]) -> bool:
    for record in records:
        if record.path is not None:
            return record.path.strip("/") == "embeddings"
    return False


def entries_of(records: Sequence[Record], *, keep_body: bool = False,
               keep_request: bool = False) -> list[dict[str, Any]]:
    """One entry per record, in input order (records may come in any order)."""
    embeddings = _is_embeddings(records)
    out = [entry(r, embeddings=embeddings, keep_body=keep_body, keep_request=keep_request)
           for r in records]
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
def to_pandas(results: Sequence[Record], like: Any, schema: Any = None) -> Any:
    """``like`` (a pandas DataFrame) plus the result columns, row for row, same index.

    With a ``schema`` (default: ``results.schema``), one typed column per answer field.

    For example, inside a coroutine (or a notebook cell)::

        frame = to_pandas(await pipeline.run(read(df), job), df)
    """
    entries = _aligned(entries_of(results), len(like))
    answer = _answer_column(entries)
    names = _result_names(map(str, like.columns), answer)
    import pandas as pd

    out = like.copy()
    for name, values in _result_values(entries, answer).items():
        # Positional: an array ignores the frame's index labels, so any index lines up.
        column = pd.array(values, dtype="Int64") if name == "tokens" else \
            _vectors(values) if name == "embedding" else values
        out[names[name]] = column
    if isinstance(results, Results):  # USD per row; <NA> where the price is unknown
        out[_cost_name(out.columns)] = pd.array(results.costs(len(out)), dtype="Float64")
    if schema is None:
        schema = getattr(results, "schema", None)
    if schema is not None:  # one typed column per answer field, after the others
        fields = schema.to_pandas(_values(entries))
        for name, column in _field_names(schema, map(str, out.columns)).items():
            out[column] = fields[name].array  # positional, and keeps the nullable dtype
    return out


def _cost_name(columns: Iterable[str]) -> str:
    return "cost_result" if "cost" in set(columns) else "cost"  # the input has one


def _vectors(values: list[Any]) -> Any:
    """An embedding column for pandas: one float64 numpy array per row (``None`` for a row
    without a vector), in an object array so pandas keeps one array per cell.

    >>> column = _vectors([[0.5, 1.0], None])
    >>> column[0], column[1]
    (array([0.5, 1. ]), None)
    """
    import numpy as np

    column = np.empty(len(values), dtype=object)
    for i, vector in enumerate(values):  # one by one: equal-length lists would broadcast
        column[i] = None if vector is None else np.asarray(vector, dtype=np.float64)
    return column


def _vector_type(values: list[Any]) -> Any:
    """Polars' type for an embedding column: an Array of the vectors' one length (fixed
    dimensions, as a model gives), else a List of floats.

    >>> _vector_type([[0.5, 1.0], None]), _vector_type([[0.5], [1.0, 2.0]])
    (Array(Float64, shape=(2,)), List(Float64))
    """
    import polars as pl

    lengths = {len(v) for v in values if isinstance(v, list)}
    if len(lengths) == 1 and (size := lengths.pop()) > 0:
        return pl.Array(pl.Float64, size)
    return pl.List(pl.Float64)


def _polars_results(entries: Sequence[dict[str, Any] | None], answer: str,
                    names: dict[str, str]) -> Any:
    import polars as pl

    types: dict[str, Any] = {
        "answer": pl.String, "embedding": pl.List(pl.Float64), "status": pl.String,
        "error": pl.String, "tokens": pl.Int64, "latency": pl.Float64}
    values = _result_values(entries, answer)
    if "embedding" in values:
        types["embedding"] = _vector_type(values["embedding"])
    return pl.DataFrame([pl.Series(names[k], v, dtype=types[k]) for k, v in values.items()])


def to_polars(results: Sequence[Record], like: Any, schema: Any = None) -> Any:
    """``like`` (a Polars DataFrame or LazyFrame) plus the result columns, row for row; with
    a ``schema`` (default: ``results.schema``), one typed column per answer field.

    A LazyFrame is collected here, at the end of the run (the rows were streamed in batches).
    """
    frame = like.collect() if type(like).__name__ == "LazyFrame" else like
    entries = _aligned(entries_of(results), frame.height)
    answer = _answer_column(entries)
    names = _result_names(frame.columns, answer)
    out = frame.hstack(_polars_results(entries, answer, names).get_columns())
    if isinstance(results, Results):  # USD per row; null where the price is unknown
        import polars as pl

        out = out.with_columns(pl.Series(_cost_name(out.columns), results.costs(out.height),
                                         dtype=pl.Float64))
    if schema is None:
        schema = getattr(results, "schema", None)
    if schema is not None:
        fields = schema.to_polars(_values(entries))
        names = _field_names(schema, out.columns)
        out = out.hstack([fields[name].alias(column) for name, column in names.items()])
    return out


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


def cookbook_line(e: dict[str, Any] | None, record: Record) -> list[Any]:
    """One line of the cookbook format: ``[request, response]`` (``[request, [error
    strings]]`` for a failure), with the input line's ``metadata`` third when it has one
    (the cookbook leaves out an empty one too). ``record`` is the input row's record, ``e``
    its entry kept with ``keep_body`` (and ``keep_request`` for rows that are not requests).

    >>> row = BatchRequest(path="embeddings", body={"model": "m", "input": "hi"},
    ...                    metadata={"id": 7})
    >>> cookbook_line({"i": 0, "status": "failed", "error": "ServerError: 500"},
    ...               Record(index=0, row=row))
    [{'model': 'm', 'input': 'hi'}, ['ServerError: 500'], {'id': 7}]
    """
    row = record.row
    if isinstance(row, BatchRequest):
        request: Any = row.body
        metadata = row.metadata
    else:
        request = e.get("request") if e is not None else None
        metadata = None
    if e is not None and e.get("status") == "succeeded" and "body" in e:
        response: Any = e["body"]
    elif e is not None and e.get("error") is not None:
        response = [e["error"]]
    elif record.error is not None:  # a line that could not be read at all
        response = [_error_text(record.error)]
    else:
        response = ["not run: this request was not sent yet"]
    return [request, response, metadata] if metadata else [request, response]


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
    if isinstance(row, APIRequest):
        return {"request": row.body}
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


def valid_text(value: Any) -> Any:
    """``value`` with every lone surrogate in its text (in lists and dicts too) written as
    its escape, ``\\ud800``: what files, Arrow and Polars hold in place of text that UTF-8
    cannot encode. Such a row failed with a ``PayloadError`` and was never sent.

    >>> valid_text({"text": "x\\ud800", "n": [1, "ok"]})
    {'text': 'x\\\\ud800', 'n': [1, 'ok']}
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {valid_text(k): valid_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [valid_text(v) for v in value]
    return value


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
                  path: str | os.PathLike[str], format: str | None = None, *,
                  schema: Any = None) -> int:
    """Write the input's rows with their results to ``path``, in ``format`` (one of
    :data:`OUTPUT_FORMATS`; default from the extension, and the Batch output format for a
    JSONL output of an OpenAI Batch input). With a ``schema``
    (:class:`~pipeline.payloads.structured.OutputSchema`), the answer's fields as columns
    too (typed in Parquet; nested values as JSON text in CSV).

    Written to a temporary file first and renamed, so ``path`` is never half written.
    Returns the row count.
    """
    target = os.fspath(path)
    layout = check_output(target, format, source)
    kind = _LAYOUTS.get(layout, layout)
    answer = _answer_column(entries)
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(target))
    os.close(fd)
    try:
        if kind == "jsonl":
            count = _write_jsonl(tmp, source, entries, answer, layout, schema)
        elif kind in ("csv", "tsv"):
            count = _write_csv(tmp, source, entries, answer, "," if kind == "csv" else "\t",
                               schema)
        else:
            count = _write_parquet(tmp, source, entries, answer, schema)
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
                 answer: str, layout: str, schema: Any = None) -> int:
    count = 0
    result_keys = (answer, *RESULT_COLUMNS[1:])
    with open(tmp, "wb") as f:
        for index, record, e in _rows_with_results(source, entries):
            line: Any
            if layout == "cookbook":
                line = cookbook_line(e, record)
            elif layout == "batch":
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
                if schema is not None:
                    cells = schema.columns(e.get("value") if e is not None else None)
                    for name, column in _field_names(schema, line).items():
                        line[column] = cells[name]
            try:
                encoded = _encoder.encode(line)
            except UnicodeEncodeError:  # a row that failed for a lone surrogate
                encoded = _encoder.encode(valid_text(line))
            f.write(encoded + b"\n")
            count += 1
    return count


def _write_csv(tmp: str, source: Source, entries: Sequence[dict[str, Any] | None],
               answer: str, delimiter: str, schema: Any = None) -> int:
    columns = _input_columns(source)
    names = _result_names(columns, answer)
    fields = {} if schema is None else _field_names(schema, [*columns, *names.values()])
    count = 0
    # Lines end in \n, as pandas' to_csv writes them (the csv module's default is \r\n);
    # a lone surrogate in a row's input (that row failed, unsent) is written as \ud800.
    with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        writer = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        writer.writerow([*columns, *names.values(), *fields.values()])
        for _, record, e in _rows_with_results(source, entries):
            inputs = _input_fields(record)
            results = [e.get(k) if e is not None else None for k in names]
            if e is None:
                results[1] = "failed" if record.error is not None else "pending"
                results[2] = _error_text(record.error)
            row = [_cell(inputs.get(c)) for c in columns] + [_cell(v) for v in results]
            if schema is not None:
                cells = schema.columns(e.get("value") if e is not None else None)
                row += [_cell(cells[name]) for name in fields]
            writer.writerow(row)
            count += 1
    return count


def _write_parquet(tmp: str, source: Source, entries: Sequence[dict[str, Any] | None],
                   answer: str, schema: Any = None) -> int:
    # pyarrow, not Polars: reading Parquet already needs pyarrow (the parquet and pandas
    # extras bring it), and a run must never end in an ImportError after it has paid.
    pa: Any = require("pyarrow", feature="writing Parquet")
    pq: Any = require("pyarrow.parquet", feature="writing Parquet")
    inputs = _input_table(pa, pq, source)
    n = inputs.num_rows if inputs.num_columns else sum(1 for _ in source.records())
    aligned = _aligned(entries, n)
    names = _result_names(inputs.column_names, answer)
    types = {"answer": pa.string(), "embedding": pa.list_(pa.float64()), "status": pa.string(),
             "error": pa.string(), "tokens": pa.int64(), "latency": pa.float64()}
    table = inputs if inputs.num_columns else pa.table({})
    for key, values in _result_values(aligned, answer).items():
        column = pa.array(values, type=types[key])
        table = table.append_column(names[key], column) if table.num_columns else \
            pa.table({names[key]: column})
    if schema is not None:
        cells = [schema.columns(v) for v in _values(aligned)]
        for name, column_name in _field_names(schema, table.column_names).items():
            kind = _arrow_type(pa, schema.column_types()[name])
            values = [row[name] for row in cells]
            if kind is None:  # a union, or nested values without one type: JSON text
                kind = pa.string()
                values = [None if v is None else json.dumps(v, ensure_ascii=False)
                          for v in values]
            table = table.append_column(column_name, pa.array(values, type=kind))
    pq.write_table(table, tmp)
    return int(table.num_rows)


def _arrow_type(pa: Any, kind: Any) -> Any:
    """The Arrow type of an answer column (:class:`~pipeline.payloads.structured.ColumnType`),
    or ``None`` when it has none (a union of types)."""
    scalar = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(),
              "boolean": pa.bool_()}
    if kind.kind in scalar:
        return scalar[kind.kind]
    if kind.kind == "list" and kind.items is not None:
        inner = _arrow_type(pa, kind.items)
        return None if inner is None else pa.list_(inner)
    if kind.kind == "object" and kind.fields:
        fields = [(name, _arrow_type(pa, t)) for name, t in kind.fields.items()]
        if all(t is not None for _, t in fields):
            return pa.struct(fields)
    return None


def _input_table(pa: Any, pq: Any, source: Source) -> Any:
    """The input's columns as an Arrow table (types kept where the input has them)."""
    if source.kind == "parquet" and source.path is not None:
        return pq.read_table(source.path)
    if source.kind in ("polars", "polars-lazy"):
        frame = source.data.collect() if source.kind == "polars-lazy" else source.data
        return frame.to_arrow()
    if source.kind == "pandas":
        try:
            return pa.Table.from_pandas(source.data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            pass  # a column of mixed types: column by column below
    rows = [_input_fields(r) for r in source.records()]
    columns: dict[str, Any] = {}
    for name in _input_columns(source):
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            # Mixed types in one column, or text with a lone surrogate: kept as text (JSON
            # for nested values, the surrogate escaped).
            columns[name] = pa.array(
                [None if v is None else valid_text(str(_cell(v))) for v in values],
                type=pa.string())
    return pa.table(columns)


def write(results: Sequence[Record], path: str | os.PathLike[str], source: Any = None, *,
          format: str | None = None, schema: Any = None) -> int:
    """Write a run's records, lined up with ``source`` (a :class:`Source`, file or frame).

    ``format`` is one of :data:`OUTPUT_FORMATS` (default: from the extension; ``"batch"``
    for a ``.jsonl`` output of a Batch input). ``schema`` (default: ``results.schema``) adds
    the answer's fields as columns. ``format="cookbook"`` writes the OpenAI
    cookbook's ``[request, response, metadata]`` lines, so parsers written for it work
    unchanged. Without ``source`` the input columns come from the records' own rows, one
    output row per record in input order: a dict row's keys are columns (in the order first
    seen), a string row is an ``input`` column, a ready request a ``request`` column (its
    body as JSON).

    For example, inside a coroutine (or a notebook cell)::

        write(await pipeline.run(read("rows.csv"), job), "answers.parquet", "rows.csv")
        write(results, "out.jsonl", "requests.jsonl", format="cookbook")
    """
    own_rows = source is None
    if source is None:
        # The records' own rows are the input: one output row per record, in index order.
        records = sorted(results, key=lambda r: r.index)
        source = Source("iterable", lambda: iter([r.row for r in records]), length=len(records))
    elif not isinstance(source, Source):
        source = read(source)
    layout = check_output(path, format, source)
    keep = layout in ("batch", "cookbook")
    entries = entries_of(results, keep_body=keep, keep_request=layout == "cookbook")
    if own_rows:  # renumbered by position, so the records of part of a run are written whole
        for position, e in enumerate(entries):
            e["i"] = position
    if schema is None:
        schema = getattr(results, "schema", None)
    return write_entries(entries, source, path, layout, schema=schema)
