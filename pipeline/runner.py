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
import operator
import os
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, TypeVar, overload

from aiostream.core import Stream

from pipeline.core.columns import RecordColumns
from pipeline.core.protocols import BuilderLike
from pipeline.core.record import Record
from pipeline.errors import ConfigError, RunStoppedError, TemplateKeyError
from pipeline.http import Job
from pipeline.options import DEFAULTS, RunOptions
from pipeline.payloads.templates import did_you_mean
from pipeline.pricing.cost import DEFAULT_PRICES, Prices
from pipeline.schema import OutputSchema
from pipeline.stages import (
    Backoff,
    Chain,
    Stage,
    acquire,
    batched,
    build,
    call,
    decode,
    lookup,
    retry,
    rows_in_flight,
    store,
    track,
    user_stages,
)
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


class Results(Sequence[Record]):
    """The records of a run, in input order, with the run's :class:`StatusTracker`.

    ``results[i]`` is the record of input item ``i``; ``results.failed`` lists the failures;
    ``results.stopped`` says why the run stopped early (``None`` if it did not): the account
    out of quota, or the first requests all failing the same way (a wrong key, an unknown
    model, no server at the base URL). ``results.schema`` is the job's
    :class:`~pipeline.schema.OutputSchema` (``None`` without one): each
    record's ``value`` is its decoded answer, and frames get its fields as typed columns.
    ``results.responses_kept`` says whether the records hold their requests and whole
    responses (``run(..., keep_responses=True)``) or only the answers (the default).

    A run's results hold their rows in columns (about 100 bytes a row besides the row and
    its answer text; :class:`~pipeline.core.columns.RecordColumns`) and build a record when
    it is read. A record read once is kept: a change to it (``record.data = ...``) stays,
    and frames and files see it. Reading every record keeps every record (about 500
    bytes a row); :meth:`scan`, frames, files and :attr:`cost` read without keeping.

    A sequence: ``len(results)``, ``results[i]``, ``results[-1]``, ``results[2:5]`` (a
    list), ``for record in results``. Made from any records, it keeps them as given::

        Results(records, StatusTracker())
    """

    def __init__(self, records: Iterable[Record] = (), status: StatusTracker | None = None,
                 stopped: RunStoppedError | None = None, *,
                 schema: OutputSchema[Any] | None = None,
                 responses_kept: bool = True, columns: RecordColumns | None = None) -> None:
        self._columns = RecordColumns.of(records) if columns is None else columns
        self.status = status if status is not None else StatusTracker()
        self.stopped = stopped
        self.schema = schema
        self.responses_kept = responses_kept

    def __len__(self) -> int:
        return len(self._columns)

    @overload
    def __getitem__(self, i: int) -> Record: ...

    @overload
    def __getitem__(self, i: slice) -> list[Record]: ...

    def __getitem__(self, i: int | slice) -> Record | list[Record]:
        n = len(self._columns)
        if isinstance(i, slice):
            return [self._columns.record(k) for k in range(*i.indices(n))]
        try:
            k = operator.index(i)
        except TypeError:
            raise TypeError(f"Results indices are ints or slices, not {type(i).__name__}") \
                from None
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"Results index {i} out of range ({n:,} records)")
        return self._columns.record(k)

    def __iter__(self) -> Iterator[Record]:
        record = self._columns.record
        for i in range(len(self._columns)):
            yield record(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Results | list | tuple):
            theirs = other.scan() if isinstance(other, Results) else other
            return len(self) == len(other) and all(
                a == b for a, b in zip(self.scan(), theirs, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like the list it was

    def scan(self) -> Iterator[Record]:
        """Every record in order, without keeping those not read before: for reading a
        million rows in the memory of one. A change to a record read this way is lost
        (read it as ``results[i]`` to change it).

        >>> results = Results([Record(index=0, row="a")])
        >>> [r.row for r in results.scan()]
        ['a']
        """
        return self._columns.scan()

    @property
    def succeeded(self) -> list[Record]:
        """Records with a response."""
        return self._columns.where(failed=False)

    @property
    def failed(self) -> list[Record]:
        """Records that failed, each with its error."""
        return self._columns.where(failed=True)

    @property
    def cost(self) -> float | None:
        """USD this run paid: every billed answer's ``usage`` x its model's price, answers
        thrown away for not fitting a schema included (cached answers, and errors without an
        answer, cost 0). ``None`` when a model has no price (said once, in a warning).

        Prices are the run's (``status.prices``), else :data:`pipeline.pricing.cost.DEFAULT_PRICES`;
        for others, ``pipeline.Prices({...}).total(results)``.
        """
        prices = self.status.prices if self.status.prices is not None else DEFAULT_PRICES
        total: float | None = prices.total(self.scan())
        return total

    def costs(self, n: int | None = None) -> list[float | None]:
        """USD each row's answer cost, by input position (``None``: unknown, or no row)."""
        prices = self.status.prices if self.status.prices is not None else DEFAULT_PRICES
        n = len(self) if n is None else n
        costs: list[float | None] = [None] * n
        for record in self.scan():
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


def default_flow(job: Job, options: RunOptions | None = None, *,
                 cache: ResponseCache | None = None, status: StatusTracker | None = None,
                 total: int | None = None, guard: RunGuard | None = None, initial: int = 0,
                 **changes: Any) -> Chain:
    """The default stage chain for a :class:`~pipeline.http.Job`::

        build | lookup | retry(acquire | call) | store | *stages | track

    ``options`` (a :class:`~pipeline.options.RunOptions`; ``changes`` are its fields as
    keywords, ``default_flow(job, attempts=3)``) say how each row is sent. ``lookup``/``store``
    come only with a cache. An embeddings job sends its rows in batches,
    ``batched(retry(acquire | call))``, unless its ``batch_size`` is 1. A job with a schema
    (``service.chat(..., schema=...)``) decodes each answer, cached ones too, and asks again
    up to ``reasks`` times when one does not fit: ``retry(acquire | call | decode)``; an
    answer that does not fit is never stored in the cache. ``guard`` (a new one by default; also
    ``status.guard``) stops the run early when every later request would fail; ``initial``
    rows counted as already done on the progress bar (a resumed run). The options' ``prices``
    (default: the status's, else the dated defaults) cost the answers in the status table;
    their ``stages`` (yours, see :func:`run`) run after ``store`` and before ``track``.

    >>> from pipeline.testing import InstantService
    >>> flow = default_flow(InstantService().chat(model="m", prompt="{text}"), attempts=3)
    >>> [type(s).__name__ for s in flow.stages()], flow.concurrency
    (['build', 'retry', 'track'], 64)
    """
    opts = RunOptions.of(options, **changes)
    concurrency, prices = opts.concurrency, opts.prices
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
    chain: list[Stage] = [build(job.builder)]
    if cache is not None:
        chain.append(lookup(cache, namespace=namespace, secrets=job.service.secrets()))
    inner = acquire(limiter, guard=guard) | call(job.service, job.endpoint,
                                                 timeout=opts.timeout, guard=guard)
    schema = job.schema
    if schema is not None:
        inner = inner | decode(schema)
    send = retry(inner, attempts=opts.attempts, backoff=opts.backoff, max_wait=opts.max_wait,
                 hooks=(status,), reasks=opts.reasks)
    batch_size = job.batch_size
    if job.path.strip("/") == "embeddings" and batch_size != 1:
        # Embeddings go many rows per request (batched); the chain then holds enough rows
        # in flight to fill `concurrency` batches (capped), and at most `concurrency`
        # requests are in flight.
        chain.append(batched(send, batch_size=batch_size, concurrency=concurrency))
        concurrency = rows_in_flight(concurrency, batch_size)
    else:
        chain.append(send)
    if cache is not None:
        chain.append(store(cache, namespace=namespace, secrets=job.service.secrets()))
    chain.extend(opts.stages)
    chain.append(track(status, progress=opts.progress, total=total, initial=initial))
    return Chain(*chain, concurrency=concurrency)


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


def check_rows(rows: Any, job: Job | BuilderLike) -> None:
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


def as_completed(rows: Iterable[Any] | AsyncIterable[Any], job: Job,
                 options: RunOptions | None = None, *, cache: ResponseCache | None = None,
                 status: StatusTracker | None = None, **changes: Any) -> Stream[Record]:
    """The default pipeline as an aiostream stream of records, yielded as they complete
    (not in input order: ``record.index`` says where each belongs).

    Takes :func:`run`'s per-row options (a :class:`~pipeline.options.RunOptions`, or its
    fields as keywords: ``concurrency=``, ``attempts=``, ``stages=``...); ``cache`` must be
    a :class:`ResponseCache` (its owner closes it).
    """
    rows = rows_of(rows)
    check_rows(rows, job)
    flow = default_flow(job, RunOptions.of(options, **changes), cache=cache, status=status,
                        total=_total(rows))
    return flow(_source(rows))


async def run(rows: Iterable[Any] | AsyncIterable[Any], job: Job, *,
              cache: str | os.PathLike[str] | ResponseCache | None = None,
              concurrency: int = DEFAULTS.concurrency, progress: bool = DEFAULTS.progress,
              attempts: int = DEFAULTS.attempts, backoff: Backoff | None = DEFAULTS.backoff,
              status: StatusTracker | None = None, max_wait: float = DEFAULTS.max_wait,
              timeout: float | None = DEFAULTS.timeout,
              prices: Prices | Mapping[str, Any] | str | os.PathLike[str] | None = None,
              reasks: int = DEFAULTS.reasks, cache_scope: CacheScope | None = None,
              keep_responses: bool = False, keep_rows: bool = True,
              stages: Sequence[Stage | Callable[[Record], Any]] | None = None) -> Results:
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
        keep_responses: keep each record's request and whole response (body and
            headers) as they were. By default a record keeps what a reader of results uses
            (its answer text or vector, ``finish_reason``, model, ``usage``, status, error;
            a :class:`~pipeline.core.record.KeptResponse`) and drops the request: about 2 KB a row
            less, a million rows in a few hundred MB. Writing the OpenAI Batch output or
            cookbook format from ``results`` (``pipeline.io.write``) needs the whole bodies.
        keep_rows: keep each record's input row (``record.row``); ``False`` when the caller
            holds the rows anyway (``pipeline.io.run_frame`` has the frame).
        stages: your own steps, each a :class:`~pipeline.stages.Stage` or a function of one
            record (plain or async; see :func:`~pipeline.stages.each`). They run on every
            answer, cached ones included, after it is stored in the cache and before it is
            counted: put what you compute in ``record.data`` (a dict there becomes result
            columns), or fail the row by setting ``record.error``. A raise fails only its
            row (:class:`~pipeline.errors.StageError`); the answer stays in the cache.

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
    collected = RecordColumns(whole=keep_responses, rows=keep_rows)
    guard = RunGuard()
    try:
        # The shorthand run() takes (a dict or file of prices, functions as stages) made
        # the types RunOptions holds; RunOptions would convert them alike.
        options = RunOptions(concurrency=concurrency, progress=progress, attempts=attempts,
                             backoff=backoff, max_wait=max_wait, timeout=timeout,
                             prices=None if prices is None else Prices.of(prices),
                             reasks=reasks, stages=user_stages(stages))
        flow = default_flow(job, options, cache=opened_cache, status=status,
                            total=_total(rows), guard=guard)
        # Kept as columns as records finish (RecordColumns.add: what slim() keeps), so a
        # long run never holds every body nor every record; the ones an event-loop pass
        # finished are added together at its end.
        sink = _PassSink(collected.add, asyncio.get_running_loop())
        try:
            await flow.each(rows if isinstance(rows, AsyncIterable) else iter(rows), sink)
        finally:
            sink.flush()  # what finished before a cancel or a failure is kept too
    finally:
        if owned and opened_cache is not None:
            opened_cache.close()
    sink.raise_failure()
    collected.finish()
    return Results(status=status, stopped=guard.stopped, schema=job.schema,
                   responses_kept=keep_responses, columns=collected)


#: The most finished records _PassSink holds before it hands them on.
_PASS_MOST = 128


class _PassSink:
    """Hands the records one pass of the event loop finished to ``add`` together, once
    the pass is over (``loop.call_soon``), rather than one at a time between the pass's
    HTTP reads and writes: run back to back, ``RecordColumns.add`` stays in the CPU's
    caches (over loopback HTTP it cost about 9 us a row added one at a time, 4-5 us
    together). At most :data:`_PASS_MOST` wait: a pass that never waits on the network
    (a rerun the cache answers) would otherwise hold every record it finished. A failure
    of ``add`` is raised by the next record's call, in its worker (which fails the run),
    and by :meth:`raise_failure`; no record is dropped for it.
    """

    __slots__ = ("_add", "_failure", "_loop", "_pending")

    def __init__(self, add: Callable[[Record], None], loop: asyncio.AbstractEventLoop) -> None:
        self._add = add
        self._loop = loop
        self._pending: list[Record] = []
        self._failure: BaseException | None = None

    def __call__(self, record: Record) -> None:
        if self._failure is not None:
            raise self._failure
        pending = self._pending
        if not pending:
            self._loop.call_soon(self.flush)
        pending.append(record)
        if len(pending) >= _PASS_MOST:  # a pass that never waits (cache hits): no backlog
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        add = self._add
        for i, record in enumerate(pending):
            try:
                add(record)
            except Exception as exc:  # a bug: fail the run (see __call__), keep the rest
                if self._failure is None:
                    self._failure = exc
                self._pending.extend(pending[i + 1:])
                return

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


@overload
def run_sync(coro_or_rows: Coroutine[Any, Any, T], job: None = None) -> T: ...


@overload
def run_sync(coro_or_rows: Iterable[Any] | AsyncIterable[Any], job: Job,
             **options: Any) -> Results: ...


def run_sync(coro_or_rows: Any, job: Job | None = None, **options: Any) -> Any:
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
