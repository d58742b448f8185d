"""What went wrong with one HTTP call, and how long the server asked us to wait.

* :func:`classify_error` turns an error answer (status, headers, body) and
  :func:`classify_exception` an exception raised while sending into the
  :mod:`pipeline.errors` tree; ``err.retryable`` says whether another attempt can help.
* :func:`decode_body` turns a 2xx body into JSON or a :class:`MalformedResponseError`.
* :func:`check_answer` tells a 2xx JSON body that holds an answer from one that does not
  (:class:`NoAnswerError`, :class:`ErrorBodyError`, :class:`ContentFilterError`).
* :func:`retry_after` reads ``retry-after-ms``, ``Retry-After`` and ``x-ratelimit-reset-*``.

The retry stage (:class:`pipeline.stages.retry`), the services and the standalone helpers of
:mod:`pipeline.adapters.standalone` all decide with these, so a status means the same thing
everywhere.
"""

from __future__ import annotations

import email.utils
import math
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from datetime import UTC
from typing import Any

import httpx
import msgspec

from pipeline.core.durations import parse_duration
from pipeline.core.redaction import redact_headers, redact_json, redact_text
from pipeline.core.request import Response
from pipeline.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ContentFilterError,
    ContextLengthExceededError,
    ErrorBodyError,
    MalformedResponseError,
    NoAnswerError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    TLSCertificateError,
)

__all__ = ["ANSWER_SHAPES", "AnswerShape", "HeadersLike", "check_answer", "classify_error",
           "classify_exception", "decode_body", "retry_after"]


HeadersLike = Mapping[str, str] | httpx.Headers


def _lower_headers(headers: Any) -> Mapping[str, str]:
    if isinstance(headers, httpx.Headers):
        return headers  # already case-insensitive
    return {str(k).lower(): str(v) for k, v in headers.items()}


def retry_after(
    source: HeadersLike | httpx.Response | Response | APIError | None,
    *,
    now: float | None = None,
    reset_headers: bool = True,
) -> float | None:
    """Seconds the server asked us to wait before trying again, or ``None`` when it did not say.

    Looks at, in order: ``retry-after-ms``; ``Retry-After`` as seconds or as an HTTP date
    (``now`` is the wall-clock time to measure a date from, ``time.time()`` by default); then
    OpenAI's ``x-ratelimit-reset-requests`` / ``-tokens`` (``"20ms"``, ``"1.5s"``, ``"6m0s"``),
    preferring the limit whose ``x-ratelimit-remaining-*`` is 0. Missing, negative (Azure's
    ``-1``) and unreadable values are ignored. ``reset_headers=False`` skips the reset headers:
    they say when a rate-limit bucket is full again, which is a wait only for a 429 (a 500
    that happens to carry them must not wait for the bucket to refill).

    >>> retry_after({"Retry-After": "2"}), retry_after({"x-ratelimit-reset-tokens": "6m0s"})
    (2.0, 360.0)
    >>> retry_after({"retry-after": "-1"}) is None
    True
    """
    if source is None:
        return None
    if isinstance(source, httpx.Response | Response | APIError):
        source = source.headers
    headers = _lower_headers(source)

    millis = parse_duration(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    raw = headers.get("retry-after")
    if raw is not None:
        seconds = parse_duration(raw)
        if seconds is None:
            seconds = _seconds_until_http_date(raw, now)
        if seconds is not None:
            return seconds

    if not reset_headers:
        return None
    resets: list[float] = []
    exhausted: list[float] = []
    for kind in ("requests", "tokens"):
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
        if reset is None:
            continue
        resets.append(reset)
        if (headers.get(f"x-ratelimit-remaining-{kind}") or "").strip() == "0":
            exhausted.append(reset)
    if exhausted:
        return max(exhausted)
    return max(resets) if resets else None


def _seconds_until_http_date(text: str, now: float | None) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC per RFC 5322
        when = when.replace(tzinfo=UTC)
    delta = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, delta) if math.isfinite(delta) else None


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------

