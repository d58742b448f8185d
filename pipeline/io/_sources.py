"""Sources: anything with rows in, :class:`~pipeline.core.record.Record` values out, numbered by
their position in the input.

A :class:`Source` is what :func:`read` returns. Iterating it yields one record per input row,
``Record(index=position, row=...)``; a row that cannot be read (a JSONL line that is not JSON, a
CSV line with too many fields) comes out as a record that already failed with an
:class:`~pipeline.errors.InputError`, so the rest still run. Records keep their index through
the pipeline, which is what lets a resumed run skip rows by position.
"""

from __future__ import annotations

import codecs
import csv
import os
from collections.abc import AsyncIterable, Callable, Container, Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from pipeline.core.extras import require
from pipeline.core.record import Record
from pipeline.core.request import APIRequest
from pipeline.errors import ConfigError, InputError, TemplateKeyError
from pipeline.http.endpoint import endpoint_from_url
from pipeline.payloads.templates import did_you_mean
from pipeline.payloads.tokens import estimate_tokens

__all__ = ["FORMATS", "BatchRequest", "Source", "check_columns", "format_of", "read"]

#: File extensions and the format each one means.
FORMATS: dict[str, str] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
    ".parquet": "parquet", ".pq": "parquet",
}
_BATCH_SIZE = 4096
_json_decode = msgspec.json.Decoder().decode


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


class _Bad:
    """A row that could not be read: becomes a record failed with ``error``."""

    __slots__ = ("error", "raw")

    def __init__(self, error: InputError, raw: Any = None) -> None:
        self.error = error
        self.raw = raw


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
            if type(row) is _Bad:
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


# ------------------------------------------------------------------------------ frames
def _pandas_rows(frame: Any) -> Callable[[], Iterator[dict[str, Any]]]:
    columns = list(frame.columns)

    def rows() -> Iterator[dict[str, Any]]:
        for values in frame.itertuples(index=False, name=None):
            yield dict(zip(columns, values, strict=True))
    return rows


def _polars_rows(frame: Any, lazy: bool) -> Callable[[], Iterator[dict[str, Any]]]:
    def rows() -> Iterator[dict[str, Any]]:
        if not lazy:
            for part in frame.iter_slices(_BATCH_SIZE):
                yield from part.iter_rows(named=True)
            return
        # Streamed in batches: a LazyFrame larger than memory is never collected whole.
        batches = frame.collect_batches(chunk_size=_BATCH_SIZE, lazy=True)
        try:
            for part in batches:
                yield from part.iter_rows(named=True)
        finally:
            stop = getattr(batches, "stop", None)
            if callable(stop):
                stop()
    return rows


