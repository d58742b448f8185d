"""A fixed-window policy: full capacity restored at the start of every interval."""

from __future__ import annotations

import math

from pipeline.limiter._base import RateLimiter

__all__ = ["IntervalLimiter"]


class IntervalLimiter(RateLimiter):
    """Full capacity restored at the start of every ``interval`` (a fixed window).

    The windows start at the first use and follow each other back to back. Unlike a naive
    counter it never grants past capacity; a debt left by :meth:`reconcile` carries over.
    Beware the fixed window's edge: up to twice the limit can pass within one interval
    that straddles a boundary. Prefer :class:`TokenBucketLimiter` unless a provider really
    resets at fixed times.

    >>> IntervalLimiter(max_requests=100, max_tokens=10_000, interval=60)
    <IntervalLimiter requests=100/100 per min tokens=10,000/10,000 per min waiters=0>
    """

    __slots__ = ("_used_r", "_used_t", "_window_start")

    def __init__(self, max_requests: float | None = None, max_tokens: float | None = None, *,
                 interval: float = 60.0) -> None:
        super().__init__(max_requests, max_tokens, interval)
        self._window_start: float | None = None
        self._used_r = 0.0
        self._used_t = 0.0
        self._limits_changed()

    def _roll(self, now: float) -> None:
        if self._window_start is None or now < self._window_start - self._interval:
            self._window_start = now  # first use (or a loop whose clock is far behind)
            return
        elapsed = now - self._window_start
        if elapsed >= self._interval:
            windows = math.floor(elapsed / self._interval)
            self._window_start += windows * self._interval
            # Carry over only a debt (usage above capacity), once per window passed.
            for _ in range(min(windows, 2)):
                self._used_r = max(0.0, self._used_r - (self._max_requests or 0.0))
                self._used_t = max(0.0, self._used_t - (self._max_tokens or 0.0))
            if windows > 2:
                self._used_r = self._used_t = 0.0

    def _delay(self, requests: float, tokens: float, now: float) -> float:
        self._roll(now)
        assert self._window_start is not None
        fits = ((self._max_requests is None or self._used_r + requests <= self._max_requests)
                and (self._max_tokens is None or self._used_t + tokens <= self._max_tokens))
        if fits:
            return 0.0
        return max(self._window_start + self._interval - now, 1e-9)

    def _take(self, requests: float, tokens: float, now: float) -> None:
        self._roll(now)
        self._used_r += requests
        self._used_t += tokens

    def _give(self, requests: float, tokens: float, now: float) -> None:
        self._roll(now)
        self._used_r = max(0.0, self._used_r - requests)
        self._used_t = max(0.0, self._used_t - tokens)

    def _available(self, now: float) -> tuple[float | None, float | None]:
        self._roll(now)
        return (None if self._max_requests is None else self._max_requests - self._used_r,
                None if self._max_tokens is None else self._max_tokens - self._used_t)

    def _capacity(self) -> tuple[float | None, float | None]:
        return self._max_requests, self._max_tokens

    def _sync_reset(self, reset_requests: float | None, reset_tokens: float | None,
                    now: float) -> bool:
        # The server says when its window ends: end ours then too (never later than a full
        # interval from now).
        reset = reset_requests if reset_requests is not None else reset_tokens
        if reset is None or reset > self._interval:
            return False
        self._roll(now)
        start = now + reset - self._interval
        if self._window_start is not None and abs(start - self._window_start) < 1e-3:
            return False
        self._window_start = start
        return True

    def _rates_changed(self, now: float) -> None:
        self._roll(now)
        self._limits_changed()


