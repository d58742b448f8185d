"""Data in and out: frames and files in, results lined up with the input rows out.

Sources (:func:`read`): a pandas DataFrame (any index), a Polars DataFrame or LazyFrame
(streamed in batches), CSV/TSV, Parquet, JSONL (rows, OpenAI Batch input lines, or one request
body per line as in the OpenAI cookbook), or any iterable. Each row becomes
``Record(index=position, row=...)``; the job's template (or a column of ready messages) decides
what is sent, while Batch and cookbook lines are sent as they are.

Sinks: :func:`to_pandas` / :func:`to_polars` (the input columns plus ``answer`` (or
``embedding``), ``status``, ``error``, ``tokens``, ``latency``, row for row, index kept) and
:func:`write` (``.jsonl``, ``.csv``, ``.tsv``, ``.parquet`` written with pyarrow; the OpenAI
Batch output format for a Batch input; ``format="cookbook"`` for the OpenAI cookbook's
``[request, response, metadata]`` lines). ``results`` of :func:`pipeline.run` is already a
list in input order. What a finished record becomes in any of them (and in the journal of
a resumable run) is one typed :class:`ResultRow` (:func:`entry` makes it).

One module per format family, each reading and writing it: ``_jsonl``, ``_delimited`` (CSV,
TSV), ``_parquet``, ``_frames`` (pandas, Polars), ``_batch`` (OpenAI Batch input and output
lines), ``_cookbook`` (ready request bodies in, ``[request, response]`` lines out);
``_formats`` maps names to formats and dispatches :func:`read` and :func:`write`.

Bad input: a None/NaN prompt, a row without a column the template needs, a value that is not
valid text (a lone surrogate, ``"x\\ud800"``), an unreadable JSONL line or a body that is not
JSON fails that row (its ``error`` says why) and the others run. Before anything is sent: a
missing file, an unknown format, bytes the encoding cannot decode, two columns with one name
or request bodies for mixed endpoints raise :class:`~pipeline.errors.InputError`; a template
column a file's header or a frame lacks (``pipeline.run`` too: a frame, or a list of rows none
of which has it) raises :class:`~pipeline.errors.TemplateKeyError` (with a did-you-mean); a
format whose package is not installed raises :class:`~pipeline.core.extras.MissingExtraError`
(:func:`run_file` checks the output up front).

>>> import pandas as pd
>>> from pipeline import OpenAIService, io
>>> df = pd.DataFrame({"text": ["great", "awful"]}, index=["a", "b"])

Then, inside a coroutine::

    async with OpenAIService() as service:
        out = await io.run_frame(df, service.chat(model="gpt-4o-mini",
                                                    prompt="Sentiment of: {text}"))
        out.loc["a", "answer"], out.loc["b", "status"]

Resumable runs of files live in :mod:`pipeline.io.resume` (:func:`pipeline.io.resume.run_file`
journals results as they complete; rerun the same call after a crash and only the rest is
sent); ``pipeline.io.run_file`` is the same function, kept where earlier versions had it.

This package is named like ``pandas.io``: import it as ``from pipeline import io`` only where
the standard library's ``io`` is not needed beside it; ``pipeline.io.read(...)`` after
``import pipeline`` always works. Importing it registers frames and files as inputs of
:func:`pipeline.run` and frames as outputs of ``results.to_pandas()``/``to_polars()``.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.core.extras import require
from pipeline.http import Job
from pipeline.io._formats import (
    FORMATS,
    OUTPUT_FORMATS,
    check_output,
    format_of,
    read,
    write,
)
from pipeline.io._frames import to_pandas, to_polars
from pipeline.io._row import RESULT_COLUMNS, ResultRow, entry
from pipeline.io._source import BatchRequest, Source, check_columns, valid_text
from pipeline.runner import Results, register_frame_writer, register_rows_adapter, run

__all__ = [
    "FORMATS",
    "OUTPUT_FORMATS",
    "RESULT_COLUMNS",
    "BatchRequest",
    "ResultRow",
    "Source",
    "check_columns",
    "check_output",
    "entry",
    "format_of",
    "read",
    "run_frame",
    "to_pandas",
    "to_polars",
    "write",
]


async def run_frame(frame: Any, job: Job, **options: Any) -> Any:
    """Run every row of a pandas or Polars frame; return it with the result columns added.

    ``options`` are :func:`pipeline.run`'s (``cache=``, ``concurrency=``, ``progress=``,
    ``reasks=``, ``stages=``...). A job with a schema (``service.chat(..., schema=...)``)
    adds one typed column per answer field, and what your stages leave on ``record.data``
    comes last, as columns of its own.
    A pandas frame keeps its index (any index); a LazyFrame is streamed in and comes back as
    a DataFrame.

    For example, inside a coroutine (or a notebook cell)::

        out = await run_frame(df, service.chat(model="gpt-4o-mini", prompt="{text}"),
                              cache=".cache", progress=True)
    """
    source = read(frame)
    if source.kind not in ("pandas", "polars", "polars-lazy"):
        raise TypeError(f"run_frame() takes a pandas or Polars frame, not {type(frame).__name__}")
    check_columns(source, job.builder)  # a misspelt {column}: once, before anything is sent
    options.setdefault("keep_rows", False)  # the frame has them
    results = await run(source, job, **options)
    if source.kind == "pandas":
        return to_pandas(results, frame)
    return to_polars(results, frame)


def _rows_adapter(rows: Any) -> Any:
    # Frames and file paths become a Source (records numbered by position).
    module = type(rows).__module__.split(".")[0]
    if module in ("pandas", "polars") or isinstance(rows, os.PathLike | Source):
        return read(rows)
    return NotImplemented


def _input_rows(results: Results) -> list[dict[str, Any]]:
    return [dict(r.row) if isinstance(r.row, dict) else {"input": r.row}
            for r in results.scan()]


def _pandas_frame(results: Results, like: Any) -> Any:
    pd = require("pandas", feature="Results.to_pandas()", extra="pandas")
    if like is None:
        rows = _input_rows(results)
        try:
            like = pd.DataFrame(rows)
        except UnicodeEncodeError:  # a row that failed for a lone surrogate: escaped
            like = pd.DataFrame(valid_text(rows))
    return to_pandas(results, like)


def _polars_frame(results: Results, like: Any) -> Any:
    pl = require("polars", feature="Results.to_polars()", extra="polars")
    if like is None:
        rows = _input_rows(results)
        try:
            like = pl.DataFrame(rows, strict=False)
        except UnicodeEncodeError:  # Polars holds only valid text
            like = pl.DataFrame(valid_text(rows), strict=False)
    return to_polars(results, like)


register_rows_adapter(_rows_adapter)
register_frame_writer("pandas", _pandas_frame)
register_frame_writer("polars", _polars_frame)


def __getattr__(name: str) -> Any:
    # The resumable-run names of earlier versions: they live in pipeline.io.resume, a layer that
    # builds on this one (imported on first use, so there is no import cycle).
    if name in ("run_file", "Journal", "RunSummary", "write_journal"):
        import pipeline.io.resume

        return getattr(pipeline.io.resume, name)
    raise AttributeError(f"module 'pipeline.io' has no attribute {name!r}")
