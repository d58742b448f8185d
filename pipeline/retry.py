"""The retry stage: run inner stages again for retryable errors, with backoff.

Only errors marked ``retryable`` (429 rate limits, 408, 409, 5xx, timeouts, broken
connections, malformed bodies) are retried; a 400, 401, 403, 404, ``insufficient_quota`` or
``context_length_exceeded`` fails at once. Waits grow exponentially with full jitter, are
capped, and never undercut the server's ``Retry-After`` / ``x-ratelimit-reset-*``. Each attempt
runs all inner stages again, so it re-acquires the rate limiter.

In tests, ``with pipeline.testing.instant_backoff():`` (or ``Backoff(scale=0)``) makes the
waits zero, so no test sleeps.

>>> from pipeline.stages import build
>>> stage = retry(build(lambda row: row), attempts=4, backoff=Backoff(initial=0.5, maximum=20))
>>> stage
retry(build(...), attempts=4, backoff=Backoff(initial=0.5, maximum=20.0, multiplier=2.0))
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any, Protocol

from pipeline.errors import APIError, ConfigError
from pipeline.record import Record
from pipeline.stages import Chain, Stage

__all__ = ["Backoff", "RetryHook", "retry"]

# Set by pipeline.testing.instant_backoff(): every wait becomes zero.
_INSTANT = False


class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` waits ``U(0, min(max, i * m**n))``.

    Args:
        initial: the cap of the first wait, in seconds.
        maximum: the largest wait.
        multiplier: growth per attempt.
        scale: multiply every wait (0 makes retries instant, for tests).
        rng: a ``random.Random`` for reproducible jitter.
    """

    __slots__ = ("initial", "maximum", "multiplier", "rng", "scale")

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, multiplier: float = 2.0,
                 *, scale: float = 1.0, rng: random.Random | None = None) -> None:
        for name, value in (("initial", initial), ("maximum", maximum),
                            ("multiplier", multiplier), ("scale", scale)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"Backoff {name} must be a finite number >= 0, got {value!r}")
        self.initial = float(initial)
        self.maximum = float(maximum)
        self.multiplier = float(multiplier)
        self.scale = float(scale)
        self.rng = rng or random.Random()

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if _INSTANT or self.scale == 0:
            return 0.0
        cap = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        wait = self.rng.uniform(0, cap)
        if retry_after is not None:
            # The server said when: wait that long, plus a little jitter so the retries of
            # everyone it told the same thing do not land at the same instant.
            wait = max(wait, retry_after + self.rng.uniform(0, min(1.0, retry_after * 0.1)))
        return min(wait, max(self.maximum, retry_after or 0.0)) * self.scale

    def __repr__(self) -> str:
        extra = f", scale={self.scale:g}" if self.scale != 1.0 else ""
        return (f"Backoff(initial={self.initial:g}, maximum={self.maximum}, "
                f"multiplier={self.multiplier}{extra})")


class RetryHook(Protocol):
    """Called before each retry: ``on_retry(record, error, attempt, delay)``."""

    def on_retry(self, record: Record, error: BaseException, attempt: int,
                 delay: float) -> None: ...


class retry(Stage):
    """Run ``inner`` again while the record's error is retryable.

    Args:
        inner: the stages to repeat (usually ``acquire(...) | call(...)``).
        attempts: the most attempts in all (1 means no retry).
        backoff: the wait policy.
        max_elapsed: stop retrying a record this many seconds after its first failure.
        hooks: objects with ``on_retry(record, error, attempt, delay)`` (a
            :class:`~pipeline.status.StatusTracker` is one).
    """

    def __init__(self, inner: Stage, *, attempts: int = 6, backoff: Backoff | None = None,
                 max_elapsed: float = 600.0, hooks: tuple[RetryHook, ...] | list[Any] = ()
                 ) -> None:
        if not isinstance(inner, Stage):
            raise ConfigError(f"retry() wraps stages, got {inner!r}")
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise ConfigError(f"attempts must be an int >= 1, got {attempts!r}")
        if not isinstance(max_elapsed, int | float) or not max_elapsed > 0:
            raise ConfigError(f"max_elapsed must be > 0 seconds, got {max_elapsed!r}")
        self.inner = inner if isinstance(inner, Chain) else Chain(*inner.stages())
        self.attempts = attempts
        self.backoff = backoff or Backoff()
        self.max_elapsed = float(max_elapsed)
        self.hooks = tuple(hooks)
        self._steps = tuple((st.process, st.after_done) for st in self.inner.stages())

    async def process(self, record: Record) -> Record:
        start = 0.0
        attempt = 0
        while True:
            attempt += 1
            # The inner stages run here directly (not through a nested Chain coroutine):
            # this is every request's hot path.
            for step, after_done in self._steps:
                if after_done or (record.response is None and record.error is None):
                    record = await step(record)
            error = record.error
            if error is None or not (isinstance(error, APIError) and error.retryable):
                return record
            if attempt >= self.attempts:
                return record
            if attempt == 1:
                start = time.monotonic()  # the time budget runs from the first failure
            delay = self.backoff.delay(attempt, error.retry_after)
            if time.monotonic() - start + delay > self.max_elapsed:
                return record
            for hook in self.hooks:
                hook.on_retry(record, error, attempt, delay)
            if delay > 0:
                await asyncio.sleep(delay)
            record.error = None  # the next attempt starts clean

    def finish(self) -> None:
        self.inner.finish()

    def __repr__(self) -> str:
        inner = " | ".join("build(...)" if type(s).__name__ == "build" else repr(s)
                           for s in self.inner.stages())
        return f"retry({inner}, attempts={self.attempts}, backoff={self.backoff!r})"
