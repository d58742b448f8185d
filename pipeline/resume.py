"""Resumable runs: results are journaled as they complete, so a rerun sends only what is left.

:func:`run_file` runs a :class:`~pipeline.io.Source` through the default pipeline plus one
more stage, :class:`write_journal`, which appends each finished record's result to a journal
file next to the output (one JSON line, written straight to the OS, so even ``kill -9`` loses
nothing already journaled). Started again with the same input and job, it reads the journal,
leaves out every row already answered (failed rows are tried again) and, at the end, writes
the output: one result per input row, in input order.

A journal whose input or job differ (another template, model, server or input file) is
started afresh; the response cache still makes every unchanged request free.

For example, inside a coroutine (or a notebook cell)::

    async with OpenAIService() as service:
        summary = await run_file("reviews.csv", "answers.csv",
                                 service.chat(model="gpt-4o-mini", prompt="Classify: {text}"),
                                 cache=".cache", progress=True)
        summary.failed            # rows that failed; rerun to retry them
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiostream import stream as aiostream_stream

from pipeline.cache import ResponseCache
from pipeline.errors import InputError
from pipeline.io._sinks import check_output, entry, write_entries
from pipeline.io._sources import Source, check_columns, read
from pipeline.record import Record
from pipeline.runner import default_flow
from pipeline.stages import DEFAULT_CONCURRENCY, DEFAULT_MAX_WAIT, DEFAULT_REASKS, Backoff, Stage
from pipeline.status import StatusTracker

__all__ = ["Journal", "RunSummary", "answered", "run_file", "write_journal"]

_VERSION = 1
_encode = msgspec.json.Encoder(enc_hook=str).encode
_decode = msgspec.json.Decoder().decode


class Journal:
    """An append-only file of results, one JSON line per finished record.

    The first line holds a fingerprint of the run (input and job); :meth:`open` keeps the
    entries of a journal with the same fingerprint and starts a new file otherwise.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.csv.journal")
    >>> j = Journal(path, fingerprint="abc"); j.open()
    {}
    >>> j.append({"i": 0, "status": "succeeded"}); j.close()
    >>> Journal(path, fingerprint="abc").open()
    {0: {'i': 0, 'status': 'succeeded'}}
    """

    def __init__(self, path: str | os.PathLike[str], *, fingerprint: str) -> None:
        self.path = os.fspath(path)
        self.fingerprint = fingerprint
        self.restarted = False  # an old journal of another run was replaced
        self._file: Any = None

    def open(self, *, resume: bool = True) -> dict[int, dict[str, Any]]:
        """Open for appending; return the entries kept from earlier runs, by input position."""
        entries: dict[int, dict[str, Any]] = {}
        fresh = True
        if resume and os.path.exists(self.path):
            entries, fresh = self._load()
        elif os.path.exists(self.path):
            self.restarted = True
        if fresh:
            with open(self.path, "wb") as f:
                f.write(_encode({"journal": _VERSION, "fingerprint": self.fingerprint}) + b"\n")
            entries = {}
        # Unbuffered: each line is one write() to the OS, which a killed process cannot undo.
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (closed in close())
        return entries

    def read(self) -> dict[int, dict[str, Any]]:
        """The entries an earlier run of the same fingerprint left, by input position, without
        opening the journal for writing or changing it ({} when there is none or it is for
        another run)."""
        if not os.path.exists(self.path):
            return {}
        entries, _ = self._load(repair=False)
        return entries

    def _load(self, *, repair: bool = True) -> tuple[dict[int, dict[str, Any]], bool]:
        with open(self.path, "rb") as f:
            data = f.read()
        end = data.rfind(b"\n") + 1
        lines = data[:end].split(b"\n")
        try:
            header = _decode(lines[0])
        except msgspec.DecodeError:
            header = None
        if not isinstance(header, dict) or header.get("fingerprint") != self.fingerprint:
            self.restarted = True
            return {}, True
        if repair and end < len(data):  # a line cut short by a kill: drop it, it runs again
            with open(self.path, "r+b") as f:
                f.truncate(end)
        entries: dict[int, dict[str, Any]] = {}
        for line in lines[1:]:
            if not line:
                continue
            try:
                item = _decode(line)
            except msgspec.DecodeError:
                continue
            if isinstance(item, dict) and isinstance(item.get("i"), int):
                entries[item["i"]] = item  # the latest result of a row wins
        return entries, False

    def append(self, item: dict[str, Any]) -> None:
        """Append one entry (``{"i": position, ...}``) as one line."""
        self._file.write(_encode(item) + b"\n")

    def close(self) -> None:
        """Close the file (safe to call twice)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __repr__(self) -> str:
        state = "open" if self._file is not None else "closed"
        return f"<Journal {self.path!r} {state}>"


