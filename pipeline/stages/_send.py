"""Sending: wait for the rate limiter (``acquire``), then send once (``call``).

The two are separate stages so that a retry wraps both (every attempt waits for capacity
again) and so that a user may put their own stage between them.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from pipeline.core.checks import percentile
from pipeline.core.protocols import EndpointLike, Grant, LimiterLike, ServiceLike
from pipeline.core.record import Record
from pipeline.core.request import APIRequest
from pipeline.errors import APIError, APITimeoutError, ConfigError, PipelineError
from pipeline.http import signals
from pipeline.payloads.tokens import provider_charge
from pipeline.stages._core import Stage
from pipeline.state.guard import RunGuard

if TYPE_CHECKING:
    from pipeline.http.deployments import RoutedService

__all__ = ["LatencyWindow", "acquire", "call"]


class acquire(Stage):
    """Wait for capacity on a rate limiter: 1 request plus the record's token estimate.

    Accepts a :class:`~pipeline.limiter.RateLimiter` or an endpoint (its limiter). The grant
    is a :class:`~pipeline.limiter.Lease` on ``record.lease``, settled by :class:`call`
    with the outcome (real usage, ``x-ratelimit-*`` headers, a 429), which is how the limiter
    learns. An adaptive limiter also holds an in-flight slot until then. With a stopped
    ``guard`` (:class:`~pipeline.state.guard.RunGuard`) the record fails at once, without waiting;
    while the guard's breaker is open, the record waits before taking any capacity.
    """

    on_answered = False  # a request stage: an answered record needs none

    def __init__(self, limiter: LimiterLike | EndpointLike, *, guard: RunGuard | None = None,
                 max_pause: float | None = None) -> None:
        # An Endpoint: its limiter (checked below, a limiter must have an acquire()).
        limiter = cast(LimiterLike, getattr(limiter, "limiter", limiter))
        if not callable(getattr(limiter, "acquire", None)):
            raise ConfigError(f"acquire() needs a rate limiter, got {limiter!r}")
        if max_pause is not None and (isinstance(max_pause, bool) or
                                      not isinstance(max_pause, int | float) or
                                      not max_pause >= 0):
            raise ConfigError(f"max_pause must be >= 0 seconds, got {max_pause!r}")
        self.limiter = limiter
        self.guard = guard
        #: The longest pause a 429 of these requests may put on everyone (a retry around
        #: this stage sets its ``max_wait`` here); the limiter's own ``max_pause`` holds too.
        self.max_pause = max_pause
        # A limiter that leases (every one of the package's) is told each outcome.
        self._lease: Callable[[float, float], Awaitable[Grant]] | None = \
            getattr(limiter, "lease", None)

    async def process(self, record: Record) -> Record:
        guard = self.guard
        if guard is not None and guard.holding:
            # The run stopped (fail at once, without waiting for capacity), or the server is
            # not answering: wait here, before taking capacity, until it does.
            stopped = await guard.admit()
            if stopped is not None:
                record.error = stopped
                return record
        try:
            if self._lease is not None:
                lease = record.lease = await self._lease(1, record.token_estimate)
                if self.max_pause is not None:
                    lease.max_pause = self.max_pause
            else:  # a duck-typed limiter with only acquire(): nothing to settle
                await self.limiter.acquire(1, record.token_estimate)
        except PipelineError as exc:  # RequestTooLarge: it can never be sent
            record.error = exc
        return record

    def __repr__(self) -> str:
        return f"acquire({self.limiter!r})"


class call(Stage):
    """Send the record's request once through a service; attach the response or the error.

    The limiter lease made by :class:`acquire` is settled with the outcome: the tokens the
    provider counts, the ``x-ratelimit-*`` headers, or the error (a 429 pauses that limiter
    for everyone for the server's ``retry-after``, and an adaptive limiter lowers its rate).

    The provider counts the real prompt tokens plus ``max_tokens`` x ``n`` (used or not)
    against its token limit, and the lease is trued up to that count both ways: more than
    the estimate (the prompt estimate was low) is taken from the limiter too, less (it was
    high) is given back. Unused answer tokens are given back only with
    ``refund_unused=True``: refunding them would overrun an OpenAI-style limit.

    ``timeout`` bounds one attempt, in seconds (a timed-out attempt is an
    :class:`~pipeline.errors.APITimeoutError`, retried like any other). ``None`` (the
    default) sizes it from the latencies seen so far: ``max(10 s, 6 x p99)`` once 20
    answers have arrived, and from the request's most output tokens before that (30 s plus
    20 tokens a second).

    ``guard`` (a :class:`~pipeline.state.guard.RunGuard`) sees every attempt's outcome; once it has
    stopped the run, records reaching this stage fail with its
    :class:`~pipeline.errors.RunStoppedError` and nothing more is sent. While its breaker is
    open (the server stopped answering), records wait here and one at a time probes.
    """

    on_answered = False  # a request stage: an answered record needs none

    def __init__(self, service: ServiceLike, endpoint: EndpointLike | str | None = None, *,
                 refund_unused: bool = False, timeout: float | None = None,
                 guard: RunGuard | None = None) -> None:
        self.refund_unused = refund_unused
        self.guard = guard
        if not callable(getattr(service, "call", None)):
            raise ConfigError(f"call() needs a service with an async call(), got {service!r}")
        if timeout is not None and (not isinstance(timeout, int | float) or not timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.service = service
        if guard is not None and guard.server is None:
            guard.server = getattr(service, "server_name", None) or \
                _host(getattr(service, "base_url", None))
        # A service over several deployments (RoutedService) says which one granted a lease:
        # the request goes there, and that deployment's health hears how it ended.
        route_of = getattr(service, "route_of", None)
        self._routed = cast("RoutedService", service) if callable(route_of) else None
        if isinstance(endpoint, str):
            endpoint = service.endpoint(endpoint)
        self.endpoint: EndpointLike | None = endpoint
        self.timeout = timeout
        self._latencies = LatencyWindow()
        self._deadlines = _Deadlines()
        # How this server states its limits (the provider table row for its host).
        self._provider = signals.provider_for(
            getattr(service, "base_url", None), getattr(service, "provider", None))

    def attempt_timeout(self, request: APIRequest | None = None) -> float | None:
        """The timeout of the next attempt, in seconds (``None``: the service's own).

        Before 20 answers have arrived: 30 s plus the time the request's most output tokens
        take at a slow 20 tokens/s (capped at 600 s), so a first request that never answers
        is not waited on for the HTTP client's 600 s.
        """
        if self.timeout is not None:
            return float(self.timeout)
        learnt = self._latencies.timeout()
        if learnt is not None or request is None:
            return learnt
        return min(600.0, 30.0 + provider_charge(request.body, request.path, 0) / 20.0)

    async def process(self, record: Record) -> Record:
        request = record.request
        if request is None:
            record.error = ConfigError("call() got a record without a request; put build() "
                                       "before it")
            return record
        lease, record.lease = record.lease, None
        send = self.service.call
        provider = self._provider
        routed = self._routed
        route = None
        if routed is not None and lease is not None:
            route = routed.route_of(lease)
            if route is not None:
                refusal = routed.refusal(route, lease)
                if refusal is not None:  # taken out since it granted: another one will
                    record.error = refusal
                    lease.limiter.settle(lease, signals.cancelled())
                    return record
                send = partial(routed.send_to, route)
                provider = route.provider
        guard = self.guard
        if guard is not None and guard.holding:
            stopped = await guard.admit()  # granted before the breaker opened: wait too
            if stopped is not None:
                record.error = stopped
                if lease is not None:
                    lease.limiter.settle(lease, signals.cancelled())
                if route is not None and routed is not None:  # (a route comes from routed)
                    routed.released(route, lease)
                return record
        record.attempts += 1
        limit = self.timeout  # attempt_timeout(request), its usual case inline
        if limit is None:
            limit = self._latencies.timeout()
            if limit is None:
                limit = self.attempt_timeout(request)
        else:
            limit = float(limit)
        try:
            if limit is None:
                response = await send(self.endpoint or request.path, request)
            else:
                # A deadline as asyncio.timeout keeps one, for a fraction of its cost (this
                # is every attempt): cancel the task when it passes, then tell that cancel
                # from one that came from outside.
                task = asyncio.current_task()
                assert task is not None
                deadline = self._deadlines.watch(task, limit)
                try:
                    response = await send(self.endpoint or request.path, request)
                except asyncio.CancelledError:
                    if deadline.fired and task.uncancel() == 0:
                        raise APITimeoutError(
                            f"no answer in {limit:.3g} s (the attempt timeout: pass "
                            "timeout= to change it)") from None
                    raise
                else:
                    if deadline.fired:  # fired as the answer came: that cancel is ours
                        task.uncancel()
                finally:
                    self._deadlines.forget(deadline)
        except APIError as exc:
            record.error = exc
            record.latency = 0.0
            if lease is not None:
                lease.limiter.settle(lease, signals.refused(exc, provider=provider))
            seen = True
            if route is not None and routed is not None:  # maybe taken out; the row goes elsewhere
                record.error, seen = routed.failed(route, lease, exc)
            if guard is not None and seen:
                guard.observe(exc)
            return record
        except PipelineError as exc:
            record.error = exc
            if lease is not None:
                lease.limiter.settle(lease, signals.refused(exc, provider=provider))
            if route is not None and routed is not None:
                routed.released(route, lease)
            return record
        except BaseException:
            if lease is not None:  # cancelled: free the slot, learn nothing
                lease.limiter.settle(lease, signals.cancelled())
            if route is not None and routed is not None:
                routed.released(route, lease)
            raise
        record.response = response
        record.error = None
        record.latency = response.latency
        self._latencies.add(response.latency)
        if guard is not None:
            guard.observe(None)
        if route is not None and routed is not None:
            routed.answered(route, lease, response.latency)
        if lease is not None:
            usage = response.usage
            charged: float | None = None
            if usage is not None:
                charged = usage.total_tokens if self.refund_unused else \
                    provider_charge(request.body, request.path,
                                    usage.prompt_tokens)
            lease.limiter.settle(lease, signals.answered(
                response.headers, tokens=charged, exact=charged is not None,
                provider=provider))
        return record

    def __repr__(self) -> str:
        target = getattr(self.endpoint, "path", self.endpoint)
        return f"call({type(self.service).__name__}, {target!r})"


def _host(base_url: object) -> str | None:
    """``host:port`` of a base URL, for messages (never a user name or password in it)."""
    if not isinstance(base_url, str) or not base_url:
        return None
    parts = urlsplit(base_url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname:
        return None
    return parts.hostname if port is None else f"{parts.hostname}:{port}"


class _Deadline:
    """An attempt's deadline: when it passes, the attempt's task is cancelled (``fired``)."""

    __slots__ = ("at", "fired", "handle", "task")

    def __init__(self, task: asyncio.Task[Any], at: float) -> None:
        self.task = task
        self.at = at
        self.fired = False
        self.handle: asyncio.TimerHandle | None = None  # a timer of its own (see watch)

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


class _Deadlines:
    """The deadlines of a call stage's attempts in flight, on one timer.

    A timer an attempt (``loop.call_later``, then ``cancel``) cost about 1-2 us each, with
    the event loop's heap growing by the cancelled ones; here an attempt costs a dict entry,
    and the one timer is set for the soonest deadline: when it fires, what has passed is
    cancelled and it is set again for the soonest left (most attempts have answered long
    before, so it fires about once a timeout, going through the attempts in flight).
    """

    __slots__ = ("_armed", "_handle", "_loop", "_watched")

    def __init__(self) -> None:
        self._watched: dict[_Deadline, None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed = math.inf  # when the timer fires

    def watch(self, task: asyncio.Task[Any], limit: float) -> _Deadline:
        loop = task.get_loop()
        if loop is not self._loop:
            if self._watched:  # a stage used in two event loops at once: a timer each
                deadline = _Deadline(task, loop.time() + limit)
                deadline.handle = loop.call_at(deadline.at, deadline)
                return deadline
            self._loop, self._handle, self._armed = loop, None, math.inf  # used again
        deadline = _Deadline(task, loop.time() + limit)
        self._watched[deadline] = None
        if deadline.at < self._armed:
            self._arm(deadline.at)
        return deadline

    def forget(self, deadline: _Deadline) -> None:
        if deadline.handle is not None:
            deadline.handle.cancel()
        else:
            self._watched.pop(deadline, None)

    def _arm(self, at: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        assert self._loop is not None
        self._armed = at
        self._handle = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._handle, self._armed = None, math.inf
        assert self._loop is not None
        now = self._loop.time()
        soonest = math.inf
        for deadline in list(self._watched):
            if deadline.at <= now:
                del self._watched[deadline]
                deadline()
            elif deadline.at < soonest:
                soonest = deadline.at
        if soonest < math.inf:
            self._arm(soonest)


class LatencyWindow:
    """The last answers' latencies, for a timeout that fits the run (a sorted window).

    >>> window = LatencyWindow()
    >>> for _ in range(30): window.add(0.5)
    >>> window.timeout()
    10.0
    """

    __slots__ = ("_count", "_recent", "_timeout", "_timeout_at")

    MIN_SAMPLES = 20
    SIZE = 500
    #: Answers between two recomputations of the timeout (a sort of the window each).
    EVERY = 32

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=self.SIZE)
        self._count = 0
        self._timeout: float | None = None
        self._timeout_at = -1  # the answer count it was computed at

    def add(self, latency: float) -> None:
        self._recent.append(latency)
        self._count += 1

    def timeout(self) -> float | None:
        """``max(10 s, 6 x p99)`` of the recent latencies, or ``None`` before 20 answers
        (recomputed every :attr:`EVERY` answers: a sort of 500 a request cost 2.5 us)."""
        count = self._count
        if count - self._timeout_at < self.EVERY and self._timeout is not None:
            return self._timeout
        if len(self._recent) < self.MIN_SAMPLES:
            return None
        self._timeout_at = count
        self._timeout = max(10.0, 6.0 * percentile(sorted(self._recent), 0.99, upper=True))
        return self._timeout
