"""One API path with its HTTP method, its rate limits and its default payload settings; and
the way from a URL a user typed to that path (:func:`endpoint_from_url`, :func:`api_method`).

>>> ep = Endpoint("chat/completions", max_requests=500, max_tokens=30_000,
...               config={"model": "gpt-4o-mini"})
>>> ep
Endpoint('chat/completions', method='POST', max_requests=500/60s, max_tokens=30,000/60s, config={'model': 'gpt-4o-mini'})
>>> ep.rpm, ep.tpm
(500.0, 30000.0)
"""  # noqa: E501

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pipeline.core.checks import optional_positive, positive
from pipeline.core.redaction import redact_url
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.limiter import RateLimiter

__all__ = ["HTTP_METHODS", "Endpoint", "api_method", "endpoint_from_url"]

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _fmt(value: float | None, interval: float) -> str:
    if value is None:
        return "None"
    amount = f"{value:,.0f}" if value.is_integer() else f"{value:g}"
    return f"{amount}/{interval:g}s"


class Endpoint:
    """One API path (``"chat/completions"``) of a service.

    Args:
        path: the path relative to the service's base URL (leading/trailing ``/`` dropped).
        method: the HTTP verb its requests use.
        max_requests: requests allowed per ``interval`` (``None``: no request limit).
        max_tokens: tokens allowed per ``interval`` (``None``: no token limit).
        interval: seconds the two limits are counted over (60: per minute).
        limiter: a :class:`~pipeline.limiter.RateLimiter` to use instead of the default
            ``AdaptiveLimiter(max_requests, max_tokens, interval=interval)``; several
            endpoints may share one (OpenAI counts some limits per model, not per path).
            A ``"redis://HOST:PORT/DB"`` URL shares the limits with every process using it
            (a :class:`~pipeline.limiter.RedisLimiter`, key ``pipeline:<path>`` unless the
            URL says ``?key=NAME``; ``pip install "ratelimited-pipeline[redis]"``).
        adaptive: the default limiter adapts to the provider (the limits are ceilings; see
            :class:`~pipeline.limiter.AdaptiveLimiter`). ``False``: a fixed-rate
            :class:`~pipeline.limiter.TokenBucketLimiter` at exactly the limits.
        burst: seconds of the rate the default limiter's bucket holds (default 0.5: never more
            than a provider that enforces its minute limit per second can take at once).
        config: default payload settings for requests built for this endpoint
            (``{"model": "gpt-4o-mini", "temperature": 0}``), read by job builders.

    The default limiter is built on first use of :attr:`limiter`, so an ``Endpoint`` can be
    created before any event loop runs.
    """

    __slots__ = ("_limiter", "_limiter_url", "adaptive", "burst", "config", "interval",
                 "max_requests", "max_tokens", "method", "path")

    def __init__(
        self,
        path: str,
        method: str = "POST",
        *,
        max_requests: float | None = None,
        max_tokens: float | None = None,
        interval: float = 60.0,
        limiter: RateLimiter | str | None = None,
        config: Mapping[str, Any] | None = None,
        adaptive: bool = True,
        burst: float | None = None,
    ) -> None:
        if not isinstance(path, str) or not path.strip("/ "):
            raise ConfigError(f"endpoint path must be a non-empty string, got {path!r}")
        if "?" in path or "://" in path:
            raise ConfigError(
                f"endpoint path must be a bare path like 'chat/completions', got {path!r} "
                "(endpoint_from_url() gives the path of a full URL)"
            )
        verb = method.upper() if isinstance(method, str) else ""
        if verb not in HTTP_METHODS:
            raise ConfigError(f"unknown HTTP method {method!r} for endpoint {path!r}")
        interval_s = positive("interval", interval)
        self._limiter_url: str | None = None
        if isinstance(limiter, str):
            from pipeline.limiter import check_redis_url

            self._limiter_url = check_redis_url(limiter)  # a typo or a missing redis-py fails here
            limiter = None
        if limiter is not None and not callable(getattr(limiter, "acquire", None)):
            raise ConfigError(f"limiter must have an async acquire() method, got {limiter!r}")
        self.path: str = path.strip("/ ")
        self.method: str = verb
        self.max_requests: float | None = optional_positive("max_requests", max_requests)
        self.max_tokens: float | None = optional_positive("max_tokens", max_tokens)
        self.interval: float = interval_s
        self.config: Mapping[str, Any] = MappingProxyType(dict(config or {}))
        if not isinstance(adaptive, bool):
            raise ConfigError(f"adaptive must be True or False, got {adaptive!r}")
        self.adaptive = adaptive
        self.burst = optional_positive("burst", burst)
        self._limiter = limiter

    @property
    def limiter(self) -> RateLimiter:
        """The endpoint's rate limiter (the default one is created on first access)."""
        if self._limiter is None:
            # Imported here: the limiter module is independent of services, and importing it
            # lazily keeps `import pipeline.http` light.
            from pipeline.limiter import AdaptiveLimiter, TokenBucketLimiter

            bursts: dict[str, float | None] = {"burst_requests": None, "burst_tokens": None}
            if self.burst is not None:
                scale = self.burst / self.interval
                bursts = {"burst_requests": self.max_requests and self.max_requests * scale,
                          "burst_tokens": self.max_tokens and self.max_tokens * scale}
            if self._limiter_url is not None:
                from pipeline.limiter import RedisLimiter

                self._limiter = RedisLimiter(self._limiter_url, key=f"pipeline:{self.path}",
                                             max_requests=self.max_requests,
                                             max_tokens=self.max_tokens,
                                             interval=self.interval,
                                             adaptive=self.adaptive,
                                             burst_requests=bursts["burst_requests"],
                                             burst_tokens=bursts["burst_tokens"])
                return self._limiter
            cls = AdaptiveLimiter if self.adaptive else TokenBucketLimiter
            self._limiter = cls(self.max_requests, self.max_tokens, interval=self.interval,
                                **bursts)
        return self._limiter

    @property
    def rpm(self) -> float | None:
        """Requests per minute allowed (``max_requests`` scaled to 60 s)."""
        return None if self.max_requests is None else self.max_requests * 60.0 / self.interval

    @property
    def tpm(self) -> float | None:
        """Tokens per minute allowed (``max_tokens`` scaled to 60 s)."""
        return None if self.max_tokens is None else self.max_tokens * 60.0 / self.interval

    def merged_config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The default payload config with ``overrides`` on top (``None`` values kept).

        >>> Endpoint("embeddings", config={"model": "a"}).merged_config({"dimensions": 8})
        {'model': 'a', 'dimensions': 8}
        """
        merged = dict(self.config)
        if overrides:
            merged.update(overrides)
        return merged

    def __repr__(self) -> str:
        parts = [repr(self.path), f"method={self.method!r}"]
        if self.max_requests is not None or self.max_tokens is None:
            parts.append(f"max_requests={_fmt(self.max_requests, self.interval)}")
        if self.max_tokens is not None:
            parts.append(f"max_tokens={_fmt(self.max_tokens, self.interval)}")
        if not self.adaptive:
            parts.append("adaptive=False")
        if self.config:
            parts.append(f"config={dict(self.config)!r}")
        if self._limiter is not None:
            parts.append(f"limiter={self._limiter!r}")
        return f"Endpoint({', '.join(parts)})"


_VERSION_SEGMENT = re.compile(r"v\d+(?:(?:alpha|beta)\d*)?", re.IGNORECASE)


def endpoint_from_url(url: str, *, base_url: str | None = None) -> str:
    """The endpoint path of an API URL, relative to the API root.

    Handles ``http`` and ``https``, a ``/v1/`` (or ``/v1beta/``...) root, Azure's
    ``/openai/deployments/{name}/...`` and query strings. With ``base_url`` the path is taken
    relative to it instead. Raises :class:`ConfigError` for anything that is not such a URL.

    >>> endpoint_from_url("https://api.openai.com/v1/chat/completions")
    'chat/completions'
    >>> endpoint_from_url(
    ...     "https://r.openai.azure.com/openai/deployments/gpt4o/embeddings?api-version=2024-02-01")
    'embeddings'
    """
    if not isinstance(url, str) or not url.strip() or any(c.isspace() for c in url.strip()):
        raise ConfigError(f"not an http(s) API URL: {url!r}")
    url = url.strip()
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError on a garbage port
    except ValueError as exc:
        raise ConfigError(f"not an http(s) API URL: {redact_url(url)!r} ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"not an http(s) API URL: {redact_url(url)!r}; expected e.g. "
            "'https://api.openai.com/v1/chat/completions'"
        )
    segments = [s for s in parts.path.split("/") if s]
    if base_url is not None:
        base = [s for s in urllib.parse.urlsplit(base_url.strip()).path.split("/") if s]
        if segments[: len(base)] != base:
            raise ConfigError(f"{redact_url(url)!r} is not under base URL {redact_url(base_url)!r}")
        segments = segments[len(base) :]
    else:
        segments = _strip_api_root(segments)
    if not segments:
        raise ConfigError(f"no endpoint path in URL {redact_url(url)!r}")
    return "/".join(segments)


def _strip_api_root(segments: list[str]) -> list[str]:
    for i, segment in enumerate(segments):
        if segment == "deployments" and i > 0 and segments[i - 1] == "openai":
            return segments[i + 2 :]  # skip the deployment name too
        if _VERSION_SEGMENT.fullmatch(segment):
            rest = segments[i + 1 :]
            return rest[1:] if rest[:1] == ["openai"] else rest
    return segments[1:] if segments[:1] == ["openai"] else segments


def api_method(client: Any, method: str) -> Callable[..., Any]:
    """The client's bound method for an HTTP verb (any case), e.g. ``client.post``.

    Works for ``httpx.AsyncClient`` and anything with lower-case verb methods (an aiohttp
    ``ClientSession``). Raises :class:`ConfigError` for an unknown verb.

    >>> import httpx
    >>> api_method(httpx.AsyncClient(), "get").__name__
    'get'
    """
    verb = method.upper() if isinstance(method, str) else ""
    if verb not in HTTP_METHODS:
        raise ConfigError(
            f"unknown HTTP method {method!r}; expected one of {', '.join(sorted(HTTP_METHODS))}"
        )
    bound = getattr(client, verb.lower(), None)
    if not callable(bound):
        raise ConfigError(f"{type(client).__name__} has no {verb.lower()}() method")
    return bound  # type: ignore[no-any-return]
