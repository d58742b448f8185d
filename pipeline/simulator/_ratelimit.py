"""The simulator's own rate limits: a request limiter and a token limiter per API key, and per
(key, model) for models with limits of their own.

Providers enforce "500 requests per minute" in different shapes; ``policy`` picks one:

- ``"second"`` (the default): a :class:`Bucket` holding one second of the limit (``limit / 60``)
  that refills continuously at ``limit / 60`` per second, as OpenAI documents ("60,000
  requests/minute may be enforced as 1,000 requests/second"). A request larger than the bucket
  but not than the minute limit is admitted when the bucket is full and leaves it in debt (a
  negative level the refill repays): it has to wait, but it is not refused for ever.
- ``"minute"``: a :class:`Bucket` holding the full minute's limit, refilled continuously.
- ``"window"``: a :class:`Window`: at most ``limit x window / 60`` per fixed window of
  ``window`` seconds, the count reset at each boundary (multiples of ``window`` since start).

``burst`` (a fraction of the minute limit) overrides the bucket's capacity of the two bucket
policies. A request takes 1 from the request limiter and its token cost from the token limiter
of every scope that applies, or, when any of them lacks room, takes nothing and is answered 429
with the time until all would have room (``inf`` when it never will: a request larger than the
limit).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Literal

from pipeline.core.durations import format_duration

__all__ = ["HEADER_STYLES", "POLICIES", "Bucket", "HeaderStyle", "KeyLimits", "Policy",
           "Window"]

Policy = Literal["second", "minute", "window"]
POLICIES: tuple[Policy, ...] = ("second", "minute", "window")
HeaderStyle = Literal["openai", "azure", "anthropic", "groq", "litellm", "none"]
#: How a provider states its limits (see :meth:`KeyLimits.headers`).
HEADER_STYLES: tuple[HeaderStyle, ...] = ("openai", "azure", "anthropic", "groq", "litellm",
                                          "none")
_EPS = 1e-9  # float slack, so 3 x (1/3 of a window) still fits the window


class Bucket:
    """A continuously refilled bucket: ``capacity`` units, refilled at ``limit / 60`` per second.

    With ``debt``, an amount larger than ``capacity`` (but not than ``limit``) is taken once the
    bucket is full, leaving the level negative until the refill repays it.

    >>> b = Bucket(limit=60, capacity=60, now=0.0)
    >>> b.take(60, now=0.0), b.take(1, now=0.0), round(b.wait(1, now=0.0), 3)
    (True, False, 1.0)
    >>> s = Bucket(limit=600, capacity=10, now=0.0, debt=True)  # one second of 600 a minute
    >>> s.take(50, now=0.0), s.level, round(s.wait(1, now=0.0), 3), s.wait(601, now=0.0)
    (True, -40.0, 4.1, inf)
    """

    __slots__ = ("capacity", "debt", "level", "limit", "rate", "updated")

    def __init__(self, limit: float, capacity: float, now: float, debt: bool = False) -> None:
        self.limit = limit
        self.capacity = float(capacity)
        self.debt = debt
        self.rate = limit / 60.0
        self.level = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` fits (``inf`` when it never will)."""
        self._refill(now)
        if amount > self.capacity:
            if not self.debt or amount > self.limit:
                return math.inf
            amount = self.capacity  # taken once the bucket is full
        missing = amount - self.level
        return missing / self.rate if missing > 0 else 0.0

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` if it fits now."""
        self._refill(now)
        if amount <= self.level or (self.debt and self.level >= self.capacity
                                    and amount <= self.limit):
            self.level -= amount
            return True
        return False

    def remaining(self, now: float) -> int:
        """Whole units available now (0 while in debt)."""
        self._refill(now)
        return max(0, math.floor(self.level + _EPS))

    def reset_in(self, now: float) -> float:
        """Seconds until the bucket is full again (what ``x-ratelimit-reset-*`` reports)."""
        self._refill(now)
        return (self.capacity - self.level) / self.rate

    def __repr__(self) -> str:
        return (f"Bucket(level={self.level:g}/{self.capacity:g}, {self.limit:g}/min"
                f"{', debt allowed' if self.debt else ''})")


class Window:
    """At most ``capacity = limit x length / 60`` units per fixed window of ``length`` seconds.

    Windows are ``[origin + i x length, origin + (i + 1) x length)``; the count resets at each
    boundary, so a client can spend a whole window's capacity just before a boundary and again
    just after it.

    >>> w = Window(limit=60, length=2.0, origin=0.0, now=0.5)  # 2 per 2 s window
    >>> w.take(1, now=0.5), w.take(1, now=1.0), w.take(1, now=1.5), w.wait(1, now=1.5)
    (True, True, False, 0.5)
    >>> w.take(1, now=2.0), w.remaining(now=2.0), w.reset_in(now=2.5)
    (True, 1, 1.5)
    """

    __slots__ = ("capacity", "index", "length", "limit", "origin", "used")

    def __init__(self, limit: float, length: float, origin: float, now: float) -> None:
        self.limit = limit
        self.length = length
        self.capacity = limit * length / 60.0
        self.origin = origin
        # The window's number, not its start time: floor() of a float start could repeat a
        # window and reset its count twice.
        self.index = math.floor((now - origin) / length)
        self.used = 0.0

    def _roll(self, now: float) -> None:
        index = math.floor((now - self.origin) / self.length)
        if index > self.index:
            self.index = index
            self.used = 0.0

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` fits: 0, the time to the next boundary, or ``inf``."""
        self._roll(now)
        if amount > self.capacity + _EPS:
            return math.inf
        if self.used + amount <= self.capacity + _EPS:
            return 0.0
        return self.reset_in(now)

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` if it fits in the current window."""
        self._roll(now)
        if self.used + amount <= self.capacity + _EPS:
            self.used += amount
            return True
        return False

    def remaining(self, now: float) -> int:
        """Whole units left in the current window."""
        self._roll(now)
        return max(0, math.floor(self.capacity - self.used + _EPS))

    def reset_in(self, now: float) -> float:
        """Seconds until the current window ends (what ``x-ratelimit-reset-*`` reports)."""
        self._roll(now)
        return max(0.0, self.origin + (self.index + 1) * self.length - now)

    def __repr__(self) -> str:
        return (f"Window(used={self.used:g}/{self.capacity:g} per {self.length:g}s, "
                f"{self.limit:g}/min)")


