"""Resumable runs: results are journaled as they complete, so a rerun sends only what is left.

:func:`run_file` runs a :class:`~pipeline.io.Source` through the default pipeline plus one
more stage, :class:`write_journal`, which appends each finished record's result to a journal
file next to the output (one JSON line, written straight to the OS, so even ``kill -9`` loses
nothing already journaled). Started again with the same input and job, it reads the journal,
leaves out every row already answered (failed rows are tried again) and, at the end, writes
the output: one result per input row, in input order.

A journal whose input or job differ (another template, model, server or input file; the
job is compared whole, every option exactly) is started afresh; the response cache still
makes every unchanged request free. (Journals written before the fingerprint covered every
option whole start afresh once.)

One run at a time per journal: :class:`JournalLock` (an OS lock, gone with its process
however it ends) makes a second run raise :class:`JournalBusyError`, or wait with
``wait=True``. An existing output with no journal of this tool beside it is not replaced
without ``overwrite=True``. :class:`RunControl` stops a run without losing what is paid for
(what a first Ctrl-C does in ``pipeline run``); a journal that cannot be written (a full
disk) stops sending at once and keeps every answer that arrived.

For example, inside a coroutine (or a notebook cell)::

    async with OpenAIService() as service:
        summary = await run_file("reviews.csv", "answers.csv",
                                 service.chat(model="gpt-4o-mini", prompt="Classify: {text}"),
                                 cache=".cache", progress=True)
        summary.failed            # rows that failed; rerun to retry them
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from aiostream import stream as aiostream_stream

from pipeline.core.record import Record
from pipeline.errors import ConfigError, InputError, RunStoppedError
from pipeline.http import BaseService, Job
from pipeline.io._control import CountingService, RunControl, drain, grace_of
from pipeline.io._formats import check_output, read, write_rows
from pipeline.io._journal import (
    VERSION,
    Journal,
    JournalBusyError,
    JournalLock,
    OutputExistsError,
    OutputWriteError,
    encode,
    fingerprint,
)
from pipeline.io._row import ResultRow, entry
from pipeline.io._source import Source, check_columns
from pipeline.runner import default_flow
from pipeline.stages import (
    DEFAULT_ATTEMPTS,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_WAIT,
    DEFAULT_REASKS,
    Backoff,
    Stage,
    user_stages,
)
from pipeline.state.cache import ResponseCache
from pipeline.state.guard import RunGuard
from pipeline.state.status import StatusTracker

__all__ = [
    "Journal",
    "JournalBusyError",
    "JournalLock",
    "OutputExistsError",
    "OutputWriteError",
    "RunControl",
    "RunSummary",
    "answered",
    "run_file",
    "write_journal",
]

# Their home, as users import them (the classes live in this package's private modules).
for _public in (Journal, JournalBusyError, JournalLock, OutputExistsError, OutputWriteError,
                RunControl):
    _public.__module__ = __name__


class write_journal(Stage):
    """Append each finished record's result to a :class:`Journal` (successes and failures).

    Put it last, after ``store``, so an answer is in the cache before the journal says so.

    When the journal cannot be written (a full disk), the entry is still kept in ``entries``
    (when given) and ``on_error(exc)`` is called once, which should stop the run (as
    :func:`run_file` does); later entries go to ``entries`` only, and their positions to
    :attr:`unjournaled`. Without ``on_error`` the error is raised (as
    :class:`OutputWriteError`), which ends the run.
    """

    after_done = True

    def __init__(self, journal: Journal, *, embeddings: bool = False,
                 keep_body: bool = False, keep_request: bool = False,
                 entries: dict[int, ResultRow] | None = None,
                 on_error: Callable[[OSError], None] | None = None) -> None:
        self.journal = journal
        self.embeddings = embeddings
        self.keep_body = keep_body
        self.keep_request = keep_request
        self.entries = entries  # also kept here when given (the final output is built from it)
        self.on_error = on_error
        self.error: OSError | None = None
        self.unjournaled: list[int] = []

    async def process(self, record: Record) -> Record:
        item = entry(record, embeddings=self.embeddings, keep_body=self.keep_body,
                     keep_request=self.keep_request)
        if self.entries is not None:
            self.entries[record.index] = item  # first: a failing disk must not lose it
        if self.error is None:
            try:
                self.journal.append(item)
                return record
            except OSError as exc:
                self.error = exc
                if self.on_error is None:
                    raise OutputWriteError(f"cannot write the journal {self.journal.path}: "
                                           f"{exc.strerror or exc}") from exc
                self.on_error(exc)
        self.unjournaled.append(record.index)
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
            way, :meth:`RunControl.stop`), or ``None``.
        interrupted: :meth:`RunControl.stop` ended the run early (rows not sent are failed
            with :class:`~pipeline.errors.RunStoppedError`; a rerun sends them).
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
    interrupted: bool = False




def answered(source: Any, output: str | os.PathLike[str], job: Job, *,
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
    return {i for i, e in entries.items() if e.status == "succeeded"}


async def run_file(source: Any, output: str | os.PathLike[str], job: Job, *,
                   cache: str | os.PathLike[str] | ResponseCache | None = None,
                   concurrency: int = DEFAULT_CONCURRENCY, attempts: int = DEFAULT_ATTEMPTS,
                   backoff: Backoff | None = None, progress: bool = False,
                   status: StatusTracker | None = None, resume: bool = True,
                   journal: str | os.PathLike[str] | None = None,
                   output_format: str | None = None, max_wait: float = DEFAULT_MAX_WAIT,
                   timeout: float | None = None, reasks: int = DEFAULT_REASKS,
                   overwrite: bool = False, wait: bool = False,
                   control: RunControl | None = None, batch_api: bool = False,
                   batch_poll: float = 5.0,
                   stages: Sequence[Stage | Callable[[Record], Any]] | None = None
                   ) -> RunSummary:
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
        overwrite: replace an existing ``output`` that has no journal of this tool beside
            it (without it, :class:`OutputExistsError`: a file this tool did not write).
        wait: when another run holds the journal, wait for it to end instead of raising
            :class:`JournalBusyError` (the run then resumes from what that one journaled).
        control: a :class:`RunControl` to stop the run early without losing what is paid.
        batch_api: send the rows through the provider's Batch API (half the price, answers
            within 24 h; see :mod:`pipeline.batch_api`) instead of one request per row; it
            needs ``cache``, which keeps the batches' ids and answers. Stopped (``control``,
            Ctrl-C), the run detaches: the batches go on, and the same call picks them up.
            ``batch_poll``: seconds between looks at a batch at first (it grows to 60).
        stages: your own stages, as for :func:`pipeline.run`: run on every answer before
            it is journaled, and what they leave on ``record.data`` is written as columns
            (a dict's keys; a taken name gets ``_data``) and kept in the journal, so a
            resumed run writes it without running them again. A row a stage failed is
            sent again by a resumed run unless ``cache`` kept its answer. Not with
            ``batch_api``.
        concurrency, attempts, backoff, progress, status, max_wait, timeout, reasks: as
            for :func:`pipeline.run`.

    A job with a schema (``service.chat(..., schema=...)``) writes the answer's fields as
    columns too (typed in Parquet); the journal keeps each decoded answer, so a resumed run
    writes them without asking again.

    One run at a time per journal: the journal is locked for the whole run (an OS lock,
    which a crashed or killed run does not leave behind). Cancelling the call keeps what is
    journaled (a rerun resumes from it) and writes no output.

    Before anything is sent, raises :class:`~pipeline.errors.InputError` for a missing file
    or an unknown format, :class:`~pipeline.errors.TemplateKeyError` for a template column
    the input lacks, :class:`~pipeline.core.extras.MissingExtraError` when the output needs a
    package that is not installed (pyarrow for Parquet), :class:`OutputWriteError` for an
    output or journal directory that is missing or read-only, :class:`OutputExistsError` and
    :class:`JournalBusyError`. A journal that stops being writable during the run (a full
    disk) stops sending at once; the answers that arrived go to the output, and
    :class:`OutputWriteError` says where they are.
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
    if batch_api and stages:
        raise ConfigError("stages= runs on rows sent one request each; batch_api=True sends "
                          "them through the Batch API: give one or the other")
    if batch_api and cache is None:
        raise ConfigError("batch_api needs a cache (a directory): it keeps the batches' ids "
                          "and answers, so a rerun picks up what was already submitted")
    journal_path = os.fspath(journal) if journal is not None else f"{output}.journal"
    _check_writable(output, "output")
    _check_writable(journal_path, "journal")
    journal_file = Journal(journal_path, fingerprint=fingerprint(src, job, layout))
    if not overwrite:
        _check_overwrite(output, journal_file)
    await _open_journal(journal_file, resume=resume, wait=wait, control=control)
    try:
        return await _run(src, output, job, journal_file, layout, cache=cache,
                          concurrency=concurrency, attempts=attempts, backoff=backoff,
                          progress=progress, status=status, max_wait=max_wait,
                          timeout=timeout, reasks=reasks, control=control,
                          batch_api=batch_api, batch_poll=batch_poll, stages=stages)
    finally:
        journal_file.close()  # after the output is written: the lock covers the whole run


async def _open_journal(journal: Journal, *, resume: bool, wait: bool,
                        control: RunControl | None) -> None:
    # Before the journal is read: so a second run never sees half of what the first writes.
    delay = 0.05
    while True:
        try:
            journal.open(resume=resume)
            return
        except JournalBusyError:
            if not wait or (control is not None and control.stopping):
                raise  # stopped while waiting: nothing was sent
        await asyncio.sleep(delay)  # the holder may run for hours: poll, a little, slower
        delay = min(1.0, delay * 2)


def _check_overwrite(output: str, journal: Journal) -> None:
    """Refuse to replace a file this tool did not write (no journal of its own beside it)."""
    if os.path.exists(output) and journal.header() is None:
        raise OutputExistsError(
            f"{output} exists and has no journal of this tool beside it ({journal.path}), so "
            "it was not written by a run of this tool: pass --overwrite (overwrite=True) to "
            "replace it, or give another output")


def _check_writable(path: str, what: str) -> None:
    """Refuse, before anything is sent, a file whose directory is missing or read-only."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputWriteError(f"cannot write the {what} {path}: its directory {directory} "
                               "does not exist")
    try:  # the only check that holds for every file system, ACL and user (root too)
        with tempfile.TemporaryFile(dir=directory, prefix=".pipeline-check-"):
            pass
    except OSError as exc:
        raise OutputWriteError(f"cannot write the {what} {path}: {directory}: "
                               f"{exc.strerror or exc}") from None
    if os.path.isdir(path):
        raise OutputWriteError(f"cannot write the {what} {path}: it is a directory")


