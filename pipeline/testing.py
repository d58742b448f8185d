"""Test helpers: an event loop whose clock jumps instead of sleeping.

Code that waits with ``asyncio.sleep``, ``loop.call_at`` or ``asyncio.timeout`` runs under
:class:`VirtualTimeLoop` in (almost) no real time: whenever every task is waiting on a timer,
the loop's clock jumps straight to the next timer. Time-dependent behaviour (rate limits,
backoff, cooldowns) can then be tested exactly and quickly, with no real sleeps.

>>> import asyncio
>>> async def main():
...     loop = asyncio.get_running_loop()
...     start = loop.time()
...     await asyncio.sleep(3600)          # an hour passes instantly
...     return loop.time() - start
>>> run_virtual(main())
3600.0

Real I/O still works (sockets are polled without blocking), but while the loop waits for
I/O with a timer pending, virtual time moves on: do not mix virtual time with real servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["VirtualTimeLoop", "instant_backoff", "run_virtual"]

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """A selector that, instead of blocking for ``timeout``, advances the virtual clock."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # Nothing scheduled at all: only another thread or real I/O can wake us.
            return super().select(None)  # type: ignore[no-any-return]
        self.now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop with a virtual clock that starts at 0 and never sleeps."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(selector=self._jumping)
        # The base loop treats timers within this of now as due; keep it tiny so that
        # virtual time is exact.
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._jumping.now


def run_virtual(coro: Coroutine[Any, Any, T], *, debug: bool = False) -> T:
    """Run ``coro`` to completion on a fresh :class:`VirtualTimeLoop` and return its result."""
    with asyncio.Runner(debug=debug, loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro)


@contextlib.contextmanager
def instant_backoff() -> Iterator[None]:
    """Make every retry wait zero seconds inside the ``with`` block (a test mode).

    >>> from pipeline.retry import Backoff
    >>> with instant_backoff():
    ...     Backoff(initial=10).delay(3)
    0.0
    """
    from pipeline import retry

    previous = retry._INSTANT
    retry._INSTANT = True
    try:
        yield
    finally:
        retry._INSTANT = previous
