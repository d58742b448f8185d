"""The result row: what one finished record becomes in an output.

Every sink (frames, files, the journal of a resumable run) works on :class:`ResultRow` values,
one per input position, so a finished run (a list of records) and a resumed one (rows read
back from its journal) are written by the same code. Results are lined up with the input by
position, never by completion order; an input column with the same name as a result column
keeps its name and the result column gets a ``_result`` suffix
(:meth:`ResultRow.column_names`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, cast

import msgspec
from msgspec import UNSET, UnsetType

from pipeline.core.record import Record
from pipeline.errors import APIError

__all__ = ["RESULT_COLUMNS", "ResultRow", "Status", "aligned", "answer_column", "data_cells",
           "data_columns", "each", "entry", "error_text", "field_names", "rows_of"]

#: What became of a row: answered, failed (``error`` says why) or not run.
Status = Literal["succeeded", "failed", "pending"]

#: The result columns added to the input's, in order (``answer`` is ``embedding`` for
#: embeddings jobs).
RESULT_COLUMNS = ("answer", "status", "error", "tokens", "latency")


class ResultRow(msgspec.Struct, frozen=True, kw_only=True, gc=False, repr_omit_defaults=True):
    """The result of one input row, as every output writes it (a frame's or file's result
    columns, a line of a resumable run's journal).

    Attributes:
        index: the row's position in the input (``"i"`` in a journal line).
        answer: the answer text (``None``: no answer), or unset for an embeddings job.
        embedding: the vector of an embeddings job, as the server sent it; unset otherwise.
            One of ``answer`` and ``embedding`` is set: it names the answer column.
        status: ``"succeeded"``, ``"failed"`` or ``"pending"`` (not run).
        error: the error as ``"TypeName: message"``, or ``None``.
        tokens: the answer's ``usage.total_tokens``, or ``None``.
        latency: seconds of the last attempt's round trip (4 decimals), or ``None``.
        status_code, request_id, body: the HTTP answer, kept for the Batch and cookbook
            formats (``keep_body``); unset otherwise.
        request: the request body sent, kept for the cookbook format; unset otherwise.
        value: a structured answer (a job with ``schema=``) as JSON values; unset otherwise.
        data: what your own stages left on ``record.data``, as JSON values (a dict's keys
            become columns of every output: :func:`data_columns`); unset when ``None``.

    Unset fields (``msgspec.UNSET``) are left out of a journal line. Rows are made by
    :func:`entry` and are read-only:

    >>> row = ResultRow(index=0, answer="positive", status="succeeded", tokens=12)
    >>> row.column, row.result, row.cells()
    ('answer', 'positive', ('positive', 'succeeded', None, 12, None))
    >>> ResultRow.column_names(["text", "status"])["status"]
    'status_result'
    """

    index: int = msgspec.field(name="i")
    answer: str | UnsetType | None = UNSET
    # Numbers as the server sent them: a resumed run writes what a fresh one writes.
    embedding: list[Any] | UnsetType | None = UNSET
    status: Status = "pending"
    error: str | None = None
    tokens: int | None = None
    latency: float | None = None
    status_code: int | UnsetType = UNSET
    request_id: str | UnsetType = UNSET
    body: Any = UNSET
    request: Any = UNSET
    value: Any = UNSET
    data: Any = UNSET

    @property
    def column(self) -> str:
        """The answer column's name: ``"embedding"`` for an embeddings job, else ``"answer"``."""
        return "answer" if self.embedding is UNSET else "embedding"

    @property
    def result(self) -> Any:
        """The answer text or the embedding vector (``None`` when there is none)."""
        result = self.answer if self.embedding is UNSET else self.embedding
        return None if result is UNSET else result

    @property
    def kept_response(self) -> bool:
        """Whether the HTTP answer is kept (``status_code``, ``request_id``, ``body``)."""
        return self.status_code is not UNSET

    @property
    def decoded(self) -> Any:
        """The structured answer as JSON values, or ``None``."""
        return None if self.value is UNSET else self.value

    @property
    def sent(self) -> Any:
        """The request body kept for the cookbook format, or ``None``."""
        return None if self.request is UNSET else self.request

    def cells(self) -> tuple[Any, str, str | None, int | None, float | None]:
        """The values of the result columns (:data:`RESULT_COLUMNS`), in order."""
        return self.result, self.status, self.error, self.tokens, self.latency

    @staticmethod
    def column_names(taken: Iterable[str], *, embeddings: bool = False) -> dict[str, str]:
        """Each result column (:data:`RESULT_COLUMNS`, then ``cost``) -> its name in an output
        whose input has the columns ``taken``: suffixed ``_result`` when the input has it.

        >>> ResultRow.column_names(["embedding", "cost"], embeddings=True)
        {'embedding': 'embedding_result', 'status': 'status', 'error': 'error', \
'tokens': 'tokens', 'latency': 'latency', 'cost': 'cost_result'}
        """
        used = set(taken)
        first = "embedding" if embeddings else "answer"
        return {name: f"{name}_result" if name in used else name
                for name in (first, *RESULT_COLUMNS[1:], "cost")}


def error_text(error: Any) -> str | None:
    """An error as one line, ``"TypeName: message"`` (``None`` for no error)."""
    if error is None:
        return None
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def entry(record: Record, *, embeddings: bool = False, keep_body: bool = False,
          keep_request: bool = False) -> ResultRow:
    """The :class:`ResultRow` of one record (a journal line, a row of the output).

    ``keep_body`` adds what the Batch and cookbook formats need (status code, request id,
    body); ``keep_request`` the request body sent (for the cookbook format, when the input
    rows are not request bodies already).

    >>> entry(Record(index=3, row="x"))
    ResultRow(index=3, answer=None)
    """
    response = record.response
    usage = response.usage if response is not None else None
    error = record.error
    tokens = usage.total_tokens if usage is not None else None
    latency = round(response.latency, 4) if response is not None else None
    status = cast(Status, record.status)
    if embeddings:
        row = ResultRow(index=record.index, embedding=record.embedding, status=status,
                        error=error_text(error), tokens=tokens, latency=latency)
    else:
        row = ResultRow(index=record.index, answer=record.text, status=status,
                        error=error_text(error), tokens=tokens, latency=latency)
    if keep_body or keep_request or (record.value is not None and error is None):
        row = msgspec.structs.replace(row, **_kept(record, keep_body, keep_request))
    if record.data is not None:
        try:
            data = _json_value(record.data)
            msgspec.json.encode(data)  # what the journal will write: it must take it
        except (TypeError, ValueError, OverflowError, RecursionError):
            data = str(record.data)  # keys JSON cannot take, a cycle: kept as text
        row = msgspec.structs.replace(row, data=data)
    return row


def _kept(record: Record, keep_body: bool, keep_request: bool) -> dict[str, Any]:
    """The optional fields of a record's row: the HTTP answer, the request, the value."""
    response, error = record.response, record.error
    kept: dict[str, Any] = {}
    if keep_body:
        if record.ok and response is not None:
            kept = {"status_code": response.status,
                    "request_id": response.headers.get("x-request-id", ""),
                    "body": response.body}
        elif isinstance(error, APIError) and error.status is not None:
            kept = {"status_code": error.status,
                    "request_id": error.headers.get("x-request-id", ""),
                    "body": error.body if isinstance(error.body, dict) else {"error": {
                        "message": str(error), "type": type(error).__name__,
                        "code": error.code}}}
    if keep_request:
        kept["request"] = record.request.body if record.request is not None else None
    if record.value is not None and error is None:
        kept["value"] = _json_value(record.value)
    return kept


def _json_value(value: Any) -> Any:
    """A decoded answer or a stage's data (Struct, pydantic model, JSON value) as JSON-like
    builtins: a numpy scalar as its number, anything else JSON has no type for as text."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", by_alias=True)
    return msgspec.to_builtins(value, enc_hook=_plain_value, str_keys=True)


def _plain_value(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy and pandas scalars
    if callable(item) and getattr(value, "shape", None) == ():
        try:
            return item()
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return tolist()
    return str(value)


def each(records: Iterable[Any]) -> Iterable[Any]:
    """``records`` to read once: a run's :class:`~pipeline.runner.Results` gives them
    without keeping what it builds (:meth:`~pipeline.runner.Results.scan`); anything else,
    as it is.

    >>> each([1, 2])
    [1, 2]
    """
    scan = getattr(records, "scan", None)
    return scan() if callable(scan) else records


def data_columns(rows: Iterable[Record | ResultRow | None], taken: Iterable[str]
                 ) -> dict[str, str]:
    """The columns your stages' ``record.data`` adds to an output, key -> column name, in
    the order first seen: a dict's keys, or ``data`` for any other value; a name the output
    has already (``taken``) gets a ``_data`` suffix. Empty when no row carries data.

    >>> rows = [ResultRow(index=0, data={"score": 1, "status": "ok"}), ResultRow(index=1)]
    >>> data_columns(rows, ["text", "status"])
    {'score': 'score', 'status': 'status_data'}
    """
    keys: dict[str, None] = {}
    for item in rows:
        data = None if item is None else getattr(item, "data", None)
        if data is None or data is UNSET:
            continue
        if isinstance(data, Mapping):
            for key in data:
                keys.setdefault(str(key), None)
        else:
            keys.setdefault("data", None)
    used = set(taken)
    return {key: f"{key}_data" if key in used else key for key in keys}


def data_cells(item: Record | ResultRow | None, keys: Iterable[str]) -> list[Any]:
    """The values of ``item``'s data for the columns ``keys`` (``None`` where it has none)."""
    data = None if item is None else getattr(item, "data", None)
    if data is None or data is UNSET:
        return [None for _ in keys]
    if isinstance(data, Mapping):
        return [data.get(key) for key in keys]
    return [data if key == "data" else None for key in keys]


def answer_column(items: Iterable[Record | ResultRow | None]) -> str:
    """The answer column's name for these records or rows: ``"embedding"`` when they are
    an embeddings job's (the first row, or the first record with an endpoint, says)."""
    for item in items:
        if item is None:
            continue
        if type(item) is ResultRow:
            return item.column
        path = item.path  # type: ignore[union-attr]
        if path is not None:
            return "embedding" if path.strip("/") == "embeddings" else "answer"
    return "answer"


def rows_of(records: Sequence[Record], *, keep_body: bool = False,
            keep_request: bool = False) -> list[ResultRow]:
    """One row per record, in input order (records may come in any order)."""
    embeddings = answer_column(each(records)) == "embedding"
    out = [entry(r, embeddings=embeddings, keep_body=keep_body, keep_request=keep_request)
           for r in each(records)]
    out.sort(key=lambda e: e.index)
    return out


def aligned(rows: Iterable[ResultRow | None], n: int) -> list[ResultRow | None]:
    """Rows by position 0..n-1 (a missing position is ``None``)."""
    out: list[ResultRow | None] = [None] * n
    for e in rows:
        if e is not None and 0 <= e.index < n:
            out[e.index] = e
    return out


def field_names(schema: Any, taken: Iterable[str]) -> dict[str, str]:
    """Answer field column -> its name in the output (suffixed when already taken)."""
    used = set(taken)
    return {name: f"{name}_result" if name in used else name for name in schema.column_types()}
