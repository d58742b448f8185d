"""The stage contract, and how stages run: :class:`Stage`, :class:`Chain`, :class:`Flow`.

Neighbouring stages fuse into one :class:`Chain`: each item runs through all of them as ONE
coroutine, under one bounded-concurrency, unordered map (:func:`~pipeline.stages.map_unordered`).
Measured on 2 cores, aiostream's ``pipe.map`` costs about 100 µs an item per stage while a
plain gather under a semaphore moves about 86k items/s: hence one map per chain, not one per
stage. Applied to a stream, a chain is an aiostream operator, so any aiostream operator can sit
between chains (a :class:`Flow`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from typing import Any, cast

from aiostream.core import Stream

from pipeline.core.checks import positive_int
from pipeline.core.record import Record
from pipeline.errors import ConfigError
from pipeline.stages._map import map_unordered

__all__ = ["DEFAULT_CONCURRENCY", "Chain", "Flow", "Stage"]

DEFAULT_CONCURRENCY = 64


class Stage:
    """Base class of a per-record step. Subclasses implement :meth:`process`.

    **The contract.** ``process(record)`` does its work and returns the record. It must not
    raise for a problem with *this record*: it stores the error on ``record.error`` (an
    exception value) and returns. A raise cancels the whole run: every other row in flight
    with it. Only cancellation (and bugs) propagate. A stage that holds a resource for the
    record (a limiter lease) releases it on every path, cancellation included.

    Class attribute ``after_done``: whether the stage still runs on a record that already
    succeeded (e.g. from the cache) or failed; stages with ``after_done = False`` are skipped
    for it. Optional hooks: :meth:`begin` (a record enters the chain, before any stage ran)
    and :meth:`finish` (the stream ends, however it ends: flush, close bars).

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
        positive_int("concurrency", concurrency)
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

        >>> from pipeline.stages import build, track
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
