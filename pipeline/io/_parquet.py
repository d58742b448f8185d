"""Parquet (``.parquet``, ``.pq``), read and written with pyarrow: rows in, in batches; the
input's table plus typed result columns out.

pyarrow, not Polars, for both: reading Parquet needs pyarrow (the parquet and pandas extras
bring it), and a run must never end in an ImportError after it has paid; :func:`check_output
<pipeline.io.check_output>` checks it is there before anything is sent. The input's columns
keep their types where the input has them; a structured answer's fields are typed columns (a
union of types, or nested values without one type, as JSON text).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pipeline.core.extras import require
from pipeline.errors import InputError
from pipeline.io._delimited import cell
from pipeline.io._row import ResultRow, aligned, data_cells, data_columns, field_names
from pipeline.io._source import (
    BATCH_SIZE,
    Source,
    input_columns,
    input_fields,
    unique_columns,
    valid_text,
)

__all__ = ["parquet_source", "write_parquet"]


def parquet_source(path: str) -> Source:
    """The rows of a Parquet file, read in batches (its schema and row count up front)."""
    pq: Any = require("pyarrow.parquet", feature="reading Parquet")
    try:
        meta = pq.ParquetFile(path)
    except Exception as exc:  # not a Parquet file, truncated...
        raise InputError(f"cannot read Parquet file {path!r}: {exc}") from None
    columns = unique_columns(list(meta.schema_arrow.names), repr(path))
    length = meta.metadata.num_rows

    def rows() -> Iterator[Any]:
        with pq.ParquetFile(path) as f:
            for batch in f.iter_batches(batch_size=BATCH_SIZE):
                yield from batch.to_pylist()
    return Source("parquet", rows, path=path, length=length, columns=columns)


def write_parquet(tmp: str, source: Source, rows: dict[int, ResultRow], answer: str,
                  schema: Any = None) -> int:
    """Write the input's table plus the result columns (from ``rows``, by position)."""
    pa: Any = require("pyarrow", feature="writing Parquet")
    pq: Any = require("pyarrow.parquet", feature="writing Parquet")
    inputs = _input_table(pa, pq, source)
    n = inputs.num_rows if inputs.num_columns else sum(1 for _ in source.records())
    by_position = aligned(rows.values(), n)
    names = ResultRow.column_names(inputs.column_names, embeddings=answer == "embedding")
    types = {"answer": pa.string(), "embedding": pa.list_(pa.float64()), "status": pa.string(),
             "error": pa.string(), "tokens": pa.int64(), "latency": pa.float64()}
    keys = (answer, "status", "error", "tokens", "latency")
    columns: list[list[Any]] = [[] for _ in keys]
    for e in by_position:
        results = e.cells() if e is not None else (None, "pending", None, None, None)
        for values, value in zip(columns, results, strict=True):
            values.append(value)
    table = inputs if inputs.num_columns else pa.table({})
    for key, values in zip(keys, columns, strict=True):
        column = pa.array(values, type=types[key])
        table = table.append_column(names[key], column) if table.num_columns else \
            pa.table({names[key]: column})
    if schema is not None:
        cells = [schema.columns(None if e is None else e.decoded) for e in by_position]
        for name, column_name in field_names(schema, table.column_names).items():
            kind = _arrow_type(pa, schema.column_types()[name])
            values = [row[name] for row in cells]
            if kind is None:  # a union, or nested values without one type: JSON text
                kind = pa.string()
                values = [None if v is None else json.dumps(v, ensure_ascii=False)
                          for v in values]
            table = table.append_column(column_name, pa.array(values, type=kind))
    data = data_columns(by_position, table.column_names)
    for key, column_name in data.items():  # your stages' record.data, last
        values = [data_cells(e, (key,))[0] for e in by_position]
        try:
            column = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            column = pa.array([None if v is None else json.dumps(v, ensure_ascii=False)
                               for v in values], type=pa.string())  # mixed: JSON text
        table = table.append_column(column_name, column) if table.num_columns else \
            pa.table({column_name: column})
    pq.write_table(table, tmp)
    return int(table.num_rows)


def _arrow_type(pa: Any, kind: Any) -> Any:
    """The Arrow type of an answer column (:class:`~pipeline.schema.ColumnType`),
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
    rows = [input_fields(r) for r in source.records()]
    columns: dict[str, Any] = {}
    for name in input_columns(source):
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            # Mixed types in one column, or text with a lone surrogate: kept as text (JSON
            # for nested values, the surrogate escaped).
            columns[name] = pa.array(
                [None if v is None else valid_text(str(cell(v))) for v in values],
                type=pa.string())
    return pa.table(columns)


