"""One call for the whole default pipeline: :func:`run` (async), :func:`run_sync`,
:func:`as_completed`.

The runner knows rows as iterables and async iterables. Frames and files are the business of
:mod:`pipeline.io`, which registers itself here (:func:`register_rows_adapter`,
:func:`register_frame_writer`): the core does not know about dataframes or file formats.

In a notebook (top-level await) or any coroutine::

    async with OpenAIService(rpm=500, tpm=200_000) as service:
        results = await run(rows, service.chat(model="gpt-4o-mini", prompt="Classify: {text}"),
                            cache=".cache", concurrency=64, progress=True)
        results.status            # counters; results[i] lines up with rows[i]
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, TypeVar

from aiostream.core import Stream

from pipeline.core.record import Record
from pipeline.errors import ConfigError, RunStoppedError, TemplateKeyError
from pipeline.payloads.templates import did_you_mean
from pipeline.pricing.cost import DEFAULT_PRICES, Prices
from pipeline.stages import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_WAIT,
    DEFAULT_REASKS,
    Backoff,
    Chain,
    acquire,
    batched,
    build,
    call,
    decode,
    lookup,
    retry,
    store,
    track,
)
from pipeline.stages._batch import rows_in_flight
from pipeline.state.cache import CacheScope, ResponseCache
from pipeline.state.guard import RunGuard
from pipeline.state.status import StatusTracker

__all__ = ["Results", "as_completed", "check_rows", "default_flow", "register_frame_writer",
           "register_rows_adapter", "rows_of", "run", "run_sync"]

T = TypeVar("T")

# Adapters registered by layers above (pipeline.io): the runner never imports them.
_ROWS_ADAPTERS: list[Callable[[Any], Any]] = []
_FRAME_WRITERS: dict[str, Callable[[Results, Any], Any]] = {}


def register_rows_adapter(adapter: Callable[[Any], Any]) -> None:
    """Teach :func:`run` a new kind of input: ``adapter(rows)`` returns an iterable of rows
    (or records) for inputs it knows, and ``NotImplemented`` for others.

    :mod:`pipeline.io` registers one for pandas/Polars frames and file paths.
    """
    if adapter not in _ROWS_ADAPTERS:
        _ROWS_ADAPTERS.append(adapter)


def register_frame_writer(kind: str, writer: Callable[[Results, Any], Any]) -> None:
    """Teach :meth:`Results.to_pandas` (``kind="pandas"``) or ``to_polars`` to build a frame:
    ``writer(results, like)`` (``like``: the input frame, or ``None``)."""
    _FRAME_WRITERS[kind] = writer


class Results(list[Record]):
    """The records of a run, in input order, with the run's :class:`StatusTracker`.

    ``results[i]`` is the record of input item ``i``; ``results.failed`` lists the failures;
    ``results.stopped`` says why the run stopped early (``None`` if it did not): the account
    out of quota, or the first requests all failing the same way (a wrong key, an unknown
    model, no server at the base URL). ``results.schema`` is the job's
    :class:`~pipeline.payloads.structured.OutputSchema` (``None`` without one): each
    record's ``value`` is its decoded answer, and frames get its fields as typed columns.
    """

    def __init__(self, records: Iterable[Record], status: StatusTracker,
                 stopped: RunStoppedError | None = None, *, schema: Any = None) -> None:
        super().__init__(records)
        self.status = status
        self.stopped = stopped
        self.schema = schema

    @property
    def succeeded(self) -> list[Record]:
        """Records with a response."""
        return [r for r in self if r.ok]

    @property
    def failed(self) -> list[Record]:
        """Records that failed, each with its error."""
        return [r for r in self if r.error is not None]

    @property
    def cost(self) -> float | None:
        """USD this run paid: every billed answer's ``usage`` x its model's price, answers
        thrown away for not fitting a schema included (cached answers, and errors without an
        answer, cost 0). ``None`` when a model has no price (said once, in a warning).

        Prices are the run's (``status.prices``), else :data:`pipeline.pricing.cost.DEFAULT_PRICES`;
        for others, ``pipeline.Prices({...}).total(results)``.
        """
        prices = self.status.prices if self.status.prices is not None else DEFAULT_PRICES
        total: float | None = prices.total(self)
        return total

    def costs(self, n: int | None = None) -> list[float | None]:
        """USD each row's answer cost, by input position (``None``: unknown, or no row)."""
        prices = self.status.prices if self.status.prices is not None else DEFAULT_PRICES
        n = len(self) if n is None else n
        costs: list[float | None] = [None] * n
        for record in self:
            if 0 <= record.index < n:
                costs[record.index] = prices.record_cost(record)
        return costs

    def to_pandas(self, like: Any = None) -> Any:
        """A pandas DataFrame: the input columns (``like``, or the rows themselves) plus
        ``answer`` (or ``embedding``), ``status``, ``error``, ``tokens``, ``latency`` and
        ``cost`` (USD this run paid for the row, as :attr:`cost`; missing when unknown).
        With a :attr:`schema`, one typed column per answer field too (``score``,
        ``place.city``): nulls for a failed row, whose ``error`` says why.

        For example, inside a coroutine (or a notebook cell)::

            results.to_pandas(df)   # lined up with df row for row, df's index kept
        """
        return self._frame("pandas", like)

    def to_polars(self, like: Any = None) -> Any:
        """Like :meth:`to_pandas`, as a Polars DataFrame."""
        return self._frame("polars", like)

    def _frame(self, kind: str, like: Any) -> Any:
        writer = _FRAME_WRITERS.get(kind)
        if writer is None:  # only if pipeline.io was never imported: `import pipeline` does
            raise ConfigError(f"no {kind} writer: import pipeline.io first")
        return writer(self, like)

    def __repr__(self) -> str:
        return (f"<Results {len(self):,} records: {self.status.succeeded:,} succeeded "
                f"({self.status.cached:,} cached), {self.status.failed:,} failed>")

    def _repr_html_(self) -> str:
        return self.status._repr_html_()


