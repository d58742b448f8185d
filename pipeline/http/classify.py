"""Small functions every service and stage needs around one HTTP call.

* :func:`classify_error` / :func:`classify_exception` turn an error status or a transport
  exception into the :mod:`pipeline.errors` tree (``err.retryable`` says what to do next);
  :func:`decode_body` turns a 2xx body into JSON or a :class:`MalformedResponseError`.
* :func:`retry_after` reads how long the server asked us to wait.
* :func:`endpoint_from_url` and :func:`api_method` go from what a user typed to what we call.
* :func:`upload_file_with_retry` uploads a file, rereading it on every attempt.
* :func:`cache_key` is the response cache's key for a request.
* :func:`redact_text`, :func:`redact_url`, :func:`redact_headers` and :func:`mask_secret` keep
  API keys out of everything this library prints, logs or raises.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import math
import mimetypes
import pathlib
import re
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from pipeline._durations import parse_duration
from pipeline.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    ContextLengthExceededError,
    InputError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
)
from pipeline.request import APIRequest, FilePart, Response

if TYPE_CHECKING:
    from pipeline.service import BaseService

__all__ = [
    "HTTP_METHODS",
    "api_method",
    "cache_key",
    "classify_error",
    "classify_exception",
    "decode_body",
    "endpoint_from_url",
    "mask_secret",
    "redact_headers",
    "redact_text",
    "redact_url",
    "retry_after",
    "upload_file_with_retry",
]

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "cookie",
        "set-cookie",
        "x-goog-api-key",
    }
)
_MASK = "***"
_SECRET_QUERY = re.compile(
    r"(?i)([?&;](?:api[-_]?key|key|access[-_]?token|token|secret|sig|signature)=)[^&#\s'\"]*"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}")


def mask_secret(secret: str | None) -> str:
    """A printable stand-in for a secret: at most its last four characters survive.

    >>> mask_secret("sk-proj-0123456789abcdef"), mask_secret("short"), mask_secret(None)
    ('sk-...cdef', '***', 'None')
    """
    if secret is None:
        return "None"
    if len(secret) < 16:
        return _MASK
    prefix = "sk-" if secret.startswith("sk-") else ""
    return f"{prefix}...{secret[-4:]}"


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets, bearer tokens, ``sk-`` keys and ``key=`` values masked.

    >>> redact_text("GET https://h/v1?key=abc&x=1 Bearer sk-abcdefgh", secrets=["abc"])
    'GET https://h/v1?key=***&x=1 Bearer ***'
    """
    text = _SECRET_QUERY.sub(lambda m: m.group(1) + _MASK, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {_MASK}", text)
    text = _OPENAI_KEY.sub("sk-" + _MASK, text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return text


def redact_url(url: str | httpx.URL, secrets: Iterable[str] = ()) -> str:
    """The URL as text, with credentials and secret query parameters masked.

    >>> redact_url("https://user:pw@example.com/v1/x?api-version=1&key=s3cret")
    'https://***@example.com/v1/x?api-version=1&key=***'
    """
    text = str(url)
    parts = urllib.parse.urlsplit(text)
    if parts.username is not None or parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        text = urllib.parse.urlunsplit(parts._replace(netloc=f"{_MASK}@{host}"))
    return redact_text(text, secrets)


def redact_headers(headers: Mapping[str, str], secrets: Iterable[str] = ()) -> dict[str, str]:
    """A copy of ``headers`` (names lower-cased) with auth headers and known secrets masked.

    >>> redact_headers({"Authorization": "Bearer sk-x", "X-Request-Id": "req_1"})
    {'authorization': '***', 'x-request-id': 'req_1'}
    """
    secrets = tuple(secrets)
    return {
        name.lower(): _MASK if name.lower() in SECRET_HEADERS else redact_text(value, secrets)
        for name, value in headers.items()
    }


def _redact_json(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {k: _redact_json(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_json(v, secrets) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Retry-After
# ---------------------------------------------------------------------------------------------

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


def _excerpt(content: bytes | str) -> str:
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def _decode_error_body(body: Any) -> Any:
    if isinstance(body, bytes | bytearray | memoryview | str):
        raw = bytes(body) if not isinstance(body, str) else body.encode()
        if not raw.strip():
            return None
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return _excerpt(raw)
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
    decoded = _redact_json(_decode_error_body(body), secrets)

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
        message = decoded if isinstance(decoded, str) else _excerpt(msgspec.json.encode(decoded))
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


def classify_exception(
    exc: BaseException,
    *,
    method: str | None = None,
    url: str | httpx.URL | None = None,
    secrets: Iterable[str] = (),
) -> APIError:
    """The :class:`~pipeline.errors.APIError` for an exception raised while sending a request.

    Timeouts become :class:`APITimeoutError`; refused, reset or broken connections (httpx's,
    aiohttp's or plain ``OSError``) :class:`APIConnectionError` (both retryable); a body that
    cannot be decoded :class:`MalformedResponseError`; anything else a plain, non-retryable
    :class:`APIError`. An ``APIError`` is returned as it is.

    >>> type(classify_exception(httpx.ReadTimeout("slow"))).__name__
    'APITimeoutError'
    """
    if isinstance(exc, APIError):
        return exc
    cls: type[APIError] | None = None
    cause: BaseException | None = exc
    while cause is not None and cls is None:
        cls = _aiohttp_kind(cause)
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
    detail = str(exc)
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
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
) -> Any:
    """Decode a 2xx JSON body; an empty body is ``None``.

    Raises :class:`MalformedResponseError` (retryable) when the body is not valid JSON, e.g.
    truncated by a dropped connection or an HTML page from a proxy.

    >>> decode_body(b'{"ok": true}')
    {'ok': True}
    """
    if not content.strip():
        return None
    try:
        return msgspec.json.decode(content)
    except msgspec.DecodeError as exc:
        where = f"{method} {url} -> " if method and url is not None else ""
        raise MalformedResponseError(
            f"{where}{status} response is not valid JSON ({exc}): {_excerpt(content)!r}",
            status=status,
            body=_excerpt(content),
            headers=redact_headers(headers) if headers is not None else None,
        ) from None


# ---------------------------------------------------------------------------------------------
# URLs and methods
# ---------------------------------------------------------------------------------------------

_VERSION_SEGMENT = re.compile(r"v\d+(?:(?:alpha|beta)\d*)?", re.IGNORECASE)


def endpoint_from_url(url: str, *, base_url: str | None = None) -> str:
    """The endpoint path of an API URL, relative to the API root.

    Handles ``http`` and ``https``, a ``/v1/`` (or ``/v1beta/``...) root, Azure's
    ``/openai/deployments/{name}/...`` and query strings. With ``base_url`` the path is taken
    relative to it instead. Raises :class:`ConfigError` for anything that is not such a URL.

    >>> endpoint_from_url("https://api.openai.com/v1/chat/completions")
    'chat/completions'
    >>> endpoint_from_url(
    ...     "https://r.openai.azure.com/openai/deployments/gpt4o/embeddings?api-version=2024-02-01")
    'embeddings'
    """
    if not isinstance(url, str) or not url.strip() or any(c.isspace() for c in url.strip()):
        raise ConfigError(f"not an http(s) API URL: {url!r}")
    url = url.strip()
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError on a garbage port
    except ValueError as exc:
        raise ConfigError(f"not an http(s) API URL: {redact_url(url)!r} ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"not an http(s) API URL: {redact_url(url)!r}; expected e.g. "
            "'https://api.openai.com/v1/chat/completions'"
        )
    segments = [s for s in parts.path.split("/") if s]
    if base_url is not None:
        base = [s for s in urllib.parse.urlsplit(base_url.strip()).path.split("/") if s]
        if segments[: len(base)] != base:
            raise ConfigError(f"{redact_url(url)!r} is not under base URL {redact_url(base_url)!r}")
        segments = segments[len(base) :]
    else:
        segments = _strip_api_root(segments)
    if not segments:
        raise ConfigError(f"no endpoint path in URL {redact_url(url)!r}")
    return "/".join(segments)


def _strip_api_root(segments: list[str]) -> list[str]:
    for i, segment in enumerate(segments):
        if segment == "deployments" and i > 0 and segments[i - 1] == "openai":
            return segments[i + 2 :]  # skip the deployment name too
        if _VERSION_SEGMENT.fullmatch(segment):
            rest = segments[i + 1 :]
            return rest[1:] if rest[:1] == ["openai"] else rest
    return segments[1:] if segments[:1] == ["openai"] else segments


def api_method(client: Any, method: str) -> Callable[..., Any]:
    """The client's bound method for an HTTP verb (any case), e.g. ``client.post``.

    Works for ``httpx.AsyncClient`` and anything with lower-case verb methods (an aiohttp
    ``ClientSession``). Raises :class:`ConfigError` for an unknown verb.

    >>> api_method(httpx.AsyncClient(), "get").__name__
    'get'
    """
    verb = method.upper() if isinstance(method, str) else ""
    if verb not in HTTP_METHODS:
        raise ConfigError(
            f"unknown HTTP method {method!r}; expected one of {', '.join(sorted(HTTP_METHODS))}"
        )
    bound = getattr(client, verb.lower(), None)
    if not callable(bound):
        raise ConfigError(f"{type(client).__name__} has no {verb.lower()}() method")
    return bound  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# File upload
# ---------------------------------------------------------------------------------------------


async def upload_file_with_retry(
    service: BaseService,
    path: str | pathlib.Path,
    purpose: str = "fine-tune",
    *,
    attempts: int = 5,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    endpoint: str = "files",
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> Response:
    """Upload a file (multipart ``file`` + ``purpose``), retrying retryable errors.

    The file is read again on every attempt, so a retry never sends an exhausted stream.
    Waits ``backoff * 2**attempt`` seconds (at most ``max_backoff``), or longer when the
    server asks for it; ``sleep`` is injectable so tests need not wait. Raises
    :class:`InputError` when the file cannot be read, and the last :class:`APIError` when
    every attempt failed or the error is not retryable.

    >>> # resp = await upload_file_with_retry(service, "train.jsonl", "fine-tune")
    """
    if attempts < 1:
        raise ConfigError(f"attempts must be at least 1, got {attempts}")
    path = pathlib.Path(path)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix == ".jsonl":
        content_type = "application/jsonl"
    for attempt in range(attempts):
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
        request = APIRequest(
            path=endpoint,
            files={"file": FilePart(path.name, content, content_type)},
            data={"purpose": purpose},
        )
        try:
            return await service.call(endpoint, request)
        except APIError as err:
            if not err.retryable or attempt == attempts - 1:
                raise
            delay = min(max_backoff, backoff * 2**attempt)
            await sleep(max(delay, err.retry_after or 0.0))
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# Cache key
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _key_namespace(base_url: str) -> str:
    # The same few base URLs come with every row: redact each once.
    return redact_url(base_url.strip().rstrip("/"))


def cache_key(request: APIRequest, *, base_url: str | None = None) -> str:
    """A stable SHA-256 hex key for a request: same request, same key, in any process.

    Covers the method, path, JSON body, form fields and (by content hash) files, plus the
    ``base_url`` when given (with secrets masked), never headers or auth, and not the
    token estimate (it does not change the answer).

    >>> a = APIRequest(path="embeddings", body={"model": "m", "input": "hi"})
    >>> b = APIRequest(path="/embeddings", body={"input": "hi", "model": "m"})
    >>> cache_key(a) == cache_key(b), cache_key(a) == cache_key(APIRequest(path="embeddings"))
    (True, False)
    """
    files = None
    if request.files:
        files = {
            name: [part.filename, part.content_type, hashlib.sha256(part.content).hexdigest()]
            for name, part in request.files.items()
        }
    document: dict[str, Any] = {
        "v": 1,
        "method": request.method.upper(),
        "path": request.path.strip("/"),
        "body": request.body,
        "data": request.data,
        "files": files,
    }
    if base_url is not None:
        document["base_url"] = _key_namespace(base_url)
    encoded = msgspec.json.encode(document, order="deterministic")
    return hashlib.sha256(encoded).hexdigest()
