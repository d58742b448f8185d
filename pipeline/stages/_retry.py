"""The retry stage: run inner stages again for retryable errors, with backoff.

Only errors marked ``retryable`` (429 rate limits, 408, 409, 5xx, timeouts, broken
connections, malformed bodies) are retried; a 400, 401, 403, 404, ``insufficient_quota`` or
``context_length_exceeded`` fails at once. Waits grow exponentially with full jitter, are
capped, and never undercut the server's ``Retry-After`` / ``x-ratelimit-reset-*``. Each attempt
runs all inner stages again, so it re-acquires the rate limiter.

Throttling is not failure: a rate-limit 429 costs time, not one of the ``attempts`` (those are
for errors). A throttled row is tried again, after the server's ``Retry-After`` if it gave one,
for as long as ``max_wait`` seconds from its first 429; only then does it fail, with a
:class:`~pipeline.errors.ThrottledError` that says so. The limiter, not this stage, sets the
pace: it lowers its rate on 429s (an adaptive limiter) and pauses everyone for a
``Retry-After``. A server's wait counts for at most a minute at a time
(:data:`~pipeline.limiter.MAX_PAUSE`): a row told ``Retry-After: 3600`` fails at once when
``max_wait`` is shorter than that minute, and otherwise asks again a minute later; the pause
of everyone is capped alike, and by ``max_wait``.

A structured answer that does not fit its schema (a
:class:`~pipeline.errors.SchemaValidationError` from :class:`~pipeline.stages.decode` among the
inner stages) is asked again at once, up to ``reasks`` times, apart from ``attempts``; each
re-ask re-acquires the limiter. A refusal or an answer cut at ``max_tokens`` fails at once:
asking the same again gets the same. Then the row fails with the validation error.

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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from pipeline.core.record import Record
from pipeline.errors import (
    APIError,
    ConfigError,
    RateLimitError,
    RunStoppedError,
    SchemaValidationError,
    ThrottledError,
)
from pipeline.http.signals import stated_by
from pipeline.limiter import MAX_PAUSE
from pipeline.stages._core import Chain, Stage, steps

if TYPE_CHECKING:
    from pipeline.state.guard import RunGuard

__all__ = ["DEFAULT_ATTEMPTS", "DEFAULT_MAX_WAIT", "DEFAULT_REASKS", "Backoff", "RetryHook",
           "retry",
           "set_testing"]

# What hears of a re-ask, with the answer's error: a retry hook's on_reask, decode's follow_up.
_OnReask = Callable[[Record, SchemaValidationError], None]

#: Seconds a row may spend being throttled (429 rate limits) before it fails.
DEFAULT_MAX_WAIT = 600.0
#: Attempts per row for retryable errors (429s do not count: throttling costs time).
DEFAULT_ATTEMPTS = 6

#: Times a structured answer that does not fit its schema is asked again before the row fails.
DEFAULT_REASKS = 2

# Set by set_testing() (or pipeline.testing.instant_backoff()): every wait becomes zero.
_INSTANT = False


def set_testing(instant: bool) -> bool:
    """Make every retry wait zero seconds (``True``), or real again; returns the old setting.

    Public as :func:`pipeline.testing.set_testing`. For test suites, as a fixture::

        @pytest.fixture(autouse=True)
        def no_waits():
            previous = pipeline.testing.set_testing(True)
            yield
            pipeline.testing.set_testing(previous)

    >>> previous = set_testing(True); Backoff(initial=10).delay(3); set_testing(previous)
    0.0
    True
    """
    global _INSTANT
    old = _INSTANT
    _INSTANT = bool(instant)
    return old


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

    def throttle_delay(self, throttles: int, retry_after: float | None = None) -> float:
        """Seconds before trying a throttled request again (``throttles`` 429s so far).

        The server's ``Retry-After`` when it gave one (plus a little jitter); otherwise a
        short jittered wait growing to at most 2 s: the limiter is what paces the retries.
        """
        if _INSTANT or self.scale == 0:
            return 0.0
        if retry_after is not None:
            return (retry_after + self.rng.uniform(0, min(1.0, retry_after * 0.1))) * self.scale
        cap = min(2.0, 0.05 * 2.0 ** min(throttles, 10))
        return self.rng.uniform(0, cap) * self.scale

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
        attempts: the most attempts in all for errors (1 means no retry); 429 rate limits
            do not count.
        backoff: the wait policy.
        max_elapsed: stop retrying errors of a record this many seconds after its first.
        max_wait: seconds a record may be throttled (429s), from its first 429, before it
            fails with :class:`~pipeline.errors.ThrottledError`; also the longest pause a 429
            puts on everyone through an inner ``acquire`` (its ``max_pause``).
        hooks: objects with ``on_retry(record, error, attempt, delay)`` (a
            :class:`~pipeline.state.status.StatusTracker` is one); those that also have
            ``on_reask(record, error)`` hear of each re-ask.
        reasks: times an answer that does not fit its schema is asked again (no wait).

    With a stage that runs on answered records among the inner ones (``decode``), the retry
    also runs for a record answered from the cache: its answer is decoded, and asked again
    when it does not fit.
    """

    def __init__(self, inner: Stage, *, attempts: int = DEFAULT_ATTEMPTS,
                 backoff: Backoff | None = None, max_elapsed: float = 600.0,
                 max_wait: float = DEFAULT_MAX_WAIT,
                 hooks: Iterable[RetryHook] = (),
                 reasks: int = DEFAULT_REASKS) -> None:
        if not isinstance(inner, Stage):
            raise ConfigError(f"retry() wraps stages, got {inner!r}")
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise ConfigError(f"attempts must be an int >= 1, got {attempts!r}")
        if not isinstance(max_elapsed, int | float) or not max_elapsed > 0:
            raise ConfigError(f"max_elapsed must be > 0 seconds, got {max_elapsed!r}")
        if isinstance(max_wait, bool) or not isinstance(max_wait, int | float) or \
                not max_wait >= 0:
            raise ConfigError(f"max_wait must be >= 0 seconds, got {max_wait!r}")
        if not isinstance(reasks, int) or isinstance(reasks, bool) or reasks < 0:
            raise ConfigError(f"reasks must be an int >= 0, got {reasks!r}")
        self.max_wait = float(max_wait)
        self.reasks = reasks
        self.inner = inner if isinstance(inner, Chain) else Chain(*inner.stages())
        self.attempts = attempts
        self.backoff = backoff or Backoff()
        self.max_elapsed = float(max_elapsed)
        self.hooks = tuple(hooks)
        self._steps = steps(self.inner.stages())
        # Run for answered (cached) records too when an inner stage works on answers.
        self.on_answered = any(answered for _, answered, _ in self._steps)
        # Stages that turn a record's request into its re-ask (decode: the answer and why).
        found = (getattr(st, "follow_up", None) for st in self.inner.stages())
        self._follow_ups: tuple[_OnReask, ...] = tuple(f for f in found if callable(f))
        for stage in self.inner.stages():
            # A 429 pauses everyone on the limiter: never for longer than a row may wait.
            if type(stage).__name__ == "acquire" and getattr(stage, "max_pause", 0) is None:
                setattr(stage, "max_pause", self.max_wait)  # noqa: B010 (any acquire-like stage)
        # Run guards of the inner stages (acquire, call): once one has stopped the run, a
        # failed row is not tried again (it would only be refused, and counted as a retry).
        guards = {id(g): g for g in (getattr(st, "guard", None) for st in self.inner.stages())
                  if g is not None and hasattr(g, "stopped")}
        self._guards: tuple[RunGuard, ...] = tuple(guards.values())
        heard = (getattr(h, "on_reask", None) for h in self.hooks)
        self._reask_hooks: tuple[_OnReask, ...] = tuple(f for f in heard if callable(f))

    async def process(self, record: Record) -> Record:
        if record.error is not None:
            return record  # failed before (a retry never runs on failed records)
        start = 0.0
        attempt = 0  # attempts that ended in an error other than a rate limit
        throttles = 0
        throttled_since = 0.0
        reasks = 0
        last_error: APIError | None = None
        while True:
            # The inner stages run here directly (not through a nested Chain coroutine):
            # this is every request's hot path.
            for step, on_answered, on_failed in self._steps:
                if record.error is None:
                    if on_answered or record.response is None:
                        record = await step(record)
                elif on_failed:
                    record = await step(record)
            error = record.error
            if isinstance(error, RunStoppedError) and last_error is not None:
                # The run stopped before this attempt: the row was sent before, and its own
                # error says what happened to it (RunStoppedError is for rows never sent).
                record.error = last_error
                return record
            if error is None or not (isinstance(error, APIError) and error.retryable):
                return record
            if isinstance(error, SchemaValidationError):
                # An answer arrived but does not fit: ask again (no wait: nothing is wrong
                # with the server), unless asking again would get the same answer.
                if error.reason in ("refusal", "truncated") or reasks >= self.reasks:
                    return record
                reasks += 1
                record.reasks += 1
                _remember(record, error)
                for on_reask in self._reask_hooks:
                    on_reask(record, error)
                thrown = record.response
                usage = thrown.usage if thrown is not None and not record.cached else None
                if usage is not None:  # billed, though thrown away: the row's cost says so
                    record.discarded_prompt_tokens += usage.prompt_tokens
                    record.discarded_completion_tokens += usage.completion_tokens
                for follow_up in self._follow_ups:
                    follow_up(record, error)
                record.response = None
                record.value = None
                record.cached = False
                last_error = error
                record.error = None
                continue
            now = asyncio.get_running_loop().time()  # the loop's clock: virtual in tests
            if isinstance(error, RateLimitError):
                throttles += 1
                if throttles == 1:
                    throttled_since = now
                delay = self.backoff.throttle_delay(throttles, _bounded(error.retry_after))
                waited = now - throttled_since
                if waited + delay > self.max_wait:
                    record.error = _gave_up(error, waited, throttles, self.max_wait)
                    return record
                count = throttles
            else:
                attempt += 1
                if attempt >= self.attempts:
                    return record
                if attempt == 1:
                    start = now  # the time budget runs from the first failure
                delay = self.backoff.delay(attempt, _bounded(error.retry_after))
                if now - start + delay > self.max_elapsed:
                    return record
                count = attempt
            if self._stopped():
                return record  # the run stopped: no next attempt, the row keeps its error
            _remember(record, error)  # a track stage counts it, with or without hooks
            for hook in self.hooks:
                hook.on_retry(record, error, count, delay)
            if delay > 0:
                await asyncio.sleep(delay)
            last_error = error
            record.error = None  # the next attempt starts clean

    def _stopped(self) -> bool:
        return any(guard.stopped is not None for guard in self._guards)

    def finish(self) -> None:
        self.inner.finish()

    def begin(self, record: Record) -> None:
        for stage in self.inner.stages():
            stage.begin(record)

    def __repr__(self) -> str:
        inner = " | ".join("build(...)" if type(s).__name__ == "build" else repr(s)
                           for s in self.inner.stages())
        reasks = f", reasks={self.reasks}" if self.reasks != DEFAULT_REASKS else ""
        return f"retry({inner}, attempts={self.attempts}, backoff={self.backoff!r}{reasks})"


def _remember(record: Record, error: BaseException) -> None:
    if record.earlier_errors is None:
        record.earlier_errors = [error]
    else:
        record.earlier_errors.append(error)


def _bounded(retry_after: float | None) -> float | None:
    """A server's wait, at most :data:`~pipeline.limiter.MAX_PAUSE` (60 s) at a time: a row
    asked to wait an hour tries again after a minute (and fails once past ``max_wait``)."""
    return retry_after if retry_after is None else min(retry_after, MAX_PAUSE)


def _gave_up(error: RateLimitError, waited: float, throttles: int,
             max_wait: float) -> ThrottledError:
    asked = error.retry_after
    if asked is not None and waited + min(asked, MAX_PAUSE) > max_wait:
        why = (f"the server asked to wait {asked:,.0f} s ({stated_by(error)}), past "
               f"max_wait={max_wait:g} s")
        if throttles > 1:
            why += f" (throttled {waited:.0f} s and {throttles} 429s so far)"
    else:
        why = f"still rate limited after {waited:.0f} s and {throttles} 429s (max_wait)"
    return ThrottledError(
        f"{why}; the last: {error.message}", status=error.status, code=error.code,
        body=error.body, headers=error.headers, retry_after=error.retry_after)
