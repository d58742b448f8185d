"""Ready request bodies, the OpenAI cookbook's format: in as JSONL lines or a column, out as
``[request, response, metadata]`` lines.

Input: one request body per JSONL line, as the cookbook's ``api_request_parallel_processor.py``
reads them (``{"model", "messages"|"prompt"|"input", ..., "metadata"}``), or a column of bodies
(dicts or JSON text) in any other input (``read(..., request_column=...)``). Each is a ready
request (:class:`~pipeline.io.BatchRequest`) sent as it is; its endpoint is the one given, or
what the bodies say (``messages`` chat, ``prompt`` completions, ``input`` embeddings), and
bodies for several endpoints are refused before anything is sent.

Output (``format="cookbook"``): ``[request, response]`` per input row, or ``[request, [error
strings]]`` for a failure, with the input line's ``metadata`` third when it had one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from pipeline.core.record import Record
from pipeline.errors import InputError
from pipeline.io._row import ResultRow, error_text
from pipeline.io._source import Bad, BatchRequest, Source, json_decode
from pipeline.payloads.tokens import estimate_tokens

__all__ = ["common_endpoint", "cookbook_line", "is_request_line", "request_line",
           "with_request_column"]

REQUEST_KEYS = ("messages", "input", "prompt")
ENDPOINT_OF_KEY = {"messages": "chat/completions", "prompt": "completions",
                   "input": "embeddings"}
FIX_ENDPOINT = "pass the endpoint (--endpoint on the command line, endpoint= in pipeline.io.read)"


def endpoints_of_body(body: dict[str, Any]) -> list[str]:
    """The endpoints a request body could be for: ``messages`` chat, ``prompt`` completions,
    ``input`` embeddings. One is the answer; none or several, nobody can tell."""
    return [path for key, path in ENDPOINT_OF_KEY.items() if key in body]


def body_path(body: dict[str, Any], endpoint: str | None, where: str) -> str | Bad:
    """Where a ready body goes: ``endpoint`` when given, else what the body says; a body
    that says nothing fails alone (nothing is sent for it)."""
    if endpoint is not None:
        return endpoint
    found = endpoints_of_body(body)
    if len(found) == 1:
        return found[0]
    return Bad(InputError(f"{where}: cannot tell which endpoint this request body is for: it "
                          "has none of messages (chat), prompt (completions), input "
                          f"(embeddings); {FIX_ENDPOINT}"), body)


def common_endpoint(bodies: Iterable[tuple[str, Any]], what: str) -> str | None:
    """The one endpoint of ``(where, body)`` pairs, or an :class:`InputError` naming the
    lines when they are for several endpoints or a body names several (before anything is
    sent). Bodies that are not objects, or name no endpoint, fail alone on their row."""
    first: dict[str, str] = {}  # endpoint -> where it first appears
    for where, body in bodies:
        if not isinstance(body, dict):
            continue
        found = endpoints_of_body(body)
        if len(found) > 1:
            keys = " and ".join(k for k in ENDPOINT_OF_KEY if k in body)
            raise InputError(f"cannot tell which endpoint the request body at {where} of {what} "
                             f"is for: it has {keys}; {FIX_ENDPOINT}")
        if found:
            first.setdefault(found[0], where)
    if len(first) > 1:
        seen = ", ".join(f"{path} (first at {where})" for path, where in first.items())
        raise InputError(f"{what} holds request bodies for several endpoints: {seen}. Run one "
                         f"file per endpoint, or {FIX_ENDPOINT} to send them all to one")
    return next(iter(first), None)


def is_request_line(first: dict[str, Any]) -> bool:
    """Whether a JSONL file whose first object is ``first`` holds request bodies."""
    return "model" in first and any(k in first for k in REQUEST_KEYS)


def request_line(value: Any, where: str, endpoint: str | None) -> BatchRequest | Bad:
    """The ready request of one cookbook line (its metadata kept apart)."""
    if not isinstance(value, dict):
        return Bad(InputError(f"{where}: a request line must be a JSON object"), value)
    body = dict(value)
    metadata = body.pop("metadata", None)
    path = body_path(body, endpoint, where)
    if isinstance(path, Bad):
        return path
    return BatchRequest(path=path, body=body, token_estimate=estimate_tokens(body, path),
                        metadata=metadata)


def with_request_column(source: Source, column: str, endpoint: str | None) -> Source:
    """The same rows, each sent as the ready request body in its ``column``."""
    if source.columns is not None and column not in source.columns:
        raise InputError(f"no column {column!r} of ready requests; the input has "
                         f"{', '.join(map(repr, source.columns)) or 'no columns'}")
    inner = source.rows
    given = endpoint
    # Bodies for one endpoint, or refused now; a one-shot iterator cannot be read twice.
    if endpoint is None and (source.kind != "iterable" or isinstance(source.data, list | tuple)):
        endpoint = common_endpoint(_column_bodies(inner(), column), f"column {column!r}")

    def rows() -> Iterator[Any]:
        for number, row in enumerate(inner()):
            if type(row) is Bad or not isinstance(row, dict):
                yield row
                continue
            where = f"row {number}, column {column!r}"
            body = row.get(column)
            if isinstance(body, str):
                try:
                    body = json_decode(body)
                except msgspec.DecodeError as exc:
                    yield Bad(InputError(f"{where}: not a JSON request body ({exc})"), row)
                    continue
            if not isinstance(body, dict):
                shown = "missing" if body is None else f"a {type(body).__name__}"
                yield Bad(InputError(f"{where}: a request body must be a JSON object, "
                                     f"not {shown}"), row)
                continue
            path = body_path(body, given, where)
            if isinstance(path, Bad):
                yield Bad(path.error, row)
                continue
            yield BatchRequest(path=path, body=body, token_estimate=estimate_tokens(body, path),
                               source_row=row)

    return Source(source.kind, rows, path=source.path, data=source.data,
                  length=source.length, columns=source.columns, endpoint=endpoint,
                  request_column=column)


def _column_bodies(rows: Iterator[Any], column: str) -> Iterator[tuple[str, Any]]:
    for number, row in enumerate(rows):
        if type(row) is Bad or not isinstance(row, dict):
            continue
        body = row.get(column)
        if isinstance(body, str):
            try:
                body = json_decode(body)
            except msgspec.DecodeError:
                continue  # fails alone on its row
        yield f"row {number}", body


def cookbook_line(e: ResultRow | None, record: Record) -> list[Any]:
    """One line of the cookbook format: ``[request, response]`` (``[request, [error
    strings]]`` for a failure), with the input line's ``metadata`` third when it has one
    (the cookbook leaves out an empty one too). ``record`` is the input row's record, ``e``
    its row kept with ``keep_body`` (and ``keep_request`` for rows that are not requests).

    >>> row = BatchRequest(path="embeddings", body={"model": "m", "input": "hi"},
    ...                    metadata={"id": 7})
    >>> cookbook_line(ResultRow(index=0, status="failed", error="ServerError: 500"),
    ...               Record(index=0, row=row))
    [{'model': 'm', 'input': 'hi'}, ['ServerError: 500'], {'id': 7}]
    """
    row = record.row
    if isinstance(row, BatchRequest):
        request: Any = row.body
        metadata = row.metadata
    else:
        request = e.sent if e is not None else None
        metadata = None
    if e is not None and e.status == "succeeded" and e.kept_response:
        response: Any = e.body
    elif e is not None and e.error is not None:
        response = [e.error]
    elif record.error is not None:  # a line that could not be read at all
        response = [error_text(record.error)]
    else:
        response = ["not run: this request was not sent yet"]
    return [request, response, metadata] if metadata else [request, response]