class write_journal(Stage):
    """Append each finished record's result to a :class:`Journal` (successes and failures).

    Put it last, after ``store``, so an answer is in the cache before the journal says so.
    """

    after_done = True

    def __init__(self, journal: Journal, *, embeddings: bool = False,
                 keep_body: bool = False, keep_request: bool = False,
                 entries: dict[int, dict[str, Any]] | None = None) -> None:
        self.journal = journal
        self.embeddings = embeddings
        self.keep_body = keep_body
        self.keep_request = keep_request
        self.entries = entries  # also kept here when given (the final output is built from it)

    async def process(self, record: Record) -> Record:
        item = entry(record, embeddings=self.embeddings, keep_body=self.keep_body,
                     keep_request=self.keep_request)
        self.journal.append(item)
        if self.entries is not None:
            self.entries[record.index] = item
        return record

    def __repr__(self) -> str:
        return f"write_journal({self.journal!r})"


@dataclass
class RunSummary:
    """What :func:`run_file` did.

    Attributes:
        rows: input rows (= output rows).
        succeeded, failed: rows answered / failed in the final output.
        resumed: rows answered by earlier runs (taken from the journal, nothing sent).
        output, journal: the files written.
        restarted: an old journal of a different run was replaced.
        status: the counters of this run's requests.
        stopped: why the run stopped early (out of quota, every request failing the same
            way), or ``None``.
    """

    rows: int
    succeeded: int
    failed: int
    resumed: int
    output: str
    journal: str
    restarted: bool = False
    status: StatusTracker = field(default_factory=StatusTracker)
    stopped: str | None = None


def fingerprint(source: Source, job: Any, output_format: str = "") -> str:
    """A hash of what decides a run's answers: the input (file, size, mtime) and the job
    (and the output format, which decides what each journal line keeps)."""
    parts = [str(_VERSION), source.kind, repr(job.builder), job.path,
             str(getattr(job.service, "base_url", ""))]
    # Only a layout whose journal lines keep other fields than the default's counts, so the
    # journals of earlier versions still resume.
    batch = source.kind == "batch"
    if output_format == "cookbook" or (output_format == "batch" and not batch) or \
            (output_format == "jsonl" and batch):
        parts.append(output_format)
    if source.path is not None:
        stat = os.stat(source.path)
        parts += [os.path.abspath(source.path), str(stat.st_size), str(stat.st_mtime_ns)]
    else:
        parts.append(str(source.length))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def answered(source: Any, output: str | os.PathLike[str], job: Any, *,
             journal: str | os.PathLike[str] | None = None,
             output_format: str | None = None) -> set[int]:
    """Input positions that a rerun of :func:`run_file` with these arguments would not send
    again (answered in its journal); the journal is only read.

    What ``pipeline run --dry-run`` leaves out of its estimate.
    """
    src = read(source)
    output = os.fspath(output)
    layout = check_output(output, output_format, src)
    path = journal if journal is not None else f"{output}.journal"
    entries = Journal(path, fingerprint=fingerprint(src, job, layout)).read()
    return {i for i, e in entries.items() if e.get("status") == "succeeded"}


