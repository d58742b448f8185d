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
import datetime
import hashlib
import os
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiostream import stream as aiostream_stream

from pipeline.core.record import Record
from pipeline.errors import ConfigError, InputError, PipelineError, RunStoppedError
from pipeline.io._sinks import check_output, entry, write_entries
from pipeline.io._sources import Source, check_columns, read
from pipeline.runner import default_flow
from pipeline.stages import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_WAIT,
    DEFAULT_REASKS,
    Backoff,
    Stage,
    call,
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

_VERSION = 1
_encode = msgspec.json.Encoder(enc_hook=str).encode
_decode = msgspec.json.Decoder().decode


class JournalBusyError(PipelineError):
    """Another run (this process or another) holds the journal: two runs on one output
    would both pay for every row and mix their answers. Says who holds it and since when."""


class OutputExistsError(PipelineError):
    """The output is a file this tool did not write for this job (no journal beside it):
    refused unless ``overwrite=True`` (``--overwrite``)."""


class OutputWriteError(PipelineError):
    """The output or the journal cannot be written (a read-only or missing directory, a full
    disk); the message says where the answers that arrived are kept."""


class JournalLock:
    """An OS lock held for one run on a journal, in a ``JOURNAL.lock`` file beside it.

    The operating system drops the lock when its process ends, however it ends (a crash,
    ``kill -9``), so it never stays stuck; the file holds who took it (pid, host, time) for
    the message a second run gets. POSIX uses ``flock``; Windows ``msvcrt.locking`` on the
    file's first byte (the file is then left in place: an open file cannot be removed there).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.csv.journal")
    >>> lock = JournalLock(path); lock.acquire()
    >>> JournalLock(path).acquire()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.io.resume.JournalBusyError: another run is using the journal ...
    >>> lock.release()
    """

    __slots__ = ("_fd", "journal", "path")

    def __init__(self, journal: str | os.PathLike[str]) -> None:
        self.journal = os.fspath(journal)
        self.path = self.journal + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock now, or raise :class:`JournalBusyError` naming who holds it."""
        if self._fd is not None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputWriteError(f"cannot create the lock file {self.path}: "
                                       f"{exc.strerror}") from None
            if not _try_lock(fd):
                holder = _read_holder(fd)
                os.close(fd)
                raise JournalBusyError(
                    f"another run is using the journal {self.journal} ({holder}): two runs "
                    "on one output would both pay for every row; wait for it to end, stop "
                    "it, or wait for it (--wait-for-lock, wait=True)")
            # A run that ended removed the file after we opened it: lock the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        info = _encode({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
        try:
            os.ftruncate(fd, 1)  # byte 0 is the one Windows locks; who holds it follows
            os.lseek(fd, 1, os.SEEK_SET)
            os.write(fd, info + b"\n")
        except OSError:
            pass  # the message of a second run is then vaguer; the lock holds all the same
        self._fd = fd

    def release(self) -> None:
        """Let go (safe to call twice)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if sys.platform != "win32":
            try:
                os.unlink(self.path)  # still held: a run waiting on it sees it go, retries
            except OSError:
                pass
        os.close(fd)  # closing drops the lock

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def __repr__(self) -> str:
        return f"<JournalLock {self.path!r} {'held' if self.held else 'free'}>"


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 1, os.SEEK_SET)
        data = os.read(fd, 4096)
        info = _decode(data.strip() or b"null")
    except (OSError, msgspec.DecodeError):
        info = None
    if not isinstance(info, dict):
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"


