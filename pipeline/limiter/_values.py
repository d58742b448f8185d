"""The limiters' small shared values: the default settings, :data:`KEEP`,
:class:`LimiterSnapshot` and the checks of their arguments."""

from __future__ import annotations

import math

import msgspec

from pipeline.core.checks import optional_positive
from pipeline.errors import ConfigError

__all__ = ["DEFAULT_BURST_SECONDS", "DEFAULT_COOLDOWN", "KEEP", "MAX_PAUSE", "LimiterSnapshot"]

#: The bucket a limiter keeps by default, in seconds of its rate. Providers enforce a per-minute
#: limit over windows as short as a second (OpenAI: "60,000 requests/minute may be enforced as
#: 1,000 requests/second"); half a second leaves the other half of such a bucket for network
#: jitter, so a client pacing at exactly the limit is not refused for an early packet.
DEFAULT_BURST_SECONDS = 0.5
#: How long everyone pauses after a 429 that did not say how long to wait (static limiters).
DEFAULT_COOLDOWN = 1.0
#: The longest pause one 429 puts on everyone, in seconds. Rate limits per minute (what
#: ``pause`` is for) free room within a minute: OpenAI's ``x-ratelimit-reset-*`` and a fixed
#: window's ``Retry-After`` never say more than 60 s. A longer wait is a daily cap, a proxy's
#: guess or a wrong clock (``Retry-After: 86400``, an HTTP date in 9999): honouring it would
#: freeze the run with no word. Waiting a minute at a time instead costs one refused request
#: per minute when the server meant it, and the run's ``max_wait`` then fails the rows.
MAX_PAUSE = 60.0

_INF = math.inf
_SLACK = 1e-9  # relative tolerance for floating-point rounding of bucket levels


class _Keep:
    """Sentinel type: "leave this setting as it is"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


# The limiter modules' name for the shared check (None: no limit on that dimension).
_check_rate = optional_positive


def _check_amount(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class LimiterSnapshot(msgspec.Struct, frozen=True):
    """A point-in-time view of a limiter, for dashboards, logs and tests.

    ``None`` on a dimension means that dimension is not limited. ``max_requests`` and
    ``max_tokens`` are the limits in force now (an adaptive limiter's effective rate);
    ``ceiling_*`` are the most it may grow to (the user's or the provider's limits).
    """

    requests_available: float | None
    tokens_available: float | None
    max_requests: float | None
    max_tokens: float | None
    interval: float
    waiters: int
    paused_for: float
    next_wake_in: float | None
    in_flight: int = 0
    max_in_flight: float | None = None
    ceiling_requests: float | None = None
    ceiling_tokens: float | None = None
    mode: str = "static"

