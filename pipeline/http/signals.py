"""What a provider's answer says about its limits, read once, as an :class:`Outcome` value.

Every answer the call stage gets (an answer with its headers, or an error) goes through
:func:`answered` or :func:`refused` here and comes out as one
:class:`~pipeline.limiter.Outcome`: ok with the tokens charged and the limits the provider
states; throttled with the dimension, the sure part of the wait and any limit the 429's text
states; overloaded; unavailable; failed. The limiters only ever read those values: no module
outside :mod:`pipeline.http` reads a rate-limit header or a 429's body.

The provider table (:data:`PROVIDERS`, in :mod:`pipeline.http._providers`) says how each
family of servers states its limits; :mod:`pipeline.http._headers` reads the headers by it
and :mod:`pipeline.http._throttles` what a 429 says beyond them. Limits are per minute in the
Outcome, whatever unit the server used; resets are seconds from now. Where several headers
state a limit on one dimension (a gateway's own and its upstream's), the lowest is the one
that binds.

A 503 that gives no reason is ``unavailable`` (one alone is a random server error); a 529, or
a 503/429 whose text says overloaded or concurrency, is ``overloaded``.

>>> out = answered({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
...                 "x-ratelimit-reset-requests": "120ms"}, tokens=42)
>>> out.kind, out.tokens, out.limit_requests, out.remaining_requests, out.reset_requests
('ok', 42, 500.0, 499.0, 0.12)
>>> answered({"x-ratelimit-limit": "10", "x-tokenlimit-limit": "5000"},
...          provider=PROVIDERS["together"])
Outcome(kind='ok', limit_requests=600.0, limit_tokens=300000.0)
"""


from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from pipeline.errors import APIError, RateLimitError, ServerError
from pipeline.http._headers import _facts
from pipeline.http._providers import PROVIDERS, Provider, provider_for
from pipeline.http._throttles import (
    DEFAULT_COOLDOWN,
    _gateway_counts,
    _header,
    _reset_of_exhausted,
    _wait_in_text,
    shared_pause,
    stated_by,
    stated_limit,
    throttled_dimension,
)
from pipeline.limiter import Outcome, OutcomeKind

OK: OutcomeKind = "ok"
THROTTLED: OutcomeKind = "throttled"
OVERLOADED: OutcomeKind = "overloaded"
UNAVAILABLE: OutcomeKind = "unavailable"
FAILED: OutcomeKind = "failed"
_CANCELLED = Outcome(kind="cancelled")
_FAILED = Outcome(kind="failed")

__all__ = ["PROVIDERS", "Provider", "answered", "cancelled", "provider_for", "refused",
           "shared_pause", "stated_by", "stated_limit", "throttled_dimension"]

_AUTO = PROVIDERS["auto"]


class _Stated(TypedDict):
    """What the rate-limit headers state, as :class:`Outcome`'s keywords (``None``: unsaid)."""

    limit_requests: float | None
    limit_tokens: float | None
    remaining_requests: float | None
    remaining_tokens: float | None
    reset_requests: float | None
    reset_tokens: float | None


_UNSAID = _Stated(limit_requests=None, limit_tokens=None, remaining_requests=None,
                  remaining_tokens=None, reset_requests=None, reset_tokens=None)


def _stated(facts: Mapping[str, float] | None) -> _Stated:
    """The headers' facts (``limit_requests``... as the header reader names them) by name,
    so each is checked against :class:`Outcome`'s field of that name; ``None`` is Outcome's
    own default, so an unsaid fact reads as before."""
    if not facts:
        return _UNSAID
    get = facts.get
    return _Stated(limit_requests=get("limit_requests"), limit_tokens=get("limit_tokens"),
                   remaining_requests=get("remaining_requests"),
                   remaining_tokens=get("remaining_tokens"),
                   reset_requests=get("reset_requests"), reset_tokens=get("reset_tokens"))


