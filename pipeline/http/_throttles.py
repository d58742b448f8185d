"""What a 429 says beyond its status: the per-minute limit its text states, the dimension it
names, the wait it gives (in a header or its text), how much of that wait is sure for
everyone, and where the wait came from."""

from __future__ import annotations

import math
import re

from pipeline.core.durations import parse_duration
from pipeline.errors import APIError, RateLimitError
from pipeline.http._headers import _ANTHROPIC, _TOKENLIMIT, _X
from pipeline.limiter import Dimension

__all__ = ["shared_pause", "stated_by", "stated_limit", "throttled_dimension"]

#: How long everyone pauses after a 429 that did not say how long to wait.
DEFAULT_COOLDOWN = 1.0


def _header(error: APIError, name: str) -> str | None:
    headers = error.headers
    if not headers:
        return None
    value = headers.get(name)
    if value is None and isinstance(headers, dict):
        value = {str(k).lower(): v for k, v in headers.items()}.get(name)
    return None if value is None else str(value)


def _reset_of_exhausted(facts: dict[str, float], dimension: Dimension | None,
                        source: str) -> tuple[float | None, str]:
    """The reset of the dimension the headers say is used up (Anthropic's 429s carry a
    ``retry-after``, but a proxy may drop it and keep the reset times)."""
    for dim in ((dimension,) if dimension is not None else ("requests", "tokens")):
        if facts.get(f"remaining_{dim}") == 0 and f"reset_{dim}" in facts:
            return facts[f"reset_{dim}"], f"the {dim} reset"
    return None, source


_STATED_LIMIT = re.compile(
    # The number must end there: "Limit 1e+06" (a server printing floats) is not a limit of 1.
    r"(requests|tokens) per min(?:ute)?\b[^0-9]{0,40}?\blimit:? ?([0-9][0-9,]*)"
    r"(?![0-9]|\.[0-9]|[eE][+-]?[0-9])",
    re.IGNORECASE)
# Anthropic: "would exceed the rate limit for your organization (...) of 20,000 input tokens
# per minute"; "... your organization's rate limit of 50 requests per minute".
_STATED_BEFORE = re.compile(
    r"\bof ([0-9][0-9,]*) (input tokens|output tokens|tokens|requests) per minute",
    re.IGNORECASE)
# LiteLLM's own limiter: "Limit type: requests. Current limit: 15, Remaining: 0."
_GATEWAY_TYPE = re.compile(
    r"limit type: (requests|tokens|max_parallel_requests)\.? current limit: ([0-9]+)",
    re.IGNORECASE)
# Its older wording: "current rpm: 16, rpm limit: 15, current tpm: 12260, tpm limit: 5000,
# current max_parallel_requests: 0, max_parallel_requests: 9223372036854775807"
_GATEWAY_COUNT = re.compile(
    r"current (rpm|tpm|max_parallel_requests): ([0-9]+),? (?:rpm limit|tpm limit|"
    r"max_parallel_requests): ([0-9]+)", re.IGNORECASE)
_UNSET = 1e15  # LiteLLM writes sys.maxsize for a limit that is not set
_WAIT_TEXT = re.compile(
    r"(?:retry after|try again in)\s+((?:[0-9]+(?:\.[0-9]+)?(?:h|ms|m|s))+(?![a-z])|"
    r"[0-9]+(?:\.[0-9]+)?)\s*(milliseconds?|ms|seconds?|secs?|s|minutes?|mins?)?\b",
    re.IGNORECASE)


def _gateway_counts(message: str) -> tuple[Dimension, float] | str | None:
    """LiteLLM's older 429: the scope that is full, from its current and limit numbers."""
    for kind, current, limit in _GATEWAY_COUNT.findall(message):
        value = float(limit)
        if value >= _UNSET or float(current) < value:
            continue
        if kind.lower() == "max_parallel_requests":
            return "parallel"
        return ("requests" if kind.lower() == "rpm" else "tokens"), value
    return None


def stated_limit(error: APIError) -> tuple[Dimension, float] | None:
    """The per-minute limit a 429's text states, as ``(dimension, limit)``, if it does.

    OpenAI and Groq: "Rate limit reached for gpt-4o in organization org-... on tokens per min
    (TPM): Limit 30000, Used 29937, Requested 385. Please try again in 644ms." (older: "... on
    requests per min. Limit: 3 / min. ..."). Anthropic: "... of 20,000 input tokens per
    minute" (an output-token limit bounds no estimate: the dimension, no number). LiteLLM:
    "Limit type: tokens. Current limit: 5000" and "current tpm: 5100, tpm limit: 5000".
    Daily limits ("requests per day (RPD)") are not minute rates and are left alone; Azure's
    and plain-text 429s state no number.

    >>> from pipeline.errors import RateLimitError
    >>> stated_limit(RateLimitError("on requests per min (RPM): Limit 3, Used 3", status=429))
    ('requests', 3.0)
    >>> stated_limit(RateLimitError("This request would exceed the rate limit for your "
    ...              "organization (x) of 20,000 input tokens per minute.", status=429))
    ('tokens', 20000.0)
    """
    message = error.message
    found = _STATED_LIMIT.search(message)
    if found is not None:
        return _as_limit(found.group(1), found.group(2))
    found = _STATED_BEFORE.search(message)
    if found is not None:
        if found.group(2).lower().startswith("output"):
            return None
        return _as_limit(found.group(2), found.group(1))
    found = _GATEWAY_TYPE.search(message)
    if found is not None and found.group(1).lower() != "max_parallel_requests":
        return _as_limit(found.group(1), found.group(2))
    counted = _gateway_counts(message)
    if isinstance(counted, tuple):
        return counted
    return None


