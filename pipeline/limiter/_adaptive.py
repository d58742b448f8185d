"""The adaptive policy: a token bucket whose rate follows what the provider really allows.

The user's ``rpm``/``tpm`` are ceilings, often wrong and sometimes unknown. A provider may
enforce its minute limit per second, share the key with other clients, cap requests in flight,
or say nothing but 429. So the limiter treats its rates as estimates and corrects them from
outcomes, the way TCP congestion control treats its window:

* **Facts first.** ``x-ratelimit-limit-*`` headers set the ceiling (never above the user's);
  ``x-ratelimit-remaining-*`` lowers what is available now (the base class does that).
* **Slow start** when a dimension's limit is unknown: begin at ``start_rate`` requests per
  second and double every quarter second while the limiter is what holds requests back and
  answers come back at half the rate at least (a rate is doubled only once it is used).
* **A 429 that states the limit** ("... tokens per min (TPM): Limit 180000, Used ...", as
  OpenAI words it) is a fact like a header: the ceiling becomes that limit and the rate
  drops straight to it (the overshoot is explained; no further cut).
* **Multiplicative decrease** on other 429s: the rate drops to ``beta`` x the lower of the rate
  and the rate the provider really admits, for the dimension the 429 names (requests or
  tokens; both when it does not say). One cut per round: a 429 for a request granted before
  the last cut is old news and starts no new cut, so a burst of 429s from one overshoot is
  one signal, not fifty.
* **A full window is not news.** A 429 for a request granted before the time the last cut's
  429 gave (its retry-after) changes nothing: a sliding or fixed window stays full until
  then whatever the new rate, and what it admits meanwhile is not its rate; the curve does
  not grow until then either. Everyone pauses for the sure part of a retry-after (see
  ``shared_pause``: a whole-second ``Retry-After`` is rounded up).
* **What the provider admits** is measured between two 429s: a refused request means the
  provider's bucket was empty when it arrived, so what it admitted between two refusals
  (the successes answered in between, over a round trip at least) is its rate times the
  time between them, whatever we sent (the bucket cannot have saved up more than that, in
  spans of up to a few seconds). Before a second refusal there is only what
  succeeded over the last second, which also counts whatever the provider had saved up
  (a whole second's worth for OpenAI's one-second buckets): a first cut of a limit nobody
  told us about goes to ``beta`` x 0.7 of it, and the same round's later 429s correct it
  down once they span enough time to measure the rate between refusals.
* **CUBIC growth** after a cut: the rate climbs back toward the rate where the 429 came
  (quickly at first, flattening near it), in ``recovery`` seconds, then probes above it
  slowly; it never exceeds the ceiling. Growth only happens while the limiter is actually
  what holds requests back (an idle or concurrency-bound run learns nothing about the rate).
  A rate that was cut again below its last peak sets the next peak lower (CUBIC's fast
  convergence), so repeated 429s settle instead of oscillating.
* **In-flight cap**: it starts at ``start_in_flight`` and doubles every round trip while it
  binds (TCP's slow start, so a first burst cannot flood a gateway that caps requests in
  flight). An overload answer (503, or 429 ``overloaded``) cuts the number of
  requests in flight to 0.9 x what was in flight (two fewer at least); each success then adds
  ``1/cap`` (one more per round trip) up to that, and a twentieth of that past it,
  as Netflix's concurrency-limits and TCP's AIMD do.
* **Queueing stops the in-flight cap from growing.** A success adds to the cap only when its
  round trip (grant to answer) is at most twice the typical round trip of the last ten
  seconds (the lowest of the half-second medians, as BBR keeps its lowest round trip over
  ten seconds) plus 5 ms. A server that queues rather than refuses (a self-hosted vLLM, or
  any server past its capacity) shows itself as round trips that grow with what is in
  flight; more in flight there buys no throughput, only requests that a limit found at that
  moment refuses all together. Measured on the
  simulator not told its token limit: a rate doubled past what the server could answer
  (320 to 640 requests/s) let the cap follow the queue from 11 to 55 in 0.2 s, and the 48
  then in flight were refused as one round (35-45 429s a run of 600 rows; about 10 with
  the cap held). TCP Vegas and HyStart++ read the same signal from rising delay. A queue
  that lasts past the ten seconds becomes the yardstick, and the cap grows again.

The AWS SDKs' "adaptive" retry mode is the same idea on one dimension (a client-side token
bucket whose rate follows CUBIC on throttling); this one runs on requests and tokens at once.
"""

