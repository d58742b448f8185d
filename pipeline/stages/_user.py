"""Your code as stages: :func:`each` (a function per record) and :func:`guarded` (a stage of
yours whose raise fails its row instead of the run).

Inside :func:`pipeline.run`'s ``stages=[...]`` both are applied for you: a function becomes
``each(fn)`` and a :class:`~pipeline.stages.Stage` is guarded.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable

from pipeline.core.record import Record
from pipeline.errors import ConfigError, StageError
from pipeline.stages._core import Chain, Stage

__all__ = ["each", "guarded", "user_stages"]

#: A function of yours for one record: returns the record (or ``None``: the same record).
RecordFunction = Callable[[Record], "Record | Awaitable[Record | None] | None"]


def _name_of(thing: object) -> str:
    return getattr(thing, "__qualname__", None) or type(thing).__name__


def _failed(record: Record, name: str, exc: BaseException) -> Record:
    detail = str(exc)
    if len(detail) > 200:
        detail = detail[:200] + "..."
    error = StageError(f"stage {name!r} raised {type(exc).__name__}"
                       + (f": {detail}" if detail else ""), stage=name)
    error.__cause__ = exc
    record.error = error
    return record


class each(Stage):
    """A function of yours as a stage: ``fn(record)`` (plain or ``async``) returns the record,
    or ``None`` for the same record. It sees every record that has not failed (pending ones
    and answered ones, cached included), like any stage by default; ``on_failed=True`` shows
    it failed ones too. A raise fails only that row, with a
    :class:`~pipeline.errors.StageError` naming the function.

    >>> import asyncio
    >>> from pipeline.core.record import Record
    >>> def length(record):
    ...     record.data = {"chars": len(record.row)}
    >>> asyncio.run(each(length).process(Record(index=0, row="hello"))).data
    {'chars': 5}
    >>> asyncio.run(each(lambda record: 1 / 0).process(Record(index=1, row="x"))).error
    StageError("stage '<lambda>' raised ZeroDivisionError: division by zero")
    """

    def __init__(self, fn: RecordFunction, *, on_answered: bool = True,
                 on_failed: bool = False) -> None:
        if not callable(fn) or isinstance(fn, Stage):
            raise ConfigError(f"each() takes a function of one record, got {fn!r}")
        self.fn = fn
        self.name = _name_of(fn)
        self.on_answered = on_answered
        self.on_failed = on_failed

    async def process(self, record: Record) -> Record:
        try:
            out = self.fn(record)
            if inspect.isawaitable(out):
                out = await out
        except Exception as exc:
            return _failed(record, self.name, exc)
        if out is None:
            return record
        if not isinstance(out, Record):
            record.error = StageError(
                f"stage {self.name!r} returned a {type(out).__name__}, not the record "
                "(set record.data to keep a value, and return the record or None)",
                stage=self.name)
        else:
            record = out
        return record

    def __repr__(self) -> str:
        return f"each({self.name})"


class guarded(Stage):
    """``stage`` with its raise turned into a :class:`~pipeline.errors.StageError` on the
    record: the row fails, the run goes on. Sees the records ``stage`` sees.

    >>> import asyncio
    >>> from pipeline.core.record import Record
    >>> class Boom(Stage):
    ...     async def process(self, record):
    ...         raise KeyError("score")
    >>> asyncio.run(guarded(Boom()).process(Record(index=0))).error
    StageError("stage 'Boom' raised KeyError: 'score'")
    """

    def __init__(self, stage: Stage) -> None:
        if not isinstance(stage, Stage):
            raise ConfigError(f"not a stage: {stage!r}")
        self.stage = stage
        self.name = type(stage).__name__
        self.on_answered = stage.on_answered
        self.on_failed = stage.on_failed

    async def process(self, record: Record) -> Record:
        try:
            out = await self.stage.process(record)
        except Exception as exc:
            return _failed(record, self.name, exc)
        return out if isinstance(out, Record) else record

    def begin(self, record: Record) -> None:
        self.stage.begin(record)

    def finish(self) -> None:
        self.stage.finish()

    def __repr__(self) -> str:
        return repr(self.stage)


def user_stages(stages: Stage | RecordFunction | Iterable[Stage | RecordFunction] | None,
                ) -> tuple[Stage, ...]:
    """``run(..., stages=...)`` as guarded stages: each item a :class:`Stage` (a chain of them
    too) or a function of one record. Anything else is a :class:`~pipeline.errors.ConfigError`
    before the run starts.

    >>> [repr(s) for s in user_stages([len])]
    ['each(len)']
    """
    if stages is None:
        return ()
    if isinstance(stages, Stage) or callable(stages):
        stages = [stages]
    if isinstance(stages, str | bytes) or not hasattr(stages, "__iter__"):
        raise ConfigError(f"stages must be a list of stages or functions, got {stages!r}")
    out: list[Stage] = []
    for item in stages:
        if isinstance(item, Chain | Stage):
            out.extend(guarded(s) if not isinstance(s, each | guarded) else s
                       for s in item.stages())
        elif callable(item):
            out.append(each(item))
        else:
            raise ConfigError(f"stages=[...] takes Stage objects or functions of one record, "
                              f"got {item!r}")
    return tuple(out)
