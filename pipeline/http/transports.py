"""Which HTTP transport a service's ``httpx.AsyncClient`` sends through, and its timeouts.

httpx's own transport (httpcore) is the default and needs nothing extra, but at high
concurrency one httpcore pool tops out at about a hundred requests/s on a small machine (it
rescans its connections on every request), so ``"httpx"`` here means :class:`ShardedTransport`:
several small httpcore pools. The ``fast`` extra installs ``httpx-aiohttp``, whose transport
keeps the httpx API and sends through aiohttp, several times faster. Tests pass any
``httpx.AsyncBaseTransport`` instance, such as ``httpx.MockTransport``.

Both named transports honour the proxy environment variables the same way (httpx ignores
them once it is handed a transport, and aiohttp's session here does not read them): see
:class:`ProxyRules`. Requests to this machine never go through a proxy.

>>> make_transport("httpx", limits=httpx.Limits(max_connections=64))
ShardedTransport(8 pools x 8 connections, in flight 0)
"""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, TypeAlias

import httpx

from pipeline.core.redaction import redact_url
from pipeline.errors import ConfigError

__all__ = [
    "DEFAULT_TIMEOUT",
    "ProxyRouter",
    "ProxyRules",
    "ShardedTransport",
    "TransportChoice",
    "check_transport",
    "default_ssl_context",
    "is_loopback",
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


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine: ``localhost`` (and ``*.localhost``), 127.0.0.0/8
    or ``::1``. Names are not looked up.

    >>> [is_loopback(h) for h in ("127.0.0.1", "[::1]", "LocalHost", "10.0.0.1")]
    [True, True, True, False]
    """
    if not host:
        return False
    name = host.strip("[]").rstrip(".").lower()
    if name in ("localhost", "ip6-localhost", "ip6-loopback") or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_DEFAULT_PORTS = {"http": 80, "https": 443}
_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
#: One NO_PROXY entry: (scheme or None for any, a domain or an address range, port or None).
_Exclusion: TypeAlias = tuple[str | None, _Network | str, int | None]


class ProxyRules:
    """Which proxy, if any, a request goes through: the ``*_proxy`` environment variables as
    httpx reads them (``urllib.request.getproxies()``; lower-case names win).

    ``HTTP_PROXY`` / ``HTTPS_PROXY`` serve ``http://`` / ``https://`` URLs, ``ALL_PROXY``
    both when the scheme's own is unset. ``NO_PROXY`` is a comma-separated list of hosts
    that go direct: ``*`` (everything), a domain (``example.com`` or ``.example.com``: that
    domain and its subdomains, as curl reads it), an address or network (``10.0.0.0/8``,
    ``::1``), optionally with ``:PORT``, or ``scheme://host``. Unlike httpx, which sends
    even ``127.0.0.1`` through a proxy unless ``NO_PROXY`` names it, a request to this
    machine (:func:`is_loopback`) always goes direct: a proxy elsewhere cannot reach it.

    >>> rules = ProxyRules({"https": "proxy.corp:3128", "no": "internal.corp,10.0.0.0/8"})
    >>> rules.proxy_for("https://api.openai.com/v1/chat/completions")
    'http://proxy.corp:3128'
    >>> [rules.proxy_for(u) for u in ("https://llm.internal.corp/v1", "https://10.1.2.3/v1",
    ...                               "https://127.0.0.1:8000/v1", "http://api.openai.com/v1")]
    [None, None, None, None]
    """

    __slots__ = ("_everything_direct", "_exclusions", "_proxies")

    def __init__(self, proxies: Mapping[str, str] | None = None) -> None:
        found = dict(proxies or {})
        self._proxies: dict[str, str] = {}
        for scheme in ("http", "https", "all"):
            value = (found.get(scheme) or "").strip()
            if value:  # "proxy:3128" means an http:// proxy, as httpx and curl read it
                self._proxies[scheme] = value if "://" in value else f"http://{value}"
        self._exclusions: list[_Exclusion] = []
        self._everything_direct = False
        for entry in (found.get("no") or "").split(","):
            entry = entry.strip().lower()
            if entry == "*":
                self._everything_direct = True
            elif entry:
                exclusion = _parse_exclusion(entry)
                if exclusion is not None:
                    self._exclusions.append(exclusion)

    @classmethod
    def from_environment(cls) -> ProxyRules:
        """The rules the environment gives now (read again each time a client is made)."""
        return cls(urllib.request.getproxies())

    @property
    def proxy_urls(self) -> tuple[str, ...]:
        """The distinct proxies requests may go through (none: every request goes direct)."""
        if self._everything_direct:
            return ()
        return tuple(dict.fromkeys(self._proxies.values()))

    def proxy_for(self, url: str | httpx.URL) -> str | None:
        """The proxy URL a request to ``url`` goes through, or ``None`` to go direct."""
        url = url if isinstance(url, httpx.URL) else httpx.URL(url)
        if self._everything_direct or not self._proxies:
            return None
        host = url.host.lower()
        if is_loopback(host):
            return None
        port = url.port or _DEFAULT_PORTS.get(url.scheme)
        for scheme, target, only_port in self._exclusions:
            if scheme is not None and scheme != url.scheme:
                continue
            if only_port is not None and only_port != port:
                continue
            if isinstance(target, str):
                if host == target or host.endswith("." + target):
                    return None
            else:
                try:
                    if ipaddress.ip_address(host) in target:
                        return None
                except ValueError:  # a name is never inside an address range
                    pass
        return self._proxies.get(url.scheme) or self._proxies.get("all")

    def __bool__(self) -> bool:
        return bool(self.proxy_urls)

    def __repr__(self) -> str:
        shown = [f"{scheme}={redact_url(url)!r}" for scheme, url in self._proxies.items()]
        if self._everything_direct:
            shown.append("no_proxy='*'")
        elif self._exclusions:
            shown.append(f"no_proxy={len(self._exclusions)} entries")
        return f"ProxyRules({', '.join(shown)})"


def _parse_exclusion(entry: str) -> _Exclusion | None:
    scheme: str | None = None
    if "://" in entry:
        scheme, _, entry = entry.partition("://")
        scheme = None if scheme == "all" else scheme
    try:
        return scheme, ipaddress.ip_network(entry.strip("[]"), strict=False), None
    except ValueError:
        pass
    try:
        parts = urllib.parse.urlsplit("//" + entry)
        port = parts.port
    except ValueError:
        return None  # not a host: ignored, as httpx and curl ignore it
    host = (parts.hostname or "").lstrip("*").lstrip(".")
    if not host:
        return None
    try:
        return scheme, ipaddress.ip_network(host, strict=False), port
    except ValueError:
        return scheme, host, port


class ProxyRouter(httpx.AsyncBaseTransport):
    """Sends each request direct or through its proxy, as :class:`ProxyRules` decide.

    ``via`` maps each proxy URL to the transport that goes through it. The decision is made
    once per scheme, host and port (a run talks to one host).

    >>> ProxyRouter(httpx.MockTransport(lambda r: None), ProxyRules({"http": "p:8080"}),
    ...             via={"http://p:8080": httpx.MockTransport(lambda r: None)})
    ProxyRouter(ProxyRules(http='http://p:8080'), 1 proxy)
    """

    __slots__ = ("_direct", "_routes", "_rules", "_via")

    def __init__(
        self,
        direct: httpx.AsyncBaseTransport,
        rules: ProxyRules,
        *,
        via: Mapping[str, httpx.AsyncBaseTransport],
    ) -> None:
        self._direct = direct
        self._rules = rules
        self._via = dict(via)
        self._routes: dict[tuple[str, str, int | None], httpx.AsyncBaseTransport] = {}

    def transport_for(self, url: httpx.URL) -> httpx.AsyncBaseTransport:
        """The transport a request to ``url`` is sent with."""
        key = (url.scheme, url.host, url.port)
        found = self._routes.get(key)
        if found is None:
            proxy = self._rules.proxy_for(url)
            found = self._direct if proxy is None else self._via[proxy]
            self._routes[key] = found
        return found

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transport_for(request.url).handle_async_request(request)

    async def aclose(self) -> None:
        for transport in (self._direct, *self._via.values()):
            await transport.aclose()

    def __repr__(self) -> str:
        count = len(self._via)
        return f"ProxyRouter({self._rules!r}, {count} prox{'y' if count == 1 else 'ies'})"


def _check_proxy(choice: Literal["httpx", "aiohttp"], url: str) -> httpx.Proxy:
    """The proxy at ``url`` for ``choice``; :class:`ConfigError` for one it cannot use."""
    try:
        proxy = httpx.Proxy(url)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot use the proxy {redact_url(url)!r} from the environment: "
                          f"{exc}") from None
    scheme = proxy.url.scheme
    if choice == "aiohttp" and scheme not in ("http", "https"):
        raise ConfigError(
            f"transport='aiohttp' cannot send through the {scheme}:// proxy "
            f"{redact_url(url)!r} from the environment; use transport='httpx' "
            "(with pip install 'httpx[socks]')"
        )
    if scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
        raise ConfigError(f"the {scheme}:// proxy {redact_url(url)!r} from the environment "
                          "needs pip install 'httpx[socks]'")
    return proxy


def _through_proxy(
    choice: Literal["httpx", "aiohttp"], url: str, limits: httpx.Limits
) -> httpx.AsyncBaseTransport:
    """A transport of kind ``choice`` that reaches every server through the proxy ``url``."""
    proxy = _check_proxy(choice, url)
    if choice == "httpx":
        return httpx.AsyncHTTPTransport(proxy=proxy, limits=limits, verify=default_ssl_context())
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(proxy=proxy, limits=limits, verify=default_ssl_context())


def make_transport(choice: TransportChoice, *, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """A fresh transport for ``choice``: ``"httpx"``, ``"aiohttp"`` or a transport instance.

    An instance is returned as it is (``limits`` then do not apply). ``"aiohttp"`` needs the
    ``fast`` extra (``pip install 'ratelimited-pipeline[fast]'``) and says so when it is
    missing. With proxy environment variables set, either is a :class:`ProxyRouter` over a
    direct transport and one per proxy (see :class:`ProxyRules`). Nothing binds to an event
    loop here: aiohttp's session is created on the first request.
    """
    if isinstance(choice, httpx.AsyncBaseTransport):
        return choice
    direct: httpx.AsyncBaseTransport
    if choice == "httpx":
        direct = ShardedTransport(limits=limits)
    elif choice == "aiohttp":
        try:
            from httpx_aiohttp import AiohttpTransport
        except ImportError as exc:
            raise ConfigError(
                "transport='aiohttp' needs the httpx-aiohttp package: "
                "pip install 'ratelimited-pipeline[fast]' (or httpx-aiohttp aiohttp)"
            ) from exc
        # Its session reads no proxy variables (trust_env is off): the router below decides.
        direct = AiohttpTransport(limits=limits, verify=default_ssl_context())
    else:
        raise ConfigError(
            f"unknown transport {choice!r}; expected 'httpx', 'aiohttp' or an "
            "httpx.AsyncBaseTransport instance"
        )
    rules = ProxyRules.from_environment()
    if not rules:
        return direct
    via = {url: _through_proxy(choice, url, limits) for url in rules.proxy_urls}
    return ProxyRouter(direct, rules, via=via)


def check_transport(choice: TransportChoice) -> None:
    """Raise :class:`ConfigError` now for a choice :func:`make_transport` would refuse later:
    an unknown name, a missing extra, or a proxy from the environment it cannot use.

    >>> check_transport("curl")
    Traceback (most recent call last):
    pipeline.errors.ConfigError: unknown transport 'curl'; expected 'httpx', 'aiohttp' or an httpx.AsyncBaseTransport instance
    """  # noqa: E501
    if isinstance(choice, httpx.AsyncBaseTransport):
        return
    if choice == "aiohttp":
        try:
            import httpx_aiohttp  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "transport='aiohttp' needs the httpx-aiohttp package: "
                "pip install 'ratelimited-pipeline[fast]' (or httpx-aiohttp aiohttp)"
            ) from exc
    elif choice != "httpx":
        raise ConfigError(
            f"unknown transport {choice!r}; expected 'httpx', 'aiohttp' or an "
            "httpx.AsyncBaseTransport instance"
        )
    for url in ProxyRules.from_environment().proxy_urls:
        _check_proxy(choice, url)


def transport_name(choice: TransportChoice) -> str:
    """A short name for reprs: ``'httpx'``, ``'aiohttp'`` or the instance's class name.

    >>> transport_name("aiohttp"), transport_name(httpx.MockTransport(lambda r: None))
    ('aiohttp', 'MockTransport')
    """
    return choice if isinstance(choice, str) else type(choice).__name__
