"""Parse and format the short durations rate-limit headers use ("20ms", "1.5s", "6m0s").

OpenAI's ``x-ratelimit-reset-*`` headers use Go-style durations; ``Retry-After`` uses plain
seconds. Both are handled here so the limiter, the simulator and the API utilities agree.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNIT_SECONDS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_WHOLE = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:h|ms|us|µs|ns|m|s))+")


def parse_duration(text: str | bytes | float | int | None) -> float | None:
    """Seconds in a duration such as ``"20ms"``, ``"1.5s"``, ``"6m0s"`` or ``"2"``.

    Returns ``None`` for anything that is not a finite, non-negative duration (missing, ``"-1"``,
    garbage), so callers can simply ignore headers they cannot use.

    >>> parse_duration("6m0s"), parse_duration("20ms"), parse_duration("2"), parse_duration("x")
    (360.0, 0.02, 2.0, None)
    """
    if text is None:
        return None
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    if isinstance(text, int | float):
        value = float(text)
        return value if math.isfinite(value) and value >= 0 else None
    text = text.strip()
    if not text or len(text) > 64:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    if not _WHOLE.fullmatch(text):
        return None
    total = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _PART.findall(text))
    return total if math.isfinite(total) else None


def format_duration(seconds: float) -> str:
    """Format seconds the way OpenAI's reset headers do.

    >>> format_duration(0.02), format_duration(1.5), format_duration(360), format_duration(3725)
    ('20ms', '1.5s', '6m0s', '1h2m5s')
    """
    seconds = max(0.0, float(seconds))
    if seconds < 1.0:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60.0:
        return f"{round(seconds, 3):g}s"
    hours, rest = divmod(seconds, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    secs_text = f"{round(secs, 3):g}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{secs_text}"
    return f"{int(minutes)}m{secs_text}"