async def _run(src: Source, output: str, job: Job, journal_file: Journal, layout: str, *,
               cache: Any, concurrency: int, attempts: int, backoff: Backoff | None,
               progress: bool, status: StatusTracker | None, max_wait: float,
               timeout: float | None, reasks: int, control: RunControl | None,
               batch_api: bool = False, batch_poll: float = 5.0,
               stages: Sequence[Stage | Callable[[Record], Any]] | None = None) -> RunSummary:
    status = status if status is not None else StatusTracker()
    control = control if control is not None else RunControl()
    entries = journal_file.entries
    done = {i for i, e in entries.items() if e.status == "succeeded"}
    remaining = src.length - len(done) if src.length is not None else None
    # Ready requests go where their bodies say, whatever the job's endpoint.
    path = src.endpoint if src.ready_requests and src.endpoint else job.path
    embeddings = path.strip("/") == "embeddings"
    keep_body = layout in ("batch", "cookbook")
    keep_request = layout == "cookbook" and not src.ready_requests
    if dataclasses.is_dataclass(job) and not isinstance(job, type):
        # The proxy is not a BaseService, but it answers for one: call() is counted, every
        # other attribute is the service's own (run_file's job is not checked at run time:
        # one that is no dataclass is sent uncounted, as before).
        counted = cast(BaseService, CountingService(job.service, control))
        job = dataclasses.replace(job, service=counted)
    guard = RunGuard()
    failed_disk: list[OSError] = []

    def journal_failed(exc: OSError) -> None:
        failed_disk.append(exc)
        control.stop(f"cannot write the journal {journal_file.path}: {exc.strerror or exc}")

    owned = isinstance(cache, str | os.PathLike)
    opened = ResponseCache(cache) if isinstance(cache, str | os.PathLike) else cache
    try:
        flow = default_flow(job, cache=opened, status=status, concurrency=concurrency,
                            attempts=attempts, backoff=backoff, progress=progress,
                            total=remaining, max_wait=max_wait, timeout=timeout,
                            initial=len(done), reasks=reasks, guard=guard,
                            stages=user_stages(stages))
        control._attach(guard, grace_of(flow, timeout))
        # Extending a chain with `|` keeps its concurrency.
        journaling = write_journal(journal_file, embeddings=embeddings, keep_body=keep_body,
                                   keep_request=keep_request, entries=entries,
                                   on_error=journal_failed)
        if batch_api:
            await _run_batches(src, done, job, opened, journaling, control,
                               progress=progress, status=status, poll=batch_poll)
        else:
            records = aiostream_stream.iterate(src.records(skip=done)) | flow | journaling
            await drain(records, control)
    finally:
        if owned and opened is not None:
            opened.close()
    answered_now = sum(1 for e in entries.values() if e.status == "succeeded")
    written = False
    try:
        rows = write_rows(list(entries.values()), src, output, layout,
                             schema=getattr(job, "schema", None))
        written = True
    except OSError as exc:
        if not failed_disk:
            raise OutputWriteError(
                f"cannot write the output {output}: {exc.strerror or exc}; the "
                f"{answered_now:,} answered rows are kept in the journal "
                f"{journal_file.path}: make room, then run the same command again (nothing "
                "answered is sent again)") from None
        rows = 0
    if failed_disk:
        raise OutputWriteError(_journal_failure(failed_disk[0], journal_file, journaling,
                                                entries, output if written else None))
    succeeded = sum(1 for e in entries.values() if e.status == "succeeded")
    return RunSummary(rows=rows, succeeded=succeeded, failed=rows - succeeded,
                      resumed=len(done), output=output, journal=journal_file.path,
                      restarted=journal_file.restarted, status=status,
                      stopped=status.stopped, interrupted=control.stopping)


