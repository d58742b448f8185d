"""One endpoint's limits and limiter settings as a value: :class:`EndpointLimits`.

A service's ``limits=`` maps endpoint paths to these (or to plain dicts with the same keys,
checked the same way), overriding the service-wide ``rpm``/``tpm``, ``adaptive``, ``burst``
and ``limiter`` for that path only.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from pipeline.errors import ConfigError

__all__ = ["EndpointLimits"]


class EndpointLimits(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """Limits and limiter settings for one endpoint; a field left out is the service's.

    Attributes:
        rpm, tpm: requests and tokens per minute (``None``: that dimension is not limited
            here, even when the service sets it).
        max_requests, max_tokens: the same per ``interval`` seconds (give one spelling of a
            limit, not both).
        interval: the seconds ``max_requests``/``max_tokens`` count over (default 60).
        adaptive: whether the limiter adapts to the provider (see the service's ``adaptive``).
        burst: seconds of the rate granted at once after idling.
        limiter: a :class:`~pipeline.limiter.RateLimiter` made by hand, or a
            ``"redis://..."`` URL shared with other processes.
        config: request fields sent to this endpoint by default.
        method: the HTTP verb (default: the service's for the path, else POST).

    >>> EndpointLimits(rpm=3_000, tpm=1_000_000)
    EndpointLimits(rpm=3000, tpm=1000000)
    >>> EndpointLimits.of({"rpm": 500}).settings()
    {'rpm': 500}
    >>> EndpointLimits.of({"rmp": 500})
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: unknown limit setting 'rmp' (did you mean 'rpm'?); \
expected some of adaptive, burst, config, interval, limiter, max_requests, max_tokens, \
method, rpm, tpm
    """

    rpm: float | UnsetType | None = UNSET
    tpm: float | UnsetType | None = UNSET
    max_requests: float | UnsetType | None = UNSET
    max_tokens: float | UnsetType | None = UNSET
    interval: float | UnsetType = UNSET
    adaptive: bool | UnsetType = UNSET
    burst: float | UnsetType | None = UNSET
    limiter: Any = UNSET
    config: Mapping[str, Any] | UnsetType | None = UNSET
    method: str | UnsetType = UNSET

    @classmethod
    def of(cls, spec: EndpointLimits | Mapping[str, Any], path: str | None = None
           ) -> EndpointLimits:
        """``spec`` as an :class:`EndpointLimits` (a dict's keys checked: an unknown one is
        a :class:`~pipeline.errors.ConfigError` naming the closest known one and ``path``)."""
        if isinstance(spec, EndpointLimits):
            return spec
        if not isinstance(spec, Mapping):
            where = f" for {path!r}" if path else ""
            raise ConfigError(f"limits{where} must be an EndpointLimits or a dict, got {spec!r}")
        for key in spec:
            if key not in FIELDS:
                close = difflib.get_close_matches(str(key), sorted(FIELDS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                where = f" for {path!r}" if path else ""
                raise ConfigError(f"unknown limit setting {key!r}{where}{hint}; expected some "
                                  f"of {', '.join(sorted(FIELDS))}")
        return cls(**spec)

    def settings(self) -> dict[str, Any]:
        """The fields given (a ``None`` included: it means "not limited here"), as keywords."""
        return {name: value for name in FIELDS
                if (value := getattr(self, name)) is not UNSET}


#: The keys a ``limits=`` entry may have.
FIELDS: tuple[str, ...] = EndpointLimits.__struct_fields__