async def run_file(source: Any, output: str | os.PathLike[str], job: Any, *,
                   cache: str | os.PathLike[str] | ResponseCache | None = None,
                   concurrency: int = DEFAULT_CONCURRENCY, attempts: int = 6,
                   backoff: Backoff | None = None, progress: bool = False,
                   status: StatusTracker | None = None, resume: bool = True,
                   journal: str | os.PathLike[str] | None = None,
                   output_format: str | None = None, max_wait: float = DEFAULT_MAX_WAIT,
                   timeout: float | None = None, reasks: int = DEFAULT_REASKS) -> RunSummary:
    """Run every row of ``source`` not answered yet and write ``output``; resumable.

    Args:
        source: a file path, frame or :class:`~pipeline.io.Source` (see :func:`pipeline.io.read`).
        output: the results file (``.jsonl``, ``.csv``, ``.tsv``, ``.parquet``); the input's
            columns plus answer, status, error, tokens, latency. A Batch input file with a
            ``.jsonl`` output gives the OpenAI Batch output format.
        job: what to send, e.g. ``service.chat(model=..., prompt="...")``.
        cache: a response cache (directory or :class:`ResponseCache`) that keeps answers.
        resume: use the journal of an earlier run of the same input and job.
        journal: the journal file (default: ``output`` + ``.journal``).
        output_format: one of :data:`pipeline.io.OUTPUT_FORMATS` (default: from the
            extension); ``"cookbook"`` writes the OpenAI cookbook's ``[request, response,
            metadata]`` JSONL lines.
        concurrency, attempts, backoff, progress, status, max_wait, timeout, reasks: as
            for :func:`pipeline.run`.

    A job with a schema (``service.chat(..., schema=...)``) writes the answer's fields as
    columns too (typed in Parquet); the journal keeps each decoded answer, so a resumed run
    writes them without asking again.

    Before anything is sent, raises :class:`~pipeline.errors.InputError` for a missing file
    or an unknown format, :class:`~pipeline.errors.TemplateKeyError` for a template column
    the input lacks, and :class:`~pipeline._extras.MissingExtraError` when the output needs a
    package that is not installed (pyarrow for Parquet).
    """
    src = read(source)
    if src.kind == "iterable" and iter(src.data) is src.data:
        raise InputError("run_file() reads its input twice (to run it, then to write the "
                         "output): give a file, a frame or a list, not an iterator")
    output = os.fspath(output)
    # Everything that could stop the output from being written is checked before the first
    # request: paying for answers and then losing them is the worst way to fail.
    layout = check_output(output, output_format, src)
    check_columns(src, job.builder)
    status = status if status is not None else StatusTracker()
    journal_file = Journal(journal if journal is not None else f"{output}.journal",
                           fingerprint=fingerprint(src, job, layout))
    owned = isinstance(cache, str | os.PathLike)
    opened = ResponseCache(cache) if isinstance(cache, str | os.PathLike) else cache
    entries = journal_file.open(resume=resume)
    done = {i for i, e in entries.items() if e.get("status") == "succeeded"}
    remaining = src.length - len(done) if src.length is not None else None
    # Ready requests go where their bodies say, whatever the job's endpoint.
    path = src.endpoint if src.ready_requests and src.endpoint else job.path
    embeddings = path.strip("/") == "embeddings"
    keep_body = layout in ("batch", "cookbook")
    keep_request = layout == "cookbook" and not src.ready_requests
    try:
        flow = default_flow(job, cache=opened, status=status, concurrency=concurrency,
                            attempts=attempts, backoff=backoff, progress=progress,
                            total=remaining, max_wait=max_wait, timeout=timeout,
                            initial=len(done), reasks=reasks)
        # Extending a chain with `|` keeps its concurrency.
        chain = flow | write_journal(journal_file, embeddings=embeddings, keep_body=keep_body,
                                     keep_request=keep_request, entries=entries)
        records = aiostream_stream.iterate(src.records(skip=done)) | chain
        async with records.stream() as finished:
            async for _ in finished:
                pass
    finally:
        journal_file.close()
        if owned and opened is not None:
            opened.close()
    rows = write_entries(list(entries.values()), src, output, layout,
                         schema=getattr(job, "schema", None))
    succeeded = sum(1 for e in entries.values() if e.get("status") == "succeeded")
    return RunSummary(rows=rows, succeeded=succeeded, failed=rows - succeeded,
                      resumed=len(done), output=output, journal=journal_file.path,
                      restarted=journal_file.restarted, status=status,
                      stopped=status.stopped)
