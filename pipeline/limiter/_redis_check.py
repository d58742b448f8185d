"""Is this Redis usable for a shared limit? Asked once, before anything is sent.

A shared limiter that cannot reach its Redis goes on alone at a small share of the quota
(fail closed): right for a Redis that answered and then went away, wrong for one that never
could (a typo in the host, a port nothing listens on, a missing password). That is a
configuration error, and :func:`check_redis` says so before the first request: it connects
with no retries, authenticates, selects the database, PINGs and runs a small Lua script the
way the limiter does (``EVAL``, then ``EVALSHA``; it reads the server's clock
and writes one key that expires within a second), because a shared limiter lives on scripts.
Any failure is a :class:`~pipeline.errors.ConfigError` of one line: which URL (the password
masked), what is wrong, what to do.

:func:`describe_redis_error` is that classification alone, for any exception a Redis client
raised on its first contact.

>>> describe_redis_error(ConnectionRefusedError(111, "Connection refused"),
...                      "redis://:s3cret@127.0.0.1:6390/0")
'shared limit redis://:***@127.0.0.1:6390/0: connection refused (is redis-server running there, on that port?)'

With a running Redis::

    await check_redis("redis://127.0.0.1:6379/0")      # returns None, or raises ConfigError
"""  # noqa: E501

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from pipeline.core.extras import require
from pipeline.errors import ConfigError
from pipeline.limiter._redis_url import _masked, check_redis_url

__all__ = ["check_redis", "describe_redis_error"]

_FEATURE = "a limiter shared through Redis"

# The commands a shared limiter's script needs, in its order: the server's clock, a write.
_PROBE = """
local t = redis.call('TIME')
redis.call('SET', KEYS[1], t[1], 'PX', 1000)
return 1
"""

_PASSWORD_HINT = "give it as redis://:PASSWORD@HOST:PORT/DB, or redis://USER:PASSWORD@... " \
                 "for an ACL user"


