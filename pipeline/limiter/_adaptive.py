"""The adaptive policy over a local token bucket: :class:`AdaptiveLimiter`.

The rates follow the provider's answers through :class:`~pipeline.limiter._control.RateController`
(slow start, cuts from measured admission, CUBIC growth, stated limits as facts, the in-flight
cap); see that module for how. The bucket is :class:`TokenBucketLimiter`'s.
"""

from __future__ import annotations

import msgspec

from pipeline.errors import ConfigError
from pipeline.limiter._control import RateController
from pipeline.limiter._dimension import _exact
from pipeline.limiter._queue import _now
from pipeline.limiter._token_bucket import TokenBucketLimiter
from pipeline.limiter._values import LimiterSnapshot, _check_rate

__all__ = ["AdaptiveLimiter", "check_adaptive"]


class AdaptiveLimiter(TokenBucketLimiter):
    """A :class:`TokenBucketLimiter` whose rates follow the provider's answers (the default).

    Args:
        max_requests, max_tokens: ceilings per ``interval`` (the user's ``rpm``/``tpm`` when
            ``interval`` is 60). ``None``: unknown; the requests rate is then discovered from
            ``start_rate`` up, the tokens rate from the first 429 that names tokens.
        interval: seconds the ceilings are counted over.
        burst_requests, burst_tokens: fixed bucket sizes, which start full; by default half a
            second of the *effective* rate (the bucket shrinks with the rate after a 429),
            starting empty when the limit is told: the first requests go out at the rate,
            not in a burst on top of it (see below).
        start_rate: requests per second to start from when no ``max_requests`` is given.
        beta: the factor a 429 cuts the rate (and an overload the in-flight cap) to.
        recovery: seconds the rate takes to climb back to where the last 429 came.
        min_rate: the lowest requests per second a cut may reach.
        start_in_flight: requests in flight at first; the cap doubles every round trip while
            it is what holds requests back, until a gateway refuses one for overload.
        time_scale: divides the controller's own durations (slow-start steps, its meters, the
            gap that makes 429s one round), for simulations in compressed time
            (``pipeline bench``); 1 for real time.

    ``adaptive=False`` on a service (or a plain :class:`TokenBucketLimiter`) turns all of this
    off, for comparison. The state is in :meth:`snapshot` and the repr:

    >>> limiter = AdaptiveLimiter(max_requests=6_000)
    >>> limiter
    <AdaptiveLimiter requests=0/6,000 per min (ceiling 6,000, at ceiling) tokens=unlimited in_flight=0/8 waiters=0>
    >>> AdaptiveLimiter()
    <AdaptiveLimiter requests=10/1,200 per min (ceiling unknown, slow start) tokens=unlimited in_flight=0/8 waiters=0>
    """  # noqa: E501

    __slots__ = ()

    def __init__(self, max_requests: float | None = None, max_tokens: float | None = None, *,
                 interval: float = 60.0, burst_requests: float | None = None,
                 burst_tokens: float | None = None, start_rate: float = 20.0,
                 beta: float = 0.7, recovery: float = 2.0, min_rate: float = 1 / 60,
                 start_in_flight: int = 8, time_scale: float = 1.0) -> None:
        scale = _check_rate("time_scale", time_scale)
        assert scale is not None
        start, ceiling_r, ceiling_t, interval_s = check_adaptive(
            max_requests, max_tokens, interval, start_rate, beta, recovery, min_rate,
            start_in_flight)
        recovery_s = _check_rate("recovery", recovery)
        floor = _check_rate("min_rate", min_rate)
        assert recovery_s is not None and floor is not None
        rates = [None if rate is None else _exact(rate * interval_s, told)
                 for rate, told in ((ceiling_r if ceiling_r is not None else start,
                                     max_requests), (ceiling_t, max_tokens))]
        super().__init__(rates[0], rates[1], interval=interval,
                         burst_requests=burst_requests, burst_tokens=burst_tokens)
        self._control = RateController(self, ceiling_r, ceiling_t, start=start, beta=beta,
                                       recovery=recovery_s, min_rate=floor, time_scale=scale)
        self._limits_changed()
        self._slotted = True
        self._max_in_flight = float(start_in_flight)
        # The default bucket starts empty. A burst at the start, on top of the rate, is what a
        # fixed window that opens with the run cannot hold (a 429 at its end, then a pause and
        # a cut), and with limits told too high it empties a provider's one-second bucket
        # before the first answers are back, with everything then in flight refused. Starting
        # empty costs at most half a second once. A burst the user asked for (burst_*=)
        # starts full, and so does slow start's (half a second of ``start_rate``).
        if burst_requests is None and ceiling_r is not None:
            self._level_r = 0.0
        if burst_tokens is None:
            self._level_t = 0.0

    # ----------------------------------------------------------------- reading the state
    @property
    def _controller(self) -> RateController:
        """The rate controller, which ``__init__`` always sets: ``_control`` is ``None`` only
        on the plain buckets and while the base class is being built (see :meth:`_capacity`)."""
        control = self._control
        if control is None:
            raise RuntimeError(f"{type(self).__name__} used before its __init__ finished")
        return control

    @property
    def ceiling_requests(self) -> float | None:
        """The most ``max_requests`` may grow to (per ``interval``; ``None``: unknown)."""
        ceiling = self._control.ceilings[0] if self._control is not None else None
        return None if ceiling is None else ceiling * self._interval

    @property
    def ceiling_tokens(self) -> float | None:
        """The most ``max_tokens`` may grow to (per ``interval``; ``None``: unknown)."""
        ceiling = self._control.ceilings[1] if self._control is not None else None
        return None if ceiling is None else ceiling * self._interval

    @property
    def max_in_flight(self) -> float:
        """The in-flight cap in force (grown in slow start, cut by overload answers)."""
        return self._max_in_flight

    def snapshot(self) -> LimiterSnapshot:
        snap = super().snapshot()
        states = self._controller.states()
        return msgspec.structs.replace(
            snap, ceiling_requests=self.ceiling_requests, ceiling_tokens=self.ceiling_tokens,
            mode=" / ".join(states) if states else "unlimited",
            # The cap is news only once a gateway has refused a request for overload.
            max_in_flight=self._max_in_flight if self._controller.overload_seen else None)

    def __repr__(self) -> str:
        snap = self.snapshot()
        per = "min" if self._interval == 60.0 else f"{self._interval:g}s"
        parts = []
        for index, avail, limit in ((0, snap.requests_available, snap.max_requests),
                                    (1, snap.tokens_available, snap.max_tokens)):
            name, ceiling_s, state = self._controller.describe(index)
            if limit is None or avail is None:
                parts.append(f"{name}=unlimited")
                continue
            ceiling = "unknown" if ceiling_s is None else f"{ceiling_s * self._interval:,.0f}"
            level = f"{avail:,.0f}" if abs(avail) >= 10 else f"{avail:.2g}"
            parts.append(f"{name}={level}/{limit:,.0f} per {per} (ceiling {ceiling}, {state})")
        parts.append(f"in_flight={snap.in_flight}/{self._max_in_flight:.0f}")
        parts.append(f"waiters={snap.waiters}")
        if snap.paused_for > 0:
            parts.append(f"paused {snap.paused_for:.2g}s")
        return f"<{type(self).__name__} {' '.join(parts)}>"

    # ----------------------------------------------------------------- policy hooks
    def _delay(self, requests: float, tokens: float, now: float) -> float:
        delay = super()._delay(requests, tokens, now)
        if delay > 0:
            # Which dimension holds the request back: only that one has earned growth.
            self._controller.press(
                bool(requests and self._burst_r is not None and
                     self._level_r < min(requests, self._burst_r)),
                bool(tokens and self._burst_t is not None and
                     self._level_t < min(tokens, self._burst_t)))
        return delay

    def _drain(self, name: str, now: float) -> None:
        self._refill(now)
        if name == "requests":
            self._level_r = min(self._level_r, 0.0)
        else:
            self._level_t = min(self._level_t, 0.0)

    def _capacity(self) -> tuple[float | None, float | None]:
        cap_r, cap_t = super()._capacity()
        if self._control is None:  # still being built
            return cap_r, cap_t
        if cap_r is not None and self.ceiling_requests is not None:
            cap_r = max(cap_r, self.ceiling_requests)
        if cap_t is not None and self.ceiling_tokens is not None:
            cap_t = max(cap_t, self.ceiling_tokens)
        return cap_r, cap_t

    def adapt(self) -> None:
        """Recompute the growth curve now (the limiter also does this as answers arrive)."""
        self._controller.adapt(_now())


def check_adaptive(max_requests: float | None, max_tokens: float | None, interval: float,
                   start_rate: float, beta: float, recovery: float, min_rate: float,
                   start_in_flight: int) -> tuple[float, float | None, float | None, float]:
    """Validate the adaptive settings; (start, ceiling_r, ceiling_t per second, interval)."""
    start = _check_rate("start_rate", start_rate)
    _check_rate("recovery", recovery)
    _check_rate("min_rate", min_rate)
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 < beta < 1:
        raise ConfigError(f"beta must be between 0 and 1, got {beta!r}")
    if isinstance(start_in_flight, bool) or not isinstance(start_in_flight, int) or \
            start_in_flight < 1:
        raise ConfigError(f"start_in_flight must be an int >= 1, got {start_in_flight!r}")
    assert start is not None
    ceiling_r = _check_rate("max_requests", max_requests)
    ceiling_t = _check_rate("max_tokens", max_tokens)
    interval_s = _check_rate("interval", interval) or 60.0
    return (start, None if ceiling_r is None else ceiling_r / interval_s,
            None if ceiling_t is None else ceiling_t / interval_s, interval_s)
