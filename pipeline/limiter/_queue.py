"""The FIFO wait queue under every limiter: waiters, one timer, the acquire and lease fast
paths, the leases they hand out; and the clock all limiters read."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from pipeline.errors import RequestTooLarge
from pipeline.limiter._values import _INF, _check_amount

if TYPE_CHECKING:
    from pipeline.limiter._base import RateLimiter

__all__ = ["Lease", "WaitQueue", "set_clock"]

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



class Lease:
    """One grant of a limiter, settled by :meth:`~pipeline.limiter.RateLimiter.settle` once its
    request's outcome is known (this is how a limiter learns from responses and 429s).

    Attributes:
        limiter: the limiter that granted it.
        requests, tokens: what was granted.
        granted_at: the limiter clock's time of the grant.
        slot: whether it holds an in-flight slot (released when settled).
        settled: whether it has been settled.
        max_pause: the longest pause a 429 for it may put on everyone (the run's
            ``max_wait``; the limiter's own :attr:`~pipeline.limiter.RateLimiter.max_pause` applies
            too).
    """

    __slots__ = ("granted_at", "limiter", "max_pause", "requests", "settled", "slot", "tokens")

    def __init__(self, limiter: WaitQueue, requests: float, tokens: float, granted_at: float,
                 slot: bool) -> None:
        # Granted by the queue under a RateLimiter (the queue's only subclass), which is what
        # a lease is settled with.
        self.limiter: RateLimiter = limiter  # type: ignore[assignment]
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


class WaitQueue(ABC):
    """The waiting half of every limiter: FIFO waiters served from the head, one timer armed
    for the moment the head fits, pauses and the in-flight cap respected, nothing polled.

    What fits is the bucket's business: subclasses say it through ``_delay`` (how long until
    an amount fits), ``_take``, ``_give`` and ``_capacity``. :class:`RateLimiter` is the one
    subclass here; it adds the limits, pauses, refunds and outcomes.
    """

    __slots__ = ("_cap_r", "_cap_t", "_in_flight", "_max_in_flight", "_paused_until",
                 "_slotted", "_timer", "_timer_loop", "_timer_when", "_waiters")

    def __init__(self) -> None:
        self._waiters: deque[_Waiter] = deque()
        self._paused_until = -_INF
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._timer_when = _INF
        # The most one grant may take (inf: unlimited); kept current by _limits_changed().
        self._cap_r = self._cap_t = _INF
        self._in_flight = 0  # leases holding a slot, not yet settled
        self._max_in_flight = _INF
        # Whether leases hold an in-flight slot (an adaptive limiter caps requests in flight).
        self._slotted = False

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
    def _capacity(self) -> tuple[float | None, float | None]:
        """The most one grant can ever take on each dimension (``None`` if unlimited)."""


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
        # The uncontended case in this one coroutine frame (no await of a helper): nobody
        # waiting, not paused, capacity there.
        try:
            valid = 0 <= requests <= self._cap_r and 0 <= tokens <= self._cap_t
        except TypeError:
            valid = False
        if valid and not self._waiters:
            now = _clock()
            if now >= self._paused_until and self._fast_take(requests, tokens, now):
                return
        await self._acquire(requests, tokens, False)

    async def lease(self, requests: float = 1, tokens: float = 0) -> Lease:
        """Like :meth:`acquire`, and return a :class:`Lease` to :meth:`settle` with the outcome.

        An adaptive limiter also waits for an in-flight slot here, and learns its rate from
        the settled outcomes; the pipeline's ``acquire`` and ``call`` stages do exactly this.

        >>> from pipeline.limiter import Outcome, TokenBucketLimiter
        >>> async def main():
        ...     limiter = TokenBucketLimiter(max_requests=60)
        ...     lease = await limiter.lease(tokens=0)
        ...     limiter.settle(lease, Outcome(kind="ok", limit_requests=30))
        ...     return limiter.max_requests
        >>> asyncio.run(main())
        30.0
        """
        slot = self._slotted
        try:
            valid = 0 <= requests <= self._cap_r and 0 <= tokens <= self._cap_t
        except TypeError:
            valid = False
        if valid and not self._waiters:
            now = _clock()
            if now >= self._paused_until and \
                    (not slot or self._in_flight < self._max_in_flight) and \
                    self._fast_take(requests, tokens, now):
                if slot:
                    self._in_flight += 1
                return Lease(self, requests, tokens, now, slot)
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

    @property
    def queued(self) -> int:
        """Requests waiting to be granted (cancelled ones may linger a moment)."""
        return len(self._waiters)

    @property
    def in_flight(self) -> int:
        """Leases holding an in-flight slot that are not settled yet."""
        return self._in_flight