_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    422: BadRequestError,
}
_EXCERPT = 200
_CONTEXT_PHRASES = ("maximum context length", "context_length_exceeded", "context window")


def _excerpt(content: bytes | str, secrets: tuple[str, ...] = ()) -> str:
    """The start of a body as one line, secrets masked *before* it is cut (a key cut in two
    by the cut would no longer match, and its first half would leak)."""
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
    # Only the start is shown; keep enough past the cut that a secret crossing it is whole.
    keep = _EXCERPT + 64 + max((len(s) for s in secrets), default=0)
    text = redact_text(" ".join(text[: 4 * keep].split())[:keep], secrets)
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def _decode_error_body(body: Any, secrets: tuple[str, ...] = ()) -> Any:
    if isinstance(body, bytes | bytearray | memoryview | str):
        raw = bytes(body) if not isinstance(body, str) else body.encode()
        if not raw.strip():
            return None
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return _excerpt(raw, secrets)
    return body


def classify_error(
    status: int | httpx.Response,
    headers: HeadersLike | None = None,
    body: Any = None,
    *,
    method: str | None = None,
    url: str | httpx.URL | None = None,
    secrets: Iterable[str] = (),
) -> APIError:
    """The :class:`~pipeline.errors.APIError` for an error answer (status, headers, body).

    ``body`` may be raw bytes/text or decoded JSON; OpenAI's ``{"error": {"message", "type",
    "param", "code"}}`` gives the message and code, anything else a short excerpt. Pass an
    ``httpx.Response`` alone to take all of these (and the method and URL) from it. Known
    ``secrets`` are masked in the message, body and headers.

    >>> err = classify_error(429, {"retry-after": "2"},
    ...                      b'{"error": {"message": "slow down", "code": "rate_limit_exceeded"}}')
    >>> type(err).__name__, err.retryable, err.retry_after, str(err)
    ('RateLimitError', True, 2.0, '429 Too Many Requests: slow down (rate_limit_exceeded)')
    """
    if isinstance(status, httpx.Response):
        response = status
        status, headers, body = response.status_code, response.headers, response.content
        try:
            request = response.request
        except RuntimeError:  # a Response built by hand has no request
            pass
        else:
            method = method or request.method
            url = url or request.url
    secrets = tuple(secrets)
    header_map = _lower_headers(headers) if headers is not None else {}
    decoded = redact_json(_decode_error_body(body, secrets), secrets)

    message, code, err_type = None, None, None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code")
        err_type = error.get("type")
    elif isinstance(error, str):  # some servers send {"error": "text"}
        message = error
    elif isinstance(decoded, dict) and isinstance(decoded.get("message"), str):
        message = decoded["message"]
    if message is None and decoded is not None:
        message = decoded if isinstance(decoded, str) else _excerpt(
            msgspec.json.encode(decoded), secrets)
    code = str(code) if code is not None else None
    kinds = {code, str(err_type) if err_type is not None else None}

    cls: type[APIStatusError]
    if status == 429:
        cls = QuotaExceededError if "insufficient_quota" in kinds else RateLimitError
    elif status >= 500:
        cls = ServerError
    else:
        cls = _STATUS_CLASSES.get(status, APIStatusError)
        if cls is BadRequestError and (
            "context_length_exceeded" in kinds
            or any(p in str(message).lower() for p in _CONTEXT_PHRASES)
        ):
            cls = ContextLengthExceededError

    reason = httpx.codes.get_reason_phrase(status) or "error"
    text = f"{status} {reason}"
    if method and url is not None:
        text = f"{method} {url} -> {text}"
    if message:
        text += f": {message}"
    if code:
        text += f" ({code})"
    return cls(
        redact_text(text, secrets),
        status=status,
        code=code,
        body=decoded,
        headers=redact_headers(header_map, secrets),
        retry_after=retry_after(header_map, reset_headers=status == 429),
    )