from __future__ import annotations

import math
import re

from pipeline.errors import APIError, RateLimitError, ServerError
from pipeline.limiter._base import (
    _INF,
    Lease,
    LimiterSnapshot,
    _check_rate,
    _now,
)
from pipeline.limiter._token_bucket import TokenBucketLimiter

__all__ = ["AdaptiveLimiter"]

_SLOW_START_STEP = 0.25  # seconds between doublings in slow start
_UPDATE_EVERY = 0.05  # seconds between rate recomputations during growth
_METER_SPAN = 0.5  # seconds per bucket of the success-rate meter (two buckets kept)
_MIN_CUT_GAP = 0.05  # seconds after a cut in which a grant's 429 is not a new signal
_RTT_BUCKETS = 20  # half-second medians of round trips kept (ten seconds, as BBR keeps its min)
_RTT_SAMPLES = 128  # round trips kept per half second for its median (the first ones)
_QUEUE_FACTOR = 2.0  # a round trip past this x the typical one (plus the slack) is queueing
_QUEUE_SLACK = 0.005  # seconds: loopback round trips of 2-3 ms jitter by that much
# Between two refusals the provider admitted its rate times the time between them. Under
# 50 ms that is a few requests (+-1 is too coarse: the next round's 429s are at least the cut
# gap apart anyway); past a few seconds a provider's bucket may have filled up and thrown
# refill away (an underestimate).
_MIN_SPAN = 0.05
_MAX_SPAN = 4.0
_STATED_LIMIT = re.compile(
    # The number must end there: "Limit 1e+06" (a server printing floats) is not a limit of 1.
    r"(requests|tokens) per min(?:ute)?\b[^0-9]{0,40}?\blimit:? ?([0-9][0-9,]*)"
    r"(?![0-9]|\.[0-9]|[eE][+-]?[0-9])",
    re.IGNORECASE)


