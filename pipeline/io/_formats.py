"""The formats: which file name means which format, and :func:`read` / :func:`write`, which
hand each format to its module (``_jsonl``, ``_delimited``, ``_parquet``, ``_frames``, with
the Batch and cookbook layouts in ``_batch`` and ``_cookbook``).

Output formats (:data:`OUTPUT_FORMATS`): the file formats, each the input's columns plus the
result columns, and two more JSONL layouts for tools that read them: ``batch`` (the OpenAI
Batch output format, the default for a Batch input) and ``cookbook`` (the lines the OpenAI
cookbook's ``api_request_parallel_processor.py`` writes). :func:`check_output` says before a
run whether the output can be written at all; every output is written to a temporary file
first and renamed, so it is never half written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from pipeline.core.extras import require
from pipeline.core.record import Record
from pipeline.errors import ConfigError, InputError
from pipeline.io._cookbook import with_request_column
from pipeline.io._delimited import csv_rows, write_csv
from pipeline.io._frames import pandas_rows, polars_rows
from pipeline.io._jsonl import jsonl_source, write_jsonl
from pipeline.io._parquet import parquet_source, write_parquet
from pipeline.io._row import ResultRow, answer_column, each, rows_of
from pipeline.io._source import Source, check_file, unique_columns

__all__ = ["FORMATS", "OUTPUT_FORMATS", "check_output", "format_of", "read", "write",
           "write_rows"]

#: File extensions and the format each one means.
FORMATS: dict[str, str] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
    ".parquet": "parquet", ".pq": "parquet",
}

#: What an output can be written as: the file formats, and the JSONL layouts ``batch`` and
#: ``cookbook`` (see the module docs).
OUTPUT_FORMATS = ("jsonl", "csv", "tsv", "parquet", "batch", "cookbook")
_LAYOUTS = {"batch": "jsonl", "cookbook": "jsonl"}  # layout -> its file format


def format_of(path: str | os.PathLike[str]) -> str:
    """The format a file name means (``"csv"``, ``"jsonl"``...), or an :class:`InputError`.

    >>> format_of("data/rows.ndjson")
    'jsonl'
    """
    suffix = Path(path).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        known = ", ".join(sorted(FORMATS))
        raise InputError(f"unknown file format {suffix or '(no extension)'!r} of "
                         f"{os.fspath(path)!r}; known extensions: {known}") from None


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


# ------------------------------------------------------------------------------ read()
def read(data: Any, *, format: str | None = None, endpoint: str | None = None,
         request_column: str | None = None, encoding: str | None = None) -> Source:
    """A :class:`Source` for a file path, a pandas or Polars (lazy) frame, or any iterable.

    Files: ``.csv``, ``.tsv``, ``.parquet``, ``.jsonl``/``.ndjson`` (or ``format=``). A JSONL file
    of OpenAI Batch input lines (``{"custom_id", "method", "url", "body"}``) or of request bodies
    (the cookbook format, with an optional ``"metadata"``) gives ready requests; other JSONL
    gives one row per object. ``request_column`` names a column of ready request bodies (dicts
    or JSON text) to send as they are, the other columns kept for the output. ``endpoint`` sets
    the endpoint path of cookbook lines and request columns (default: from the bodies:
    ``messages`` chat, ``prompt`` completions, ``input`` embeddings; bodies for several
    endpoints, or one that says none, are refused). ``encoding`` is that of a CSV, TSV or JSONL
    file (default UTF-8). A missing file, an unknown format, a file the encoding cannot decode,
    two columns with one name (CSV, TSV, Parquet, a pandas frame; Polars refuses them itself),
    a missing request column or bodies for mixed endpoints raise
    :class:`~pipeline.errors.InputError` before anything is sent. A JSONL object that repeats
    a key keeps its last value, as ``json.loads``, pandas and Polars read it. A Parquet file
    without pyarrow installed raises :class:`~pipeline.core.extras.MissingExtraError`.

    >>> import pandas as pd
    >>> source = read(pd.DataFrame({"text": ["a", "b"]}, index=[10, 20]))
    >>> [(r.index, r.row) for r in source]
    [(0, {'text': 'a'}), (1, {'text': 'b'})]
    """
    source = _read(data, format, endpoint, encoding)
    if request_column is not None:
        return with_request_column(source, request_column, endpoint)
    return source


def _read(data: Any, format: str | None, endpoint: str | None, encoding: str | None
          ) -> Source:
    if isinstance(data, Source):
        return data
    if isinstance(data, str | os.PathLike):
        path = os.fspath(data)
        kind = format or format_of(path)
        check_file(path)
        if kind in ("csv", "tsv"):
            columns, count, rows = csv_rows(path, "," if kind == "csv" else "\t", encoding)
            return Source(kind, rows, path=path, columns=columns, length=count)
        if kind == "parquet":
            return parquet_source(path)
        if kind == "jsonl":
            return jsonl_source(path, endpoint, encoding)
        raise InputError(f"unknown format {kind!r}; known: {sorted(set(FORMATS.values()))}")
    module = type(data).__module__.split(".")[0]
    name = type(data).__name__
    if module == "pandas" and name == "DataFrame":
        columns = unique_columns([str(c) for c in data.columns], "the pandas frame")
        return Source("pandas", pandas_rows(data), data=data, length=len(data),
                      columns=columns)
    if module == "polars" and name == "DataFrame":
        return Source("polars", polars_rows(data, lazy=False), data=data, length=data.height,
                      columns=list(data.columns))
    if module == "polars" and name == "LazyFrame":
        return Source("polars-lazy", polars_rows(data, lazy=True), data=data,
                      columns=list(data.collect_schema().names()))
    if isinstance(data, AsyncIterable):
        raise InputError("read() takes files, frames and iterables; pass an async iterable "
                         "straight to pipeline.run()")
    if isinstance(data, Iterable) and not isinstance(data, str | bytes | dict):
        items = data
        length = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        return Source("iterable", lambda: iter(items), data=data, length=length)
    raise InputError(f"cannot read rows from {name}: give a file path, a pandas or Polars "
                     "frame, or an iterable of rows")


def write_rows(rows: Iterable[ResultRow | None], source: Source,
               path: str | os.PathLike[str], format: str | None = None, *,
               schema: Any = None) -> int:
    """Write the input's rows with their results (``rows``, lined up by
    :attr:`~pipeline.io.ResultRow.index`) to ``path``, in ``format`` (one of
    :data:`OUTPUT_FORMATS`; default from the extension, and the Batch output format for a
    JSONL output of an OpenAI Batch input). With a ``schema``
    (:class:`~pipeline.schema.OutputSchema`), the answer's fields as columns
    too (typed in Parquet; nested values as JSON text in CSV).

    Written to a temporary file first and renamed, so ``path`` is never half written.
    Returns the row count.
    """
    target = os.fspath(path)
    layout = check_output(target, format, source)
    kind = _LAYOUTS.get(layout, layout)
    by_index = {e.index: e for e in rows if e is not None}
    answer = answer_column(by_index.values())
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(target))
    os.close(fd)
    try:
        if kind == "jsonl":
            count = write_jsonl(tmp, source, by_index, answer, layout, schema)
        elif kind in ("csv", "tsv"):
            count = write_csv(tmp, source, by_index, answer, "," if kind == "csv" else "\t",
                              schema)
        else:
            count = write_parquet(tmp, source, by_index, answer, schema)
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
        records = sorted(each(results), key=lambda r: r.index)
        source = Source("iterable", lambda: iter([r.row for r in records]), length=len(records))
    elif not isinstance(source, Source):
        source = read(source)
    layout = check_output(path, format, source)
    keep = layout in ("batch", "cookbook")
    if keep and getattr(results, "responses_kept", True) is False:
        raise ConfigError(
            f"the {layout} format holds each whole response (and the request), which "
            f"pipeline.run keeps only when asked: run(..., keep_responses=True)")
    rows = rows_of(results, keep_body=keep, keep_request=layout == "cookbook")
    if own_rows:  # renumbered by position, so the records of part of a run are written whole
        rows = [msgspec.structs.replace(e, index=position) for position, e in enumerate(rows)]
    if schema is None:
        schema = getattr(results, "schema", None)
    return write_rows(rows, source, path, layout, schema=schema)
