"""Argument checks shared by every constructor: one wording for one mistake.

Each returns the value as the type the caller stores (``float`` for numbers) or raises
:class:`~pipeline.errors.ConfigError` naming the argument and what it got. ``bool`` is refused
where a number is expected (``True`` is an ``int`` to Python, never a rate to a user).

>>> positive("rpm", 500), optional_positive("tpm", None), non_negative("max_wait", 0)
(500.0, None, 0.0)
>>> positive_int("attempts", 0)
Traceback (most recent call last):
...
pipeline.errors.ConfigError: attempts must be an int >= 1, got 0
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.errors import ConfigError

__all__ = ["non_negative", "optional_positive", "percentile", "positive", "positive_int"]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return float(value)


def positive(name: str, value: Any) -> float:
    """``value`` as a float, if it is a finite number > 0."""
    number = _number(name, value)
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return number


def optional_positive(name: str, value: Any) -> float | None:
    """Like :func:`positive`, with ``None`` meaning "not set" (no limit, the default...)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number or None, got {value!r}")
    return positive(name, value)


def non_negative(name: str, value: Any) -> float:
    """``value`` as a float, if it is a finite number >= 0."""
    number = _number(name, value)
    if not (math.isfinite(number) and number >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def positive_int(name: str, value: Any) -> int:
    """``value``, if it is an ``int`` >= 1 (a count: attempts, concurrency)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
    return value


def percentile(sorted_values: list[float], q: float, *, upper: bool = False) -> float:
    """The ``q`` quantile (0..1) of already sorted values, interpolated; 0.0 when empty.

    ``upper=True`` takes the value at or above the position instead of interpolating: a
    timeout sized from the p99 must cover the slowest answers actually seen, not a value
    between them and the typical ones.

    The one definition behind the status table's, the timeout's and the bench's percentiles.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5), percentile([1.0, 2.0, 3.0, 4.0], 0.5, upper=True)
    (2.5, 3.0)
    >>> percentile([], 0.99)
    0.0
    """
    if not sorted_values:
        return 0.0
    position = (len(sorted_values) - 1) * q
    if upper:
        return sorted_values[min(len(sorted_values) - 1, math.ceil(position))]
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