def answered(headers: Mapping[str, str] | None, *, tokens: float | None = None,
             exact: bool = False, provider: Provider = _AUTO) -> Outcome:
    """The outcome of an answered request: the tokens charged and what the headers state.

    >>> answered({"anthropic-ratelimit-requests-limit": "50",
    ...           "anthropic-ratelimit-requests-remaining": "49"}).limit_requests
    50.0
    >>> answered({"server": "vllm"}, tokens=10)
    Outcome(kind='ok', tokens=10)
    >>> answered({"x-ratelimit-limit-requests": "14400", "x-ratelimit-limit-tokens": "6000"},
    ...          provider=PROVIDERS["groq"])  # Groq's requests count per day
    Outcome(kind='ok', limit_tokens=6000.0)
    """
    facts = _facts(headers, provider)
    if facts is None:
        return Outcome(kind=OK, tokens=tokens, exact=exact)
    return Outcome(kind=OK, tokens=tokens, exact=exact, **_stated(facts))


def cancelled() -> Outcome:
    """The outcome of a request abandoned before its answer (nothing to learn)."""
    return _CANCELLED


_OVERLOAD_WORDS = ("overload", "concurren", "too many requests at once",
                   "too many concurrent", "at capacity", "server is busy",
                   "limit type: max_parallel_requests")
# What makes a 5xx an in-flight cap by its words alone: "too many at once". "Overloaded"
# does not: OpenAI's random 503s read "The engine is currently overloaded, please try again
# later" (3% of them taken as a cap collapsed 64 in flight to 1-2); a bare or merely
# "overloaded" 503 is UNAVAILABLE, and the limiter's controller takes a storm of those as a cap.
_IN_FLIGHT_WORDS = ("concurren", "in flight", "in-flight", "parallel request",
                    "too many requests at once")


def refused(error: BaseException, *, provider: Provider = _AUTO) -> Outcome:
    """The outcome of a failed request: throttled, overloaded, unavailable or failed.

    >>> from pipeline.errors import RateLimitError, ServerError
    >>> refused(RateLimitError("429 ... on tokens per min (TPM): Limit 30000, Used 29937",
    ...                        status=429, headers={"retry-after-ms": "644"}, retry_after=0.644))
    Outcome(kind='throttled', dimension='tokens', wait=0.644, sure_wait=0.644, stated_limit=30000.0, source='retry-after-ms')
    >>> refused(ServerError("503 Service Unavailable", status=503)).kind
    'unavailable'
    >>> refused(ServerError("503: too many requests in flight", status=503)).kind
    'overloaded'
    """  # noqa: E501
    if not isinstance(error, APIError):
        return _FAILED
    facts = _facts(error.headers, provider) or {}
    if isinstance(error, RateLimitError):
        text = f"{error.code or ''} {error.message}".lower()
        gateway = _gateway_counts(error.message)
        limit_type = _header(error, "rate_limit_type")
        if any(word in text for word in _OVERLOAD_WORDS) or gateway == "parallel" or \
                (limit_type or "").strip().lower() == "max_parallel_requests":
            return Outcome(kind=OVERLOADED, **_stated(facts))
        stated = stated_limit(error)
        dimension = stated[0] if stated is not None else throttled_dimension(error)
        wait = error.retry_after
        source = stated_by(error)
        coarse_text = False
        if wait is None:
            wait, coarse_text = _wait_in_text(error.message)
        if wait is None:  # Anthropic states no wait but its reset time
            wait, source = _reset_of_exhausted(facts, dimension, source)
        if wait is None:
            sure = None
        elif limit_type is not None and error.retry_after is not None:
            # LiteLLM's own limiter: its Retry-After is the whole window, not the time to
            # its end; the refused row waits for it, the others only for a second.
            sure = min(wait, DEFAULT_COOLDOWN)
        elif coarse_text:
            sure = max(0.0, wait - 1.0)  # "retry after 6 seconds": rounded up to the second
        else:
            sure = shared_pause(error, wait)
        return Outcome(kind=THROTTLED, dimension=dimension, wait=wait, sure_wait=sure,
                       stated_limit=None if stated is None else stated[1],
                       source=source, **_stated(facts))
    if isinstance(error, ServerError):
        text = f"{error.code or ''} {error.message}".lower()
        if error.status == 529 or any(word in text for word in _IN_FLIGHT_WORDS):
            return Outcome(kind=OVERLOADED, **_stated(facts))  # Anthropic's 529 "overloaded_error"
        if error.status == 503:
            return Outcome(kind=UNAVAILABLE, **_stated(facts))
    if facts:
        return Outcome(kind=FAILED, **_stated(facts))
    return _FAILED
