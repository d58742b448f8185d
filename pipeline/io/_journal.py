"""The journal of a resumable run: an append-only file of result rows, its lock, and the
fingerprint that says which run a journal belongs to.

A journal's first line holds the run's fingerprint (a hash of the input and the whole job);
every other line is one finished row, a :class:`~pipeline.io.ResultRow` as JSON, written
straight to the OS, so even ``kill -9`` loses nothing already journaled. The latest line of
a position wins; a line cut short by a kill is dropped (its row runs again). One run at a
time: :class:`JournalLock`, an OS lock that is gone with its process however it ends.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import sys
from typing import Any

import msgspec

from pipeline.core.protocols import JobLike
from pipeline.errors import PipelineError
from pipeline.io._row import ResultRow
from pipeline.io._source import Source

__all__ = ["VERSION", "Journal", "JournalBusyError", "JournalLock", "OutputExistsError",
           "OutputWriteError", "encode", "fingerprint"]

VERSION = 1
encode = msgspec.json.Encoder(enc_hook=str).encode
_decode = msgspec.json.Decoder().decode
_decode_row = msgspec.json.Decoder(ResultRow).decode


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
        info = encode({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
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
    """An append-only file of results, one JSON line (a :class:`~pipeline.io.ResultRow`) per
    finished record.

    The first line holds a fingerprint of the run (input and job); :meth:`open` keeps the
    entries of a journal with the same fingerprint and starts a new file otherwise. An open
    journal holds a :class:`JournalLock` until :meth:`close`: a second run on the same
    journal raises :class:`JournalBusyError` instead of paying for the same rows again.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.csv.journal")
    >>> j = Journal(path, fingerprint="abc"); j.open()
    {}
    >>> j.append(ResultRow(index=0, answer="yes", status="succeeded")); j.close()
    >>> again = Journal(path, fingerprint="abc"); again.open()
    {0: ResultRow(index=0, answer='yes', status='succeeded')}
    >>> again.close()
    """

    def __init__(self, path: str | os.PathLike[str], *, fingerprint: str) -> None:
        self.path = os.fspath(path)
        self.fingerprint = fingerprint
        self.restarted = False  # an old journal of another run was replaced
        self._file: Any = None
        self._lock = JournalLock(self.path)
        #: The entries :meth:`open` returned (kept from earlier runs), by input position.
        self.entries: dict[int, ResultRow] = {}

    def open(self, *, resume: bool = True) -> dict[int, ResultRow]:
        """Lock, then open for appending; return the entries kept from earlier runs, by input
        position. Raises :class:`JournalBusyError` when another run holds the lock."""
        self._lock.acquire()
        try:
            self.entries = self._open(resume)
            return self.entries
        except BaseException:
            self._lock.release()
            raise

    def _open(self, resume: bool) -> dict[int, ResultRow]:
        entries: dict[int, ResultRow] = {}
        fresh = True
        if resume and os.path.exists(self.path):
            entries, fresh = self._load()
        elif os.path.exists(self.path):
            self.restarted = True
        if fresh:
            with open(self.path, "wb") as f:
                f.write(encode({"journal": VERSION, "fingerprint": self.fingerprint}) + b"\n")
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

    def read(self) -> dict[int, ResultRow]:
        """The entries an earlier run of the same fingerprint left, by input position, without
        opening the journal for writing or changing it ({} when there is none or it is for
        another run)."""
        if not os.path.exists(self.path):
            return {}
        entries, _ = self._load(repair=False)
        return entries

    def _load(self, *, repair: bool = True) -> tuple[dict[int, ResultRow], bool]:
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
        entries: dict[int, ResultRow] = {}
        for line in lines[1:]:
            if not line:
                continue
            try:
                item = _decode_row(line)
            except msgspec.DecodeError:  # not a row (a ValidationError is one too)
                continue
            entries[item.index] = item  # the latest result of a row wins
        return entries, False

    def append(self, item: ResultRow) -> None:
        """Append one row as one line."""
        self._file.write(encode(item) + b"\n")

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


def fingerprint(source: Source, job: JobLike, output_format: str = "") -> str:
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
    parts = [str(VERSION), source.kind, _job_text(job.builder), job.path,
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
    from pipeline.schema import OutputSchema

    if isinstance(value, OutputSchema):  # what it sends and how it becomes columns
        return ["OutputSchema", value.kind, value.separator, value.response_format()]
    if isinstance(value, bytes | bytearray | memoryview):
        return ["bytes", hashlib.sha256(bytes(value)).hexdigest()]
    if isinstance(value, set | frozenset):
        return sorted(repr(v) for v in value)
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return [type(value).__qualname__, repr(value)]