class Journal:
    """An append-only file of results, one JSON line per finished record.

    The first line holds a fingerprint of the run (input and job); :meth:`open` keeps the
    entries of a journal with the same fingerprint and starts a new file otherwise. An open
    journal holds a :class:`JournalLock` until :meth:`close`: a second run on the same
    journal raises :class:`JournalBusyError` instead of paying for the same rows again.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.csv.journal")
    >>> j = Journal(path, fingerprint="abc"); j.open()
    {}
    >>> j.append({"i": 0, "status": "succeeded"}); j.close()
    >>> again = Journal(path, fingerprint="abc"); again.open()
    {0: {'i': 0, 'status': 'succeeded'}}
    >>> again.close()
    """

    def __init__(self, path: str | os.PathLike[str], *, fingerprint: str) -> None:
        self.path = os.fspath(path)
        self.fingerprint = fingerprint
        self.restarted = False  # an old journal of another run was replaced
        self._file: Any = None
        self._lock = JournalLock(self.path)
        #: The entries :meth:`open` returned (kept from earlier runs), by input position.
        self.entries: dict[int, dict[str, Any]] = {}

    def open(self, *, resume: bool = True) -> dict[int, dict[str, Any]]:
        """Lock, then open for appending; return the entries kept from earlier runs, by input
        position. Raises :class:`JournalBusyError` when another run holds the lock."""
        self._lock.acquire()
        try:
            self.entries = self._open(resume)
            return self.entries
        except BaseException:
            self._lock.release()
            raise

    def _open(self, resume: bool) -> dict[int, dict[str, Any]]:
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

    def header(self) -> dict[str, Any] | None:
        """The first line of the journal file when this tool wrote it (``None``: no journal,
        or a file that is not one); read only."""
        try:
            with open(self.path, "rb") as f:
                first = f.readline(65536)
            header = _decode(first)
        except (OSError, msgspec.DecodeError):
            return None
        return header if isinstance(header, dict) and "fingerprint" in header else None

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
        """Close the file and release the lock (safe to call twice)."""
        try:
            if self._file is not None:
                self._file.close()
        finally:
            self._file = None
            self._lock.release()

    def __repr__(self) -> str:
        state = "open" if self._file is not None else "closed"
        return f"<Journal {self.path!r} {state}>"


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
                 entries: dict[int, dict[str, Any]] | None = None,
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


class RunControl:
    """Stop a :func:`run_file` early without losing anything paid for (what a first Ctrl-C
    does in ``pipeline run``).

    :meth:`stop` sends nothing more (rows waiting for the rate limiter or for a retry are
    not sent), waits for the requests in flight (at most :attr:`grace` seconds: the attempt
    timeout), journals them and writes the output; :meth:`abandon` stops waiting for them.
    :attr:`in_flight` counts the requests on the wire. For example, inside a coroutine::

        control = RunControl()
        task = asyncio.create_task(run_file("in.csv", "out.csv", job, control=control))
        ...
        control.stop("enough for today")   # later: summary = await task
    """

    __slots__ = ("_abandoned", "_grace", "_guard", "_stopped", "in_flight", "reason")

    def __init__(self) -> None:
        self.in_flight = 0
        self.reason: str | None = None
        self._guard: RunGuard | None = None
        self._grace: Callable[[], float] = lambda: 600.0
        self._stopped = asyncio.Event()
        self._abandoned = asyncio.Event()

    def stop(self, reason: str = "stopped by the user") -> None:
        """Send nothing more; the run finishes what is in flight and writes its output."""
        if self.reason is None:
            self.reason = reason
        if self._guard is not None and self._guard.stopped is None:
            self._guard.stopped = RunStoppedError(f"stopped: {self.reason}")
        self._stopped.set()

    def abandon(self) -> None:
        """Stop waiting for the requests in flight (their answers, if any, are lost)."""
        self.stop()
        self._abandoned.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self.reason is not None

    @property
    def grace(self) -> float:
        """Seconds the run waits for the requests in flight after :meth:`stop`."""
        return self._grace()

    def _attach(self, guard: RunGuard, grace: Callable[[], float]) -> None:
        self._guard, self._grace = guard, grace
        if self.reason is not None:
            self.stop(self.reason)

    def __repr__(self) -> str:
        state = "running" if self.reason is None else f"stopping ({self.reason})"
        return f"<RunControl {state}, {self.in_flight} in flight>"


