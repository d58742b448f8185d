"""The stage contract, and how stages run: :class:`Stage`, :class:`Chain`, :class:`Flow`.

Neighbouring stages fuse into one :class:`Chain`: each item runs through all of them as ONE
coroutine, under one bounded-concurrency, unordered map (:func:`~pipeline.stages.map_unordered`):
one map per chain, not one per stage, because each map an item passes through costs far more
than the stage's own work (``benchmarks/pipeline_throughput.py``). Applied to a stream, a chain
is an aiostream operator, so any aiostream operator can sit between chains (a :class:`Flow`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from typing import Any, cast

from aiostream.core import Stream

from pipeline.core.checks import positive_int
from pipeline.core.record import Record
from pipeline.errors import ConfigError
from pipeline.stages._map import map_items, map_unordered

__all__ = ["DEFAULT_CONCURRENCY", "Chain", "Flow", "Stage"]

DEFAULT_CONCURRENCY = 64


class Stage:
    """Base class of a per-record step. Subclasses implement :meth:`process`.

    **The contract.** ``process(record)`` does its work and returns the record. It must not
    raise for a problem with *this record*: it stores the error on ``record.error`` (an
    exception value) and returns. A raise cancels the whole run: every other row in flight
    with it (inside :func:`pipeline.run`'s ``stages=`` a raise fails only its row, with a
    :class:`~pipeline.errors.StageError`). Only cancellation (and bugs) propagate. A stage
    that holds a resource for the record (a limiter lease) releases it on every path,
    cancellation included.

    **Which records a stage sees.** Every record still pending (no answer, no error), and:

    - ``on_answered = True`` (the default): records that have an answer (from the call, or
      from the cache), so a stage after the call works on every answer, cached ones too.
      The request stages (``build``, ``lookup``, ``acquire``, ``call``, ``batched``) set it
      to ``False``: an answered record needs no request;
    - ``on_failed = False`` (the default): records that failed are skipped, so your code never
      meets a record with no answer because of an earlier error. ``store`` and ``track`` set
      it to ``True``; so does a stage that counts failures.

    (``after_done = True`` or ``False``, the older spelling, sets both.) Optional hooks:
    :meth:`begin` (a record enters the chain, before any stage ran) and :meth:`finish` (the
    stream ends, however it ends: flush, close bars). ``record.data`` is yours: the pipeline
    never reads it.

    >>> class shout(Stage):
    ...     async def process(self, record):
    ...         try:
    ...             record.row = record.row.upper()
    ...         except AttributeError as exc:   # this row's problem: on the record
    ...             record.error = exc
    ...         return record
    >>> import asyncio
    >>> asyncio.run(shout().process(Record(index=0, row="hi"))).row
    'HI'
    """

    on_answered: bool = True
    on_failed: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "after_done" in cls.__dict__:  # the older spelling: both at once
            cls.on_answered = cls.on_failed = bool(cls.__dict__["after_done"])

    @property
    def after_done(self) -> bool:
        """Whether the stage runs on answered and failed records (the older spelling)."""
        return self.on_answered and self.on_failed

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
            return Flow(head, _operator(other))
        return NotImplemented

    def __call__(self, source: AsyncIterable[Any]) -> Stream[Record]:
        """Apply to a stream (what ``stream | stage`` does)."""
        return Chain(*self.stages())(source)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def steps(stages: tuple[Stage, ...]) -> tuple[tuple[Callable[[Record], Awaitable[Record]],
                                                   bool, bool], ...]:
    """``(process, on_answered, on_failed)`` of each stage: what a chain's loop runs."""
    return tuple((s.process, s.on_answered, s.on_failed) for s in stages)


class Chain(Stage):
    """Stages fused into one per-record coroutine, run ``concurrency`` records at a time."""

    on_answered = True
    on_failed = True

    def __init__(self, *stages: Stage, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        flat: list[Stage] = []
        for stage in stages:
            if not isinstance(stage, Stage):
                raise ConfigError(f"not a stage: {stage!r}")
            flat.extend(stage.stages())
        positive_int("concurrency", concurrency)
        self._stages = tuple(flat)
        self.concurrency = concurrency
        self._steps = steps(self._stages)
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

        >>> from pipeline.stages import build, track
        >>> (build(lambda row: row) | track(None)).with_concurrency(8).concurrency
        8
        """
        return Chain(*self._stages, concurrency=concurrency)

    async def process(self, record: Record) -> Record:
        for begin in self._begins:
            begin(record)
        for step, on_answered, on_failed in self._steps:
            if record.error is None:
                if on_answered or record.response is None:
                    record = await step(record)
            elif on_failed:
                record = await step(record)
        return record

    def finish(self) -> None:
        for stage in self._stages:
            stage.finish()

    def __call__(self, source: AsyncIterable[Any]) -> Stream[Record]:
        return map_unordered(source, self._one(), self.concurrency, on_close=self.finish)

    def records(self, source: AsyncIterable[Any] | Iterable[Any]
                ) -> AsyncGenerator[Record, None]:
        """The records as a plain async generator (no aiostream wrapper; ``aclose()`` it).
        A plain iterable ``source`` is read with ``next()``, in the event loop."""
        records = map_items(source, self._one(), self.concurrency, on_close=self.finish)
        return cast(AsyncGenerator[Record, None], records)  # an async generator at run time

    async def each(self, source: AsyncIterable[Any] | Iterable[Any],
                   sink: Callable[[Record], None]) -> None:
        """Run every item of ``source`` through the chain, handing each finished record to
        ``sink`` as it finishes (in the worker: no consumer to wake an item)."""
        records = map_items(source, self._one(), self.concurrency, on_close=self.finish,
                            sink=sink)
        try:
            async for _ in records:
                pass
        finally:
            await records.aclose()  # type: ignore[attr-defined]

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


def _operator(other: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``other`` if it is an aiostream pipe operator (``pipe.filter(...)``); a plain function
    after ``|`` is refused, since it would silently get the whole stream, not a record."""
    if (getattr(other, "__module__", None) or "").startswith("aiostream"):
        return other
    name = getattr(other, "__qualname__", None) or repr(other)
    raise ConfigError(
        f"`| {name}`: a plain function after `|` would be given the whole stream, not a "
        f"record. For a step per record write `| each({name})` (pipeline.stages.each); for "
        f"an operator on the whole stream use aiostream's (`pipe.filter(...)`) or say so "
        f"with Flow(chain, {name})")


class Flow:
    """Chains and aiostream operators in sequence; apply it to a stream with ``|``.
    ``Flow(chain, fn)`` takes any function of a stream (``fn(source)`` returns a stream)."""

    def __init__(self, *parts: Callable[[Any], Any]) -> None:
        self.parts = parts

    def __or__(self, other: Any) -> Flow:
        if isinstance(other, Flow):
            return Flow(*self.parts, *other.parts)
        if isinstance(other, Stage):
            return Flow(*self.parts, other if isinstance(other, Chain) else Chain(*other.stages()))
        if callable(other):
            return Flow(*self.parts, _operator(other))
        return NotImplemented

    def __call__(self, source: AsyncIterable[Any]) -> Any:
        for part in self.parts:
            source = part(source)
        return source

    def __repr__(self) -> str:
        return "Flow(" + " | ".join(repr(p) for p in self.parts) + ")"
