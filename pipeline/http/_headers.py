"""The rate-limit headers of one answer, read as the provider table says: the limits (per
minute), remaining capacity and resets (seconds from now) they state, the lowest limit and
remaining binding where several families state one dimension."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pipeline.core.durations import parse_duration
from pipeline.http._providers import Provider

__all__: list[str] = []

_X = "x-ratelimit-"
_ANTHROPIC = "anthropic-ratelimit-"
_UPSTREAM = "llm_provider-"  # LiteLLM's prefix for the upstream provider's own headers
_TOKENLIMIT = "x-tokenlimit-"
# Any header of a rate-limit family: one case-insensitive search over the joined names tells
# an answer without any (most self-hosted servers) apart at C speed.
_ANY_LIMIT = re.compile(r"(?:^|\n)(?:x-ratelimit-|anthropic-ratelimit-|x-tokenlimit-|"
                        r"llm_provider-x-ratelimit-)", re.IGNORECASE)
# LiteLLM's per-scope headers: x-ratelimit-api_key-limit-requests, -team-remaining-tokens...
_SCOPED = re.compile(r"x-ratelimit-([a-z0-9_]+)-(limit|remaining)-(requests|tokens)")
# A bare number this large is a Unix time, not a duration (some gateways send one).
_EPOCH = 1e9


def _lower(headers: Mapping[str, str] | None) -> tuple[Mapping[str, Any], str] | None:
    """A case-insensitive view and the header names (lower case, one a line), or ``None``
    when no rate-limit header is there at all."""
    if not headers:
        return None
    try:
        names = "\n".join(headers)
    except TypeError:  # a key that is not a string (bytes from a raw transport)
        names = "\n".join(k.decode("latin-1") if isinstance(k, bytes) else str(k)
                          for k in headers)
    if _ANY_LIMIT.search(names) is None:
        return None
    if names.islower():
        return headers, names
    names = names.lower()
    if isinstance(headers, dict):
        return {(k.decode("latin-1") if isinstance(k, bytes) else str(k)).lower(): v
                for k, v in headers.items()}, names
    return headers, names  # httpx.Headers, CIMultiDict: case-insensitive already


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _positive(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _until(text: Any, wall: float) -> float | None:
    """Seconds until a reset: a duration (``"6m0s"``, ``"2"``), an RFC 3339 time (Anthropic),
    or a Unix time; a time in the past is 0."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    seconds = parse_duration(text)
    if seconds is not None:
        return max(0.0, seconds - wall) if seconds > _EPOCH else seconds
    try:
        when = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    delta = when.timestamp() - wall
    return max(0.0, delta) if math.isfinite(delta) else None


class _Facts:
    """What the headers of one answer state, merged across the families that state it."""

    __slots__ = ("out", "wall")

    def __init__(self) -> None:
        self.out: dict[str, float] = {}
        self.wall = time.time()

    def put(self, dim: str, limit: float | None, remaining: float | None,
            reset: Any = None) -> None:
        """One family's word on ``dim``: the lowest limit and remaining bind; a reset counts
        only beside a limit or remaining that could be read (Azure's ``-1``/``0`` pair)."""
        out = self.out
        if limit is not None:
            key = "limit_" + dim
            out[key] = min(out.get(key, limit), limit)
        if remaining is not None:
            key = "remaining_" + dim
            out[key] = min(out.get(key, remaining), remaining)
        if reset is not None and (limit is not None or remaining is not None):
            seconds = _until(reset, self.wall)
            if seconds is not None:
                key = "reset_" + dim
                out[key] = max(out.get(key, seconds), seconds)


def _read(get: Callable[[str], Any], facts: _Facts, provider: Provider, names: str) -> None:
    put = facts.put
    if provider.x_ratelimit:
        for dim in ("requests", "tokens"):
            if dim == "requests" and provider.daily_requests:
                continue  # Groq: a per-day count, no minute rate
            put(dim, _positive(get(f"{_X}limit-{dim}")), _number(get(f"{_X}remaining-{dim}")),
                get(f"{_X}reset-{dim}"))
    if provider.anthropic and _ANTHROPIC in names:
        put("requests", _positive(get(f"{_ANTHROPIC}requests-limit")),
            _number(get(f"{_ANTHROPIC}requests-remaining")), get(f"{_ANTHROPIC}requests-reset"))
        # What a request's estimate counts is its input (plus max_tokens): the input-token
        # limit binds it; the combined one stands in on older accounts that state no split.
        name = "input-tokens" if get(f"{_ANTHROPIC}input-tokens-limit") is not None \
            else "tokens"
        put("tokens", _positive(get(f"{_ANTHROPIC}{name}-limit")),
            _number(get(f"{_ANTHROPIC}{name}-remaining")), get(f"{_ANTHROPIC}{name}-reset"))
    if provider.per_second:  # Together counts per second
        limit = _positive(get(f"{_X}limit"))
        put("requests", None if limit is None else limit * 60.0,
            _number(get(f"{_X}remaining")), get(f"{_X}reset"))
        limit = _positive(get(f"{_TOKENLIMIT}limit"))
        put("tokens", None if limit is None else limit * 60.0,
            _number(get(f"{_TOKENLIMIT}remaining")))
    if provider.prompt_tokens and "-tokens-prompt" in names:
        put("tokens", _positive(get(f"{_X}limit-tokens-prompt")),
            _number(get(f"{_X}remaining-tokens-prompt")))
    if provider.gateway and _UPSTREAM in names:
        for dim in ("requests", "tokens"):
            put(dim, _positive(get(f"{_UPSTREAM}{_X}limit-{dim}")),
                _number(get(f"{_UPSTREAM}{_X}remaining-{dim}")),
                get(f"{_UPSTREAM}{_X}reset-{dim}"))
    if provider.gateway:
        for found in _SCOPED.finditer(names):
            scope, what, dim = found.groups()
            if scope in ("limit", "remaining", "reset"):
                continue
            value = get(found.group(0))
            if what == "limit":
                put(dim, _positive(value), None)
            else:
                put(dim, None, _number(value))


def _facts(headers: Mapping[str, str] | None, provider: Provider) -> dict[str, float] | None:
    """The limits (per minute), remaining capacity and resets (seconds) the headers state."""
    if not (provider.x_ratelimit or provider.anthropic or provider.per_second
            or provider.prompt_tokens or provider.gateway):
        return None
    found = _lower(headers)
    if found is None:
        return None
    view, names = found
    facts = _Facts()
    _read(view.get, facts, provider, names)
    return facts.out or None
