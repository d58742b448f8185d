"""The rate limiter every policy is: limits, pauses, refunds, outcomes settled, header
facts followed, and what it shows (:meth:`RateLimiter.snapshot`, its repr); the waiting
itself is its base, :class:`~pipeline.limiter._queue.WaitQueue`."""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from typing import TYPE_CHECKING

from pipeline.core.durations import format_duration
from pipeline.errors import ConfigError
from pipeline.limiter._outcome import CANCELLED, OK, THROTTLED, Outcome
from pipeline.limiter._queue import Lease, WaitQueue, _now
from pipeline.limiter._values import (
    _INF,
    DEFAULT_COOLDOWN,
    KEEP,
    MAX_PAUSE,
    LimiterSnapshot,
    _check_amount,
    _check_rate,
    _Keep,
)

if TYPE_CHECKING:
    from pipeline.limiter._control import RateController

__all__ = ["RateLimiter"]

logger = logging.getLogger("pipeline.limiter")


class RateLimiter(WaitQueue):
    """Abstract base: FIFO waiting, one timer, pause, refunds and header sync.

    Subclasses define the capacity policy through four small methods: ``_delay`` (how long
    until an amount fits), ``_take``, ``_give`` and ``_available``.
    """

    __slots__ = ("_control", "_interval", "_max_pause", "_max_requests", "_max_tokens",
                 "_said_capped")

    def __init__(self, max_requests: float | None, max_tokens: float | None,
                 interval: float) -> None:
        interval_checked = _check_rate("interval", interval)
        if interval_checked is None:
            raise ConfigError("interval must be a positive number of seconds")
        self._interval = interval_checked
        self._max_requests = _check_rate("max_requests", max_requests)
        self._max_tokens = _check_rate("max_tokens", max_tokens)
        super().__init__()
        self._max_pause = MAX_PAUSE
        self._said_capped = False  # a capped pause is said once per limiter
        # The rate controller that drives this bucket (adaptive limiters; None: fixed rates;
        # it caps requests in flight through the queue's slots).
        self._control: RateController | None = None

    # ----------------------------------------------------------------- policy hooks
    @abstractmethod
    def _available(self, now: float) -> tuple[float | None, float | None]:
        """Capacity available now on each dimension (``None`` if unlimited)."""

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

    def settle(self, lease: Lease, outcome: Outcome) -> None:
        """Tell the limiter how a leased request ended (once; later calls do nothing).

        Args:
            lease: what :meth:`lease` returned.
            outcome: what the answer said (:func:`pipeline.http.signals.answered` or
                :func:`~pipeline.http.signals.refused` read it from the provider's answer).
                A throttled one pauses everyone for its ``sure_wait`` (an adaptive limiter
                also lowers its rate); the limits it states are followed; an answered one's
                ``tokens`` more than leased are taken (the estimate was low), fewer are given
                back only when ``exact``.
        """
        if lease.settled:
            return
        lease.settled = True
        if lease.slot:
            self._in_flight -= 1
        now = _now()
        kind = outcome.kind
        if kind == OK:
            tokens = outcome.tokens
            if tokens is not None and (tokens > lease.tokens or
                                       (outcome.exact and tokens < lease.tokens)):
                self._give(0.0, lease.tokens - tokens, now)
            if outcome.has_facts:
                self._observe(outcome, now)
            self._on_success(lease, tokens, now)
        elif kind != CANCELLED:
            if outcome.has_facts:
                self._observe(outcome, now)
            self._on_error(lease, outcome, now)
        self._wake()

    def _on_success(self, lease: Lease, tokens: float | None, now: float) -> None:
        """A leased request succeeded: the controller, if any, learns from it."""
        control = self._control
        if control is not None:
            control.answered(lease.granted_at, lease.slot,
                             lease.tokens if tokens is None else tokens, now)

    def _on_error(self, lease: Lease, outcome: Outcome, now: float) -> None:
        """A leased request failed: the controller learns from it; a rate limit pauses
        everyone (a fixed-rate limiter for a default cooldown when the wait is unsaid)."""
        control = self._control
        if control is not None:
            control.refused(lease.granted_at, outcome, now)
            if outcome.kind == THROTTLED and outcome.wait is not None:
                # The provider said when: nobody sends before then (a fixed window's reset),
                # for the part of it that is sure (a whole-second Retry-After is rounded up).
                self._pause_after(outcome, lease)
            return
        if outcome.kind == THROTTLED:
            if outcome.stated_limit is not None and outcome.dimension is not None:
                # The 429 states the limit: a fact, like a header.
                if outcome.dimension == "requests":
                    self._header_limits(outcome.stated_limit, None, now)
                else:
                    self._header_limits(None, outcome.stated_limit, now)
            self._pause_after(outcome, lease)

    def _pause_after(self, outcome: Outcome, lease: Lease) -> None:
        """Pause everyone for the sure part of a 429's wait, capped by :attr:`max_pause` and
        the lease's ``max_pause`` (the run's ``max_wait``); a cut wait is said once."""
        seconds = DEFAULT_COOLDOWN if outcome.sure_wait is None else outcome.sure_wait
        cap = min(self._max_pause, lease.max_pause)
        if seconds > cap:
            self._say_capped(outcome, cap)
            seconds = cap
        self.pause(seconds)

    def _say_capped(self, outcome: Outcome, cap: float) -> None:
        if self._said_capped:
            return
        self._said_capped = True
        asked = outcome.wait if outcome.wait is not None else 0.0
        logger.warning("the server asked to wait %s (%s); waiting at most %s at a time",
                       _seconds_text(asked), outcome.source, _seconds_text(cap))

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

    def observe(self, outcome: Outcome) -> None:
        """Follow the facts an answer states, outside any lease (another client's answer).

        * stated limits (per minute) lower this limiter's limits when they are lower (they
          never raise a limit the user set);
        * what the provider has remaining lowers the available capacity when the provider
          has less left than we think (another client shares the key, say);
        * reset times align a fixed window (:class:`IntervalLimiter`).

        >>> from pipeline.limiter import Outcome, TokenBucketLimiter
        >>> limiter = TokenBucketLimiter(max_requests=600)
        >>> limiter.observe(Outcome(kind="ok", limit_requests=300)); limiter.max_requests
        300.0
        """
        now = _now()
        if self._observe(outcome, now):
            self._wake()

    def _observe(self, outcome: Outcome, now: float) -> bool:
        changed = False
        limit_r, limit_t = outcome.limit_requests, outcome.limit_tokens
        if (limit_r is not None or limit_t is not None) and \
                self._header_limits(limit_r, limit_t, now):
            changed = True
        rem_r, rem_t = outcome.remaining_requests, outcome.remaining_tokens
        if rem_r is not None or rem_t is not None:
            avail_r, avail_t = self._available(now)
            lower_r = rem_r - avail_r if rem_r is not None and avail_r is not None and \
                rem_r < avail_r else 0.0
            lower_t = rem_t - avail_t if rem_t is not None and avail_t is not None and \
                rem_t < avail_t else 0.0
            if lower_r or lower_t:
                self._give(lower_r, lower_t, now)
                changed = True
        reset_r, reset_t = outcome.reset_requests, outcome.reset_tokens
        if (reset_r is not None or reset_t is not None) and \
                self._sync_reset(reset_r, reset_t, now):
            changed = True
        return changed

    def _set_rates(self, max_requests: float | None, max_tokens: float | None,
                   now: float) -> None:
        """The controller's rates (per interval) for the bucket."""
        self._max_requests = max_requests
        self._max_tokens = max_tokens
        self._rates_changed(now)
        self._wake()

    def _drain(self, name: str, now: float) -> None:
        """A refusal says the provider's bucket is empty on this dimension: so is ours."""
        return None  # buckets that can be drained say how

    def _header_limits(self, limit_r: float | None, limit_t: float | None, now: float) -> bool:
        """The provider stated its per-minute limits: lower ours where theirs are lower."""
        if self._control is not None:
            return self._control.facts(limit_r, limit_t, now)
        changed = False
        # Stated limits are per minute; convert to this limiter's interval.
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
    def wait_estimate(self, requests: float = 1, tokens: float = 0) -> float:
        """Seconds until ``(requests, tokens)`` would be granted if asked now, behind the
        waiters already queued (each taken to be the same size): the pause left, then what
        the bucket lacks at its current rates. An estimate (rates change with outcomes);
        requests in flight are not counted (an adaptive limiter's cap frees a slot per
        answer, whose latency the limiter does not know). For routing between limiters.

        >>> from pipeline.limiter import TokenBucketLimiter
        >>> limiter = TokenBucketLimiter(max_requests=60, interval=1.0, burst_requests=1)
        >>> limiter.try_acquire(), round(limiter.wait_estimate(), 2), round(
        ...     limiter.wait_estimate(3), 2)   # 60 a second: a sixtieth each
        (True, 0.02, 0.05)
        """
        now = _now()
        wait = self._paused_until - now
        if wait < 0.0:
            wait = 0.0
        queued = len(self._waiters) + 1
        avail_r, avail_t = self._available(now)
        rate_r, rate_t = self._max_requests, self._max_tokens
        if rate_r and avail_r is not None and requests:
            short = queued * requests - avail_r
            if short > 0:
                wait = max(wait, short * self._interval / rate_r)
        if rate_t and avail_t is not None and tokens:
            short = queued * tokens - avail_t
            if short > 0:
                wait = max(wait, short * self._interval / rate_t)
        return wait

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


def _seconds_text(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds >= 1e9:
        return f"{seconds:.3g} s"
    return f"{seconds:,.0f} s" if seconds >= 10 else f"{seconds:.3g} s"