async def _run_batches(src: Source, done: set[int], job: Job, cache: ResponseCache,
                       journaling: write_journal, control: RunControl, *, progress: bool,
                       status: StatusTracker, poll: float) -> None:
    """The rows not answered yet through the Batch API, each journaled once it is done.
    Stopped, the run detaches: what was collected is journaled, the batches go on."""
    from pipeline.batch_api import send_records  # the Batch API is only loaded when asked

    records = list(src.records(skip=done))
    task = asyncio.ensure_future(send_records(records, job, cache=cache, progress=progress,
                                              status=status, poll=poll,
                                              max_poll=max(poll, 60.0)))
    stopped = asyncio.ensure_future(control._stopped.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
    for record in records:
        if record.response is not None or (record.error is not None and
                                           not isinstance(record.error, RunStoppedError)):
            await journaling.process(record)
    if not task.cancelled():
        task.result()


def _journal_failure(exc: OSError, journal: Journal, journaling: write_journal,
                     entries: dict[int, ResultRow], written: str | None) -> str:
    """The one line a journal that could not be written ends a run with."""
    lost = [i for i in journaling.unjournaled
            if (row := entries.get(i)) is not None and row.status == "succeeded"]
    head = f"cannot write the journal {journal.path}: {exc.strerror or exc}; sending stopped"
    if not lost:
        where = f", the output {written} is written" if written else ""
        return (f"{head}{where}; every answered row is in the journal: make room, then run "
                "the same command again (nothing answered is sent again)")
    rescue = _rescue(journal, entries)
    kept = " and ".join(x for x in (written, rescue) if x) or "nowhere (the disk is full)"
    advice = (f"; once there is room, move {rescue} to {journal.path} and run the same "
              "command again: nothing answered is sent again") if rescue else \
        "; a rerun sends those rows again"
    return (f"{head}; {len(lost):,} answered rows missing from the journal are kept in "
            f"{kept}{advice}")


def _rescue(journal: Journal, entries: dict[int, ResultRow]) -> str | None:
    """A whole copy of the journal in the temporary directory (often another disk)."""
    name = f"{os.path.basename(journal.path)}.{os.getpid()}.rescued"
    path = os.path.join(tempfile.gettempdir(), name)
    try:
        with open(path, "wb") as f:
            f.write(encode({"journal": VERSION, "fingerprint": journal.fingerprint}) + b"\n")
            for item in entries.values():
                f.write(encode(item) + b"\n")
    except OSError:
        return None
    return path
