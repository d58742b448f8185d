"""The two values that cross the wire: :class:`APIRequest` out, :class:`Response` back.

Builders in :mod:`pipeline.payloads` make ``APIRequest`` values; a service's ``call`` sends one
and returns a ``Response``. Both are plain msgspec Structs: cheap, typed, and serialisable for
the cache and result files. Neither ever holds an API key (auth lives on the service).
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["APIRequest", "FilePart", "Response", "Usage"]


class FilePart(msgspec.Struct, frozen=True):
    """One file of a multipart upload: its name, bytes and media type."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"

    def __repr__(self) -> str:  # never dump the bytes into a notebook
        return f"FilePart({self.filename!r}, {len(self.content)} bytes, {self.content_type!r})"


class APIRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One request, ready to send.

    Attributes:
        path: the endpoint path relative to the service's base URL, e.g. ``"chat/completions"``.
        method: the HTTP verb.
        body: the JSON body (built-in types only), or ``None``.
        files: multipart file parts (then ``data`` holds the other form fields).
        data: multipart form fields.
        token_estimate: tokens the rate limiter reserves for this request (prompt plus the
            most the answer can use); reconciled with the response's ``usage`` afterwards.

    >>> APIRequest(path="embeddings", body={"input": "hi"}, token_estimate=1)
    APIRequest(method='POST', path='embeddings', token_estimate=1, body={'input': 'hi'})
    """

    path: str
    method: str = "POST"
    body: dict[str, Any] | None = None
    files: dict[str, FilePart] | None = None
    data: dict[str, str] | None = None
    token_estimate: int = 0

    def __repr__(self) -> str:
        parts = [f"method={self.method!r}", f"path={self.path!r}",
                 f"token_estimate={self.token_estimate}"]
        if self.body is not None:
            parts.append(f"body={self.body!r}")
        if self.files:
            parts.append(f"files={self.files!r}")
        if self.data:
            parts.append(f"data={self.data!r}")
        return f"APIRequest({', '.join(parts)})"


class Usage(msgspec.Struct, frozen=True):
    """Token usage reported by the server (OpenAI's ``usage`` object)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Response(msgspec.Struct, kw_only=True):
    """A successful (2xx) answer.

    Attributes:
        status: HTTP status code.
        body: the decoded JSON body (built-in types).
        headers: response headers, names lower-cased.
        latency: seconds from sending the request to having the whole body.
    """

    status: int
    body: Any
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    latency: float = 0.0

    @property
    def usage(self) -> Usage | None:
        """The body's ``usage``, when it has a well-formed one."""
        raw = self.body.get("usage") if isinstance(self.body, dict) else None
        if not isinstance(raw, dict):
            return None
        # Plain lookups: this runs for every response, and msgspec.convert costs more.
        prompt = raw.get("prompt_tokens", 0)
        completion = raw.get("completion_tokens", 0)
        total = raw.get("total_tokens", 0)
        if type(prompt) is not int or type(completion) is not int or type(total) is not int:
            return None  # a server that lies about usage: ignore it rather than trust it
        return Usage(prompt, completion, total)

    def __repr__(self) -> str:
        body = _short(self.body)
        return f"Response(status={self.status}, latency={self.latency:.3f}s, body={body})"


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