def _unique_columns(columns: list[str], where: str) -> list[str]:
    """``columns``, or an :class:`InputError` when two of them have one name (as text): a row
    holds one value per name, so one column would silently vanish from what is sent and from
    the output.

    >>> _unique_columns(["id", "text", "text"], "'in.csv'")
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
def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"input file not found: {path!r}")
    if os.path.isdir(path):
        raise InputError(f"input {path!r} is a directory, not a file")


def _text_encoding(encoding: str | None) -> str:
    """The codec to read text files with (UTF-8, a byte-order mark skipped, by default)."""
    if encoding is None:
        return "utf-8-sig"
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r} (e.g. utf-8, cp1252, latin-1, "
                         "utf-16)") from None
    return encoding


def _undecodable(path: str, encoding: str) -> InputError:
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


def _csv_rows(path: str, delimiter: str, encoding: str | None = None
              ) -> tuple[list[str], int, Callable[[], Iterator[Any]]]:
    codec = _text_encoding(encoding)
    # One quick pass for the header and the row count (a progress bar with an ETA); it also
    # finds bytes the encoding cannot decode, before anything is sent.
    try:
        with open(path, newline="", encoding=codec) as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            count = sum(1 for values in reader if values)
    except UnicodeDecodeError:
        raise _undecodable(path, codec) from None
    if not header:
        raise InputError(f"{path!r} is empty: a CSV file needs a header line")
    _unique_columns(header, repr(path))

    def rows() -> Iterator[Any]:
        with open(path, newline="", encoding=codec) as f:
            reader = csv.reader(f, delimiter=delimiter)
            next(reader, None)
            width = len(header)
            for values in reader:
                if not values:
                    continue  # a blank line is not a row
                if len(values) != width:
                    yield _Bad(InputError(
                        f"{path} line {reader.line_num}: {len(values)} fields, the header has "
                        f"{width}"), None)
                    continue
                # An empty cell is missing, as pandas and Polars read it.
                yield {k: (v if v != "" else None) for k, v in zip(header, values, strict=True)}
    return header, count, rows


def _parquet_source(path: str) -> Source:
    pq: Any = require("pyarrow.parquet", feature="reading Parquet")
    try:
        meta = pq.ParquetFile(path)
    except Exception as exc:  # not a Parquet file, truncated...
        raise InputError(f"cannot read Parquet file {path!r}: {exc}") from None
    columns = _unique_columns(list(meta.schema_arrow.names), repr(path))
    length = meta.metadata.num_rows

    def rows() -> Iterator[Any]:
        with pq.ParquetFile(path) as f:
            for batch in f.iter_batches(batch_size=_BATCH_SIZE):
                yield from batch.to_pylist()
    return Source("parquet", rows, path=path, length=length, columns=columns)


_REQUEST_KEYS = ("messages", "input", "prompt")


_ENDPOINT_OF_KEY = {"messages": "chat/completions", "prompt": "completions",
                    "input": "embeddings"}


_FIX_ENDPOINT = "pass the endpoint (--endpoint on the command line, endpoint= in pipeline.io.read)"


def _endpoints_of_body(body: dict[str, Any]) -> list[str]:
    """The endpoints a request body could be for: ``messages`` chat, ``prompt`` completions,
    ``input`` embeddings. One is the answer; none or several, nobody can tell."""
    return [path for key, path in _ENDPOINT_OF_KEY.items() if key in body]


def _body_path(body: dict[str, Any], endpoint: str | None, where: str) -> str | _Bad:
    """Where a ready body goes: ``endpoint`` when given, else what the body says; a body
    that says nothing fails alone (nothing is sent for it)."""
    if endpoint is not None:
        return endpoint
    found = _endpoints_of_body(body)
    if len(found) == 1:
        return found[0]
    return _Bad(InputError(f"{where}: cannot tell which endpoint this request body is for: it "
                           "has none of messages (chat), prompt (completions), input "
                           f"(embeddings); {_FIX_ENDPOINT}"), body)


def _common_endpoint(bodies: Iterable[tuple[str, Any]], what: str) -> str | None:
    """The one endpoint of ``(where, body)`` pairs, or an :class:`InputError` naming the
    lines when they are for several endpoints or a body names several (before anything is
    sent). Bodies that are not objects, or name no endpoint, fail alone on their row."""
    first: dict[str, str] = {}  # endpoint -> where it first appears
    for where, body in bodies:
        if not isinstance(body, dict):
            continue
        found = _endpoints_of_body(body)
        if len(found) > 1:
            keys = " and ".join(k for k in _ENDPOINT_OF_KEY if k in body)
            raise InputError(f"cannot tell which endpoint the request body at {where} of {what} "
                             f"is for: it has {keys}; {_FIX_ENDPOINT}")
        if found:
            first.setdefault(found[0], where)
    if len(first) > 1:
        seen = ", ".join(f"{path} (first at {where})" for path, where in first.items())
        raise InputError(f"{what} holds request bodies for several endpoints: {seen}. Run one "
                         f"file per endpoint, or {_FIX_ENDPOINT} to send them all to one")
    return next(iter(first), None)


def _jsonl_kind(path: str, encoding: str | None) -> str:
    """``batch``, ``requests`` or ``jsonl``, from the first line that decodes to an object."""
    for _, line in _lines(path, encoding):
        try:
            first = _json_decode(line)
        except msgspec.DecodeError:
            continue
        if not isinstance(first, dict):
            continue
        if "custom_id" in first and "body" in first:
            return "batch"
        if "model" in first and any(k in first for k in _REQUEST_KEYS):
            return "requests"
        return "jsonl"
    return "jsonl"


def _batch_line(value: Any, where: str) -> BatchRequest | _Bad:
    if not isinstance(value, dict):
        return _Bad(InputError(f"{where}: a Batch line must be a JSON object"), value)
    custom_id = value.get("custom_id")
    body = value.get("body")
    if isinstance(body, str):  # a body given as JSON text
        try:
            body = _json_decode(body)
        except msgspec.DecodeError as exc:
            return _Bad(InputError(f"{where}: body is not JSON ({exc})"), value)
    if not isinstance(body, dict):
        return _Bad(InputError(f"{where}: body must be a JSON object, "
                               f"not {type(body).__name__}"), value)
    url = value.get("url")
    if not isinstance(url, str) or not url:
        return _Bad(InputError(f"{where}: missing url (e.g. \"/v1/chat/completions\")"), value)
    try:
        path = endpoint_from_url(url if "://" in url else f"http://batch{url}")
    except ConfigError as exc:
        return _Bad(InputError(f"{where}: {exc}"), value)
    method = value.get("method", "POST")
    return BatchRequest(path=path, method=str(method).upper(), body=body,
                        token_estimate=estimate_tokens(body, path),
                        custom_id=None if custom_id is None else str(custom_id))


def _request_line(value: Any, where: str, endpoint: str | None) -> BatchRequest | _Bad:
    if not isinstance(value, dict):
        return _Bad(InputError(f"{where}: a request line must be a JSON object"), value)
    body = dict(value)
    metadata = body.pop("metadata", None)
    path = _body_path(body, endpoint, where)
    if isinstance(path, _Bad):
        return path
    return BatchRequest(path=path, body=body, token_estimate=estimate_tokens(body, path),
                        metadata=metadata)


def _lines(path: str, encoding: str | None) -> Iterator[tuple[int, bytes]]:
    """``(line number, UTF-8 bytes)`` per line that is not blank."""
    codec = None if encoding is None else _text_encoding(encoding)
    if codec is None or codecs.lookup(codec).name == "utf-8":
        with open(path, "rb") as f:  # bytes straight to the JSON decoder, which reads UTF-8
            for number, line in enumerate(f, 1):
                if line.strip():  # blank lines are not rows
                    yield number, line
        return
    with open(path, encoding=codec, errors="replace", newline="") as text:
        for number, decoded in enumerate(text, 1):
            if decoded.strip():
                yield number, decoded.encode()


def _jsonl_source(path: str, endpoint: str | None, encoding: str | None = None) -> Source:
    kind = _jsonl_kind(path, encoding)

    def rows() -> Iterator[Any]:
        for number, line in _lines(path, encoding):
            where = f"{path} line {number}"
            try:
                value = _json_decode(line)
            except msgspec.DecodeError as exc:
                text = line.decode("utf-8", "replace").strip()
                yield _Bad(InputError(f"{where}: not valid JSON ({exc})"),
                           text[:200])
                continue
            if kind == "batch":
                yield _batch_line(value, where)
            elif kind == "requests":
                yield _request_line(value, where, endpoint)
            elif isinstance(value, dict):
                yield value
            else:
                yield _Bad(InputError(f"{where}: a row must be a JSON object, "
                                      f"not {type(value).__name__}"), value)

    found_endpoint = endpoint
    if kind == "batch" and found_endpoint is None:
        found_endpoint = _first_batch_endpoint(rows())
    elif kind == "requests" and found_endpoint is None:
        found_endpoint = _common_endpoint(_decoded_lines(path, encoding), repr(path))
    with open(path, "rb") as f:
        count = sum(1 for line in f if line.strip())
    return Source(kind, rows, path=path, endpoint=found_endpoint, length=count)


def _decoded_lines(path: str, encoding: str | None) -> Iterator[tuple[str, Any]]:
    for number, line in _lines(path, encoding):
        try:
            yield f"line {number}", _json_decode(line)
        except msgspec.DecodeError:
            continue  # fails alone on its row


def _first_batch_endpoint(rows: Iterator[Any]) -> str | None:
    for row in rows:
        if isinstance(row, BatchRequest):
            return row.path
    return None


def _with_request_column(source: Source, column: str, endpoint: str | None) -> Source:
    """The same rows, each sent as the ready request body in its ``column``."""
    if source.columns is not None and column not in source.columns:
        raise InputError(f"no column {column!r} of ready requests; the input has "
                         f"{', '.join(map(repr, source.columns)) or 'no columns'}")
    inner = source.rows
    given = endpoint
    # Bodies for one endpoint, or refused now; a one-shot iterator cannot be read twice.
    if endpoint is None and (source.kind != "iterable" or isinstance(source.data, list | tuple)):
        endpoint = _common_endpoint(_column_bodies(inner(), column), f"column {column!r}")

    def rows() -> Iterator[Any]:
        for number, row in enumerate(inner()):
            if type(row) is _Bad or not isinstance(row, dict):
                yield row
                continue
            where = f"row {number}, column {column!r}"
            body = row.get(column)
            if isinstance(body, str):
                try:
                    body = _json_decode(body)
                except msgspec.DecodeError as exc:
                    yield _Bad(InputError(f"{where}: not a JSON request body ({exc})"), row)
                    continue
            if not isinstance(body, dict):
                shown = "missing" if body is None else f"a {type(body).__name__}"
                yield _Bad(InputError(f"{where}: a request body must be a JSON object, "
                                      f"not {shown}"), row)
                continue
            path = _body_path(body, given, where)
            if isinstance(path, _Bad):
                yield _Bad(path.error, row)
                continue
            yield BatchRequest(path=path, body=body, token_estimate=estimate_tokens(body, path),
                               source_row=row)

    return Source(source.kind, rows, path=source.path, data=source.data,
                  length=source.length, columns=source.columns, endpoint=endpoint,
                  request_column=column)


def _column_bodies(rows: Iterator[Any], column: str) -> Iterator[tuple[str, Any]]:
    for number, row in enumerate(rows):
        if type(row) is _Bad or not isinstance(row, dict):
            continue
        body = row.get(column)
        if isinstance(body, str):
            try:
                body = _json_decode(body)
            except msgspec.DecodeError:
                continue  # fails alone on its row
        yield f"row {number}", body


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
        return _with_request_column(source, request_column, endpoint)
    return source


def _read(data: Any, format: str | None, endpoint: str | None, encoding: str | None
          ) -> Source:
    if isinstance(data, Source):
        return data
    if isinstance(data, str | os.PathLike):
        path = os.fspath(data)
        kind = format or format_of(path)
        _check_file(path)
        if kind in ("csv", "tsv"):
            columns, count, rows = _csv_rows(path, "," if kind == "csv" else "\t", encoding)
            return Source(kind, rows, path=path, columns=columns, length=count)
        if kind == "parquet":
            return _parquet_source(path)
        if kind == "jsonl":
            return _jsonl_source(path, endpoint, encoding)
        raise InputError(f"unknown format {kind!r}; known: {sorted(set(FORMATS.values()))}")
    module = type(data).__module__.split(".")[0]
    name = type(data).__name__
    if module == "pandas" and name == "DataFrame":
        columns = _unique_columns([str(c) for c in data.columns], "the pandas frame")
        return Source("pandas", _pandas_rows(data), data=data, length=len(data),
                      columns=columns)
    if module == "polars" and name == "DataFrame":
        return Source("polars", _polars_rows(data, lazy=False), data=data, length=data.height,
                      columns=list(data.columns))
    if module == "polars" and name == "LazyFrame":
        return Source("polars-lazy", _polars_rows(data, lazy=True), data=data,
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