class _CountingService:
    """The job's service, counting the requests on the wire (for :class:`RunControl`)."""

    def __init__(self, service: Any, control: RunControl) -> None:
        self._service = service
        self._control = control

    async def call(self, *args: Any, **kwargs: Any) -> Any:
        self._control.in_flight += 1
        try:
            return await self._service.call(*args, **kwargs)
        finally:
            self._control.in_flight -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def __repr__(self) -> str:
        return repr(self._service)


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


def fingerprint(source: Source, job: Any, output_format: str = "") -> str:
    """A hash of what decides a run's answers: the input (file, size, mtime), the whole job
    (every builder option, exactly: template, system prompt, schema, model, parameters; the
    endpoint path, the base URL and an Azure deployment) and the output format, which decides
    what each journal line keeps.

    Only a hash is kept, so nothing in the job (a URL with a password, say) reaches the
    journal. Options that change only the token estimate (``tokenizer``,
    ``default_max_tokens``) and how rows are grouped into requests (an embeddings job's
    ``batch_size``) leave it unchanged: they do not change any row's answer.
    """
    service = job.service
    parts = [str(_VERSION), source.kind, _job_text(job.builder), job.path,
             str(getattr(service, "base_url", "")),
             str(getattr(service, "_azure_deployment", None) or ""),
             str(getattr(service, "_azure_api_version", None) or "")]
    # Only a layout whose journal lines keep other fields than the default's counts.
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


# Builder options that change the token estimate only, never what is sent.
_ESTIMATE_ONLY = frozenset({"tokenizer", "default_max_tokens"})


def _job_text(builder: Any) -> str:
    """A canonical text of everything a builder sends: its class and every option, whole
    (JSON with sorted keys; a schema as what it sends). A builder that is not one of
    :mod:`pipeline.payloads`' is taken by its full ``repr``."""
    options = getattr(builder, "_options", None)
    if not isinstance(options, dict):
        return f"{type(builder).__qualname__}:{builder!r}"
    shown = {k: v for k, v in options.items() if k not in _ESTIMATE_ONLY}
    text = _canonical([type(builder).__module__, type(builder).__qualname__, shown])
    return text.decode()


def _canonical(value: Any) -> bytes:
    return msgspec.json.encode(value, enc_hook=_canonical_hook, order="sorted")


def _canonical_hook(value: Any) -> Any:
    from pipeline.payloads.structured import OutputSchema

    if isinstance(value, OutputSchema):  # what it sends and how it becomes columns
        return ["OutputSchema", value.kind, value.separator, value.response_format()]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["bytes", hashlib.sha256(bytes(value)).hexdigest()]
    if isinstance(value, set | frozenset):
        return sorted(repr(v) for v in value)
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return [type(value).__qualname__, repr(value)]


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
                   timeout: float | None = None, reasks: int = DEFAULT_REASKS,
                   overwrite: bool = False, wait: bool = False,
                   control: RunControl | None = None, batch_api: bool = False,
                   batch_poll: float = 5.0) -> RunSummary:
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
                          batch_api=batch_api, batch_poll=batch_poll)
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


