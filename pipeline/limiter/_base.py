"""The waiting machinery every limiter shares: FIFO waiters, one timer, pause, refunds,
header sync, snapshots; and the clock all limiters read."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import msgspec

from pipeline.core.checks import optional_positive
from pipeline.core.durations import format_duration, parse_duration
from pipeline.errors import ConfigError, RateLimitError, RequestTooLarge

__all__ = ["DEFAULT_BURST_SECONDS", "DEFAULT_COOLDOWN", "KEEP", "MAX_PAUSE", "Lease",
           "LimiterSnapshot", "RateLimiter", "set_clock", "shared_pause", "stated_by"]

logger = logging.getLogger("pipeline.limiter")

#: The bucket a limiter keeps by default, in seconds of its rate. Providers enforce a per-minute
#: limit over windows as short as a second (OpenAI: "60,000 requests/minute may be enforced as
#: 1,000 requests/second"); half a second leaves the other half of such a bucket for network
#: jitter, so a client pacing at exactly the limit is not refused for an early packet.
DEFAULT_BURST_SECONDS = 0.5
#: How long everyone pauses after a 429 that did not say how long to wait (static limiters).
DEFAULT_COOLDOWN = 1.0
#: The longest pause one 429 puts on everyone, in seconds. Rate limits per minute (what
#: ``pause`` is for) free room within a minute: OpenAI's ``x-ratelimit-reset-*`` and a fixed
#: window's ``Retry-After`` never say more than 60 s. A longer wait is a daily cap, a proxy's
#: guess or a wrong clock (``Retry-After: 86400``, an HTTP date in 9999): honouring it would
#: freeze the run with no word. Waiting a minute at a time instead costs one refused request
#: per minute when the server meant it, and the run's ``max_wait`` then fails the rows.
MAX_PAUSE = 60.0

_INF = math.inf
_SLACK = 1e-9  # relative tolerance for floating-point rounding of bucket levels


class _Keep:
    """Sentinel type: "leave this setting as it is"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


# The clock all limiters measure time with. asyncio's own loops use time.monotonic() too;
# pipeline.testing.VirtualTimeLoop installs its virtual clock here while it runs. (Reading the
# running loop's clock instead would cost a getpid() system call per acquire on Python 3.11.)
_clock: Callable[[], float] = time.monotonic


def _now() -> float:
    return _clock()


def set_clock(clock: Callable[[], float] | None) -> Callable[[], float]:
    """Make every limiter read ``clock`` (``None``: back to ``time.monotonic``); returns the
    previous clock. For test loops with a virtual clock; timers still run on the event loop."""
    global _clock
    previous = _clock
    _clock = clock if clock is not None else time.monotonic
    return previous


# The limiter modules' name for the shared check (None: no limit on that dimension).
_check_rate = optional_positive