Limiter = Bucket | Window


def make_limiter(limit: float, policy: Policy, burst: float | None, window: float,
                 origin: float, now: float) -> Limiter:
    """The limiter of one limit (requests or tokens per minute) under ``policy``."""
    if policy == "window":
        return Window(limit, window, origin, now)
    fraction = burst if burst is not None else (1 / 60 if policy == "second" else 1.0)
    return Bucket(limit, max(1.0, limit * fraction), now, debt=policy == "second")


class KeyLimits:
    """The request and token limiters of one scope: an API key, or a key's use of one model
    (either limiter may be absent: unlimited).

    >>> limits = KeyLimits(rpm=600, tpm=6_000, burst=None, now=0.0)  # buckets of one second
    >>> limits.acquire(500, now=0.0), limits.acquire(1, now=0.0) > 0
    (0.0, True)
    >>> window = KeyLimits(rpm=60, tpm=None, burst=None, now=0.0, policy="window", window=2.0)
    >>> [window.acquire(1, now=t) for t in (0.0, 0.1, 0.2, 2.0)]
    [0.0, 0.0, 1.8, 0.0]
    """

    __slots__ = ("requests", "tokens")

    def __init__(self, rpm: float | None, tpm: float | None, burst: float | None,
                 now: float, *, policy: Policy = "second", window: float = 60.0,
                 origin: float = 0.0) -> None:
        self.requests = (make_limiter(rpm, policy, burst, window, origin, now)
                         if rpm is not None else None)
        self.tokens = (make_limiter(tpm, policy, burst, window, origin, now)
                       if tpm is not None else None)

    def wait(self, cost: int, now: float) -> float:
        """Seconds until one request of ``cost`` tokens fits (``inf``: never)."""
        wait = 0.0
        if self.requests is not None:
            wait = self.requests.wait(1, now)
        if self.tokens is not None:
            wait = max(wait, self.tokens.wait(cost, now))
        return wait

    def take(self, cost: int, now: float) -> None:
        """Take one request and ``cost`` tokens (call after :meth:`wait` returned 0)."""
        if self.requests is not None:
            self.requests.take(1, now)
        if self.tokens is not None:
            self.tokens.take(cost, now)

    def acquire(self, cost: int, now: float, also: KeyLimits | None = None) -> float:
        """Take one request and ``cost`` tokens here and from ``also`` (a model's scope) and
        return 0, or take nothing and return the seconds to wait (``inf``: the request is
        larger than a limit)."""
        wait = self.wait(cost, now)
        if also is not None:
            wait = max(wait, also.wait(cost, now))
        if wait > 0:
            return wait
        self.take(cost, now)
        if also is not None:
            also.take(cost, now)
        return 0.0

    def blocking(self, cost: int, now: float) -> tuple[float, str, Limiter | None]:
        """The longest wait here, and which limiter (``"requests"``/``"tokens"``) imposes it
        (requests on a tie; ``(0.0, "requests", None)`` when nothing blocks)."""
        found: tuple[float, str, Limiter | None] = (0.0, "requests", None)
        if self.requests is not None and (w := self.requests.wait(1, now)) > 0:
            found = (w, "requests", self.requests)
        if self.tokens is not None and (w := self.tokens.wait(cost, now)) > found[0]:
            found = (w, "tokens", self.tokens)
        return found

    def headers(self, now: float, remaining_only: bool = False,
                style: HeaderStyle = "openai") -> list[tuple[str, str]]:
        """The rate-limit headers describing this scope at ``now``, as ``style``'s provider
        sends them (``remaining_only``: just ``x-ratelimit-remaining-*``, as Azure OpenAI):

        - ``"openai"``: ``x-ratelimit-limit|remaining|reset-requests|tokens``, resets as Go
          durations;
        - ``"azure"``: only ``x-ratelimit-remaining-requests|tokens``;
        - ``"anthropic"``: ``anthropic-ratelimit-requests|tokens|input-tokens|output-tokens-
          limit|remaining|reset``, resets as RFC 3339 times (the simulator's one token limit
          stands for all three token kinds);
        - ``"groq"``: as OpenAI, but ``-requests`` counts per day (the minute limit times
          1,440, refilling at the minute rate);
        - ``"litellm"``: a LiteLLM proxy's per-key ``x-ratelimit-api_key-limit|remaining-
          requests|tokens`` and its upstream's ``llm_provider-x-ratelimit-*`` (ten times the
          key's limits: the key's are the ones that bind);
        - ``"none"``: nothing.

        >>> limits = KeyLimits(rpm=600, tpm=None, burst=None, now=0.0)
        >>> limits.headers(0.0, style="groq")[:2]
        [('x-ratelimit-limit-requests', '864000'), ('x-ratelimit-remaining-requests', '864000')]
        """
        if style == "azure":
            remaining_only = True
        out: list[tuple[str, str]] = []
        if style == "none":
            return out
        wall = time.time()
        for name, limiter in (("requests", self.requests), ("tokens", self.tokens)):
            if limiter is None:
                continue
            remaining = limiter.remaining(now)
            if remaining_only:
                out.append((f"x-ratelimit-remaining-{name}", str(remaining)))
                continue
            limit = int(limiter.limit)
            reset = limiter.reset_in(now)
            if style == "anthropic":
                when = datetime.fromtimestamp(wall + reset, UTC).isoformat(
                    timespec="milliseconds").replace("+00:00", "Z")
                kinds = ("requests",) if name == "requests" else (
                    "tokens", "input-tokens", "output-tokens")
                for kind in kinds:
                    out.append((f"anthropic-ratelimit-{kind}-limit", str(limit)))
                    out.append((f"anthropic-ratelimit-{kind}-remaining", str(remaining)))
                    out.append((f"anthropic-ratelimit-{kind}-reset", when))
                continue
            if style == "litellm":
                out.append((f"x-ratelimit-api_key-limit-{name}", str(limit)))
                out.append((f"x-ratelimit-api_key-remaining-{name}", str(remaining)))
                out.append((f"llm_provider-x-ratelimit-limit-{name}", str(limit * 10)))
                out.append((f"llm_provider-x-ratelimit-remaining-{name}",
                            str(limit * 10 - (int(limiter.capacity) - remaining))))
                continue
            if style == "groq" and name == "requests":
                daily = limit * 1440
                used = max(0, int(limiter.capacity) - remaining)
                out.append(("x-ratelimit-limit-requests", str(daily)))
                out.append(("x-ratelimit-remaining-requests", str(daily - used)))
                out.append(("x-ratelimit-reset-requests", format_duration(used * 60 / limit)))
                continue
            out.append((f"x-ratelimit-limit-{name}", str(limit)))
            out.append((f"x-ratelimit-remaining-{name}", str(remaining)))
            out.append((f"x-ratelimit-reset-{name}", format_duration(reset)))
        return out

    def __repr__(self) -> str:
        return f"KeyLimits(requests={self.requests!r}, tokens={self.tokens!r})"
