"""Which HTTP transport a service's ``httpx.AsyncClient`` sends through, and its timeouts.

httpx's own transport (httpcore) is the default and needs nothing extra, but at high
concurrency it tops out at a few hundred requests/s on a small machine (its connection pool
is scanned on every request). The ``fast`` extra installs ``httpx-aiohttp``, whose transport
keeps the httpx API and sends through aiohttp, several times faster. Tests pass any
``httpx.AsyncBaseTransport`` instance, such as ``httpx.MockTransport``.

>>> make_transport("httpx", limits=httpx.Limits(max_connections=8)).__class__.__name__
'AsyncHTTPTransport'
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import httpx

from pipeline.errors import ConfigError

__all__ = [
    "DEFAULT_TIMEOUT",
    "TransportChoice",
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


def make_transport(choice: TransportChoice, *, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """A fresh transport for ``choice``: ``"httpx"``, ``"aiohttp"`` or a transport instance.

    An instance is returned as it is (``limits`` then do not apply). ``"aiohttp"`` needs the
    ``fast`` extra (``pip install 'pipeline[fast]'``) and says so when it is missing. Neither
    binds to an event loop here: aiohttp's session is created on the first request.
    """
    if isinstance(choice, httpx.AsyncBaseTransport):
        return choice
    if choice == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits, retries=0)
    if choice == "aiohttp":
        try:
            from httpx_aiohttp import AiohttpTransport
        except ImportError as exc:
            raise ConfigError(
                "transport='aiohttp' needs the httpx-aiohttp package: "
                "pip install 'pipeline[fast]' (or httpx-aiohttp aiohttp)"
            ) from exc
        return AiohttpTransport(limits=limits)
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