def _open_cache(cache: str | os.PathLike[str] | ResponseCache | None,
                scope: CacheScope | None = None) -> tuple[ResponseCache | None, bool]:
    if isinstance(cache, ResponseCache) and scope is not None and scope != cache.scope:
        raise ConfigError(f"cache_scope={scope!r} but the cache given is scoped "
                          f"{cache.scope!r}: give ResponseCache(..., scope={scope!r})")
    if cache is None or isinstance(cache, ResponseCache):
        return cache, False
    if isinstance(cache, str | os.PathLike):
        return ResponseCache(cache, scope=scope), True
    raise ConfigError(f"cache must be a directory path or a ResponseCache, got {cache!r}")


def default_flow(job: Any, *, cache: ResponseCache | None = None,
                 status: StatusTracker | None = None, concurrency: int = DEFAULT_CONCURRENCY,
                 attempts: int = 6, backoff: Backoff | None = None, progress: bool = False,
                 total: int | None = None, max_wait: float = DEFAULT_MAX_WAIT,
                 timeout: float | None = None, guard: RunGuard | None = None,
                 initial: int = 0, prices: Any = None,
                 reasks: int = DEFAULT_REASKS) -> Chain:
    """The default stage chain for a :class:`~pipeline.http.Job`::

        build | lookup | retry(acquire | call) | store | track

    (``lookup``/``store`` only with a cache). An embeddings job sends its rows in batches,
    ``batched(retry(acquire | call))``, unless its ``batch_size`` is 1. A job with a schema
    (``service.chat(..., schema=...)``) decodes each answer, cached ones too, and asks again
    up to ``reasks`` times when one does not fit: ``retry(acquire | call | decode)``; an
    answer that does not fit is never stored in the cache. ``guard`` (a new one by default; also
    ``status.guard``) stops the run early when every later request would fail; ``initial``
    rows counted as already done on the progress bar (a resumed run). ``prices`` (a
    :class:`~pipeline.pricing.cost.Prices`; default: the status's, else the dated defaults) cost the
    answers in the status table.
    """
    status = status if status is not None else StatusTracker()
    if prices is not None:
        status.prices = Prices.of(prices)
    elif status.prices is None:
        status.prices = DEFAULT_PRICES
    guard = guard if guard is not None else RunGuard()
    status.guard = guard
    limiter = job.endpoint.limiter
    status.limiter = limiter
    namespace = job.service.base_url
    stages: list[Any] = [build(job.builder)]
    if cache is not None:
        stages.append(lookup(cache, namespace=namespace, secrets=job.service.secrets()))
    inner = acquire(limiter, guard=guard) | call(job.service, job.endpoint, timeout=timeout,
                                                 guard=guard)
    schema = getattr(job, "schema", None)
    if schema is not None:
        inner = inner | decode(schema)
    send = retry(inner, attempts=attempts, backoff=backoff, max_wait=max_wait,
                 hooks=(status,), reasks=reasks)
    batch_size = getattr(job, "batch_size", None)
    if job.path.strip("/") == "embeddings" and batch_size != 1:
        # Embeddings go many rows per request (batched); the chain then holds enough rows
        # in flight to fill `concurrency` batches (capped), and at most `concurrency`
        # requests are in flight.
        stages.append(batched(send, batch_size=batch_size, concurrency=concurrency))
        concurrency = rows_in_flight(concurrency, batch_size)
    else:
        stages.append(send)
    if cache is not None:
        stages.append(store(cache, namespace=namespace, secrets=job.service.secrets()))
    stages.append(track(status, progress=progress, total=total, initial=initial))
    return Chain(*stages, concurrency=concurrency)


