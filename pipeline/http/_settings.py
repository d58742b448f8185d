"""A service's settings, checked once: its base URL, and the per-endpoint ``limits`` turned
into :class:`~pipeline.http.endpoint.Endpoint` arguments (``rpm``/``tpm`` per interval)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from pipeline.core.redaction import redact_url
from pipeline.errors import ConfigError
from pipeline.http.limits import FIELDS

__all__: list[str] = []

_LIMIT_KEYS = frozenset(FIELDS)


def _check_base_url(base_url: str) -> str:
    if not isinstance(base_url, str):
        raise ConfigError(f"base_url must be a string, got {base_url!r}")
    text = base_url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(
            f"base_url must be an http(s) URL without a query, like "
            f"'https://api.openai.com/v1'; got {redact_url(base_url)!r}"
        )
    return text


def _endpoint_kwargs(path: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(spec) - _LIMIT_KEYS
    if unknown:
        raise ConfigError(
            f"unknown limit setting(s) {sorted(unknown)} for {path!r}; "
            f"expected some of {sorted(_LIMIT_KEYS)}"
        )
    kwargs = dict(spec)
    interval = kwargs.get("interval", 60.0)
    for per_minute, name in (("rpm", "max_requests"), ("tpm", "max_tokens")):
        if per_minute in kwargs:
            if name in kwargs:
                raise ConfigError(f"give {per_minute} or {name} for {path!r}, not both")
            value = kwargs.pop(per_minute)
            if value is not None:
                numbers = (value, interval)
                if any(isinstance(v, bool) or not isinstance(v, int | float) for v in numbers):
                    raise ConfigError(f"{per_minute} and interval for {path!r} must be numbers")
                value = value * interval / 60.0
            kwargs[name] = value
    return kwargs
