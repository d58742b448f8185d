"""A source and its rows: what every format reads into, and what a row's input is in an output.

A :class:`Source` is what :func:`~pipeline.io.read` returns. Iterating it yields one record per
input row, ``Record(index=position, row=...)``; a row that cannot be read (a JSONL line that is
not JSON, a CSV line with too many fields) comes out as a record that already failed with an
:class:`~pipeline.errors.InputError`, so the rest still run. Records keep their index through
the pipeline, which is what lets a resumed run skip rows by position.

The helpers here are shared by the format modules of this package: the file checks every
reader makes before anything is sent, and the input columns of a row when it is written out.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Container, Iterator
from typing import Any

import msgspec

from pipeline.core.record import Record
from pipeline.core.request import APIRequest
from pipeline.errors import InputError, TemplateKeyError
from pipeline.payloads.templates import did_you_mean

__all__ = ["BATCH_SIZE", "Bad", "BatchRequest", "Source", "check_columns", "check_file",
           "input_columns", "input_fields", "json_decode", "row_fields", "text_encoding",
           "undecodable", "unique_columns", "valid_text"]

#: Rows per batch when a frame or a Parquet file is read in parts.
BATCH_SIZE = 4096
json_decode = msgspec.json.Decoder().decode


class BatchRequest(APIRequest, frozen=True, kw_only=True):
    """A ready request read from a JSONL file, with the line's ``custom_id`` and ``metadata``.

    It is an :class:`~pipeline.core.request.APIRequest`, so the build stage sends it as it is
    (whatever the job's template), and its cache key ignores ``custom_id`` and ``metadata``.

    >>> r = BatchRequest(path="embeddings", body={"model": "m", "input": "hi"}, custom_id="a-1")
    >>> r.custom_id, isinstance(r, APIRequest)
    ('a-1', True)
    """

    custom_id: str | None = None
    metadata: Any = None
    source_row: Any = None  # the frame or file row it came from (a column of ready bodies)


class Bad:
    """A row that could not be read: becomes a record failed with ``error``."""

    __slots__ = ("error", "raw")

    def __init__(self, error: InputError, raw: Any = None) -> None:
        self.error = error
        self.raw = raw


class Source:
    """The rows of one input, each with its position; iterate it to get records.

    Attributes:
        kind: ``"pandas"``, ``"polars"``, ``"polars-lazy"``, ``"csv"``, ``"tsv"``,
            ``"parquet"``, ``"jsonl"`` (rows), ``"batch"`` (OpenAI Batch input lines),
            ``"requests"`` (one request body per line, the cookbook format) or ``"iterable"``.
        path: the file, for file sources.
        data: the frame, for frame sources.
        columns: the input's column names when known up front.

    ``len(source)`` is the row count when it is known before running (frames and files, by
    one quick pass; not a LazyFrame or an iterator); otherwise ``len()`` raises ``TypeError``.
    """

    def __init__(self, kind: str, rows: Callable[[], Iterator[Any]], *,
                 path: str | None = None, data: Any = None, length: int | None = None,
                 columns: list[str] | None = None, endpoint: str | None = None,
                 request_column: str | None = None) -> None:
        self.kind = kind
        self.request_column = request_column
        self.path = path
        self.data = data
        self.columns = columns
        self.endpoint = endpoint  # the endpoint of ready requests (Batch files)
        self._rows = rows
        self._length = length

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError(f"the length of a {self.kind} source is not known before reading it")
        return self._length

    @property
    def length(self) -> int | None:
        """The row count, or ``None`` when it is not known before reading."""
        return self._length

    @property
    def ready_requests(self) -> bool:
        """Whether rows are ready requests (Batch or cookbook JSONL), not rows for a template."""
        return self.kind in ("batch", "requests") or self.request_column is not None

    def rows(self) -> Iterator[Any]:
        """The raw rows in input order (unreadable ones as failed markers)."""
        return self._rows()

    def records(self, skip: Container[int] = ()) -> Iterator[Record]:
        """``Record(index=position, row=row)`` per row, leaving out positions in ``skip``."""
        for index, row in enumerate(self._rows()):
            if index in skip:
                continue
            if type(row) is Bad:
                yield Record(index=index, row=row.raw, error=row.error)
            else:
                yield Record(index=index, row=row)

    def __iter__(self) -> Iterator[Record]:
        return self.records()

    def check(self, builder: Any) -> None:
        """Raise :class:`~pipeline.errors.TemplateKeyError` when ``builder`` needs a column
        this input lacks (:func:`check_columns`); :func:`pipeline.run` calls it before
        sending anything."""
        check_columns(self, builder)

    def __repr__(self) -> str:
        where = f" {self.path!r}" if self.path else ""
        size = f", {self._length:,} rows" if self._length is not None else ""
        return f"<Source {self.kind}{where}{size}>"


def unique_columns(columns: list[str], where: str) -> list[str]:
    """``columns``, or an :class:`InputError` when two of them have one name (as text): a row
    holds one value per name, so one column would silently vanish from what is sent and from
    the output.

    >>> unique_columns(["id", "text", "text"], "'in.csv'")
    Traceback (most recent call last):
    ...
    pipeline.errors.InputError: 'in.csv' has 2 columns named 'text' (columns 2 and 3): give \
each column its own name; a row holds one value per name, so one of them would be lost
    """
    if len(set(columns)) == len(columns):
        return columns
    positions: dict[str, list[int]] = {}
    for number, name in enumerate(columns, 1):
        positions.setdefault(name, []).append(number)
    name, numbers = next((n, p) for n, p in positions.items() if len(p) > 1)
    hint = " (an empty name: a trailing delimiter in the header?)" if name == "" else ""
    shown = ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"
    raise InputError(f"{where} has {len(numbers)} columns named {name!r}{hint} (columns "
                     f"{shown}): give each column its own name; a row holds one value per "
                     "name, so one of them would be lost")


# ------------------------------------------------------------------------------ files
def check_file(path: str) -> None:
    """Raise :class:`~pipeline.errors.InputError` for a missing file or a directory."""
    if not os.path.exists(path):
        raise InputError(f"input file not found: {path!r}")
    if os.path.isdir(path):
        raise InputError(f"input {path!r} is a directory, not a file")


def text_encoding(encoding: str | None) -> str:
    """The codec to read text files with (UTF-8, a byte-order mark skipped, by default)."""
    if encoding is None:
        return "utf-8-sig"
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r} (e.g. utf-8, cp1252, latin-1, "
                         "utf-16)") from None
    return encoding


def undecodable(path: str, encoding: str) -> InputError:
    """The error for a file that is not ``encoding`` text: where the first bad byte is, and
    what to pass instead. Found by decoding the file again in chunks (only on this path)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, line = 0, 1
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            pending = decoder.getstate()[0]  # bytes of a character cut by the last chunk
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                position = offset - len(pending) + exc.start
                bad = (pending + chunk)[exc.start:exc.start + 1]
                line += (pending + chunk)[:exc.start].count(b"\n")
                break
            offset += len(chunk)
            line += chunk.count(b"\n")
        else:
            position, bad = offset, b""  # cut short at the end
    name = "UTF-8" if encoding.replace("_", "-").lower().startswith("utf-8") else encoding
    what = f"byte 0x{bad[0]:02x}" if bad else "the last bytes"
    return InputError(
        f"{path!r} is not {name} text: {what} at byte position {position:,} (line {line:,}) "
        f"cannot be decoded. Give the file's encoding: --encoding ENC on the command line, "
        f"encoding= in pipeline.io.read (e.g. cp1252 for a file saved by Excel on Windows, "
        f"latin-1, utf-16)")


# ------------------------------------------------------------------------------ columns
def check_columns(source: Source, builder: Any) -> None:
    """Raise :class:`~pipeline.errors.TemplateKeyError` when the builder needs a column the
    input lacks, with a did-you-mean, before anything is sent. Inputs whose columns are not
    known up front (JSONL rows, iterables) and ready requests are not checked here; their rows
    still fail one by one, each naming the column.

    >>> from pipeline.payloads import chat
    >>> source = Source("csv", lambda: iter([]), path="in.csv", columns=["id", "review"])
    >>> check_columns(source, chat(model="m", prompt="Classify: {reveiw}"))
    Traceback (most recent call last):
    ...
    pipeline.errors.TemplateKeyError: prompt 'Classify: {reveiw}' needs column 'reveiw', \
which 'in.csv' lacks (did you mean 'review'?); its columns are 'id', 'review'
    """
    if source.columns is None or source.ready_requests:
        return
    needs = getattr(builder, "required_columns", None)
    if not isinstance(needs, dict):
        return
    have = [str(c) for c in source.columns]
    for column, what in needs.items():
        if column in have:
            continue
        where = f"{source.path!r}" if source.path else "the input"
        shown = ", ".join(map(repr, have[:20])) + (" ..." if len(have) > 20 else "")
        raise TemplateKeyError(
            f"{what} needs column {column!r}, which {where} lacks{did_you_mean(column, have)}; "
            f"its columns are {shown or 'none'}", field=column)


# ------------------------------------------------------------------------------ rows out
def row_fields(row: Any) -> dict[str, Any]:
    """The input columns of one row: a dict as it is, a ready request as its ``request``
    body (with ``custom_id`` and ``metadata``), anything else as one ``input`` column."""
    if isinstance(row, dict):
        return row
    if isinstance(row, BatchRequest):
        if isinstance(row.source_row, dict):
            return row.source_row
        fields: dict[str, Any] = {}
        if row.custom_id is not None:
            fields["custom_id"] = row.custom_id
        fields["request"] = row.body
        if row.metadata is not None:
            fields["metadata"] = row.metadata
        return fields
    if isinstance(row, APIRequest):
        return {"request": row.body}
    if row is None:
        return {}
    to_dict = getattr(row, "to_dict", None)
    return to_dict() if callable(to_dict) else {"input": row}


def input_fields(record: Record) -> dict[str, Any]:
    """The input columns of a record's row ({} for a line that could not be read at all)."""
    if record.error is None or isinstance(record.row, dict | BatchRequest):
        return row_fields(record.row)
    return {}


def input_columns(source: Source) -> list[str]:
    """The input's column names: known up front, else the keys of its rows in the order
    first seen (one pass over the input)."""
    if source.columns is not None:
        return list(source.columns)
    seen: dict[str, None] = {}
    for record in source.records():
        if record.error is None:
            for key in row_fields(record.row):
                seen.setdefault(str(key), None)
    return list(seen)


def valid_text(value: Any) -> Any:
    """``value`` with every lone surrogate in its text (in lists and dicts too) written as
    its escape, ``\\ud800``: what files, Arrow and Polars hold in place of text that UTF-8
    cannot encode. Such a row failed with a ``PayloadError`` and was never sent.

    >>> valid_text({"text": "x\\ud800", "n": [1, "ok"]})
    {'text': 'x\\\\ud800', 'n': [1, 'ok']}
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {valid_text(k): valid_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [valid_text(v) for v in value]
    return value


