"""Delimited text (CSV ``.csv``, TSV ``.tsv``): rows in, rows with their results out.

Read: a header line names the columns (two with one name are refused); an empty cell is
missing (``None``), as pandas and Polars read it; a line with the wrong number of fields is a
row that failed alone; one quick pass first counts the rows and finds bytes the encoding
cannot decode, before anything is sent. Written: the input's columns, then the result columns
(and a structured answer's fields, nested values as JSON text), lines ending in ``\\n``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from typing import Any

from pipeline.errors import InputError
from pipeline.io._row import ResultRow, data_cells, data_columns, error_text, field_names
from pipeline.io._source import (
    Bad,
    Source,
    input_columns,
    input_fields,
    text_encoding,
    undecodable,
    unique_columns,
)

__all__ = ["cell", "csv_rows", "write_csv"]


def csv_rows(path: str, delimiter: str, encoding: str | None = None
              ) -> tuple[list[str], int, Callable[[], Iterator[Any]]]:
    """The header, the row count and the rows of a delimited file."""
    codec = text_encoding(encoding)
    # One quick pass for the header and the row count (a progress bar with an ETA); it also
    # finds bytes the encoding cannot decode, before anything is sent.
    try:
        with open(path, newline="", encoding=codec) as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            count = sum(1 for values in reader if values)
    except UnicodeDecodeError:
        raise undecodable(path, codec) from None
    if not header:
        raise InputError(f"{path!r} is empty: a CSV file needs a header line")
    unique_columns(header, repr(path))

    def rows() -> Iterator[Any]:
        with open(path, newline="", encoding=codec) as f:
            reader = csv.reader(f, delimiter=delimiter)
            next(reader, None)
            width = len(header)
            for values in reader:
                if not values:
                    continue  # a blank line is not a row
                if len(values) != width:
                    yield Bad(InputError(
                        f"{path} line {reader.line_num}: {len(values)} fields, the header has "
                        f"{width}"), None)
                    continue
                # An empty cell is missing, as pandas and Polars read it.
                yield {k: (v if v != "" else None) for k, v in zip(header, values, strict=True)}
    return header, count, rows


def cell(value: Any) -> Any:
    """A value as a cell of a text file: empty for None, JSON for nested values."""
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def write_csv(tmp: str, source: Source, rows: dict[int, ResultRow], answer: str,
              delimiter: str, schema: Any = None) -> int:
    """Write the header and one line per input row of ``source`` to ``tmp``, each with its
    result from ``rows`` (by position)."""
    columns = input_columns(source)
    names = ResultRow.column_names(columns, embeddings=answer == "embedding")
    del names["cost"]  # files have no cost column
    fields = {} if schema is None else field_names(schema, [*columns, *names.values()])
    data = data_columns(rows.values(), [*columns, *names.values(), *fields.values()])
    count = 0
    # Lines end in \n, as pandas' to_csv writes them (the csv module's default is \r\n);
    # a lone surrogate in a row's input (that row failed, unsent) is written as \ud800.
    with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        writer = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        writer.writerow([*columns, *names.values(), *fields.values(), *data.values()])
        for record in source.records():
            inputs = input_fields(record)
            e = rows.get(record.index)
            if e is None:
                results: tuple[Any, ...] = (
                    None, "failed" if record.error is not None else "pending",
                    error_text(record.error), None, None)
            else:
                results = e.cells()
            row = [cell(inputs.get(c)) for c in columns] + [cell(v) for v in results]
            if schema is not None:
                cells = schema.columns(e.decoded if e is not None else None)
                row += [cell(cells[name]) for name in fields]
            if data:
                row += [cell(v) for v in data_cells(e, data)]
            writer.writerow(row)
            count += 1
    return count
