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
list in input order.

Bad input: a None/NaN prompt, a row without a column the template needs, an unreadable JSONL
line or a body that is not JSON fails that row (its ``error`` says why) and the others run.
Before anything is sent: a missing file, an unknown format, bytes the encoding cannot decode
or request bodies for mixed endpoints raise :class:`~pipeline.errors.InputError`; a template
column a file's header or a frame lacks raises :class:`~pipeline.errors.TemplateKeyError`
(with a did-you-mean); a format whose package is not installed raises
:class:`~pipeline._extras.MissingExtraError` (:func:`run_file` checks the output up front).

>>> import pandas as pd
>>> from pipeline import OpenAIService, io
>>> df = pd.DataFrame({"text": ["great", "awful"]}, index=["a", "b"])
>>> # async with OpenAIService() as service:
>>> #     out = await io.run_frame(df, service.chat(model="gpt-4o-mini",
>>> #                                                 prompt="Sentiment of: {text}"))
>>> #     out.loc["a", "answer"], out.loc["b", "status"]

Resumable runs of files: :func:`run_file` journals results as they complete (see
:mod:`pipeline.io._journal`); rerun the same call after a crash and only the rest is sent.
"""

from __future__ import annotations

from typing import Any

from pipeline.io._journal import Journal, RunSummary, run_file, write_journal
from pipeline.io._sinks import (
    OUTPUT_FORMATS,
    RESULT_COLUMNS,
    check_output,
    entry,
    to_pandas,
    to_polars,
    write,
)
from pipeline.io._sources import FORMATS, BatchRequest, Source, check_columns, format_of, read

__all__ = [
    "FORMATS",
    "OUTPUT_FORMATS",
    "RESULT_COLUMNS",
    "BatchRequest",
    "Journal",
    "RunSummary",
    "Source",
    "check_columns",
    "check_output",
    "entry",
    "format_of",
    "read",
    "run_file",
    "run_frame",
    "to_pandas",
    "to_polars",
    "write",
    "write_journal",
]


async def run_frame(frame: Any, job: Any, **options: Any) -> Any:
    """Run every row of a pandas or Polars frame; return it with the result columns added.

    ``options`` are :func:`pipeline.run`'s (``cache=``, ``concurrency=``, ``progress=``...).
    A pandas frame keeps its index (any index); a LazyFrame is streamed in and comes back as
    a DataFrame.

    >>> # out = await run_frame(df, service.chat(model="gpt-4o-mini", prompt="{text}"),
    >>> #                       cache=".cache", progress=True)
    """
    from pipeline.runner import run

    source = read(frame)
    if source.kind not in ("pandas", "polars", "polars-lazy"):
        raise TypeError(f"run_frame() takes a pandas or Polars frame, not {type(frame).__name__}")
    check_columns(source, job.builder)  # a misspelt {column}: once, before anything is sent
    results = await run(source, job, **options)
    if source.kind == "pandas":
        return to_pandas(results, frame)
    return to_polars(results, frame)
