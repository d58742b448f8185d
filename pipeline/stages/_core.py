"""Pipeline stages: small objects with one method, composed with ``|``.

A stage takes a :class:`~pipeline.record.Record` and returns it, filled in a little more::

    build(job) | lookup(cache) | retry(acquire(limiter) | call(service, "chat/completions"))
               | store(cache) | track(status)

Neighbouring stages fuse into one :class:`Chain`: each item runs through all of them as ONE
coroutine, under one bounded-concurrency, unordered map (:func:`~pipeline.operators.
map_unordered`). Applied to a stream, a chain is an aiostream operator, so any aiostream
operator can sit between chains::

    from aiostream import pipe, stream
    xs = stream.iterate(rows) | flow | pipe.filter(lambda r: r.ok)
    async with xs.stream() as records:
        async for record in records: ...

Plain items entering a chain become records numbered in arrival order. Errors are values on
the record; stages after a failure (or a cache hit) skip it, except ``store`` and ``track``.
A stream is lazy and re-runs each time it is iterated: running a flow twice sends every
request twice, unless a cache makes the second run free.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from typing import Any, cast

from aiostream.core import Stream

from pipeline.api_utils import cache_key
from pipeline.cache import ResponseCache
from pipeline.errors import APIError, APITimeoutError, ConfigError, PipelineError
from pipeline.guard import RunGuard
from pipeline.operators import map_unordered
from pipeline.record import Record
from pipeline.request import APIRequest
from pipeline.status import StatusTracker
from pipeline.tokens import (
    CHAT_DEFAULT_MAX_TOKENS,
    COMPLETION_DEFAULT_MAX_TOKENS,
    max_output_tokens,
)

__all__ = ["Backoff", "Chain", "Flow", "Stage", "acquire", "build", "call", "lookup", "retry",
           "store", "track"]

DEFAULT_CONCURRENCY = 64


class Stage:
    """Base class of a per-record step. Subclasses implement :meth:`process`.

    Class attribute ``after_done``: whether the stage still runs on a record that already
    succeeded (e.g. from the cache) or failed. Optional hooks: :meth:`begin` (a record enters
    the chain) and :meth:`finish` (the stream ends, however it ends).
    """

    after_done: bool = False

    async def process(self, record: Record) -> Record:
        """Do this stage's work on ``record`` and return it."""
        raise NotImplementedError

    def begin(self, record: Record) -> None:
        """A record entered the chain this stage is in (before any stage ran)."""

    def finish(self) -> None:
        """The stream this stage ran in has ended (flush buffers, close progress bars)."""

    def stages(self) -> tuple[Stage, ...]:
        """The plain stages this one is made of (itself, for a simple stage)."""
        return (self,)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, Stage):
            return Chain(*self.stages(), *other.stages())
        head = self if isinstance(self, Chain) else Chain(*self.stages())
        if isinstance(other, Flow):
            return Flow(head, *other.parts)
        if callable(other):  # an aiostream pipe operator, e.g. pipe.filter(...)
            return Flow(head, other)
        return NotImplemented

    def __call__(self, source: AsyncIterable[Any]) -> Stream[Record]:
        """Apply to a stream (what ``stream | stage`` does)."""
        return Chain(*self.stages())(source)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Chain(Stage):
    """Stages fused into one per-record coroutine, run ``concurrency`` records at a time."""

    after_done = True

    def __init__(self, *stages: Stage, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        flat: list[Stage] = []
        for stage in stages:
            if not isinstance(stage, Stage):
                raise ConfigError(f"not a stage: {stage!r}")
            flat.extend(stage.stages())
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ConfigError(f"concurrency must be a positive int, got {concurrency!r}")
        self._stages = tuple(flat)
        self.concurrency = concurrency
        self._steps = tuple((s.process, s.after_done) for s in flat)
        self._begins = tuple(s.begin for s in flat if type(s).begin is not Stage.begin)

    def stages(self) -> tuple[Stage, ...]:
        return self._stages

    def __or__(self, other: Any) -> Any:
        # Extending a chain keeps its concurrency.
        if isinstance(other, Stage):
            return Chain(*self._stages, *other.stages(), concurrency=self.concurrency)
        return super().__or__(other)

    def with_concurrency(self, concurrency: int) -> Chain:
        """The same chain, running ``concurrency`` records at a time.

        >>> (build(lambda row: row) | track(None)).with_concurrency(8).concurrency
        8
        """
        return Chain(*self._stages, concurrency=concurrency)

    async def process(self, record: Record) -> Record:
        for begin in self._begins:
            begin(record)
        for step, after_done in self._steps:
            if after_done or (record.response is None and record.error is None):
                record = await step(record)
        return record

    def finish(self) -> None:
        for stage in self._stages:
            stage.finish()

    def __call__(self, source: AsyncIterable[Any]) -> Stream[Record]:
        return map_unordered(source, self._one(), self.concurrency, on_close=self.finish)

    def records(self, source: AsyncIterable[Any]) -> AsyncGenerator[Record, None]:
        """The records as a plain async generator (no aiostream wrapper; ``aclose()`` it)."""
        records = map_unordered.raw(source, self._one(), self.concurrency,
                                    on_close=self.finish)
        return cast(AsyncGenerator[Record, None], records)  # an async generator at run time

    def _one(self) -> Callable[[Any], Awaitable[Record]]:
        counter = itertools.count()
        process = self.process
        perf_counter = time.perf_counter

        async def one(item: Any) -> Record:
            # Runs before the task's first await: indices follow the order items were pulled.
            index = next(counter)
            record = item if isinstance(item, Record) else Record(index=index, row=item)
            if not record.started:
                record.started = perf_counter()
            return await process(record)

        return one

    def __repr__(self) -> str:
        inner = " | ".join(repr(s) for s in self._stages)
        return f"Chain({inner}, concurrency={self.concurrency})"


class Flow:
    """Chains and aiostream operators in sequence; apply it to a stream with ``|``."""

    def __init__(self, *parts: Callable[[Any], Any]) -> None:
        self.parts = parts

    def __or__(self, other: Any) -> Flow:
        if isinstance(other, Flow):
            return Flow(*self.parts, *other.parts)
        if isinstance(other, Stage):
            return Flow(*self.parts, other if isinstance(other, Chain) else Chain(*other.stages()))
        if callable(other):
            return Flow(*self.parts, other)
        return NotImplemented

    def __call__(self, source: AsyncIterable[Any]) -> Any:
        for part in self.parts:
            source = part(source)
        return source

    def __repr__(self) -> str:
        return "Flow(" + " | ".join(repr(p) for p in self.parts) + ")"


# ------------------------------------------------------------------------------ the stages
class build(Stage):
    """Turn the row into a request with a builder (or a :class:`~pipeline.service.Job`).

    A row that cannot be built becomes a failed record (a ``PayloadError``); nothing is sent.
    A row that already is an :class:`~pipeline.request.APIRequest` passes through.

    >>> from pipeline.payloads import chat
    >>> stage = build(chat(model="gpt-4o-mini", prompt="Classify: {text}"))
    """

    def __init__(self, builder: Any) -> None:
        if not callable(getattr(builder, "build", None)) and not callable(builder):
            raise ConfigError(f"build() needs a payload builder or a function, got {builder!r}")
        self.builder = builder
        self._build = builder.build if callable(getattr(builder, "build", None)) else builder

    async def process(self, record: Record) -> Record:
        row = record.row
        try:
            request = row if isinstance(row, APIRequest) else self._build(row)
        except PipelineError as exc:
            record.error = exc
            return record
        except Exception as exc:  # a user's builder function failed: that row fails
            record.error = exc
            return record
        if not isinstance(request, APIRequest):
            record.error = ConfigError(f"the builder returned {type(request).__name__}, "
                                       "not an APIRequest")
            return record
        record.request = request
        record.endpoint = request.path
        record.token_estimate = request.token_estimate
        return record

    def __repr__(self) -> str:
        return f"build({self.builder!r})"


class lookup(Stage):
    """Answer from the response cache when the request was answered before.

    ``namespace`` (e.g. the service's base URL) keeps answers of different servers apart.
    """

    def __init__(self, cache: ResponseCache, *, namespace: str | None = None) -> None:
        self.cache = cache
        self.namespace = namespace

    async def process(self, record: Record) -> Record:
        if record.request is None:
            return record
        key = record.cache_key
        if key is None:
            key = record.cache_key = cache_key(record.request, base_url=self.namespace)
        response = self.cache.get(key)
        if response is not None:
            record.response = response
            record.cached = True
        return record

    def __repr__(self) -> str:
        return f"lookup({self.cache!r})"


class store(Stage):
    """Keep successful, fresh responses in the cache (buffered; flushed at the end)."""

    after_done = True

    def __init__(self, cache: ResponseCache, *, namespace: str | None = None) -> None:
        self.cache = cache
        self.namespace = namespace

    async def process(self, record: Record) -> Record:
        if record.response is None or record.error is not None or record.cached or \
                record.request is None:
            return record
        key = record.cache_key
        if key is None:
            key = record.cache_key = cache_key(record.request, base_url=self.namespace)
        try:
            self.cache.put(key, record.response)
        except PipelineError as exc:  # the answer is still good; say the cache failed
            record.error = exc
        return record

    def finish(self) -> None:
        self.cache.flush()

    def __repr__(self) -> str:
        return f"store({self.cache!r})"


class acquire(Stage):
    """Wait for capacity on a rate limiter: 1 request plus the record's token estimate.

    Accepts a :class:`~pipeline.limiter.RateLimiter` or an endpoint (its limiter). The grant
    is a :class:`~pipeline.limiter.Lease` on ``record.reservation``, settled by :class:`call`
    with the outcome (real usage, ``x-ratelimit-*`` headers, a 429), which is how the limiter
    learns. An adaptive limiter also holds an in-flight slot until then. With a stopped
    ``guard`` (:class:`~pipeline.guard.RunGuard`) the record fails at once, without waiting.
    """

    def __init__(self, limiter: Any, *, guard: RunGuard | None = None) -> None:
        limiter = getattr(limiter, "limiter", limiter)  # an Endpoint or a Job
        if not callable(getattr(limiter, "acquire", None)):
            raise ConfigError(f"acquire() needs a rate limiter, got {limiter!r}")
        self.limiter = limiter
        self.guard = guard
        self._lease = getattr(limiter, "lease", None)

    async def process(self, record: Record) -> Record:
        guard = self.guard
        if guard is not None and guard.stopped is not None:
            record.error = guard.stopped  # the run stopped: do not wait for capacity
            return record
        try:
            if self._lease is not None:
                record.reservation = await self._lease(1, record.token_estimate)
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

    ``guard`` (a :class:`~pipeline.guard.RunGuard`) sees every attempt's outcome; once it has
    stopped the run, records reaching this stage fail with its
    :class:`~pipeline.errors.RunStoppedError` and nothing more is sent.
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
        return min(600.0, 30.0 + _provider_charge(request, 0) / 20.0)

    async def process(self, record: Record) -> Record:
        request = record.request
        if request is None:
            record.error = ConfigError("call() got a record without a request; put build() "
                                       "before it")
            return record
        lease, record.reservation = record.reservation, None
        guard = self.guard
        if guard is not None and guard.stopped is not None:
            record.error = guard.stopped
            if lease is not None:
                lease.limiter.settle(lease, error=guard.stopped)
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
                    _provider_charge(request, usage.prompt_tokens)
            lease.limiter.settle(lease, headers=response.headers, tokens=charged,
                                 exact=self.refund_unused)
        return record

    def __repr__(self) -> str:
        target = getattr(self.endpoint, "path", self.endpoint)
        return f"call({type(self.service).__name__}, {target!r})"


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
        values = sorted(self._recent)
        p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
        return max(10.0, 6.0 * p99)


def _provider_charge(request: APIRequest, prompt_tokens: int) -> int:
    """What an OpenAI-style provider counts against the token limit for a request: the real
    prompt tokens plus the most the answers may use (``max_tokens`` x ``n``), used or not."""
    body = request.body
    if not body:
        return prompt_tokens
    path = request.path
    if path.endswith("chat/completions"):
        default = CHAT_DEFAULT_MAX_TOKENS
    elif path.endswith("completions"):
        default = COMPLETION_DEFAULT_MAX_TOKENS
    else:
        return prompt_tokens  # embeddings and the like: the input is the cost
    try:
        return prompt_tokens + max_output_tokens(body, default)
    except (TypeError, ValueError):
        return prompt_tokens


class track(Stage):
    """Count records in a :class:`~pipeline.status.StatusTracker` and show a progress bar.

    Args:
        status: the tracker to update (a new one if ``None``).
        progress: show a tqdm progress bar (a widget in notebooks). It counts rows
            *finished*, and shows the limiter's effective rate when the tracker has one.
        total: the number of items expected, for the bar.
        initial: rows already done before this run (a resumed run starts the bar there).
    """

    after_done = True

    def __init__(self, status: StatusTracker | None = None, *, progress: bool = False,
                 total: int | None = None, description: str = "rows",
                 initial: int = 0) -> None:
        self.status = status if status is not None else StatusTracker()
        self.progress = progress
        self.total = total
        self.initial = initial
        self.description = description
        self._bar: Any = None
        self._last_postfix = 0.0

    def begin(self, record: Record) -> None:
        self.status.record_started(record)

    async def process(self, record: Record) -> Record:
        record.finished = time.perf_counter()
        status = self.status
        status._t1 = record.finished
        if record.error is not None:
            status.record_attempt_error(record.error)
        status.record_finished(record)
        if self.progress:
            self._update_bar()
        return record

    def _update_bar(self) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm

            total = None if self.total is None else self.total + self.initial
            self._bar = tqdm(total=total, initial=self.initial, desc=self.description,
                             unit="row", mininterval=0.2, smoothing=0.05, dynamic_ncols=True)
        self._bar.update(1)
        now = time.monotonic()
        if now - self._last_postfix > 0.25:
            self._last_postfix = now
            self._set_postfix()

    def _set_postfix(self) -> None:
        s = self.status
        text = (f"ok={s.succeeded} failed={s.failed} cached={s.cached} retries={s.retries} "
                f"429s={s.rate_limit_errors}")
        rate = s.rate_text()
        if rate:
            text += f" {rate}"
        self._bar.set_postfix_str(text, refresh=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._set_postfix()
            self._bar.close()
            self._bar = None

    def __repr__(self) -> str:
        return f"track({self.status!r})"


# The retry stage lives in its own module (with its backoff policy); it is a stage like the
# others, so it is offered here too: ``stages.retry(stages.acquire(...) | stages.call(...))``.
from pipeline.retry import Backoff, retry  # noqa: E402