def _as_limit(unit: str, number: str) -> tuple[Dimension, float] | None:
    try:
        limit = float(number.replace(",", ""))
    except ValueError:
        return None
    if not limit > 0 or math.isinf(limit) or limit >= _UNSET:
        return None
    return ("tokens" if "token" in unit.lower() else "requests"), limit


def _wait_in_text(message: str) -> tuple[float | None, bool]:
    """A wait a 429's text gives when no header does, and whether it is whole seconds
    rounded up (Azure's "Please retry after 6 seconds"; OpenAI's "try again in 6m0s",
    "644ms"; an API gateway's "Try again in 6 seconds")."""
    found = _WAIT_TEXT.search(message)
    if found is None:
        return None, False
    number, unit = found.group(1), (found.group(2) or "").lower()
    if unit.startswith("m") and unit != "ms" and not unit.startswith("mil"):
        value = parse_duration(number)
        return (None if value is None else value * 60.0), False
    if unit in ("ms",) or unit.startswith("mil"):
        value = parse_duration(number)
        return (None if value is None else value / 1000.0), False
    value = parse_duration(number)
    coarse = unit.startswith("sec") and value is not None and float(value).is_integer()
    return value, coarse


def throttled_dimension(error: APIError) -> Dimension | None:
    """Which limit a 429 says was hit: ``"requests"``, ``"tokens"`` or ``None`` (unsaid).

    >>> from pipeline.errors import RateLimitError
    >>> throttled_dimension(RateLimitError("Requests to the ... have exceeded token rate limit",
    ...                                    status=429))
    'tokens'
    >>> throttled_dimension(RateLimitError("429", status=429,
    ...                     body={"error": {"type": "dynamic_request_limited"}}))
    'requests'
    """
    body = error.body
    inner = body.get("error") if isinstance(body, dict) else None
    kinds = [inner.get("type"), inner.get("code")] if isinstance(inner, dict) else []
    if isinstance(body, dict):
        kinds += [body.get("error_type"), body.get("type")]
    kinds.append(error.code)
    for kind in kinds:
        if kind in ("tokens", "dynamic_token_limited"):
            return "tokens"
        if kind in ("requests", "dynamic_request_limited"):
            return "requests"
    text = error.message.lower()
    if "tokens per min" in text or "(tpm)" in text or "token rate limit" in text or \
            "tokens per minute" in text or "limit type: tokens" in text:
        return "tokens"
    if "requests per min" in text or "(rpm)" in text or "call rate limit" in text or \
            "request rate limit" in text or "limit type: requests" in text:
        return "requests"
    counted = _gateway_counts(error.message)
    if isinstance(counted, tuple):
        return counted[0]
    headers = {str(k).lower(): str(v).strip() for k, v in (error.headers or {}).items()}
    kind = headers.get("rate_limit_type")
    if kind in ("requests", "tokens"):
        return "tokens" if kind == "tokens" else "requests"
    if headers.get(f"{_X}remaining-tokens") == "0" or \
            headers.get(f"{_TOKENLIMIT}remaining") == "0" or \
            headers.get(f"{_ANTHROPIC}tokens-remaining") == "0" or \
            headers.get(f"{_ANTHROPIC}input-tokens-remaining") == "0":
        return "tokens"
    if headers.get(f"{_X}remaining-requests") == "0" or \
            headers.get(f"{_ANTHROPIC}requests-remaining") == "0":
        return "requests"
    return None


def shared_pause(error: RateLimitError, wait: float | None = None,
                 default: float = DEFAULT_COOLDOWN) -> float:
    """How long a 429 makes *everyone* on the limiter wait: the part of its wait that is sure.

    ``retry-after-ms`` and the ``x-ratelimit-reset-*`` headers are exact, and so is their
    pause. ``Retry-After`` in whole seconds or as an HTTP date is rounded up to the second by
    the server (a wait of 20 ms reads "1"), so only the whole seconds before the last one are
    sure: pausing everyone for the rest would idle the quota for up to a second per 429. The
    refused request itself still waits the whole of it (the retry stage does). No wait
    stated: ``default``.

    >>> from pipeline.errors import RateLimitError
    >>> def refusal(headers):
    ...     return RateLimitError("429", status=429, headers=headers, retry_after=2.0)
    >>> shared_pause(refusal({"retry-after": "2"})), shared_pause(refusal({"retry-after-ms": "2000"}))
    (1.0, 2.0)
    """  # noqa: E501
    if wait is None:
        wait = error.retry_after
    if wait is None:
        return default
    headers = {str(k).lower(): v for k, v in (error.headers or {}).items()}
    stated = headers.get("retry-after")
    coarse = "retry-after-ms" not in headers and stated is not None and "." not in str(stated)
    return max(0.0, wait - 1.0) if coarse else wait


def stated_by(error: APIError) -> str:
    """The header a 429's wait came from, for messages: ``"Retry-After"``, ``"retry-after-ms"``,
    ``"x-ratelimit-reset-requests"``... (``"no header"`` when none did).

    >>> from pipeline.errors import RateLimitError
    >>> stated_by(RateLimitError("429", status=429, headers={"retry-after": "3600"}))
    'Retry-After'
    """
    headers = {str(k).lower(): str(v).strip() for k, v in (error.headers or {}).items()}
    resets = [f"{_X}reset-requests", f"{_X}reset-tokens"]
    if headers.get(f"{_X}remaining-tokens") == "0" and \
            headers.get(f"{_X}remaining-requests") != "0":
        resets.reverse()  # the exhausted one is what the wait came from
    for name in ("retry-after-ms", "retry-after", *resets):
        if name in headers:
            return "Retry-After" if name == "retry-after" else name
    if error.retry_after is None and _wait_in_text(error.message)[0] is not None:
        return "the message"
    return "no header"
