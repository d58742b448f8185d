"""The simulator's own rate limits: two token buckets (requests, tokens) per API key.

A provider enforces "500 requests per minute" continuously, not per calendar minute: here each
limit is a bucket holding ``capacity`` units (the per-minute limit, or ``burst`` x that) that
refills continuously at ``limit / 60`` per second. A request takes 1 from the request bucket and
its token cost from the token bucket, or, when either lacks room, takes nothing and is answered
429 with the time until both would have room.
"""

from __future__ import annotations

import math

from pipeline._durations import format_duration

__all__ = ["Bucket", "KeyLimits"]


class Bucket:
    """A continuously refilled bucket: ``capacity`` units, ``rate`` units per second.

    >>> b = Bucket(limit=60, capacity=60, now=0.0)
    >>> b.take(60, now=0.0), b.take(1, now=0.0), round(b.wait(1, now=0.0), 3)
    (True, False, 1.0)
    """

    __slots__ = ("capacity", "level", "limit", "rate", "updated")

    def __init__(self, limit: float, capacity: float, now: float) -> None:
        self.limit = limit
        self.capacity = capacity
        self.rate = limit / 60.0
        self.level = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` fits (``inf`` when it never will)."""
        self._refill(now)
        if amount > self.capacity:
            return math.inf
        missing = amount - self.level
        return missing / self.rate if missing > 0 else 0.0

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` if it fits now."""
        self._refill(now)
        if amount <= self.level:
            self.level -= amount
            return True
        return False

    def remaining(self, now: float) -> int:
        """Whole units available now."""
        self._refill(now)
        return max(0, math.floor(self.level + 1e-9))

    def reset_in(self, now: float) -> float:
        """Seconds until the bucket is full again (what ``x-ratelimit-reset-*`` reports)."""
        self._refill(now)
        return (self.capacity - self.level) / self.rate


class KeyLimits:
    """The request and token buckets of one API key (either may be absent: unlimited)."""

    __slots__ = ("requests", "tokens")

    def __init__(self, rpm: float | None, tpm: float | None, burst: float | None,
                 now: float) -> None:
        fraction = burst if burst is not None else 1.0
        self.requests = (Bucket(rpm, max(1.0, rpm * fraction), now)
                         if rpm is not None else None)
        self.tokens = Bucket(tpm, max(1.0, tpm * fraction), now) if tpm is not None else None

    def acquire(self, cost: int, now: float) -> float:
        """Take one request and ``cost`` tokens and return 0, or take nothing and return the
        seconds to wait (``inf``: the request is larger than the token bucket)."""
        wait = 0.0
        if self.requests is not None:
            wait = self.requests.wait(1, now)
        if self.tokens is not None:
            wait = max(wait, self.tokens.wait(cost, now))
        if wait > 0:
            return wait
        if self.requests is not None:
            self.requests.take(1, now)
        if self.tokens is not None:
            self.tokens.take(cost, now)
        return 0.0

    def headers(self, now: float) -> list[tuple[str, str]]:
        """The ``x-ratelimit-*`` headers describing this key's state at ``now``."""
        out: list[tuple[str, str]] = []
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is None:
                continue
            out.append((f"x-ratelimit-limit-{name}", str(int(bucket.limit))))
            out.append((f"x-ratelimit-remaining-{name}", str(bucket.remaining(now))))
            out.append((f"x-ratelimit-reset-{name}", format_duration(bucket.reset_in(now))))
        return out
