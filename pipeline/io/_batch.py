"""The OpenAI Batch format: input lines in, output lines out.

Input: JSONL lines ``{"custom_id", "method", "url", "body"}`` (a ``body`` given as JSON text is
read too), each a ready request (:class:`~pipeline.io.BatchRequest`) sent as it is. Output: one
line per input line, ``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error"}``, the default output of a Batch input written as ``.jsonl``; a row that was not
sent says so in its ``error`` (code ``not_run``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from pipeline.errors import ConfigError, InputError
from pipeline.http.endpoint import endpoint_from_url
from pipeline.io._row import ResultRow
from pipeline.io._source import Bad, BatchRequest, json_decode
from pipeline.payloads.tokens import estimate_tokens

__all__ = ["batch_line", "batch_output_line", "custom_id_of", "first_batch_endpoint",
           "is_batch_line"]


def is_batch_line(first: dict[str, Any]) -> bool:
    """Whether a JSONL file whose first object is ``first`` holds Batch input lines."""
    return "custom_id" in first and "body" in first


def batch_line(value: Any, where: str) -> BatchRequest | Bad:
    """The ready request of one Batch input line, or why it cannot be sent."""
    if not isinstance(value, dict):
        return Bad(InputError(f"{where}: a Batch line must be a JSON object"), value)
    custom_id = value.get("custom_id")
    body = value.get("body")
    if isinstance(body, str):  # a body given as JSON text
        try:
            body = json_decode(body)
        except msgspec.DecodeError as exc:
            return Bad(InputError(f"{where}: body is not JSON ({exc})"), value)
    if not isinstance(body, dict):
        return Bad(InputError(f"{where}: body must be a JSON object, "
                              f"not {type(body).__name__}"), value)
    url = value.get("url")
    if not isinstance(url, str) or not url:
        return Bad(InputError(f"{where}: missing url (e.g. \"/v1/chat/completions\")"), value)
    try:
        path = endpoint_from_url(url if "://" in url else f"http://batch{url}")
    except ConfigError as exc:
        return Bad(InputError(f"{where}: {exc}"), value)
    method = value.get("method", "POST")
    return BatchRequest(path=path, method=str(method).upper(), body=body,
                        token_estimate=estimate_tokens(body, path),
                        custom_id=None if custom_id is None else str(custom_id))


def first_batch_endpoint(rows: Iterator[Any]) -> str | None:
    """The endpoint of the first readable line (a Batch file is for one endpoint)."""
    for row in rows:
        if isinstance(row, BatchRequest):
            return row.path
    return None


def custom_id_of(row: Any) -> str | None:
    """The ``custom_id`` of an input row (a Batch line, or a row with that column)."""
    if isinstance(row, BatchRequest):
        return row.custom_id
    return row.get("custom_id") if isinstance(row, dict) else None


def batch_output_line(e: ResultRow | None, custom_id: str | None, index: int
                      ) -> dict[str, Any]:
    """One line of the OpenAI Batch output format for a row kept with ``keep_body``."""
    line: dict[str, Any] = {"id": f"batch_req_{index:012d}", "custom_id": custom_id,
                            "response": None, "error": None}
    if e is not None and e.kept_response:
        line["response"] = {"status_code": e.status_code, "request_id": e.request_id,
                            "body": e.body}
    elif e is None or e.error is None:
        line["error"] = {"code": "not_run", "message": "this request was not sent yet"}
    else:
        kind, _, message = e.error.partition(": ")
        line["error"] = {"code": kind, "message": message or kind}
    return line