def _check_amount(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class LimiterSnapshot(msgspec.Struct, frozen=True):
    """A point-in-time view of a limiter, for dashboards, logs and tests.

    ``None`` on a dimension means that dimension is not limited. ``max_requests`` and
    ``max_tokens`` are the limits in force now (an adaptive limiter's effective rate);
    ``ceiling_*`` are the most it may grow to (the user's or the provider's limits).
    """

    requests_available: float | None
    tokens_available: float | None
    max_requests: float | None
    max_tokens: float | None
    interval: float
    waiters: int
    paused_for: float
    next_wake_in: float | None
    in_flight: int = 0
    max_in_flight: float | None = None
    ceiling_requests: float | None = None
    ceiling_tokens: float | None = None
    mode: str = "static"


class Lease:
    """One grant of a limiter, settled by :meth:`RateLimiter.settle` once its request's
    outcome is known (this is how a limiter learns from responses and 429s).

    Attributes:
        limiter: the limiter that granted it.
        requests, tokens: what was granted.
        granted_at: the limiter clock's time of the grant.
        slot: whether it holds an in-flight slot (released when settled).
        settled: whether it has been settled.
        max_pause: the longest pause a 429 for it may put on everyone (the run's
            ``max_wait``; the limiter's own :attr:`~RateLimiter.max_pause` applies too).
    """

    __slots__ = ("granted_at", "limiter", "max_pause", "requests", "settled", "slot", "tokens")

    def __init__(self, limiter: RateLimiter, requests: float, tokens: float, granted_at: float,
                 slot: bool) -> None:
        self.limiter = limiter
        self.requests = requests
        self.tokens = tokens
        self.granted_at = granted_at
        self.slot = slot
        self.settled = False
        self.max_pause = _INF

    def __repr__(self) -> str:
        state = "settled" if self.settled else "open"
        return (f"<Lease {self.requests:g} request(s), {self.tokens:,.0f} tokens, {state}, "
                f"from {type(self.limiter).__name__}>")


class _Waiter:
    __slots__ = ("future", "requests", "slot", "tokens")

    def __init__(self, future: asyncio.Future[None], requests: float, tokens: float,
                 slot: bool = False) -> None:
        self.future = future
        self.requests = requests
        self.tokens = tokens
        self.slot = slot


class RateLimiter(ABC):
    """Abstract base: FIFO waiting, one timer, pause, refunds and header sync.

    Subclasses define the capacity policy through four small methods: ``_delay`` (how long
    until an amount fits), ``_take``, ``_give`` and ``_available``.
    """

    __slots__ = ("_cap_r", "_cap_t", "_in_flight", "_interval", "_max_in_flight", "_max_pause",
                 "_max_requests", "_max_tokens", "_paused_until", "_said_capped", "_timer",
                 "_timer_loop", "_timer_when", "_waiters")

    #: Whether leases hold an in-flight slot (the adaptive limiter caps requests in flight).
    _uses_slots = False

    def __init__(self, max_requests: float | None, max_tokens: float | None,
                 interval: float) -> None:
        interval_checked = _check_rate("interval", interval)
        if interval_checked is None:
            raise ConfigError("interval must be a positive number of seconds")
        self._interval = interval_checked
        self._max_requests = _check_rate("max_requests", max_requests)
        self._max_tokens = _check_rate("max_tokens", max_tokens)
        self._waiters: deque[_Waiter] = deque()
        self._paused_until = -_INF
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._timer_when = _INF
        # The most one grant may take (inf: unlimited); kept current by _limits_changed().
        self._cap_r = self._cap_t = _INF
        self._in_flight = 0  # leases holding a slot, not yet settled
        self._max_in_flight = _INF
        self._max_pause = MAX_PAUSE
        self._said_capped = False  # a capped pause is said once per limiter

    def _limits_changed(self) -> None:
        cap_r, cap_t = self._capacity()
        self._cap_r = _INF if cap_r is None else cap_r
        self._cap_t = _INF if cap_t is None else cap_t

    def _fast_take(self, requests: float, tokens: float, now: float) -> bool:
        """Take the amount if it fits now (no pause, no waiters checked here)."""
        if self._delay(requests, tokens, now) > 0:
            return False
        self._take(requests, tokens, now)
        return True

    # ----------------------------------------------------------------- policy hooks
    @abstractmethod
    def _delay(self, requests: float, tokens: float, now: float) -> float:
        """Seconds until ``(requests, tokens)`` fits, 0 if it fits now (ignoring pauses)."""

    @abstractmethod
    def _take(self, requests: float, tokens: float, now: float) -> None:
        """Consume capacity (only called when ``_delay`` returned 0)."""

    @abstractmethod
    def _give(self, requests: float, tokens: float, now: float) -> None:
        """Return capacity (negative amounts take more: a debt repaid by waiting)."""

    @abstractmethod
    def _available(self, now: float) -> tuple[float | None, float | None]:
        """Capacity available now on each dimension (``None`` if unlimited)."""

    @abstractmethod
    def _capacity(self) -> tuple[float | None, float | None]:
        """The most one grant can ever take on each dimension (``None`` if unlimited)."""

    @abstractmethod
    def _rates_changed(self, now: float) -> None:
        """Called after ``max_requests``/``max_tokens``/``interval`` change."""

    def _scale_burst(self, requests_factor: float, tokens_factor: float) -> None:
        """The limits are being lowered by these factors: shrink explicit bursts alike."""
        return None  # policies without an explicit burst have nothing to scale

    def _sync_reset(self, reset_requests: float | None, reset_tokens: float | None,
                    now: float) -> bool:
        """Use the server's reset times; True if anything changed.

        A continuously refilling bucket needs nothing here: given the limit and what remains,
        the time to refill follows from the rate. A fixed-window limiter aligns its window.
        """
        return False

    # ----------------------------------------------------------------- properties
    @property
    def max_requests(self) -> float | None:
        """Requests allowed per ``interval`` (``None``: unlimited)."""
        return self._max_requests

    @property
    def max_tokens(self) -> float | None:
        """Tokens allowed per ``interval`` (``None``: unlimited)."""
        return self._max_tokens

    @property
    def interval(self) -> float:
        """The interval, in seconds, that ``max_requests`` and ``max_tokens`` refer to."""
        return self._interval

    def capacity(self) -> tuple[float | None, float | None]:
        """The most one lease can ever take: ``(requests, tokens)``, ``None`` where unlimited.

        More than this raises :class:`~pipeline.errors.RequestTooLarge`; a request that packs
        many rows (embeddings in batches) is sized to fit it.

        >>> from pipeline.limiter import TokenBucketLimiter
        >>> TokenBucketLimiter(max_requests=3_000, max_tokens=1_000_000).capacity()
        (3000.0, 1000000.0)
        """
        return self._capacity()

    # ----------------------------------------------------------------- acquiring
    def _validate(self, requests: float, tokens: float) -> tuple[float, float]:
        requests = _check_amount("requests", requests)
        tokens = _check_amount("tokens", tokens)
        cap_r, cap_t = self._capacity()
        if cap_r is not None and requests > cap_r:
            raise RequestTooLarge(
                f"{requests:g} requests can never be granted at once: the limiter holds at most "
                f"{cap_r:g}", requested=requests, capacity=cap_r)
        if cap_t is not None and tokens > cap_t:
            raise RequestTooLarge(
                f"a request of {tokens:g} tokens can never be granted: the limiter holds at most "
                f"{cap_t:g} tokens (raise max_tokens/burst_tokens or lower max_tokens of the "
                f"request)", requested=tokens, capacity=cap_t)
        return requests, tokens

    def try_acquire(self, requests: float = 1, tokens: float = 0) -> bool:
        """Take ``(requests, tokens)`` now if possible, without waiting.

        Returns ``False`` when it would have to wait, when others are already waiting (they
        come first), or during a pause.

        >>> from pipeline.limiter import TokenBucketLimiter
        >>> TokenBucketLimiter(max_requests=1, interval=1).try_acquire()
        True
        """
        requests, tokens = self._validate(requests, tokens)
        now = _now()
        if self._waiters or now < self._paused_until:
            return False
        return self._fast_take(requests, tokens, now)

    async def acquire(self, requests: float = 1, tokens: float = 0) -> None:
        """Wait until ``(requests, tokens)`` can be granted, then take them atomically.

        Raises :class:`~pipeline.errors.RequestTooLarge` at once if the amount can never fit,
        and :class:`~pipeline.errors.ConfigError` for negative or non-finite amounts.
        """
        await self._acquire(requests, tokens, False)

    async def lease(self, requests: float = 1, tokens: float = 0) -> Lease:
        """Like :meth:`acquire`, and return a :class:`Lease` to :meth:`settle` with the outcome.

        An adaptive limiter also waits for an in-flight slot here, and learns its rate from
        the settled outcomes; the pipeline's ``acquire`` and ``call`` stages do exactly this.

        >>> from pipeline.limiter import TokenBucketLimiter
        >>> async def main():
        ...     limiter = TokenBucketLimiter(max_requests=60)
        ...     lease = await limiter.lease(tokens=0)
        ...     limiter.settle(lease, headers={"x-ratelimit-limit-requests": "30"})
        ...     return limiter.max_requests
        >>> asyncio.run(main())
        30.0
        """
        slot = self._uses_slots
        await self._acquire(requests, tokens, slot)
        return Lease(self, requests, tokens, _clock(), slot)

    async def _acquire(self, requests: float, tokens: float, slot: bool) -> None:
        now = _clock()
        # Cheap validation first (NaN fails the comparisons, a str raises TypeError); the
        # full check runs only to explain what is wrong.
        try:
            valid = 0 <= requests <= self._cap_r and 0 <= tokens <= self._cap_t
        except TypeError:
            valid = False
        if not valid:
            requests, tokens = self._validate(requests, tokens)
        # Fast path: nobody waiting, not paused, capacity there.
        if not self._waiters and now >= self._paused_until and \
                (not slot or self._in_flight < self._max_in_flight) and \
                self._fast_take(requests, tokens, now):
            if slot:
                self._in_flight += 1
            return
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), requests, tokens, slot)
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._serve(loop)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                # Granted, then cancelled before we could return: give the grant back.
                self._give(requests, tokens, _now())
                if slot:
                    self._in_flight -= 1
            elif self._waiters and self._waiters[0] is waiter:
                self._waiters.popleft()
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            # Whoever is at the head now may be servable (or need a different timer).
            if self._waiters:
                self._serve(loop)
            raise

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        return None

    def _serve(self, loop: asyncio.AbstractEventLoop | None = None,
               not_before: float = -_INF) -> None:
        """Grant waiters from the head while they fit, then arm the timer for the next one."""
        waiters = self._waiters
        if not waiters:
            self._cancel_timer()
            return
        if loop is None:
            loop = waiters[0].future.get_loop()
        # Loops fire timers up to their clock resolution early; a timer's own deadline is
        # the honest "now" for it (otherwise a tiny shortfall re-arms it forever).
        now = max(_clock(), not_before)
        while waiters:
            head = waiters[0]
            if head.future.done():  # cancelled while queued
                waiters.popleft()
                continue
            if now < self._paused_until:
                self._arm(loop, self._paused_until)
                return
            if head.slot and self._in_flight >= self._max_in_flight:
                # Waiting for a request in flight to finish: settle() wakes us, no timer.
                self._cancel_timer()
                return
            delay = self._delay(head.requests, head.tokens, now)
            if delay > 0:
                self._arm(loop, now + delay)
                return
            self._take(head.requests, head.tokens, now)
            if head.slot:
                self._in_flight += 1
            waiters.popleft()
            head.future.set_result(None)
        self._cancel_timer()

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            if self._timer_loop is loop and self._timer_when == when:
                return
            self._timer.cancel()
        self._timer_loop = loop
        self._timer_when = when
        self._timer = loop.call_later(max(0.0, when - _clock()), self._on_timer)

    def _on_timer(self) -> None:
        when = self._timer_when
        self._timer = None
        self._timer_loop = None
        self._timer_when = _INF
        self._serve(not_before=when)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_loop = None
            self._timer_when = _INF

    def _wake(self) -> None:
        """State changed in the waiters' favour (or not): recompute the head's wake-up."""
        if self._waiters:
            self._serve()

    # ----------------------------------------------------------------- adjustments
    def refund(self, tokens: float = 0, requests: float = 0) -> None:
        """Give back capacity that was reserved but not used (capped at the bucket size).

        >>> from pipeline.limiter import TokenBucketLimiter
        >>> limiter = TokenBucketLimiter(max_tokens=1_000, burst_tokens=1_000)
        >>> limiter.try_acquire(tokens=1_000), limiter.try_acquire(tokens=1)
        (True, False)
        >>> limiter.refund(tokens=400); limiter.try_acquire(tokens=400)
        True
        """
        tokens = _check_amount("tokens", tokens)
        requests = _check_amount("requests", requests)
        self._give(requests, tokens, _now())
        self._wake()

    def reconcile(self, estimated: float, actual: float) -> None:
        """Settle a grant of ``estimated`` tokens once the response reports ``actual`` usage.

        Unused tokens go back; extra usage is taken (it may drive the bucket below zero, so
        later requests wait longer, exactly as the provider would make them).
        """
        estimated = _check_amount("estimated", estimated)
        actual = _check_amount("actual", actual)
        if estimated != actual:
            self._give(0.0, estimated - actual, _now())
            self._wake()

    def settle(self, lease: Lease, *, error: BaseException | None = None,
               headers: Mapping[str, str] | None = None, tokens: float | None = None,
               exact: bool = False) -> None:
        """Tell the limiter how a leased request ended (once; later calls do nothing).

        Args:
            lease: what :meth:`lease` returned.
            error: the exception the request failed with, if it did. A
                :class:`~pipeline.errors.RateLimitError` pauses everyone for its
                ``retry_after`` (an adaptive limiter also lowers its rate).
            headers: the response's headers (``x-ratelimit-*`` are followed).
            tokens: the tokens the provider counted for it. More than leased is taken (the
                estimate was low); less is given back only with ``exact``.
            exact: give back unused tokens too (for providers that charge actual usage).
        """
        if lease.settled:
            return
        lease.settled = True
        if lease.slot:
            self._in_flight -= 1
        now = _now()
        if error is None:
            if tokens is not None and (tokens > lease.tokens or (exact and tokens < lease.tokens)):
                self._give(0.0, lease.tokens - tokens, now)
            if headers:
                self.update_from_headers(headers)
            self._on_success(lease, tokens, now)
        else:
            error_headers = getattr(error, "headers", None)
            if error_headers:
                self.update_from_headers(error_headers)
            self._on_error(lease, error, now)
        self._wake()

    def _on_success(self, lease: Lease, tokens: float | None, now: float) -> None:
        """A leased request succeeded (hook for adaptive policies)."""
        return None  # a fixed-rate policy has nothing to learn from a success

    def _on_error(self, lease: Lease, error: BaseException, now: float) -> None:
        """A leased request failed: a rate limit pauses everyone (hook for adaptive policies)."""
        if isinstance(error, RateLimitError):
            self._pause_after(error, lease)

    def _pause_after(self, error: RateLimitError, lease: Lease) -> None:
        """Pause everyone for the sure part of a 429's wait, capped by :attr:`max_pause` and
        the lease's ``max_pause`` (the run's ``max_wait``); a cut wait is said once."""
        seconds = shared_pause(error)
        cap = min(self._max_pause, lease.max_pause)
        if seconds > cap:
            self._say_capped(error, cap)
            seconds = cap
        self.pause(seconds)

    def _say_capped(self, error: RateLimitError, cap: float) -> None:
        if self._said_capped:
            return
        self._said_capped = True
        asked = error.retry_after if error.retry_after is not None else 0.0
        logger.warning("the server asked to wait %s (%s); waiting at most %s at a time",
                       _seconds_text(asked), stated_by(error), _seconds_text(cap))

    @property
    def in_flight(self) -> int:
        """Leases holding an in-flight slot that are not settled yet."""
        return self._in_flight

    def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (a cooldown, e.g. a 429's ``retry-after``).

        Pauses never shorten one already in force, and last at most :attr:`max_pause`.
        """
        seconds = min(_check_amount("seconds", seconds), self._max_pause)
        until = _now() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self._wake()

    @property
    def max_pause(self) -> float:
        """The longest one pause lasts, in seconds (default :data:`MAX_PAUSE`, 60 s).

        A 429 asking for longer (``Retry-After: 3600``) pauses everyone this long, and says so
        once on the ``pipeline.limiter`` logger (a warning, shown on the console).

        >>> from pipeline.limiter import TokenBucketLimiter
        >>> limiter = TokenBucketLimiter(max_requests=60)
        >>> limiter.pause(3600); round(limiter.paused_for)
        60
        """
        return self._max_pause

    @max_pause.setter
    def max_pause(self, seconds: float) -> None:
        self._max_pause = _check_amount("max_pause", seconds)

    @property
    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - _now())

    def set_rate(self, max_requests: float | _Keep | None = KEEP,
                 max_tokens: float | _Keep | None = KEEP,
                 *, interval: float | None = None) -> None:
        """Change the limits at run time; leave out what should stay, pass ``None`` to lift one.

        >>> from pipeline.limiter import TokenBucketLimiter
        >>> limiter = TokenBucketLimiter(max_requests=60)
        >>> limiter.set_rate(max_tokens=10_000); limiter.max_requests, limiter.max_tokens
        (60.0, 10000.0)
        """
        now = _now()
        if not isinstance(max_requests, _Keep):
            self._max_requests = _check_rate("max_requests", max_requests)
        if not isinstance(max_tokens, _Keep):
            self._max_tokens = _check_rate("max_tokens", max_tokens)
        if interval is not None:
            checked = _check_rate("interval", interval)
            assert checked is not None
            self._interval = checked
        self._rates_changed(now)
        self._wake()

    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        """Keep in step with a provider's ``x-ratelimit-*`` response headers.

        * ``x-ratelimit-limit-requests`` / ``-tokens`` lower this limiter's limits when the
          server's are lower (they never raise a limit the user set).
        * ``x-ratelimit-remaining-requests`` / ``-tokens`` lower the available capacity when
          the server has less left than we think (another client shares the key, say).

        Missing, negative (Azure's ``-1``) or garbage values are ignored.
        """
        get = _header_getter(headers)
        if get is None:
            return
        changed = False
        now = _now()
        limit_r = _positive_number(get("x-ratelimit-limit-requests"))
        limit_t = _positive_number(get("x-ratelimit-limit-tokens"))
        if (limit_r is not None or limit_t is not None) and \
                self._header_limits(limit_r, limit_t, now):
            changed = True
        rem_r = _nonnegative_number(get("x-ratelimit-remaining-requests"))
        rem_t = _nonnegative_number(get("x-ratelimit-remaining-tokens"))
        avail_r, avail_t = self._available(now)
        lower_r = rem_r - avail_r if rem_r is not None and avail_r is not None and \
            rem_r < avail_r else 0.0
        lower_t = rem_t - avail_t if rem_t is not None and avail_t is not None and \
            rem_t < avail_t else 0.0
        if lower_r or lower_t:
            self._give(lower_r, lower_t, now)
            changed = True
        reset_r = parse_duration(get("x-ratelimit-reset-requests"))
        reset_t = parse_duration(get("x-ratelimit-reset-tokens"))
        if (reset_r is not None or reset_t is not None) and self._sync_reset(reset_r, reset_t, now):
            changed = True
        if changed:
            self._wake()

    def _header_limits(self, limit_r: float | None, limit_t: float | None, now: float) -> bool:
        """The provider stated its per-minute limits: lower ours where theirs are lower."""
        changed = False
        # The headers speak of per-minute limits; convert to this limiter's interval.
        scale = self._interval / 60.0
        if limit_r is not None and (self._max_requests is None
                                    or limit_r * scale < self._max_requests):
            self._scale_burst(limit_r * scale / (self._max_requests or limit_r * scale), 1.0)
            self._max_requests = limit_r * scale
            changed = True
        if limit_t is not None and (self._max_tokens is None
                                    or limit_t * scale < self._max_tokens):
            self._scale_burst(1.0, limit_t * scale / (self._max_tokens or limit_t * scale))
            self._max_tokens = limit_t * scale
            changed = True
        if changed:
            self._rates_changed(now)
        return changed

    # ----------------------------------------------------------------- inspection
    def snapshot(self) -> LimiterSnapshot:
        """Current capacity, limits, waiters, pause and next wake-up."""
        now = _now()
        avail_r, avail_t = self._available(now)
        next_wake = None if self._timer is None else max(0.0, self._timer_when - now)
        return LimiterSnapshot(
            requests_available=avail_r, tokens_available=avail_t,
            max_requests=self._max_requests, max_tokens=self._max_tokens,
            interval=self._interval,
            waiters=sum(1 for w in self._waiters if not w.future.done()),
            paused_for=max(0.0, self._paused_until - now), next_wake_in=next_wake,
            in_flight=self._in_flight,
            max_in_flight=None if self._max_in_flight == _INF else self._max_in_flight,
            ceiling_requests=self._max_requests, ceiling_tokens=self._max_tokens)

    def __repr__(self) -> str:
        snap = self.snapshot()
        per = "min" if snap.interval == 60.0 else format_duration(snap.interval)

        def dim(name: str, avail: float | None, limit: float | None) -> str:
            if limit is None or avail is None:
                return f"{name}=unlimited"
            return f"{name}={avail:,.0f}/{limit:,.0f} per {per}"

        parts = [dim("requests", snap.requests_available, snap.max_requests),
                 dim("tokens", snap.tokens_available, snap.max_tokens),
                 f"waiters={snap.waiters}"]
        if snap.paused_for > 0:
            parts.append(f"paused {format_duration(snap.paused_for)}")
        if snap.next_wake_in is not None:
            parts.append(f"next wake in {format_duration(snap.next_wake_in)}")
        return f"<{type(self).__name__} {' '.join(parts)}>"


_RATELIMIT_PREFIX = "x-ratelimit-"


def shared_pause(error: RateLimitError, default: float = DEFAULT_COOLDOWN) -> float:
    """How long a 429 makes *everyone* on the limiter wait: the part of its wait that is sure.

    ``retry-after-ms`` and the ``x-ratelimit-reset-*`` headers are exact, and so is their
    pause. ``Retry-After`` in whole seconds or as an HTTP date is rounded up to the second by
    the server (a wait of 20 ms reads "1"), so only the whole seconds before the last one are
    sure: pausing everyone for the rest would idle the quota for up to a second per 429
    (measured against a sliding-window server sending HTTP dates: 1.8-2x the pace for 2-4
    429s). The refused request itself still waits the whole of it (the retry stage does).
    No wait stated: ``default``.

    >>> from pipeline.errors import RateLimitError
    >>> def refusal(headers):
    ...     return RateLimitError("429", status=429, headers=headers, retry_after=2.0)
    >>> shared_pause(refusal({"retry-after": "2"})), shared_pause(refusal({"retry-after-ms": "2000"}))
    (1.0, 2.0)
    """  # noqa: E501
    if error.retry_after is None:
        return default
    headers = {str(k).lower(): v for k, v in (error.headers or {}).items()}
    stated = headers.get("retry-after")
    coarse = "retry-after-ms" not in headers and stated is not None and "." not in str(stated)
    return max(0.0, error.retry_after - 1.0) if coarse else error.retry_after


def stated_by(error: RateLimitError) -> str:
    """The header a 429's wait came from, for messages: ``"Retry-After"``, ``"retry-after-ms"``,
    ``"x-ratelimit-reset-requests"``... (``"no header"`` when none did).

    >>> from pipeline.errors import RateLimitError
    >>> stated_by(RateLimitError("429", status=429, headers={"retry-after": "3600"}))
    'Retry-After'
    """
    headers = {str(k).lower(): str(v).strip() for k, v in (error.headers or {}).items()}
    resets = ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
    if headers.get("x-ratelimit-remaining-tokens") == "0" and \
            headers.get("x-ratelimit-remaining-requests") != "0":
        resets.reverse()  # the exhausted one is what the wait came from
    for name in ("retry-after-ms", "retry-after", *resets):
        if name in headers:
            return "Retry-After" if name == "retry-after" else name
    return "no header"


def _seconds_text(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds >= 1e9:
        return f"{seconds:.3g} s"
    return f"{seconds:,.0f} s" if seconds >= 10 else f"{seconds:.3g} s"


def _header_getter(headers: Mapping[str, str]) -> Any:
    """A case-insensitive ``get`` for plain dicts and httpx/aiohttp header objects alike.

    Returns ``None`` when there is no ``x-ratelimit-*`` header at all (the common case for
    servers without them), so callers can skip the work.
    """
    if isinstance(headers, dict):
        # Plain dicts (our Response lower-cases names): look for a rate-limit header cheaply,
        # and lower-case the keys only when one is spelled in another case.
        if "x-ratelimit-limit-requests" in headers or "x-ratelimit-remaining-requests" in headers:
            return headers.get
        mixed_case = False
        for key in headers:
            if isinstance(key, str) and key[:12].lower() == _RATELIMIT_PREFIX:
                if key.startswith(_RATELIMIT_PREFIX):
                    return headers.get
                mixed_case = True
        if not mixed_case:
            return None
        return {str(k).lower(): v for k, v in headers.items()}.get
    return headers.get  # case-insensitive header objects (httpx, aiohttp, CIMultiDict)


def _nonnegative_number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        # Some servers send durations or suffixed numbers; accept plain durations only.
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _positive_number(value: Any) -> float | None:
    number = _nonnegative_number(value)
    return number if number is not None and number > 0 else None

