"""Redis URLs for a shared limiter: checked, their ``?key=`` split off, masked for display."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

from pipeline.core.extras import require
from pipeline.errors import ConfigError

__all__ = ["check_redis_url"]

_FEATURE = "a limiter shared through Redis"


def check_redis_url(url: str) -> str:
    """``url`` if it is a Redis URL and redis-py is installed; else a clear error."""
    if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        shown = _masked(url) if isinstance(url, str) else url
        raise ConfigError(f"a shared limiter needs a redis://HOST:PORT/DB URL, got {shown!r}")
    require("redis.asyncio", feature=_FEATURE, extra="redis")
    return url


def _split_key(url: str) -> tuple[str, str | None]:
    """Take ``key=NAME`` out of the URL's query (redis-py does not know it)."""
    parts = urlsplit(url)
    pairs = [pair for pair in parts.query.split("&") if pair]
    keys = [pair[4:] for pair in pairs if pair.startswith("key=")]
    rest = "&".join(pair for pair in pairs if not pair.startswith("key="))
    return urlunsplit(parts._replace(query=rest)), (unquote(keys[-1]) if keys else None)


def _masked(url: str) -> str:
    """The URL with its password masked, given as ``:pw@`` or ``?password=pw``.

    >>> _masked("redis://:s3cret@h:6379/0?password=s3cret&db=1")
    'redis://:***@h:6379/0?password=***&db=1'
    """
    parts = urlsplit(url)
    if parts.password:
        user, _, _ = parts.netloc.rpartition("@")[0].partition(":")
        parts = parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}")
        url = urlunsplit(parts)
    if "password=" in parts.query:  # by hand: urlunsplit drops the "//" of unix:///path
        head, _, query = url.partition("?")
        query, hash_, fragment = query.partition("#")
        query = "&".join("password=***" if pair.startswith("password=") else pair
                         for pair in query.split("&"))
        url = f"{head}?{query}{hash_}{fragment}"
    return url