def rows_of(rows: Any) -> Any:
    """The rows to run: a registered adapter's view of ``rows`` (frames and file paths, once
    :mod:`pipeline.io` is imported, which ``import pipeline`` does), else ``rows`` itself if
    it is an iterable of rows. Things that iterate as something other than rows are refused.
    """
    for adapter in _ROWS_ADAPTERS:
        adapted = adapter(rows)
        if adapted is not NotImplemented:
            return adapted
    if isinstance(rows, str | bytes | dict | os.PathLike):
        raise ConfigError(
            f"rows must be an iterable of rows, got a {type(rows).__name__} (a file path "
            "goes through pipeline.io.read(path); a single row goes in a list)")
    if not isinstance(rows, Iterable | AsyncIterable):
        raise ConfigError(f"rows must be an iterable or async iterable, got "
                          f"{type(rows).__name__}")
    return rows


def check_rows(rows: Any, job: Any) -> None:
    """Raise :class:`~pipeline.errors.TemplateKeyError` when the job's template (or input
    column) needs a column the rows lack, before anything is sent: a misspelt ``{column}``
    is one clear error, not every row failing alone.

    Inputs whose columns are known (frames and files, through :mod:`pipeline.io`: their
    ``check(builder)``) are checked against them. A list (any sequence) of mappings is
    checked at its first row: a column that row lacks, and no other row has, is refused
    (rows that differ still fail one by one). Iterators are not read ahead; their rows fail
    one by one, each naming the column.

    >>> from pipeline.payloads import chat
    >>> check_rows([{"text": "hi", "id": 1}], chat(model="m", prompt="Q: {txet}"))
    Traceback (most recent call last):
    ...
    pipeline.errors.TemplateKeyError: prompt 'Q: {txet}' needs column 'txet', which no row \
has (did you mean 'text'?); the first row has 'text', 'id'
    """
    builder = getattr(job, "builder", job)
    check = getattr(rows, "check", None)
    if callable(check):
        check(builder)
        return
    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes) or not rows:
        return
    first = rows[0]
    needs = getattr(builder, "required_columns", None)
    if not isinstance(first, Mapping) or not isinstance(needs, dict):
        return
    for column, what in needs.items():
        if column in first or any(isinstance(r, Mapping) and column in r for r in rows):
            continue
        keys = [str(k) for k in first]
        shown = ", ".join(map(repr, keys[:20])) + (" ..." if len(keys) > 20 else "")
        raise TemplateKeyError(
            f"{what} needs column {column!r}, which no row has{did_you_mean(column, keys)}; "
            f"the first row has {shown or 'no columns'}", field=column)


