"""A bounded-concurrency, unordered map as an aiostream operator.

aiostream's ``pipe.map(f, task_limit=n)`` costs about 100 µs per item per stage on two cores;
this operator runs one coroutine per item (all fused stages inside it) as one task, pulls the
source only when a slot is free (so memory stays bounded however long the input), yields
results as they complete, and cancels every task it started when the consumer stops early
or is cancelled.

>>> import asyncio
>>> from aiostream import stream
>>> async def double(x):
...     await asyncio.sleep(0)
...     return 2 * x
>>> async def main():
...     xs = stream.iterate(range(5)) | map_unordered.pipe(double, limit=2)
...     return sorted(await stream.list(xs))
>>> asyncio.run(main())
[0, 2, 4, 6, 8]
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from aiostream import pipable_operator, streamcontext
from aiostream.core import Stream

from pipeline.errors import ConfigError

__all__ = ["map_unordered"]

T = TypeVar("T")
U = TypeVar("U")


@contextlib.asynccontextmanager
async def _direct(source: AsyncIterable[T]) -> AsyncIterator[AsyncIterable[T]]:
    """Iterate ``source`` as it is, and close it (if it can be closed) when done."""
    try:
        yield source
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


@pipable_operator
async def map_unordered(source: AsyncIterable[T], func: Callable[[T], Awaitable[U]],
                        limit: int = 64, *,
                        on_close: Callable[[], None] | None = None) -> AsyncIterator[U]:
    """Apply ``func`` to every item with at most ``limit`` running at once; yield as completed.

    An exception from ``func`` cancels the other tasks and propagates (pipeline stages store
    errors on records instead, so this means a bug). ``on_close`` runs once the stream ends,
    however it ends (after every task it started has finished).
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigError(f"limit must be a positive int, got {limit!r}")
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[U]] = set()
    finished: deque[asyncio.Task[U]] = deque()
    wakeup: asyncio.Future[None] | None = None

    def on_done(task: asyncio.Task[U]) -> None:
        nonlocal wakeup
        running.discard(task)
        finished.append(task)
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    exhausted = False
    try:
        # aiostream streams need their context; any other async iterable is read directly
        # (the context's wrapper costs a microsecond or two an item).
        context = streamcontext(source) if isinstance(source, Stream) else _direct(source)
        async with context as items:
            iterator = items.__aiter__()
            while True:
                # Fill free slots; the source is pulled only as fast as work completes.
                while not exhausted and len(running) < limit and not finished:
                    try:
                        item = await iterator.__anext__()
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    task: asyncio.Task[U] = loop.create_task(func(item))  # type: ignore[arg-type]
                    running.add(task)
                    task.add_done_callback(on_done)
                if finished:
                    task = finished.popleft()
                    yield task.result()
                    continue
                if exhausted and not running:
                    return
                wakeup = loop.create_future()
                await wakeup
                wakeup = None
    finally:
        # Consumer gone, cancelled or an error: stop everything we started, and wait for it,
        # so no task outlives the stream.
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        # Retrieve results nobody will read, so asyncio does not warn about them.
        for task in finished:
            if not task.cancelled():
                task.exception()
        if on_close is not None:
            on_close()