async def check_redis(url: str, *, timeout: float = 2.0) -> None:
    """Raise :class:`~pipeline.errors.ConfigError` (one line) unless ``url`` is a Redis that
    a shared limiter can use: reachable within ``timeout`` seconds, the password right, the
    database there, Lua scripts allowed and writes accepted.

    No retries: a refused connection is an answer. A ``?key=NAME`` in the URL (the limiter's
    key) is honoured: the probe writes ``NAME:preflight`` (else ``pipeline:preflight``), so
    an ACL that allows the limiter's keys allows the probe.

    >>> asyncio.run(check_redis("http://127.0.0.1:6379/0"))
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: a shared limiter needs a redis://HOST:PORT/DB URL, got 'http://127.0.0.1:6379/0'
    """
    check_redis_url(url)  # a wrong scheme, or redis-py missing: its own clear line
    redis = require("redis.asyncio", feature=_FEATURE, extra="redis")
    retry = require("redis.asyncio.retry", feature=_FEATURE, extra="redis")
    backoff = require("redis.backoff", feature=_FEATURE, extra="redis")
    plain, key = _without_key(url)
    try:
        # No retries inside redis-py: a refused port is the answer, not a reason to try again.
        client = redis.Redis.from_url(plain, socket_timeout=timeout,
                                      socket_connect_timeout=timeout,
                                      retry=retry.Retry(backoff.NoBackoff(), 0))
    except (ValueError, TypeError) as exc:  # a port that is not a number, an unknown option
        raise ConfigError(f"{_prefix(url)}: not a usable Redis URL ({_scrub(exc, url)}); "
                          "the form is redis://[:PASSWORD@]HOST:PORT/DB") from None
    try:
        probe = client.register_script(_PROBE)
        try:
            await asyncio.wait_for(_probe(client, probe, f"{key or 'pipeline'}:preflight"),
                                   timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise ConfigError(_describe(exc, url, timeout)) from None
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


async def _probe(client: Any, probe: Any, key: str) -> None:
    await client.ping()
    await client.eval(_PROBE, 1, key)  # EVAL, then EVALSHA as the limiter sends it: a proxy
    await probe(keys=[key])            # may refuse either


def describe_redis_error(exc: BaseException, url: str) -> str:
    """One line for a failed first contact with the shared limiter's Redis at ``url``: which
    URL (password masked), what went wrong and what to do.

    >>> describe_redis_error(TimeoutError(), "redis://10.0.0.9:6379/0")
    'shared limit redis://10.0.0.9:6379/0: no answer in time (is the host right and reachable from here? a firewall that drops packets looks like this)'
    """  # noqa: E501
    return _describe(exc, url, None)


def _describe(exc: BaseException, url: str, timeout: float | None) -> str:
    return f"{_prefix(url)}: {_what(exc, url, timeout)}"


def _prefix(url: str) -> str:
    return f"shared limit {_masked(url)}"


def _what(exc: BaseException, url: str, timeout: float | None) -> str:
    parts = urlsplit(url)
    text = " ".join(str(e) for e in _chain(exc))
    low = text.lower()
    names = {type(e).__name__ for e in _chain(exc)}
    causes = list(_chain(exc))
    # Authentication first: redis-py's AuthenticationError is also a ConnectionError.
    if "AuthenticationError" in names or any(word in low for word in (
            "noauth", "wrongpass", "invalid username-password pair", "invalid password",
            "authentication required", "client already authenticated")):
        if not parts.password and "password=" not in parts.query:
            return f"the server wants a password and the URL gives none ({_PASSWORD_HINT})"
        return f"the password is wrong, or the user is disabled ({_PASSWORD_HINT})"
    if "without any password configured" in low or "no password is set" in low:
        return ("the URL gives a password but this server has none set (leave it out, or "
                "check that the URL names the server you mean)")
    if "db index is out of range" in low or "invalid db index" in low:
        db = parts.path.strip("/") or "0"
        return (f"database {db} does not exist on this server (it has 16 unless configured: "
                "/0 to /15; the number after the port is the database)")
    if "NoPermissionError" in names or "noperm" in low:
        return ("this Redis user may not run what a shared limiter needs (EVAL, EVALSHA, "
                "SCRIPT LOAD, TIME, HMGET, HSET, SET, EXPIRE, PUBLISH, SUBSCRIBE on its key): "
                f"grant them in its ACL ({_scrub(exc, url)})")
    if ("unknown command" in low and any(c in text.upper() for c in ("EVAL", "SCRIPT"))) or \
            "scripting" in low or "NoScriptError" in names:
        return ("this server refuses Lua scripts (EVAL/EVALSHA), which a shared limiter "
                "needs (a proxy or a renamed command?); point it at a Redis that runs them")
    if "ReadOnlyError" in names or "readonly" in low or "read only replica" in low:
        return "this server is a read-only replica: point the URL at the primary"
    if "OutOfMemoryError" in names or low.startswith("oom ") or " oom " in f" {low}":
        return ("this server is out of memory and refuses writes (maxmemory reached with "
                "the noeviction policy): free memory or raise maxmemory")
    if "BusyLoadingError" in names or "loading the dataset" in low:
        return "Redis is still loading its data: try again in a moment"
    if "MovedError" in names or "ClusterDownError" in names or "moved " in low or \
            "crossslot" in low:
        return ("this is a Redis Cluster node; a shared limit needs one Redis (a "
                "standalone server or the primary of a replicated one)")
    if any(isinstance(c, socket.gaierror) for c in causes) or any(words in low for words in (
            "name or service not known", "nodename nor servname", "name resolution",
            "getaddrinfo failed")):
        return (f"the host name {parts.hostname!r} does not resolve (a typo in the URL? "
                "unreachable DNS?)")
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError) or \
                getattr(cause, "errno", None) == errno.ECONNREFUSED or \
                "connection refused" in low or "error 111 " in low or "error 61 " in low:
            return "connection refused (is redis-server running there, on that port?)"
        if isinstance(cause, FileNotFoundError) and parts.scheme == "unix":
            return (f"no socket at {unquote(parts.path)} (is redis-server running with "
                    "that unixsocket?)")
    if any(isinstance(c, ssl.SSLError) for c in causes):
        if parts.scheme == "rediss":
            return (f"the TLS handshake failed ({_scrub(exc, url)}): rediss:// needs a "
                    "server with TLS and a certificate this machine trusts")
        return f"the connection failed in TLS ({_scrub(exc, url)})"
    if "InvalidResponse" in names or "protocol error" in low or \
            "connection closed by server" in low or \
            any(isinstance(c, ConnectionResetError | EOFError | UnicodeDecodeError)
                for c in causes):
        return ("what answers on this port does not speak the Redis protocol (is the port "
                "right? Redis listens on 6379 by default)")
    for cause in causes:
        if isinstance(cause, TimeoutError) or type(cause).__name__ == "TimeoutError":
            within = f"within {timeout:g} s" if timeout is not None else "in time"
            if parts.scheme == "rediss":
                return (f"no TLS handshake {within}: rediss:// needs a server with TLS (use "
                        "redis:// for one without)")
            return (f"no answer {within} (is the host right and reachable from here? a "
                    "firewall that drops packets looks like this)")
    for cause in causes:
        code = getattr(cause, "errno", None)
        if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"cannot reach the host ({_scrub(cause, url)})"
    name = type(exc).__name__
    detail = _scrub(exc, url)
    return f"{name}: {detail}" if detail else name


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes (``__cause__``, else ``__context__``), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _without_key(url: str) -> tuple[str, str | None]:
    """The URL without ``key=NAME`` in its query (redis-py does not know it), and NAME."""
    head, _, query = url.partition("?")
    if not query:
        return url, None
    query, hash_, fragment = query.partition("#")
    pairs = [pair for pair in query.split("&") if pair]
    keys = [unquote(pair[4:]) for pair in pairs if pair.startswith("key=")]
    rest = "&".join(pair for pair in pairs if not pair.startswith("key="))
    return f"{head}{'?' + rest if rest else ''}{hash_}{fragment}", (keys[-1] if keys else None)


def _scrub(exc: BaseException, url: str) -> str:
    """The message of ``exc``, with the URL's password masked wherever it appears."""
    text = str(exc).strip()
    parts = urlsplit(url)
    secrets = [unquote(parts.password)] if parts.password else []
    secrets += [unquote(pair[9:]) for pair in parts.query.split("&")
                if pair.startswith("password=") and len(pair) > 9]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text.replace(url, _masked(url))
