"""Which HTTP transport a service's ``httpx.AsyncClient`` sends through, and its timeouts.

httpx's own transport (httpcore) is the default and needs nothing extra, but at high
concurrency one httpcore pool tops out at about a hundred requests/s on a small machine (it
rescans its connections on every request), so ``"httpx"`` here means :class:`ShardedTransport`:
several small httpcore pools. The ``fast`` extra installs ``httpx-aiohttp``, whose transport
keeps the httpx API and sends through aiohttp, several times faster. Tests pass any
``httpx.AsyncBaseTransport`` instance, such as ``httpx.MockTransport``.

>>> make_transport("httpx", limits=httpx.Limits(max_connections=64))
ShardedTransport(8 pools x 8 connections, in flight 0)
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator
from typing import Any, Literal, TypeAlias

import httpx

from pipeline.errors import ConfigError

__all__ = [
    "DEFAULT_TIMEOUT",
    "ShardedTransport",
    "TransportChoice",
    "check_transport",
    "default_ssl_context",
    "make_limits",
    "make_timeout",
    "make_transport",
    "transport_name",
]

TransportChoice: TypeAlias = Literal["httpx", "aiohttp"] | httpx.AsyncBaseTransport

#: Long reads: a long generation can take minutes, and httpx's default 5 s would cut it off.
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)


def make_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    """An ``httpx.Timeout`` from seconds (read/write/pool; connect stays 10 s) or ``None``.

    ``None`` means :data:`DEFAULT_TIMEOUT` (connect 10 s, everything else 600 s), not "never".

    >>> make_timeout(30)
    Timeout(connect=10.0, read=30.0, write=30.0, pool=30.0)
    """
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return httpx.Timeout(float(timeout), connect=min(10.0, float(timeout)))


def make_limits(max_connections: int) -> httpx.Limits:
    """Connection limits for ``max_connections`` requests in flight, all kept alive.

    httpx keeps only 20 idle connections by default; at 64 in flight the rest would be
    reopened for every request.

    >>> make_limits(64)
    Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=30.0)
    """
    if isinstance(max_connections, bool) or not isinstance(max_connections, int):
        raise ConfigError(f"max_connections must be an int, got {max_connections!r}")
    if max_connections < 1:
        raise ConfigError(f"max_connections must be at least 1, got {max_connections}")
    return httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=30.0,
    )


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """httpx's default SSL context, made once per process.

    Loading the CA bundle takes tens of milliseconds; every pool would otherwise load its own.
    An ``SSLContext`` is safe to share between connections, clients and event loops.
    """
    return httpx.create_ssl_context()


class ShardedTransport(httpx.AsyncBaseTransport):
    """httpx's own transport, split into several small connection pools.

    httpcore 1.0's pool rescans every connection for every idle one each time a request starts
    or ends: work quadratic in the pool size. One pool of 64 connections managed about 100
    requests/s at 64 in flight on a busy 2-core machine; eight pools of 8 managed 500-800
    (``benchmarks/service_throughput.py``). Each request goes to the pool with the fewest
    requests in flight (the first such pool on ties, so a quiet client keeps few
    connections open), which also keeps one slow request from queueing others behind it.

    >>> ShardedTransport(limits=httpx.Limits(max_connections=64))
    ShardedTransport(8 pools x 8 connections, in flight 0)
    """

    __slots__ = ("_in_flight", "_pool_size", "_shards")

    def __init__(self, *, limits: httpx.Limits, pool_size: int = 8) -> None:
        total = limits.max_connections or 100
        count = max(1, -(-total // pool_size))
        per_pool = -(-total // count)
        keepalive = limits.max_keepalive_connections
        shard_limits = httpx.Limits(
            max_connections=per_pool,
            max_keepalive_connections=per_pool if keepalive is None else min(per_pool, keepalive),
            keepalive_expiry=limits.keepalive_expiry,
        )
        context = default_ssl_context()
        self._shards = [
            httpx.AsyncHTTPTransport(limits=shard_limits, verify=context) for _ in range(count)
        ]
        self._in_flight = [0] * count
        self._pool_size = per_pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        counts = self._in_flight
        index = counts.index(min(counts))
        counts[index] += 1
        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            counts[index] -= 1
            raise
        if response.is_closed:  # a body read already (a mock): nothing more in flight
            counts[index] -= 1
        else:  # in flight until the body is read and closed, not just the headers
            response.stream = _CountedStream(response.stream, counts, index)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()

    def __repr__(self) -> str:
        return (
            f"ShardedTransport({len(self._shards)} pools x {self._pool_size} connections, "
            f"in flight {sum(self._in_flight)})"
        )


class _CountedStream(httpx.AsyncByteStream):
    """A response body that gives its pool's in-flight slot back when closed (once)."""

    __slots__ = ("_counts", "_index", "_inner")

    def __init__(self, inner: Any, counts: list[int], index: int) -> None:
        self._inner = inner
        self._counts = counts
        self._index: int | None = index

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        if self._index is not None:
            self._counts[self._index] -= 1
            self._index = None
        await self._inner.aclose()


def make_transport(choice: TransportChoice, *, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """A fresh transport for ``choice``: ``"httpx"``, ``"aiohttp"`` or a transport instance.

    An instance is returned as it is (``limits`` then do not apply). ``"aiohttp"`` needs the
    ``fast`` extra (``pip install 'ratelimited-pipeline[fast]'``) and says so when it is
    missing. Neither
    binds to an event loop here: aiohttp's session is created on the first request.
    """
    if isinstance(choice, httpx.AsyncBaseTransport):
        return choice
    if choice == "httpx":
        return ShardedTransport(limits=limits)
    if choice == "aiohttp":
        try:
            from httpx_aiohttp import AiohttpTransport
        except ImportError as exc:
            raise ConfigError(
                "transport='aiohttp' needs the httpx-aiohttp package: "
                "pip install 'ratelimited-pipeline[fast]' (or httpx-aiohttp aiohttp)"
            ) from exc
        return AiohttpTransport(limits=limits, verify=default_ssl_context())
    raise ConfigError(
        f"unknown transport {choice!r}; expected 'httpx', 'aiohttp' or an "
        "httpx.AsyncBaseTransport instance"
    )


def check_transport(choice: TransportChoice) -> None:
    """Raise :class:`ConfigError` now for a choice :func:`make_transport` would refuse later.

    >>> check_transport("curl")
    Traceback (most recent call last):
    pipeline.errors.ConfigError: unknown transport 'curl'; expected 'httpx', 'aiohttp' or an httpx.AsyncBaseTransport instance
    """  # noqa: E501
    if isinstance(choice, httpx.AsyncBaseTransport) or choice == "httpx":
        return
    if choice == "aiohttp":
        make_transport(choice, limits=httpx.Limits())  # builds nothing loop-bound; checks import
        return
    raise ConfigError(
        f"unknown transport {choice!r}; expected 'httpx', 'aiohttp' or an "
        "httpx.AsyncBaseTransport instance"
    )


def transport_name(choice: TransportChoice) -> str:
    """A short name for reprs: ``'httpx'``, ``'aiohttp'`` or the instance's class name.

    >>> transport_name("aiohttp"), transport_name(httpx.MockTransport(lambda r: None))
    ('aiohttp', 'MockTransport')
    """
    return choice if isinstance(choice, str) else type(choice).__name__
