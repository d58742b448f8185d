"""One dimension of the rate controller (requests or tokens): its rate, ceiling, CUBIC
curve and refusal span, and the plain-data form it is shared in."""

from __future__ import annotations

from pipeline.limiter._values import _INF

__all__ = ["DimensionState"]

_NEVER = -1e18  # -inf in shared data (JSON has no infinities)
_TIMES = frozenset({"empty_at", "epoch", "last_cut", "last_step", "quiet_until"})


class DimensionState:
    """The controller of one dimension (requests or tokens), in units per second."""

    __slots__ = ("admitted", "ceiling", "empty_at", "epoch", "k", "last_cut", "last_step",
                 "name", "peak", "pressed", "quiet_until", "rate", "slow_start")

    def __init__(self, name: str, ceiling: float | None, start: float | None) -> None:
        self.name = name
        self.ceiling = ceiling  # the most it may grow to (None: unknown)
        # The rate in force: the ceiling when told, else ``start`` (None: not limited at all).
        self.rate = ceiling if ceiling is not None else start
        self.slow_start = ceiling is None and start is not None
        self.peak = self.rate or 0.0  # CUBIC's W_max: the rate where the last 429 came
        self.k = 0.0  # seconds from the epoch until the curve is back at the peak
        self.epoch = -_INF  # time of the last cut (start of the growth curve)
        self.last_cut = -_INF
        # Until when the provider said, at the last cut, that it had no room (its retry-after):
        # a refusal of a request granted before then is the same event, not news.
        self.quiet_until = -_INF
        # When the last refusal on this dimension came back (the provider's bucket was empty),
        # and what succeeded since: the provider's rate, once the next refusal comes.
        self.empty_at = -_INF
        self.admitted = 0.0
        self.last_step = -_INF
        self.pressed = False  # the limiter held a request back on this dimension lately

    _SHARED = ("admitted", "ceiling", "empty_at", "epoch", "k", "last_cut", "last_step", "peak",
               "quiet_until", "rate", "slow_start")

    def export(self, offset: float) -> dict[str, float | bool | None]:
        """The state as plain data, times moved by ``offset`` (to a shared clock)."""
        out: dict[str, float | bool | None] = {}
        for name in self._SHARED:
            value = getattr(self, name)
            if name in _TIMES and value is not None:
                value = _NEVER if value == -_INF else value + offset
            out[name] = value
        return out

    def adopt(self, data: dict[str, float | bool | None], offset: float) -> None:
        """Take the state of :meth:`export` (times moved back by ``offset``)."""
        for name in self._SHARED:
            if name not in data:
                continue
            value = data[name]
            if name in _TIMES and isinstance(value, int | float):
                value = -_INF if value <= _NEVER else float(value) - offset
            setattr(self, name, value)

    def state(self) -> str:
        if self.rate is None:
            return "unlimited"
        if self.slow_start:
            return "slow start"
        if self.ceiling is not None and self.rate >= self.ceiling * (1 - 1e-9):
            return "at ceiling"
        return "recovering" if self.rate < self.peak else "probing"


def _exact(value: float, reference: float | None) -> float:
    """``reference`` when ``value`` is it up to rounding (500/60*60 is 500.00000000000006)."""
    if reference is not None and abs(value - reference) <= 1e-9 * reference:
        return reference
    return value
