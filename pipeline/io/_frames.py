"""Frames, pandas and Polars: rows in, the frame with its result columns out.

Read: a pandas DataFrame row by row (any index; two columns with one name are refused), a
Polars DataFrame in slices, a LazyFrame streamed in batches (never collected whole). Out:
:func:`to_pandas` / :func:`to_polars` add ``answer`` (or ``embedding``), ``status``, ``error``,
``tokens``, ``latency`` (and ``cost`` for a run's ``Results``) row for row by position, so
any index lines up; a structured answer adds one typed column per field
(:meth:`~pipeline.schema.OutputSchema.column_types`): nulls for a failed row, so even a
frame whose rows all failed has the columns, typed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from pipeline.core.record import Record
from pipeline.io._row import (
    RESULT_COLUMNS,
    ResultRow,
    answer_column,
    data_cells,
    data_columns,
    each,
    entry,
    field_names,
)
from pipeline.io._source import BATCH_SIZE
from pipeline.runner import Results

__all__ = ["pandas_rows", "polars_rows", "to_pandas", "to_polars"]


def pandas_rows(frame: Any) -> Callable[[], Iterator[dict[str, Any]]]:
    """The rows of a pandas frame as dicts, in order (the index is not a column)."""
    columns = list(frame.columns)

    def rows() -> Iterator[dict[str, Any]]:
        for values in frame.itertuples(index=False, name=None):
            yield dict(zip(columns, values, strict=True))
    return rows


def polars_rows(frame: Any, lazy: bool) -> Callable[[], Iterator[dict[str, Any]]]:
    """The rows of a Polars frame as dicts, in slices (a LazyFrame in streamed batches)."""

    def rows() -> Iterator[dict[str, Any]]:
        if not lazy:
            for part in frame.iter_slices(BATCH_SIZE):
                yield from part.iter_rows(named=True)
            return
        # Streamed in batches: a LazyFrame larger than memory is never collected whole.
        batches = frame.collect_batches(chunk_size=BATCH_SIZE, lazy=True)
        try:
            for part in batches:
                yield from part.iter_rows(named=True)
        finally:
            stop = getattr(batches, "stop", None)
            if callable(stop):
                stop()
    return rows


def _result_columns(results: Sequence[Record | ResultRow], n: int
                    ) -> tuple[str, dict[str, list[Any]], list[Any]]:
    """The answer column's name, the result columns and the decoded values, by input
    position 0..n-1 (a position without a result is pending), made one row at a time
    (not from a list of rows: memory for a million of them)."""
    answer = answer_column(each(results))
    embeddings = answer == "embedding"
    names = (answer, *RESULT_COLUMNS[1:])
    columns: list[list[Any]] = [[None] * n for _ in names]
    columns[1] = ["pending"] * n
    decoded: list[Any] = [None] * n
    for item in each(results):
        e = item if type(item) is ResultRow else entry(item, embeddings=embeddings)
        i = e.index
        if 0 <= i < n:
            for values, value in zip(columns, e.cells(), strict=True):
                values[i] = value
            decoded[i] = e.decoded
    return answer, dict(zip(names, columns, strict=True)), decoded


def _data_columns(results: Sequence[Record] | Sequence[ResultRow], n: int,
                  taken: Iterable[str]) -> dict[str, list[Any]]:
    """Columns from what the user's stages left on ``record.data``, by input position
    0..n-1 (``None`` where a row has none), named by :func:`data_columns`. Empty when no
    record carries data.

    >>> from pipeline.core.record import Record
    >>> a, b = Record(index=0, row={}), Record(index=1, row={})
    >>> a.data = {"positive": True, "status": "checked"}
    >>> _data_columns([a, b], 2, ["text", "status"])
    {'positive': [True, None], 'status_data': ['checked', None]}
    """
    names = data_columns(each(results), taken)
    if not names:
        return {}
    keys = list(names)
    columns: list[list[Any]] = [[None] * n for _ in keys]
    for item in each(results):
        if 0 <= item.index < n:
            for values, value in zip(columns, data_cells(item, keys), strict=True):
                values[item.index] = value
    return dict(zip(names.values(), columns, strict=True))


def to_pandas(results: Sequence[Record] | Sequence[ResultRow], like: Any, schema: Any = None,
              *, costs: Sequence[float | None] | None = None) -> Any:
    """``like`` (a pandas DataFrame) plus the result columns, row for row, same index.

    ``results`` are a run's records (or :class:`ResultRow` values), in any order. With a
    ``schema`` (default: ``results.schema``), one typed column per answer field. ``costs``:
    USD per row for a ``cost`` column (default: a run's ``Results`` give their own; other
    records get no cost column).

    For example, inside a coroutine (or a notebook cell)::

        frame = to_pandas(await pipeline.run(read(df), job), df)
    """
    answer, columns, decoded = _result_columns(results, len(like))
    names = ResultRow.column_names(map(str, like.columns), embeddings=answer == "embedding")
    import pandas as pd

    out = like.copy()
    for name, values in columns.items():
        # Positional: an array ignores the frame's index labels, so any index lines up.
        column = pd.array(values, dtype="Int64") if name == "tokens" else \
            _vectors(values) if name == "embedding" else values
        out[names[name]] = column
    if costs is None and isinstance(results, Results):
        costs = results.costs(len(out))
    if costs is not None:  # USD per row; <NA> where the price is unknown
        out[names["cost"]] = pd.array(costs, dtype="Float64")
    if schema is None:
        schema = getattr(results, "schema", None)
    if schema is not None:  # one typed column per answer field, after the others
        fields = schema.to_pandas(decoded)
        for name, column in field_names(schema, map(str, out.columns)).items():
            out[column] = fields[name].array  # positional, and keeps the nullable dtype
    for name, values in _data_columns(results, len(out), map(str, out.columns)).items():
        out[name] = values  # what the user's own stages left on record.data, last
    return out


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


def _polars_results(values: dict[str, list[Any]], names: dict[str, str]) -> Any:
    import polars as pl

    types: dict[str, Any] = {
        "answer": pl.String, "embedding": pl.List(pl.Float64), "status": pl.String,
        "error": pl.String, "tokens": pl.Int64, "latency": pl.Float64}
    if "embedding" in values:
        types["embedding"] = _vector_type(values["embedding"])
    return pl.DataFrame([pl.Series(names[k], v, dtype=types[k]) for k, v in values.items()])


def to_polars(results: Sequence[Record] | Sequence[ResultRow], like: Any, schema: Any = None,
              *, costs: Sequence[float | None] | None = None) -> Any:
    """``like`` (a Polars DataFrame or LazyFrame) plus the result columns, row for row; with
    a ``schema`` (default: ``results.schema``), one typed column per answer field; ``costs``
    as for :func:`to_pandas`.

    A LazyFrame is collected here, at the end of the run (the rows were streamed in batches).
    """
    frame = like.collect() if type(like).__name__ == "LazyFrame" else like
    answer, columns, decoded = _result_columns(results, frame.height)
    names = ResultRow.column_names(frame.columns, embeddings=answer == "embedding")
    out = frame.hstack(_polars_results(columns, names).get_columns())
    if costs is None and isinstance(results, Results):
        costs = results.costs(out.height)
    if costs is not None:  # USD per row; null where the price is unknown
        import polars as pl

        out = out.with_columns(pl.Series(names["cost"], costs, dtype=pl.Float64))
    if schema is None:
        schema = getattr(results, "schema", None)
    if schema is not None:
        fields = schema.to_polars(decoded)
        named = field_names(schema, out.columns)
        out = out.hstack([fields[name].alias(column) for name, column in named.items()])
    data = _data_columns(results, out.height, out.columns)
    if data:  # what the user's own stages left on record.data, last
        import polars as pl

        out = out.hstack([_polars_series(pl, name, values) for name, values in data.items()])
    return out


def _polars_series(pl: Any, name: str, values: list[Any]) -> Any:
    """A Polars column of the user's values: typed when Polars can type them (numbers,
    strings, lists, dicts as structs), else kept as Python objects rather than refused."""
    try:
        return pl.Series(name, values, strict=False)
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
        return pl.Series(name, values, dtype=pl.Object)
