"""Stopping a resumable run without losing what is paid for: :class:`RunControl`, the
service wrapper that counts requests on the wire, and the loop that drains a run's stream
(after a stop: what is in flight for at most the grace period, then the rest cancelled).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pipeline.errors import RunStoppedError
from pipeline.stages import Stage, call
from pipeline.state.guard import RunGuard

__all__ = ["CountingService", "RunControl", "drain", "grace_of"]


class RunControl:
    """Stop a :func:`run_file` early without losing anything paid for (what a first Ctrl-C
    does in ``pipeline run``).

    :meth:`stop` sends nothing more (rows waiting for the rate limiter or for a retry are
    not sent), waits for the requests in flight (at most :attr:`grace` seconds: the attempt
    timeout), journals them and writes the output; :meth:`abandon` stops waiting for them.
    :attr:`in_flight` counts the requests on the wire. For example, inside a coroutine::

        control = RunControl()
        task = asyncio.create_task(run_file("in.csv", "out.csv", job, control=control))
        ...
        control.stop("enough for today")   # later: summary = await task
    """

    __slots__ = ("_abandoned", "_grace", "_guard", "_stopped", "in_flight", "reason")

    def __init__(self) -> None:
        self.in_flight = 0
        self.reason: str | None = None
        self._guard: RunGuard | None = None
        self._grace: Callable[[], float] = lambda: 600.0
        self._stopped = asyncio.Event()
        self._abandoned = asyncio.Event()

    def stop(self, reason: str = "stopped by the user") -> None:
        """Send nothing more; the run finishes what is in flight and writes its output."""
        if self.reason is None:
            self.reason = reason
        if self._guard is not None and self._guard.stopped is None:
            self._guard.stopped = RunStoppedError(f"stopped: {self.reason}")
        self._stopped.set()

    def abandon(self) -> None:
        """Stop waiting for the requests in flight (their answers, if any, are lost)."""
        self.stop()
        self._abandoned.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self.reason is not None

    @property
    def grace(self) -> float:
        """Seconds the run waits for the requests in flight after :meth:`stop`."""
        return self._grace()

    def _attach(self, guard: RunGuard, grace: Callable[[], float]) -> None:
        self._guard, self._grace = guard, grace
        if self.reason is not None:
            self.stop(self.reason)

    def __repr__(self) -> str:
        state = "running" if self.reason is None else f"stopping ({self.reason})"
        return f"<RunControl {state}, {self.in_flight} in flight>"


class CountingService:
    """The job's service, counting the requests on the wire (for :class:`RunControl`)."""

    def __init__(self, service: Any, control: RunControl) -> None:
        self._service = service
        self._control = control

    async def call(self, *args: Any, **kwargs: Any) -> Any:
        self._control.in_flight += 1
        try:
            return await self._service.call(*args, **kwargs)
        finally:
            self._control.in_flight -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def __repr__(self) -> str:
        return repr(self._service)


async def drain(records: Any, control: RunControl) -> None:
    """Run the stream to its end; after ``control.stop()``, wait at most ``control.grace``
    seconds (or until ``control.abandon()``) for what is in flight, then cancel the rest."""

    async def consume() -> None:
        async with records.stream() as finished:
            async for _ in finished:
                pass

    task = asyncio.ensure_future(consume())
    stopped = asyncio.ensure_future(control._stopped.wait())
    abandoned = asyncio.ensure_future(control._abandoned.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():  # stopping: nothing new is sent, what is in flight ends
            await asyncio.wait({task, abandoned}, timeout=control.grace,
                               return_when=asyncio.FIRST_COMPLETED)
    finally:
        for helper in (stopped, abandoned):
            helper.cancel()
        if not task.done():  # cancelled, abandoned or past the grace: rows not sent stay so
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
    if not task.cancelled():
        task.result()  # a bug in a stage: raise it here


def grace_of(flow: Any, timeout: float | None) -> Callable[[], float]:
    """How long a stopped run waits for its requests in flight: the attempt timeout."""
    calls = [s for s in _all_stages(flow) if isinstance(s, call)]

    def grace() -> float:
        limits = [c.attempt_timeout() for c in calls]
        known = [x for x in limits if x is not None]
        return (max(known) if known else timeout or 600.0) + 1.0

    return grace


def _all_stages(stage: Any) -> list[Any]:
    found: list[Any] = []
    for inner in stage.stages() if isinstance(stage, Stage) else ():
        found.append(inner)
        for name in ("inner", "send"):
            nested = getattr(inner, name, None)
            if isinstance(nested, Stage) and nested is not inner:
                found.extend(_all_stages(nested))
    return found