def _source(rows: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterable[Any]:
    """The rows as an async iterable. A plain async generator, not ``stream.iterate``: that
    costs about 4 µs an item, as much as the rest of the machinery's source side."""
    if isinstance(rows, AsyncIterable):
        return rows

    async def items() -> AsyncIterator[Any]:
        for row in rows:
            yield row

    return items()


def _total(rows: Any) -> int | None:
    try:
        return len(rows)
    except TypeError:
        return None


def as_completed(rows: Iterable[Any] | AsyncIterable[Any], job: Any,
                 **options: Any) -> Stream[Record]:
    """The default pipeline as an aiostream stream of records, yielded as they complete
    (not in input order: ``record.index`` says where each belongs).

    Takes the options of :func:`run` except ``cache`` must be a :class:`ResponseCache` (its
    owner closes it).
    """
    rows = rows_of(rows)
    check_rows(rows, job)
    options.setdefault("total", _total(rows))
    return default_flow(job, **options)(_source(rows))


async def run(rows: Iterable[Any] | AsyncIterable[Any], job: Any, *,
              cache: str | os.PathLike[str] | ResponseCache | None = None,
              concurrency: int = DEFAULT_CONCURRENCY, progress: bool = False,
              attempts: int = 6, backoff: Backoff | None = None,
              status: StatusTracker | None = None, max_wait: float = DEFAULT_MAX_WAIT,
              timeout: float | None = None, prices: Any = None,
              reasks: int = DEFAULT_REASKS, cache_scope: CacheScope | None = None) -> Results:
    """Send every row through the default pipeline; return the records in input order.

    Args:
        rows: a pandas or Polars frame, a file path (``pathlib.Path``), or any iterable or
            async iterable of rows: dicts, strings, ready requests (:class:`APIRequest`).
        job: what to send where, e.g. ``service.chat(model=..., prompt="...{text}...")``.
        cache: a directory (or :class:`ResponseCache`) of earlier answers: a rerun sends only
            what is not there yet. Without it, running twice sends everything twice.
        cache_scope: ``"key"`` for a cache directory shared between API keys: each key is
            served only the answers it paid for (recorded in the directory; see
            :class:`~pipeline.state.cache.ResponseCache`). By default answers are shared.
        concurrency: requests in flight at most.
        progress: show a progress bar.
        attempts: attempts per row for retryable errors (429 rate limits do not count:
            throttling costs time, not attempts).
        backoff: the retry wait policy.
        status: a tracker to update (one is made otherwise); also ``results.status``.
        max_wait: seconds a row may be throttled by 429s before it fails (default 10 min).
        timeout: seconds one attempt may take; ``None`` sizes it from the latencies seen so
            far (``max(10 s, 6 x p99)`` after 20 answers; before that 30 s plus the request's
            ``max_tokens`` at 20 tokens/s), so a request that never answers does not hold the
            end of the run for the HTTP client's 600 s.
        prices: a :class:`~pipeline.pricing.cost.Prices`, a dict of them or a JSON file: what
            ``results.cost`` and the status table's cost row use (default: the dated
            OpenAI prices of :data:`pipeline.pricing.cost.DEFAULT_PRICES`).
        reasks: for a job with a schema, times an answer that does not fit it is asked
            again (default 2; counted in ``status.reasks``); then the row fails with a
            :class:`~pipeline.errors.SchemaValidationError`.

    A template column that a frame or file lacks, or that no row of a list has, raises
    :class:`~pipeline.errors.TemplateKeyError` before anything is sent (:func:`check_rows`).

    The run stops early, with one clear reason in ``results.stopped``, when the account is
    out of quota or when its first requests all fail the same way (401, 403, 404, nothing
    listening at the base URL): rows not sent by then fail with ``RunStoppedError``.

    Cancelling the run (Ctrl-C, a notebook interrupt, ``asyncio.timeout``) stops new requests at
    once, cancels those in flight, and keeps every completed response in the cache.
    """
    rows = rows_of(rows)
    check_rows(rows, job)  # a misspelt {column}: once, before anything is sent
    status = status if status is not None else StatusTracker()
    opened_cache, owned = _open_cache(cache, cache_scope)
    collected: list[Record] = []
    guard = RunGuard()
    try:
        flow = default_flow(job, cache=opened_cache, status=status, concurrency=concurrency,
                            attempts=attempts, backoff=backoff, progress=progress,
                            total=_total(rows), max_wait=max_wait, timeout=timeout,
                            guard=guard, prices=prices, reasks=reasks)
        records = flow.records(_source(rows))
        try:
            async for record in records:
                collected.append(record)
        finally:
            await records.aclose()
    finally:
        if owned and opened_cache is not None:
            opened_cache.close()
    collected.sort(key=lambda r: r.index)
    return Results(collected, status, guard.stopped, schema=getattr(job, "schema", None))


def run_sync(coro_or_rows: Any, job: Any = None, **options: Any) -> Any:
    """Run from plain (non-async) code: ``run_sync(rows, job, ...)`` or ``run_sync(coro)``.

    Refuses inside a running event loop (a notebook cell): there, use ``await run(...)``.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        if isinstance(coro_or_rows, Coroutine):
            coro_or_rows.close()
        raise RuntimeError("run_sync() cannot be used while an event loop is running (as in "
                           "Jupyter); use `await pipeline.run(...)` there instead")
    if isinstance(coro_or_rows, Coroutine):
        return asyncio.run(coro_or_rows)
    if job is None:
        raise ConfigError("run_sync(rows, job) needs a job, e.g. service.chat(...)")

    async def main() -> Results:
        try:
            return await run(coro_or_rows, job, **options)
        finally:
            # The HTTP client belongs to this short-lived loop: close it with the loop.
            await job.service.aclose()

    return asyncio.run(main())