def _aiohttp_kind(exc: BaseException) -> type[APIError] | None:
    # httpx-aiohttp maps aiohttp's errors loosely (a reset connection becomes ConnectTimeout),
    # so the original aiohttp exception, kept as __cause__, decides when there is one.
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is None or not isinstance(exc, aiohttp.ClientError):
        return None
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return APITimeoutError
    if isinstance(
        exc,
        aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError,
    ):
        return APIConnectionError
    return APIError


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what lies under it: causes, contexts, members of exception groups (anyio
    reports a refused connection as ``OSError`` over the ``ConnectionRefusedError``)."""
    found: list[BaseException] = []
    todo = [exc]
    while todo and len(found) < 32:
        current = todo.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        # aiohttp's connector errors also hold the OS or ssl error as an attribute.
        for nested in (current.__cause__, current.__context__,
                       getattr(current, "os_error", None),
                       getattr(current, "certificate_error", None)):
            if isinstance(nested, BaseException):
                todo.append(nested)
    return found


def _where(url: str | httpx.URL | None, exc: BaseException) -> tuple[str, str]:
    """(host, "host:port") of the request that failed, from ``url`` or the exception."""
    if url is None and isinstance(exc, httpx.RequestError):
        try:
            url = exc.request.url
        except RuntimeError:  # an httpx error built by hand has no request
            url = None
    if url is None:
        return "the server", "the server"
    parts = urllib.parse.urlsplit(str(url))
    host = parts.hostname or "the server"
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        port = None
    shown = f"[{host}]" if ":" in host else host
    return host, f"{shown}:{port}" if port else shown


_TRUST_ADVICE = (
    "If the server's certificate comes from a private or self-signed CA, set SSL_CERT_FILE "
    "to a PEM file holding that CA (or fix the certificate on the server); not retried"
)


def _connect_failure(
    exc: BaseException, url: str | httpx.URL | None
) -> tuple[type[APIError], str] | None:
    """The class and words for a failure to connect that has a plain name: an untrusted
    certificate, a refused connection, a host name that does not resolve, a failed TLS
    handshake. httpx and aiohttp wrap these differently; the OS and ssl errors under their
    wrappers are the same, so both transports get the same class and message."""
    causes = _causes(exc)
    host, host_port = _where(url, exc)
    # aiohttp's ClientConnectorCertificateError is an ssl.CertificateError too, without the
    # reason; the ssl error under it has it.
    certificate = [c for c in causes if isinstance(c, ssl.SSLCertVerificationError)]
    if certificate:
        reasons = [getattr(c, "verify_message", None) or getattr(c, "reason", None)
                   for c in certificate]
        reason = next((r for r in reasons if r), "verification failed")
        return TLSCertificateError, (
            f"the TLS certificate of {host_port} is not trusted ({reason}). {_TRUST_ADVICE}"
        )
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return APIConnectionError, f"connection refused by {host_port}"
        if isinstance(cause, socket.gaierror):
            detail = cause.strerror or str(cause)
            return APIConnectionError, f"cannot resolve {host} ({detail})"
    for cause in causes:
        if isinstance(cause, ssl.SSLError) and not isinstance(
            cause, ssl.SSLZeroReturnError | ssl.SSLEOFError  # a dropped connection
        ):
            reason = cause.reason or str(cause)
            return APIConnectionError, f"TLS handshake with {host_port} failed ({reason})"
    return None


def classify_exception(
    exc: BaseException,
    *,
    method: str | None = None,
    url: str | httpx.URL | None = None,
    secrets: Iterable[str] = (),
) -> APIError:
    """The :class:`~pipeline.errors.APIError` for an exception raised while sending a request.

    Timeouts become :class:`APITimeoutError`; refused, reset or broken connections (httpx's,
    aiohttp's or plain ``OSError``) :class:`APIConnectionError` (both retryable); a server
    certificate that fails verification :class:`TLSCertificateError` (not retryable); a body
    that cannot be decoded :class:`MalformedResponseError`; anything else a plain,
    non-retryable :class:`APIError`. An ``APIError`` is returned as it is.

    Failures to connect are named for what they are, the same with either transport:
    ``connection refused by HOST:PORT``, ``cannot resolve HOST``, ``the TLS certificate of
    HOST:PORT is not trusted (...)`` with what to do about it.

    >>> type(classify_exception(httpx.ReadTimeout("slow"))).__name__
    'APITimeoutError'
    >>> refused = httpx.ConnectError("All connection attempts failed")
    >>> refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    >>> print(classify_exception(refused, method="POST", url="http://127.0.0.1:9/v1/x"))
    POST http://127.0.0.1:9/v1/x: connection refused by 127.0.0.1:9
    """
    if isinstance(exc, APIError):
        return exc
    named = _connect_failure(exc, url)
    if named is not None:
        kind, words = named
        if method and url is not None:
            words = f"{method} {url}: {words}"
        return kind(redact_text(words, secrets))
    cls: type[APIError] | None = None
    shown: BaseException = exc
    cause: BaseException | None = exc
    while cause is not None and cls is None:
        cls = _aiohttp_kind(cause)
        if cls is not None:
            shown = cause  # httpx-aiohttp's wrapper names it wrongly; say what aiohttp saw
        cause = cause.__cause__
    if cls is None:
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            cls = APITimeoutError
        elif isinstance(exc, httpx.DecodingError):
            cls = MalformedResponseError
        elif isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
            cls = APIError  # our request is wrong: sending it again will not help
        elif isinstance(exc, httpx.TransportError | OSError):
            cls = APIConnectionError
        else:
            cls = APIError
    detail = str(shown)
    text = f"{type(shown).__name__}: {detail}" if detail else type(shown).__name__
    if method and url is not None:
        text = f"{method} {url}: {text}"
    return cls(redact_text(text, secrets))


def decode_body(
    content: bytes,
    *,
    status: int = 200,
    headers: HeadersLike | None = None,
    method: str | None = None,
    url: str | httpx.URL | None = None,
    secrets: Iterable[str] = (),
) -> Any:
    """Decode a 2xx JSON body; an empty body is ``None``.

    Raises :class:`MalformedResponseError` (retryable) when the body is not valid JSON, e.g.
    truncated by a dropped connection or an HTML page from a proxy. Its message carries an
    excerpt of the body with bearer tokens, ``sk-`` keys and the given ``secrets`` masked
    (a proxy that echoes the request's headers must not put the key in an error).

    >>> decode_body(b'{"ok": true}')
    {'ok': True}
    """
    if not content.strip():
        return None
    try:
        return msgspec.json.decode(content)
    except msgspec.DecodeError as exc:
        secrets = tuple(secrets)
        where = f"{method} {url} -> " if method and url is not None else ""
        excerpt = _excerpt(content, secrets)
        raise MalformedResponseError(
            redact_text(f"{where}{status} response is not valid JSON ({exc}): {excerpt!r}",
                        secrets),
            status=status,
            code="not_json",
            body=excerpt,
            headers=redact_headers(headers, secrets) if headers is not None else None,
        ) from None


# ---------------------------------------------------------------------------------------------
# Is there an answer in a 2xx body?
# ---------------------------------------------------------------------------------------------

AnswerShape = str  # "chat", "completion" or "embedding"
#: The answer shape of each OpenAI endpoint path whose 2xx bodies :func:`check_answer` checks.
ANSWER_SHAPES: Mapping[str, AnswerShape] = {
    "chat/completions": "chat", "completions": "completion", "embeddings": "embedding"}


def _no_answer(code: str, what: str, status: int, where: str, body: Any,
               cls: type[APIError] = NoAnswerError) -> APIError:
    return cls(f"{where}{status} without an answer: {what}", status=status, code=code,
               body=body)


def _kind(body: Any) -> str:
    return "null" if body is None else type(body).__name__


def check_answer(
    shape: AnswerShape | None,
    body: Any,
    *,
    status: int = 200,
    method: str | None = None,
    url: str | httpx.URL | None = None,
    secrets: Iterable[str] = (),
) -> APIError | None:
    """The error for a decoded 2xx ``body`` that holds no answer of ``shape``, else ``None``.

    The rule, per shape (``None``, an endpoint that is not one of these, accepts anything):

    - every shape: an empty body, ``null``, a list or any non-object is a
      :class:`NoAnswerError`; an object with an ``error`` member and no answer member is an
      :class:`ErrorBodyError` (a gateway's failure sent with 2xx);
    - ``"chat"``: ``choices`` is a non-empty list, and each choice has a ``message`` whose
      ``content`` is a string (``""`` included), or ``tool_calls``, ``function_call`` or a
      ``refusal`` string. A refusal is an answer: the model's reply is the refusal text
      (:attr:`~pipeline.core.record.Record.text` gives it);
    - ``"completion"``: ``choices`` is a non-empty list and each choice's ``text`` a string;
    - ``"chat"`` and ``"completion"``: a choice with ``finish_reason`` ``"content_filter"``
      is a :class:`ContentFilterError` (not retryable: the same prompt is filtered again);
    - ``"embedding"``: ``data`` is a non-empty list of objects whose ``embedding`` is a list
      (floats) or a string (base64).

    It reads only the members it needs (no conversion of the whole body), so it costs about
    a microsecond on a chat answer. Returns the error rather than raising it, so the caller
    decides.

    >>> check_answer("chat", {"choices": [{"message": {"content": "hi"}}]}) is None
    True
    >>> err = check_answer("chat", {"choices": []})
    >>> type(err).__name__, err.code, err.retryable
    ('NoAnswerError', 'no_choices', True)
    >>> check_answer(None, None) is None
    True
    """
    if shape is None:
        return None
    where = f"{method} {url} -> " if method and url is not None else ""
    if not isinstance(body, dict):
        if body is None:
            return _no_answer("empty_body", "the body is empty or null", status, where, None)
        return _no_answer("not_an_object", f"the body is a JSON {_kind(body)}, not an object",
                          status, where, None)
    if shape == "embedding":
        data = body.get("data")
        if not isinstance(data, list) or not data:
            return _missing(body, "no_data", "no embeddings in 'data'", status, where, secrets)
        for item in data:
            vector = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(vector, list | str):
                return _no_answer("null_embedding", "an item of 'data' has no embedding",
                                  status, where, None)
        return None
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return _missing(body, "no_choices", "no choices", status, where, secrets)
    for choice in choices:
        if not isinstance(choice, dict):
            return _no_answer("null_content", "a choice is not an object", status, where, None)
        if choice.get("finish_reason") == "content_filter":
            return ContentFilterError(
                f"{where}{status} but the provider's content filter withheld the answer "
                "(finish_reason 'content_filter'): change the prompt; asking again is "
                "filtered again", status=status, code="content_filter",
                body=redact_json(body, tuple(secrets)))
        if shape == "chat":
            message = choice.get("message")
            if not isinstance(message, dict):
                return _no_answer("no_message", "a choice has no message", status, where, None)
            if not (isinstance(message.get("content"), str) or message.get("tool_calls")
                    or message.get("function_call") or isinstance(message.get("refusal"), str)):
                return _no_answer("null_content", "the message's content is null (no tool "
                                  "call, no refusal)", status, where, None)
        elif not isinstance(choice.get("text"), str):
            return _no_answer("null_content", "a choice's text is missing or null", status,
                              where, None)
    return None


def _missing(body: dict[str, Any], code: str, what: str, status: int, where: str,
             secrets: Iterable[str]) -> APIError:
    """No answer member: an error object (a gateway's failure) or just nothing."""
    error = body.get("error")
    if error is None:
        return _no_answer(code, what if body else "the body is {}", status, where, None)
    secrets = tuple(secrets)
    message, err_code = error, None
    if isinstance(error, dict):
        message = error.get("message") or _excerpt(msgspec.json.encode(error), secrets)
        err_code = error.get("code") or error.get("type")
    text = redact_text(f"{where}{status} with an error instead of an answer: {message}"
                       + (f" ({err_code})" if err_code else ""), secrets)
    return ErrorBodyError(text, status=status,
                          code=str(err_code) if err_code is not None else "error_body",
                          body=redact_json(body, secrets))
