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
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar, Unpack

from pipeline.core.request import APIRequest, Response
from pipeline.errors import APIError
from pipeline.http import Endpoint, OpenAIService, ServiceOptions
from pipeline.stages import set_testing

__all__ = ["InstantService", "VirtualTimeLoop", "instant_backoff", "run_virtual", "set_testing"]

T = TypeVar("T")


class _InstantOptions(ServiceOptions, total=False):
    """What :class:`InstantService` takes: an :class:`~pipeline.http.OpenAIService`'s
    keyword arguments."""

    api_key: str | None
    base_url: str | None
    organization: str | None
    project: str | None
    azure_api_version: str | None
    azure_deployment: str | None
    headers: Mapping[str, str] | None


class _JumpingSelector(selectors.DefaultSelector):
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
            return super().select(None)
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

    def run_forever(self) -> None:
        # Rate limiters read a process-wide clock: make it this loop's while it runs.
        from pipeline import limiter

        previous = limiter.set_clock(self.time)
        try:
            super().run_forever()
        finally:
            limiter.set_clock(previous)


def run_virtual(coro: Coroutine[Any, Any, T], *, debug: bool = False) -> T:
    """Run ``coro`` to completion on a fresh :class:`VirtualTimeLoop` and return its result."""
    with asyncio.Runner(debug=debug, loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro)


@contextlib.contextmanager
def instant_backoff() -> Iterator[None]:
    """Make every retry wait zero seconds inside the ``with`` block (a test mode).

    >>> from pipeline.stages import Backoff
    >>> with instant_backoff():
    ...     Backoff(initial=10).delay(3)
    0.0
    """
    previous = set_testing(True)
    try:
        yield
    finally:
        set_testing(previous)


class InstantService(OpenAIService):
    """An OpenAI-like service answered in-process, with no HTTP at all.

    For unit tests of stages and for measuring the pipeline's own overhead. Every call
    returns a small chat-completion body at once (after ``latency`` seconds, if given).
    ``fail(request, n)`` may return an :class:`~pipeline.errors.APIError` to raise for the
    ``n``-th call (counting from 1) of that request, to script failures and retries.

    >>> async def main():
    ...     service = InstantService()
    ...     job = service.chat(model="m", prompt="hi {name}")
    ...     return (await job.call({"name": "x"})).body["choices"][0]["message"]["content"]
    >>> asyncio.run(main())
    'ok'
    """

    def __init__(self, *, latency: float = 0.0,
                 fail: Callable[[APIRequest, int], APIError | None] | None = None,
                 **options: Unpack[_InstantOptions]) -> None:
        options.setdefault("api_key", "sk-instant")
        options.setdefault("base_url", "http://127.0.0.1:9/v1")  # never contacted
        # No provider to learn a rate from: without rpm/tpm, no limit at all.
        options.setdefault("adaptive", False)
        super().__init__(**options)
        self.latency = latency
        self.fail = fail
        self.calls = 0
        self._calls_per_request: dict[int, tuple[APIRequest, int]] = {}
        self._headers = {"content-type": "application/json"}

    async def call(self, endpoint: Endpoint | str, request: APIRequest) -> Response:
        self.calls += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.fail is not None:
            # Keyed by identity, the request held with its count: a finished request freed
            # would hand its id, and its count, to the next one built.
            key = id(request)
            n = self._calls_per_request.get(key, (request, 0))[1] + 1
            self._calls_per_request[key] = (request, n)
            error = self.fail(request, n)
            if error is not None:
                raise error
        body = {"id": "chatcmpl-instant", "object": "chat.completion", "created": 0,
                "model": "instant",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
        return Response(status=200, body=body, headers=self._headers, latency=self.latency)

    async def aclose(self) -> None:
        return None