class _Dimension:
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

    def state(self) -> str:
        if self.rate is None:
            return "unlimited"
        if self.slow_start:
            return "slow start"
        if self.ceiling is not None and self.rate >= self.ceiling * (1 - 1e-9):
            return "at ceiling"
        return "recovering" if self.rate < self.peak else "probing"


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

    ``adaptive=False`` on a service (or a plain :class:`TokenBucketLimiter`) turns all of this
    off, for comparison. The state is in :meth:`snapshot` and the repr:

    >>> limiter = AdaptiveLimiter(max_requests=6_000)
    >>> limiter
    <AdaptiveLimiter requests=0/6,000 per min (ceiling 6,000, at ceiling) tokens=unlimited in_flight=0/8 waiters=0>
    >>> AdaptiveLimiter()
    <AdaptiveLimiter requests=10/1,200 per min (ceiling unknown, slow start) tokens=unlimited in_flight=0/8 waiters=0>
    """  # noqa: E501

    __slots__ = ("_beta", "_dims", "_m_ok_r", "_m_ok_t", "_m_prev_r", "_m_prev_t",
                 "_m_start", "_min_rate", "_overload_cut", "_overload_peak", "_recovery",
                 "_rtt_medians", "_rtts", "_step_answers", "_updated", "_user_ceiling_r",
                 "_user_ceiling_t")

    _uses_slots = True

    def __init__(self, max_requests: float | None = None, max_tokens: float | None = None, *,
                 interval: float = 60.0, burst_requests: float | None = None,
                 burst_tokens: float | None = None, start_rate: float = 20.0,
                 beta: float = 0.7, recovery: float = 2.0, min_rate: float = 1 / 60,
                 start_in_flight: int = 8) -> None:
        start = _check_rate("start_rate", start_rate)
        recovery_s = _check_rate("recovery", recovery)
        floor = _check_rate("min_rate", min_rate)
        if not isinstance(beta, int | float) or not 0 < beta < 1:
            from pipeline.errors import ConfigError

            raise ConfigError(f"beta must be between 0 and 1, got {beta!r}")
        assert start is not None and recovery_s is not None and floor is not None
        ceiling_r = _check_rate("max_requests", max_requests)
        ceiling_t = _check_rate("max_tokens", max_tokens)
        interval_s = _check_rate("interval", interval) or 60.0
        self._dims = (
            _Dimension("requests", None if ceiling_r is None else ceiling_r / interval_s,
                       start),
            _Dimension("tokens", None if ceiling_t is None else ceiling_t / interval_s, None),
        )
        self._user_ceiling_r = self._dims[0].ceiling
        self._user_ceiling_t = self._dims[1].ceiling
        self._beta = float(beta)
        self._recovery = recovery_s
        self._min_rate = floor
        self._updated = -_INF
        self._overload_cut = -_INF
        self._overload_peak = _INF
        if isinstance(start_in_flight, bool) or not isinstance(start_in_flight, int) or \
                start_in_flight < 1:
            from pipeline.errors import ConfigError

            raise ConfigError(f"start_in_flight must be an int >= 1, got {start_in_flight!r}")
        self._m_start = -_INF
        self._m_ok_r = self._m_ok_t = self._m_prev_r = self._m_prev_t = 0.0
        self._step_answers = 0.0  # successes since the last slow-start step
        self._rtts: list[float] = []  # round trips of this meter bucket's successes
        self._rtt_medians: list[float] = []  # medians of the last few buckets, oldest first
        rates = [None if d.rate is None else _exact(d.rate * interval_s, told)
                 for d, told in zip(self._dims, (ceiling_r, ceiling_t), strict=True)]
        super().__init__(rates[0], rates[1], interval=interval,
                         burst_requests=burst_requests, burst_tokens=burst_tokens)
        self._max_in_flight = float(start_in_flight)
        # The default bucket starts empty. A burst at the start, on top of the rate, is what a
        # fixed window that opens with the run cannot hold (a 429 at its end, then a pause and
        # a cut), and with limits told too high it empties a provider's one-second bucket
        # before the first answers are back, with everything then in flight refused (at
        # 0.1 s round trips on a busy machine, 20-40 requests). Starting empty costs at most
        # half a second once. A burst the user asked for (burst_*=) starts full, and so does
        # slow start's (half a second of ``start_rate``: a few requests).
        if burst_requests is None and ceiling_r is not None:
            self._level_r = 0.0
        if burst_tokens is None:
            self._level_t = 0.0

    # ----------------------------------------------------------------- reading the state
    @property
    def ceiling_requests(self) -> float | None:
        """The most ``max_requests`` may grow to (per ``interval``; ``None``: unknown)."""
        ceiling = self._dims[0].ceiling
        return None if ceiling is None else ceiling * self._interval

    @property
    def ceiling_tokens(self) -> float | None:
        """The most ``max_tokens`` may grow to (per ``interval``; ``None``: unknown)."""
        ceiling = self._dims[1].ceiling
        return None if ceiling is None else ceiling * self._interval

    @property
    def max_in_flight(self) -> float:
        """The in-flight cap in force (grown in slow start, cut by overload answers)."""
        return self._max_in_flight

    def snapshot(self) -> LimiterSnapshot:
        import msgspec

        snap = super().snapshot()
        states = list(dict.fromkeys(d.state() for d in self._dims if d.rate is not None))
        return msgspec.structs.replace(
            snap, ceiling_requests=self.ceiling_requests, ceiling_tokens=self.ceiling_tokens,
            mode=" / ".join(states) if states else "unlimited",
            # The cap is news only once a gateway has refused a request for overload.
            max_in_flight=None if self._overload_peak == _INF else self._max_in_flight)

    def __repr__(self) -> str:
        snap = self.snapshot()
        per = "min" if self._interval == 60.0 else f"{self._interval:g}s"
        parts = []
        for dim, avail, limit in ((self._dims[0], snap.requests_available, snap.max_requests),
                                  (self._dims[1], snap.tokens_available, snap.max_tokens)):
            if limit is None or avail is None:
                parts.append(f"{dim.name}=unlimited")
                continue
            ceiling = "unknown" if dim.ceiling is None else \
                f"{dim.ceiling * self._interval:,.0f}"
            level = f"{avail:,.0f}" if abs(avail) >= 10 else f"{avail:.2g}"
            parts.append(f"{dim.name}={level}/{limit:,.0f} per {per} "
                         f"(ceiling {ceiling}, {dim.state()})")
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
            if requests and self._burst_r is not None and self._level_r < min(
                    requests, self._burst_r):
                self._dims[0].pressed = True
            if tokens and self._burst_t is not None and self._level_t < min(
                    tokens, self._burst_t):
                self._dims[1].pressed = True
        return delay

    def _header_limits(self, limit_r: float | None, limit_t: float | None, now: float) -> bool:
        # The provider's stated limits are facts: they set the ceilings (never above the
        # user's), and a dimension still guessing jumps straight to them.
        changed = False
        for dim, limit, user in ((self._dims[0], limit_r, self._user_ceiling_r),
                                 (self._dims[1], limit_t, self._user_ceiling_t)):
            if limit is None:
                continue
            ceiling = limit / 60.0
            if user is not None:
                ceiling = min(ceiling, user)
            if dim.ceiling is not None and abs(dim.ceiling - ceiling) <= 1e-9 * ceiling:
                continue
            dim.ceiling = ceiling
            if dim.slow_start or dim.rate is None:
                dim.rate = dim.peak = ceiling
                dim.slow_start = False
            elif dim.rate > ceiling:
                dim.rate = ceiling
            dim.peak = min(dim.peak, ceiling) if dim.peak else ceiling
            changed = True
        if changed:
            self._apply(now)
        return changed

    def _on_success(self, lease: Lease, tokens: float | None, now: float) -> None:
        charged = lease.tokens if tokens is None else tokens
        rtt = now - lease.granted_at
        self._meter(now, charged, rtt)
        self._dims[0].admitted += 1.0
        self._dims[1].admitted += charged
        self._step_answers += 1.0
        cap = self._max_in_flight
        # The cap is what holds requests back, and more in flight would not only queue.
        if lease.slot and self._in_flight + 1 >= cap and not self._queueing(rtt):
            if self._overload_peak == _INF:
                # Slow start: one more per success doubles the cap every round trip.
                self._max_in_flight = cap + 1.0
            else:
                # Additive increase: one more per round trip of successes, up to just below
                # where the last refusal came; past it, one more per 20 round trips (a
                # gateway's cap rarely moves: probe it gently).
                step = 1.0 if cap < self._overload_peak - 2 else 0.05
                self._max_in_flight = cap + step / max(1.0, cap)
        if now - self._updated >= _UPDATE_EVERY:
            self._grow(now)

    def _on_error(self, lease: Lease, error: BaseException, now: float) -> None:
        if _is_overload(error):
            self._overloaded(lease, now)
            return
        if not isinstance(error, RateLimitError):
            return
        dimension = _throttled_dimension(error)
        stated = _stated_limit(error)
        if stated is not None:
            dimension = stated[0]
        changed = False
        wait = min(error.retry_after or 0.0, self._max_pause)  # 3600 s is no window's end
        for dim in self._dims:
            if dimension is not None and dim.name != dimension:
                continue
            if dimension is None and dim.rate is None:
                continue  # an unnamed 429 does not invent a token limit
            if lease.granted_at < dim.quiet_until:
                # Granted before the time the provider gave at the last cut: a window that is
                # still full (a sliding or fixed window frees room in lumps, not as a bucket
                # refills), not a sign that the new rate is too high, and what it admits
                # meanwhile is not its rate. Measured against a sliding-window server: three
                # cuts in 0.15 s took the rate from 70 to 9 requests/s, the run to 2.7x its
                # pace. (A bucket's retry-after-ms, a request's worth of refill, is shorter
                # than the cut gap, and leaves the rules above as they were.)
                continue
            if stated is not None:
                changed = self._stated(dim, stated[1], lease, now) or changed
            else:
                changed = self._cut(dim, lease, now) or changed
            if dim.last_cut == now and wait > _MIN_CUT_GAP:
                dim.quiet_until = now + wait
        if changed:
            self._apply(now)
            # The provider just said its bucket is empty: so is ours. Otherwise what ours
            # saved up would go out at once into the empty one, and draw the next 429.
            for dim in self._dims:
                if dim.last_cut == now:
                    self._drain(dim.name, now)
        if error.retry_after is not None:
            # The provider said when: nobody sends before then (a fixed window's reset), for
            # the part of it that is sure (a Retry-After in whole seconds is rounded up).
            self._pause_after(error, lease)

    # ----------------------------------------------------------------- the controller
    def _meter(self, now: float, tokens: float, rtt: float) -> None:
        """Count a success in the two-bucket meter of what the provider admitted."""
        if now - self._m_start >= _METER_SPAN:
            recent = now - self._m_start < 2 * _METER_SPAN
            self._rotate_rtts(recent)
            self._m_prev_r = self._m_ok_r if recent else 0.0
            self._m_prev_t = self._m_ok_t if recent else 0.0
            self._m_ok_r = self._m_ok_t = 0.0
            self._m_start = now
        self._m_ok_r += 1.0
        self._m_ok_t += tokens
        if len(self._rtts) < _RTT_SAMPLES:
            self._rtts.append(rtt)

    def _rotate_rtts(self, recent: bool) -> None:
        """Close a meter bucket: keep the median of its round trips (a few answers at least)."""
        rtts = self._rtts
        if not recent:
            self._rtt_medians.clear()  # an idle spell: what was typical then may not be now
        if len(rtts) >= 4:
            rtts.sort()
            self._rtt_medians.append(rtts[len(rtts) // 2])
            del self._rtt_medians[:-_RTT_BUCKETS]
        rtts.clear()

    def _queueing(self, rtt: float) -> bool:
        """Whether a round trip this long says requests are queueing somewhere.

        The yardstick is the lowest half-second median of the last ten seconds: robust to
        the first answers' connection set-up, and to latencies that vary by nature (an LLM's
        answers take as long as they are), which move a median little.
        """
        if not self._rtt_medians:
            return False
        return rtt > _QUEUE_FACTOR * min(self._rtt_medians) + _QUEUE_SLACK

    def _measured(self, now: float) -> tuple[float, float] | None:
        """Successes per second (requests, tokens) over about the last second, if known."""
        if self._m_start == -_INF:
            return None
        age = now - self._m_start
        if age >= 2 * _METER_SPAN:
            return 0.0, 0.0
        span = age + _METER_SPAN
        if span < _METER_SPAN:
            return None
        return ((self._m_ok_r + self._m_prev_r) / span, (self._m_ok_t + self._m_prev_t) / span)

    def _drain(self, name: str, now: float) -> None:
        self._refill(now)
        if name == "requests":
            self._level_r = min(self._level_r, 0.0)
        else:
            self._level_t = min(self._level_t, 0.0)

    def _refused(self, dim: _Dimension, now: float, lease: Lease) -> float | None:
        """A refusal on ``dim`` came back: what the provider admitted per second since the
        last one, if that span is measurable; this one starts the next span."""
        span = now - dim.empty_at
        # Answers are counted when they arrive: over a span shorter than a round trip, how
        # they queued on the way back says more than the provider's rate (a busy machine's
        # loopback round trips reach 0.1-0.2 s).
        shortest = max(_MIN_SPAN, now - lease.granted_at)
        if span < shortest:
            return None  # refusals closer together extend the span instead of restarting it
        rate = dim.admitted / span if span <= _MAX_SPAN else None
        dim.empty_at, dim.admitted = now, 0.0
        return rate

    def _stated(self, dim: _Dimension, per_minute: float, lease: Lease, now: float) -> bool:
        """A 429 stated the limit: a fact, like a header (the ceiling, never above the
        user's). A rate above it drops to it and the bucket empties; no cut below it."""
        was = dim.rate
        if dim.name == "requests":
            self._header_limits(per_minute, None, now)
        else:
            self._header_limits(None, per_minute, now)
        if lease.granted_at < dim.last_cut + _MIN_CUT_GAP:
            return False  # the same round as the last cut or fact: answered already
        if was is not None and dim.rate is not None and dim.rate >= was * (1 - 1e-9):
            # Told the limit we run at, and still refused: the provider counts differently
            # (or someone else spends the same key); cut as for any 429.
            return self._cut(dim, lease, now)
        self._refused(dim, now, lease)
        dim.last_cut = now
        self._restart_curve(dim, now)
        dim.pressed = False
        return True

    def _cut(self, dim: _Dimension, lease: Lease, now: float) -> bool:
        between = self._refused(dim, now, lease)
        beta = self._beta
        if lease.granted_at < dim.last_cut + _MIN_CUT_GAP:
            # Granted before the last cut (or just after it, before its effect could reach
            # the provider): that overshoot was answered already, no new cut. But when the
            # round's refusals span enough time, they measure what the provider admits: a
            # first cut made from a guess comes down to it.
            if between is None or dim.rate is None or beta * between >= dim.rate:
                return False
            dim.peak = min(dim.peak, between)
            dim.rate = max(self._floor(dim), beta * between)
            self._restart_curve(dim, now)
            return True
        measured = self._measured(now)
        admitted = None if measured is None else measured[0 if dim.name == "requests" else 1]
        unknown = dim.rate is None or dim.slow_start
        measured_between = between is not None and not unknown
        if measured_between:
            # Measured between this refusal and the last: no guess about saved-up bursts.
            admitted = between
        if dim.rate is None:
            # A token limit nobody told us about: start from what got through.
            if not admitted:
                return False
            base = admitted
        elif admitted is None:
            base = dim.rate
        elif unknown:
            # Slow start doubled the rate on no evidence: what got through is the evidence.
            base = min(dim.rate, admitted) if admitted else dim.rate
        else:
            # Never below half the rate in one round: an idle or bursty second says little.
            base = min(dim.rate, max(admitted, dim.rate / 2))
        # Fast convergence: a peak lower than the last one means capacity is shrinking (or was
        # overestimated): aim the next climb below it. A first estimate counts what the
        # provider had saved up as well: aim below it too.
        # (A rate measured between refusals is the provider's own: the climb aims at it.)
        dim.peak = base * (1 + beta) / 2 if unknown or (
            base < dim.peak and not (measured_between and base == admitted)) else base
        dim.rate = max(self._floor(dim), base * beta * (0.7 if unknown else 1.0))
        dim.slow_start = False
        dim.last_cut = now
        self._restart_curve(dim, now)
        dim.pressed = False
        return True

    def _floor(self, dim: _Dimension) -> float:
        return self._min_rate if dim.name == "requests" else 1.0

    def _curvature(self, dim: _Dimension) -> float:
        # The cube's scale: a cut to beta x the peak climbs back in ``recovery`` seconds.
        return dim.peak * (1 - self._beta) / self._recovery ** 3

    def _restart_curve(self, dim: _Dimension, now: float) -> None:
        """Start the growth curve at the rate in force (not at beta x the peak: a cut that
        went lower, or a correction, would otherwise jump back up at the first step)."""
        dim.epoch = now
        gap = dim.peak - (dim.rate or 0.0)
        dim.k = (gap / self._curvature(dim)) ** (1 / 3) if gap > 0 and dim.peak > 0 else 0.0

    def _grow(self, now: float) -> None:
        elapsed = now - self._updated if self._updated != -_INF else 0.0
        self._updated = now
        changed = False
        for dim in self._dims:
            if dim.rate is None:
                continue
            if not dim.pressed or now < dim.quiet_until:
                # Not what held requests back lately, or the provider said it has no room
                # yet: freeze the curve (learn nothing).
                dim.epoch += elapsed
                continue
            dim.pressed = False
            ceiling = dim.ceiling if dim.ceiling is not None else _INF
            if dim.rate >= ceiling:
                continue
            if dim.slow_start:
                step = now - dim.last_step
                if step >= _SLOW_START_STEP:
                    # Double only a rate that was used: answers at half of it at least over
                    # the step. A client that cannot keep up (a busy machine, round trips
                    # growing) would otherwise double a rate on paper, then send it all at
                    # once into a provider it has just emptied.
                    used = dim.last_step == -_INF or \
                        self._step_answers >= 0.5 * dim.rate * step
                    dim.last_step, self._step_answers = now, 0.0
                    if used:
                        dim.rate = min(dim.rate * 2.0, ceiling)
                        dim.peak = dim.rate
                        changed = True
                continue
            # CUBIC: rate(t) = peak + c (t - k)^3, through the cut rate at t = 0, flat at k.
            c = self._curvature(dim)
            t = now - dim.epoch
            target = dim.peak + c * (t - dim.k) ** 3
            if target > dim.rate:
                dim.rate = min(target, ceiling)
                changed = True
        if changed:
            self._apply(now)

    def _overloaded(self, lease: Lease, now: float) -> None:
        # What was in flight with this request when it was refused (it is settled already).
        peak = self._in_flight + 1
        if lease.granted_at < self._overload_cut + _MIN_CUT_GAP:
            # The same round of refusals: as they come back, what is still in flight is what
            # the gateway accepted. Follow it down; this is no new signal.
            if peak - 1 < self._max_in_flight:
                self._max_in_flight = max(1.0, float(peak - 1))
                self._overload_peak = min(self._overload_peak, peak)
            return
        self._overload_cut = now
        self._overload_peak = peak
        # A gentle cut (0.9, and at least two below the refused level): a cap on requests in
        # flight is exact, unlike a rate's 429s, but a gateway may still count a request we
        # have seen answered, so the level just below the refusal is often one too many too.
        cap = min(math.floor(0.9 * peak), peak - 2)
        if self._max_in_flight != _INF:
            cap = min(cap, math.ceil(self._max_in_flight) - 1)
        self._max_in_flight = max(1.0, float(cap))
        self._wake()

    def _apply(self, now: float) -> None:
        """Put the controllers' rates into the bucket."""
        interval = self._interval
        rate_r, rate_t = (None if d.rate is None else
                          _exact(d.rate * interval, None if d.ceiling is None else
                                 d.ceiling * interval) for d in self._dims)
        if rate_r == self._max_requests and rate_t == self._max_tokens:
            return
        self._max_requests = rate_r
        self._max_tokens = rate_t
        self._rates_changed(now)
        self._wake()

    def _capacity(self) -> tuple[float | None, float | None]:
        cap_r, cap_t = super()._capacity()
        if cap_r is not None and self.ceiling_requests is not None:
            cap_r = max(cap_r, self.ceiling_requests)
        if cap_t is not None and self.ceiling_tokens is not None:
            cap_t = max(cap_t, self.ceiling_tokens)
        return cap_r, cap_t

    def adapt(self) -> None:
        """Recompute the growth curve now (the limiter also does this as answers arrive)."""
        self._grow(_now())


def _exact(value: float, reference: float | None) -> float:
    """``reference`` when ``value`` is it up to rounding (500/60*60 is 500.00000000000006)."""
    if reference is not None and abs(value - reference) <= 1e-9 * reference:
        return reference
    return value


def _is_overload(error: BaseException) -> bool:
    """An answer that says "too many at once" rather than "too many per minute"."""
    if isinstance(error, ServerError):
        return error.status == 503
    if isinstance(error, RateLimitError):
        text = f"{error.code or ''} {error.message}".lower()
        return "overload" in text or "concurren" in text
    return False


def _stated_limit(error: APIError) -> tuple[str, float] | None:
    """The per-minute limit a 429's message states, as ``(dimension, limit)``, if it does.

    OpenAI: "Rate limit reached for gpt-4o in organization org-... on tokens per min (TPM):
    Limit 30000, Used 29937, Requested 385. Please try again in 644ms." (older: "... on
    requests per min. Limit: 3 / min. ..."). Daily limits ("requests per day (RPD)") are not
    minute rates and are left alone; Azure's and plain-text 429s state no number.
    """
    found = _STATED_LIMIT.search(error.message)
    if found is None:
        return None
    try:
        limit = float(found.group(2).replace(",", ""))
    except ValueError:
        return None
    if not limit > 0 or math.isinf(limit):
        return None
    return found.group(1).lower(), limit


def _throttled_dimension(error: APIError) -> str | None:
    """Which limit a 429 says was hit: ``"requests"``, ``"tokens"`` or ``None`` (unsaid)."""
    body = error.body
    inner = body.get("error") if isinstance(body, dict) else None
    if isinstance(inner, dict) and inner.get("type") in ("requests", "tokens"):
        return str(inner["type"])
    text = error.message.lower()
    if "tokens per min" in text or "(tpm)" in text or "token rate limit" in text:
        return "tokens"
    if "requests per min" in text or "(rpm)" in text or "call rate limit" in text or \
            "request rate limit" in text:
        return "requests"
    headers = error.headers
    if headers.get("x-ratelimit-remaining-tokens") == "0":
        return "tokens"
    if headers.get("x-ratelimit-remaining-requests") == "0":
        return "requests"
    return None