async def _run(src: Source, output: str, job: Any, journal_file: Journal, layout: str, *,
               cache: Any, concurrency: int, attempts: int, backoff: Backoff | None,
               progress: bool, status: StatusTracker | None, max_wait: float,
               timeout: float | None, reasks: int, control: RunControl | None,
               batch_api: bool = False, batch_poll: float = 5.0) -> RunSummary:
    status = status if status is not None else StatusTracker()
    control = control if control is not None else RunControl()
    entries = journal_file.entries
    done = {i for i, e in entries.items() if e.get("status") == "succeeded"}
    remaining = src.length - len(done) if src.length is not None else None
    # Ready requests go where their bodies say, whatever the job's endpoint.
    path = src.endpoint if src.ready_requests and src.endpoint else job.path
    embeddings = path.strip("/") == "embeddings"
    keep_body = layout in ("batch", "cookbook")
    keep_request = layout == "cookbook" and not src.ready_requests
    if dataclasses.is_dataclass(job) and not isinstance(job, type):
        job = dataclasses.replace(job, service=_CountingService(job.service, control))
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
                            initial=len(done), reasks=reasks, guard=guard)
        control._attach(guard, _grace(flow, timeout))
        # Extending a chain with `|` keeps its concurrency.
        journaling = write_journal(journal_file, embeddings=embeddings, keep_body=keep_body,
                                   keep_request=keep_request, entries=entries,
                                   on_error=journal_failed)
        if batch_api:
            await _run_batches(src, done, job, opened, journaling, control,
                               progress=progress, status=status, poll=batch_poll)
        else:
            records = aiostream_stream.iterate(src.records(skip=done)) | flow | journaling
            await _drain(records, control)
    finally:
        if owned and opened is not None:
            opened.close()
    answered_now = sum(1 for e in entries.values() if e.get("status") == "succeeded")
    written = False
    try:
        rows = write_entries(list(entries.values()), src, output, layout,
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
    succeeded = sum(1 for e in entries.values() if e.get("status") == "succeeded")
    return RunSummary(rows=rows, succeeded=succeeded, failed=rows - succeeded,
                      resumed=len(done), output=output, journal=journal_file.path,
                      restarted=journal_file.restarted, status=status,
                      stopped=status.stopped, interrupted=control.stopping)


async def _run_batches(src: Source, done: set[int], job: Any, cache: ResponseCache,
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


async def _drain(records: Any, control: RunControl) -> None:
    """Run the stream to its end; after ``control.stop()``, wait at most ``control.grace``
    seconds (or until ``control.abandon()``) for what is in flight, then cancel the rest."""

    async def consume() -> None:
        async with records.stream() as finished:
            async for _ in finished:
                pass

    task = asyncio.ensure_future(consume())
    stopped = asyncio.ensure_future(control._stopped.wait())
    abandoned = asyncio.ensure_future(control._abandoned.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():  # stopping: nothing new is sent, what is in flight ends
            await asyncio.wait({task, abandoned}, timeout=control.grace,
                               return_when=asyncio.FIRST_COMPLETED)
    finally:
        for helper in (stopped, abandoned):
            helper.cancel()
        if not task.done():  # cancelled, abandoned or past the grace: rows not sent stay so
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
    if not task.cancelled():
        task.result()  # a bug in a stage: raise it here


def _grace(flow: Any, timeout: float | None) -> Callable[[], float]:
    """How long a stopped run waits for its requests in flight: the attempt timeout."""
    calls = [s for s in _all_stages(flow) if isinstance(s, call)]

    def grace() -> float:
        limits = [c.attempt_timeout() for c in calls]
        known = [x for x in limits if x is not None]
        return (max(known) if known else timeout or 600.0) + 1.0

    return grace


def _all_stages(stage: Any) -> list[Any]:
    found: list[Any] = []
    for inner in stage.stages() if isinstance(stage, Stage) else ():
        found.append(inner)
        for name in ("inner", "send"):
            nested = getattr(inner, name, None)
            if isinstance(nested, Stage) and nested is not inner:
                found.extend(_all_stages(nested))
    return found


def _journal_failure(exc: OSError, journal: Journal, journaling: write_journal,
                     entries: dict[int, dict[str, Any]], written: str | None) -> str:
    """The one line a journal that could not be written ends a run with."""
    lost = [i for i in journaling.unjournaled if entries.get(i, {}).get("status") == "succeeded"]
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


def _rescue(journal: Journal, entries: dict[int, dict[str, Any]]) -> str | None:
    """A whole copy of the journal in the temporary directory (often another disk)."""
    name = f"{os.path.basename(journal.path)}.{os.getpid()}.rescued"
    path = os.path.join(tempfile.gettempdir(), name)
    try:
        with open(path, "wb") as f:
            f.write(_encode({"journal": _VERSION, "fingerprint": journal.fingerprint}) + b"\n")
            for item in entries.values():
                f.write(_encode(item) + b"\n")
    except OSError:
        return None
    return path
