"""Sending: wait for the rate limiter (``acquire``), then send once (``call``).

The two are separate stages so that a retry wraps both (every attempt waits for capacity
again) and so that a user may put their own stage between them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from pipeline.core.checks import percentile
from pipeline.core.record import Record
from pipeline.core.request import APIRequest
from pipeline.errors import APIError, APITimeoutError, ConfigError, PipelineError
from pipeline.payloads.tokens import provider_charge
from pipeline.stages._core import Stage
from pipeline.state.guard import RunGuard

__all__ = ["LatencyWindow", "acquire", "call"]


class acquire(Stage):
    """Wait for capacity on a rate limiter: 1 request plus the record's token estimate.

    Accepts a :class:`~pipeline.limiter.RateLimiter` or an endpoint (its limiter). The grant
    is a :class:`~pipeline.limiter.Lease` on ``record.reservation``, settled by :class:`call`
    with the outcome (real usage, ``x-ratelimit-*`` headers, a 429), which is how the limiter
    learns. An adaptive limiter also holds an in-flight slot until then. With a stopped
    ``guard`` (:class:`~pipeline.state.guard.RunGuard`) the record fails at once, without waiting;
    while the guard's breaker is open, the record waits before taking any capacity.
    """

    def __init__(self, limiter: Any, *, guard: RunGuard | None = None,
                 max_pause: float | None = None) -> None:
        limiter = getattr(limiter, "limiter", limiter)  # an Endpoint or a Job
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
        self._lease = getattr(limiter, "lease", None)

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
                lease = record.reservation = await self._lease(1, record.token_estimate)
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
    against its token limit; when that is more than the estimate (the prompt estimate was
    low), the difference is taken from the limiter too. Unused answer tokens are given back
    only with ``refund_unused=True``: refunding them would overrun an OpenAI-style limit.

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

    def __init__(self, service: Any, endpoint: Any = None, *,
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
            guard.server = _host(getattr(service, "base_url", None))
        if isinstance(endpoint, str):
            endpoint = service.endpoint(endpoint)
        self.endpoint = endpoint
        self.timeout = timeout
        self._latencies = LatencyWindow()

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
        lease, record.reservation = record.reservation, None
        guard = self.guard
        if guard is not None and guard.holding:
            stopped = await guard.admit()  # granted before the breaker opened: wait too
            if stopped is not None:
                record.error = stopped
                if lease is not None:
                    lease.limiter.settle(lease, error=stopped)
                return record
        record.attempts += 1
        limit = self.attempt_timeout(request)
        try:
            if limit is None:
                response = await self.service.call(self.endpoint or request.path, request)
            else:
                try:
                    async with asyncio.timeout(limit):
                        response = await self.service.call(self.endpoint or request.path,
                                                           request)
                except TimeoutError:
                    raise APITimeoutError(
                        f"no answer in {limit:.3g} s (the attempt timeout: pass timeout= to "
                        "change it)") from None
        except APIError as exc:
            record.error = exc
            record.latency = 0.0
            if lease is not None:
                lease.limiter.settle(lease, error=exc)
            if guard is not None:
                guard.observe(exc)
            return record
        except PipelineError as exc:
            record.error = exc
            if lease is not None:
                lease.limiter.settle(lease, error=exc)
            return record
        except BaseException:
            if lease is not None:  # cancelled: free the slot, learn nothing
                lease.limiter.settle(lease, error=asyncio.CancelledError())
            raise
        record.response = response
        record.error = None
        record.latency = response.latency
        self._latencies.add(response.latency)
        if guard is not None:
            guard.observe(None)
        if lease is not None:
            usage = response.usage
            charged: float | None = None
            if usage is not None:
                charged = usage.total_tokens if self.refund_unused else \
                    provider_charge(request.body, request.path,
                                    usage.prompt_tokens)
            lease.limiter.settle(lease, headers=response.headers, tokens=charged,
                                 exact=self.refund_unused)
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


class LatencyWindow:
    """The last answers' latencies, for a timeout that fits the run (a sorted window).

    >>> window = LatencyWindow()
    >>> for _ in range(30): window.add(0.5)
    >>> window.timeout()
    10.0
    """

    __slots__ = ("_count", "_recent")

    MIN_SAMPLES = 20
    SIZE = 500

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=self.SIZE)
        self._count = 0

    def add(self, latency: float) -> None:
        self._recent.append(latency)
        self._count += 1

    def timeout(self) -> float | None:
        """``max(10 s, 6 x p99)`` of the recent latencies, or ``None`` before 20 answers."""
        if len(self._recent) < self.MIN_SAMPLES:
            return None
        return max(10.0, 6.0 * percentile(sorted(self._recent), 0.99, upper=True))
