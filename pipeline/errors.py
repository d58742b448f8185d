"""The library's exceptions.

Inside a running pipeline, errors are *values* stored on records (one bad row never ends the
stream); at the API edge (bad arguments, a missing file) they are raised. Either way they are
instances of this tree::

    PipelineError
    ├── ConfigError(ValueError)              bad arguments to a library object
    ├── LimiterError
    │   └── RequestTooLarge(ValueError)      asks for more than the bucket can ever hold
    ├── PayloadError(ValueError)             a row that cannot become a request payload
    │   └── TemplateKeyError(KeyError)       a template names a key missing from the row
    ├── InputError                           unreadable input: missing file/column, bad line
    ├── CacheError                           the response cache could not be read or written
    ├── RunStoppedError                      the run stopped: every later request would fail
    ├── StageError                           a stage of yours raised on this row
    └── APIError                             one HTTP call failed (``retryable`` says what to do)
        ├── TransportError                   nothing usable came back           [retryable]
        │   ├── APITimeoutError
        │   └── APIConnectionError           refused, reset, or the host unknown
        │       └── TLSCertificateError      an untrusted server certificate  [not retryable]
        ├── MalformedResponseError           a body that is not the JSON promised [retryable]
        │   ├── SchemaValidationError        an answer that does not fit the requested schema
        │   └── NoAnswerError                a 2xx JSON body with no answer in it [retryable]
        │       └── ErrorBodyError           a 2xx whose body is an error object  [retryable]
        ├── ContentFilterError               the provider withheld the answer (content filter)
        ├── BatchError                       a Batch API request got no answer
        │   └── BatchExpiredError            its batch expired or was cancelled [retryable]
        └── APIStatusError                   the server answered with an error status
            ├── RateLimitError               429 rate_limit_exceeded            [retryable]
            │   └── ThrottledError           still throttled after max_wait seconds
            ├── QuotaExceededError           429 insufficient_quota
            ├── ServerError                  5xx                                [retryable]
            ├── RequestTimeoutError          408                                [retryable]
            ├── ConflictError                409                                [retryable]
            ├── BadRequestError              400, 422
            │   └── ContextLengthExceededError
            ├── AuthenticationError          401
            ├── PermissionDeniedError        403
            └── NotFoundError                404

``retryable`` is a class attribute, so ``isinstance`` checks and ``err.retryable`` agree.
:class:`InsecureConnectionWarning` (a ``UserWarning``) is the one warning category: an API key
about to travel unencrypted.
Messages never contain API keys: the service redacts them before an error is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

#: Why an answer did not fit its schema (:attr:`SchemaValidationError.reason`).
SchemaFailure = Literal["not_json", "invalid", "refusal", "truncated", "empty"]

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BatchError",
    "BatchExpiredError",
    "CacheError",
    "ConfigError",
    "ConflictError",
    "ContentFilterError",
    "ContextLengthExceededError",
    "ErrorBodyError",
    "InputError",
    "InsecureConnectionWarning",
    "LimiterError",
    "MalformedResponseError",
    "NoAnswerError",
    "NotFoundError",
    "PayloadError",
    "PermissionDeniedError",
    "PipelineError",
    "QuotaExceededError",
    "RateLimitError",
    "RequestTimeoutError",
    "RequestTooLarge",
    "RunStoppedError",
    "SchemaFailure",
    "SchemaValidationError",
    "ServerError",
    "StageError",
    "TLSCertificateError",
    "TemplateKeyError",
    "ThrottledError",
    "TransportError",
]


class PipelineError(Exception):
    """Base class of every exception this library raises or stores on a record."""


class ConfigError(PipelineError, ValueError):
    """An argument to a library object is invalid (a negative rate, NaN, an unknown option)."""


class LimiterError(PipelineError):
    """A rate limiter cannot serve a request."""


class RequestTooLarge(LimiterError, ValueError):
    """The request asks for more than the limiter's bucket can ever hold, so it would wait forever.

    Example: a limiter with ``tpm=10_000`` asked for 12,000 tokens in one request.
    """

    def __init__(self, message: str, *, requested: float = 0.0, capacity: float = 0.0) -> None:
        super().__init__(message)
        self.requested = requested
        self.capacity = capacity


class PayloadError(PipelineError, ValueError):
    """A row cannot be turned into a request payload; the message names the field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TemplateKeyError(PayloadError, KeyError):
    """A prompt template names a key the row does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable
        return str(self.args[0]) if self.args else ""


class InputError(PipelineError):
    """Input that cannot be read: a missing file or column, an unknown format, a bad line."""


class CacheError(PipelineError):
    """The response cache could not be read or written."""


class StageError(PipelineError):
    """A stage of yours (``run(..., stages=[...])``, :func:`~pipeline.stages.each`) raised on
    this row: ``stage`` names it and ``__cause__`` is what it raised. The row fails; the rows
    around it go on, and an answer it had stays in the cache (a rerun does not pay again)."""

    def __init__(self, message: str, *, stage: str = "") -> None:
        super().__init__(message)
        self.stage = stage


class RunStoppedError(PipelineError):
    """The run was stopped before this row was sent, because every later request would fail
    the same way (``insufficient_quota``, a wrong key, an unknown model, no server at the base
    URL). ``cause`` is the error that stopped it; nothing was sent for this row.
    """

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self),))


class APIError(PipelineError):
    """One HTTP call failed.

    Attributes:
        retryable: whether sending the same request again may succeed.
        status: the HTTP status code, or ``None`` when no response arrived.
        code: the provider's error code (``"rate_limit_exceeded"``...), when it gave one.
        retry_after: seconds the server asked us to wait, when it said so.
    """

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body
        self.headers = dict(headers) if headers is not None else {}
        self.retry_after = retry_after

    def __repr__(self) -> str:
        parts = [repr(self.message)]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.code:
            parts.append(f"code={self.code!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep keyword-only attributes across pickling (multiprocessing, diskcache).
        return (
            _rebuild_api_error,
            (type(self), self.message, self.status, self.code, self.body, self.headers,
             self.retry_after),
        )


def _rebuild_api_error(
    cls: type[APIError],
    message: str,
    status: int | None,
    code: str | None,
    body: Any,
    headers: Mapping[str, str],
    retry_after: float | None,
) -> APIError:
    return cls(message, status=status, code=code, body=body, headers=headers,
               retry_after=retry_after)


class TransportError(APIError):
    """No usable response arrived (timeout, refused or reset connection)."""

    retryable = True


class APITimeoutError(TransportError):
    """The request timed out (connect, write, read or pool)."""


class APIConnectionError(TransportError):
    """The connection failed or was reset before a complete response arrived."""


class TLSCertificateError(APIConnectionError):
    """The server's TLS certificate failed verification (self-signed, unknown CA, expired, or
    for another host name). Sending again meets the same certificate, so it is not retried;
    the message says how to trust a private CA (``SSL_CERT_FILE``)."""

    retryable = False


class InsecureConnectionWarning(UserWarning):
    """An API key is about to be sent unencrypted (``http://``) to a host that is not this
    machine, where anyone on the network path can read it."""


class MalformedResponseError(APIError):
    """The server answered 2xx but the body is not the JSON it promised (truncated, garbage)."""

    retryable = True


class SchemaValidationError(MalformedResponseError):
    """The answer does not fit the requested schema: not JSON, a missing or ill-typed field, a
    refusal, or JSON cut short at ``max_tokens``.

    It is a :class:`~pipeline.errors.MalformedResponseError` (the server answered 200 but not
    with the JSON it was asked for), so ``retryable`` is True: the model samples again, and
    asking again often gives a valid answer. A run asks again at most its re-ask budget, which
    is separate from the retry budget for transport errors, and counts the re-asks. ``reason``
    tells the cases apart: ``"not_json"``, ``"invalid"`` (JSON that breaks the schema),
    ``"refusal"`` (the model declined), ``"truncated"`` (``finish_reason`` was ``"length"``:
    asking again with the same ``max_tokens`` is cut again, so a run should not) and ``"empty"``.

    Attributes:
        field: where it failed, as a JSON path (``"$.score"``, ``"$.items[2].name"``), or
            ``None`` when the answer as a whole is wrong (not JSON).
        excerpt: the start of the answer (model output only: no request, no key).
    """

    def __init__(self, message: str, *, field: str | None = None, excerpt: str = "",
                 reason: SchemaFailure = "invalid") -> None:
        super().__init__(message, code="schema_validation")
        self.field = field
        self.excerpt = excerpt
        self.reason: SchemaFailure = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_validation_error,
                (type(self), self.message, self.field, self.excerpt, self.reason))


def _rebuild_validation_error(cls: type[SchemaValidationError], message: str,
                              field: str | None, excerpt: str,
                              reason: SchemaFailure) -> SchemaValidationError:
    return cls(message, field=field, excerpt=excerpt, reason=reason)


class NoAnswerError(MalformedResponseError):
    """The server answered 2xx with JSON that holds no answer: an empty body, ``null``,
    ``{}``, ``[]``, no ``choices``, a chat message whose ``content`` is null with no tool
    call or refusal, a completion without ``text``, embeddings without vectors.

    Retryable: a provider or a gateway in front of it that drops the answer now and then
    answers the same request fully on another attempt (the model samples again), and the
    retry budget bounds the cost of one that never does. It is never cached and never counted
    as answered. ``code`` says which case it is (``"empty_body"``, ``"no_choices"``,
    ``"null_content"``...); ``status`` is the 2xx that came.
    """


class ErrorBodyError(NoAnswerError):
    """The server answered 2xx with an error object (``{"error": {"message", ...}}``) instead
    of an answer, as some gateways and proxies do when the upstream failed.

    Retryable like :class:`NoAnswerError`: the status says the call went through, so the
    failure is the gateway's and usually passing. ``code`` is the error object's code when it
    gave one; the message is its message, with secrets masked.
    """


class ContentFilterError(APIError):
    """The provider's content filter withheld the answer (``finish_reason`` was
    ``"content_filter"``): the model's output, if any, is partial or empty.

    Not retryable: the same prompt is filtered again (the filter looks at the prompt and at
    what the model writes for it), and each attempt is billed. Change the prompt instead.
    ``status`` is the 2xx that came; ``body`` keeps the response (its ``usage`` was billed).
    """


class APIStatusError(APIError):
    """The server answered with an error status code."""


class RateLimitError(APIStatusError):
    """429 because a rate limit was exceeded; wait (``retry_after``) and try again."""

    retryable = True


class ThrottledError(RateLimitError):
    """The row was still refused for rate limits after ``max_wait`` seconds of trying.

    Throttling costs time, not attempts: a row fails this way only past its time budget. The
    message says how long and how many 429s; the last 429's details are kept.
    """

    retryable = False


class QuotaExceededError(APIStatusError):
    """429 ``insufficient_quota``: the account is out of credit. Retrying will not help."""


class ServerError(APIStatusError):
    """A 5xx answer: the provider failed; usually transient."""

    retryable = True


class RequestTimeoutError(APIStatusError):
    """408 from the server."""

    retryable = True


class ConflictError(APIStatusError):
    """409 from the server (OpenAI documents it as retryable)."""

    retryable = True


class BadRequestError(APIStatusError):
    """400 or 422: the request itself is wrong; sending it again gives the same answer."""


class ContextLengthExceededError(BadRequestError):
    """400 ``context_length_exceeded``: the prompt plus ``max_tokens`` exceed the model's window."""


class AuthenticationError(APIStatusError):
    """401: missing or wrong API key."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not use this resource."""


class NotFoundError(APIStatusError):
    """404: unknown path, model or object."""


class BatchError(APIError):
    """A request sent through the Batch API got no answer: its batch failed validation (the
    provider's reasons are in the message), or the line itself was refused."""


class BatchExpiredError(BatchError):
    """The batch expired or was cancelled before it answered this request; sending it again
    (in a new batch, or online) can succeed."""

    retryable = True
