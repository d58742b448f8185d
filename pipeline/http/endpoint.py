"""One API path with its HTTP method, its rate limits and its default payload settings.

>>> ep = Endpoint("chat/completions", max_requests=500, max_tokens=30_000,
...               config={"model": "gpt-4o-mini"})
>>> ep
Endpoint('chat/completions', method='POST', max_requests=500/60s, max_tokens=30,000/60s, config={'model': 'gpt-4o-mini'})
>>> ep.rpm, ep.tpm
(500.0, 30000.0)
"""  # noqa: E501

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pipeline.api_utils import HTTP_METHODS
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.limiter import RateLimiter

__all__ = ["Endpoint"]


def _rate(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number or None, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


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
                "(use pipeline.api_utils.endpoint_from_url for a full URL)"
            )
        verb = method.upper() if isinstance(method, str) else ""
        if verb not in HTTP_METHODS:
            raise ConfigError(f"unknown HTTP method {method!r} for endpoint {path!r}")
        interval_s = _rate("interval", interval)
        assert interval_s is not None
        self._limiter_url: str | None = None
        if isinstance(limiter, str):
            from pipeline.limiter._redis import check_url

            self._limiter_url = check_url(limiter)  # a typo or a missing redis-py fails here
            limiter = None
        if limiter is not None and not callable(getattr(limiter, "acquire", None)):
            raise ConfigError(f"limiter must have an async acquire() method, got {limiter!r}")
        self.path: str = path.strip("/ ")
        self.method: str = verb
        self.max_requests: float | None = _rate("max_requests", max_requests)
        self.max_tokens: float | None = _rate("max_tokens", max_tokens)
        self.interval: float = interval_s
        self.config: Mapping[str, Any] = MappingProxyType(dict(config or {}))
        if not isinstance(adaptive, bool):
            raise ConfigError(f"adaptive must be True or False, got {adaptive!r}")
        self.adaptive = adaptive
        self.burst = _rate("burst", burst)
        self._limiter = limiter

    @property
    def limiter(self) -> RateLimiter:
        """The endpoint's rate limiter (the default one is created on first access)."""
        if self._limiter is None:
            # Imported here: the limiter module is independent of services, and importing it
            # lazily keeps `import pipeline.endpoint` light.
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
