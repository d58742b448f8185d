"""One rate controller for every bucket: the rates a limiter grants at, learnt from outcomes.

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
  ``pipeline.http.signals.shared_pause``: a whole-second ``Retry-After`` is rounded up).
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
* **Overload is told apart from a random server error.** An answer that says so (a 503 or
  429 whose text says "overloaded" or "too many concurrent", Anthropic's 529) is an overload;
  a bare 503 is one only when it is no accident: at least four in the last second and at
  least a quarter of the answers there, or one at the level where a cap was found before (or
  above it) (a gateway that caps requests in flight refuses
  everything past the cap at once; a server failing 3% of requests at random does not).
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
  moment refuses all together (a rate doubled past what a server can answer lets the cap
  follow the queue, and what is then in flight is refused as one round). TCP Vegas and
  HyStart++ read the same signal from rising delay. A queue that lasts past the ten seconds
  becomes the yardstick, and the cap grows again.

The controller drives whichever bucket a limiter keeps (``AdaptiveLimiter``'s local token
bucket, ``RedisLimiter``'s shared one) through three calls
on it: ``_set_rates`` (the rates, per second), ``_drain`` (a refusal emptied the provider's
bucket) and ``_wake``. Its state (:meth:`RateController.export`) is plain data, so a
shared limiter keeps one copy of it for every process on the quota.

The AWS SDKs' "adaptive" retry mode is the same idea on one dimension (a client-side token
bucket whose rate follows CUBIC on throttling); this one runs on requests and tokens at once.

Each dimension's state is a :class:`~pipeline.limiter._dimension.DimensionState`; what the
provider admitted lately and how long round trips take are measured by the controller's base,
:class:`~pipeline.limiter._meter.AnswerMeter`.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.limiter._dimension import DimensionState, _exact
from pipeline.limiter._meter import _RTT_SAMPLES, AnswerMeter
from pipeline.limiter._outcome import OVERLOADED, THROTTLED, UNAVAILABLE, Outcome
from pipeline.limiter._queue import _now
from pipeline.limiter._values import _INF

__all__ = ["RateController"]

_SLOW_START_STEP = 0.25  # seconds between doublings in slow start
_UPDATE_EVERY = 0.05  # seconds between rate recomputations during growth
_MIN_CUT_GAP = 0.05  # seconds after a cut in which a grant's 429 is not a new signal
# Between two refusals the provider admitted its rate times the time between them. Under
# 50 ms that is a few requests (+-1 is too coarse: the next round's 429s are at least the cut
# gap apart anyway); past a few seconds a provider's bucket may have filled up and thrown
# refill away (an underestimate).
_MIN_SPAN = 0.05
_MAX_SPAN = 4.0
# Bare 503s in the last second that make an in-flight cap (not a random failure): so many,
# and such a share of the answers (a cap refuses all that is past it at once; 3% of random
# failures reach a quarter of a second's answers almost never).
_STORM_MIN = 4
_STORM_SHARE = 0.25


class RateController(AnswerMeter):
    """The rates (per second) and in-flight cap a limiter grants at, learnt from outcomes.

    One controller drives one limiter's bucket (``limiter``: it calls its ``_set_rates``,
    ``_drain`` and ``_wake`` and reads and sets its in-flight count and cap). The arguments
    are :class:`~pipeline.limiter.AdaptiveLimiter`'s, the ceilings and ``start`` per second;
    ``time_scale`` divides the controller's own durations (slow-start steps, the meter's
    spans, the cut gap), for simulations that run time ``time_scale`` times faster.
    """

    __slots__ = (
        "_beta",
        "_dims",
        "_lim",
        "_min_rate",
        "_overload_cut",
        "_overload_peak",
        "_recovery",
        "_s_max_span",
        "_s_min_cut_gap",
        "_s_min_span",
        "_s_slow_start_step",
        "_s_update_every",
        "_step_answers",
        "_updated",
        "_user_ceiling_r",
        "_user_ceiling_t",
        "dirty",
        "urgent",
    )

    def __init__(self, limiter: Any, ceiling_r: float | None, ceiling_t: float | None, *,
                 start: float | None, beta: float, recovery: float, min_rate: float,
                 time_scale: float = 1.0) -> None:
        self._lim = limiter
        # Its own durations, divided by ``time_scale`` (a simulation in compressed time).
        k = time_scale
        super().__init__(time_scale)
        self._s_slow_start_step = _SLOW_START_STEP / k
        self._s_update_every = _UPDATE_EVERY / k
        self._s_min_cut_gap = _MIN_CUT_GAP / k
        self._s_min_span = _MIN_SPAN / k
        self._s_max_span = _MAX_SPAN / k
        self._dims = (DimensionState("requests", ceiling_r, start),
                      DimensionState("tokens", ceiling_t, None))
        self._user_ceiling_r = ceiling_r
        self._user_ceiling_t = ceiling_t
        self._beta = float(beta)
        self._recovery = recovery
        self._min_rate = min_rate
        self._updated = -_INF
        self._overload_cut = -_INF
        self._overload_peak = _INF
        self._step_answers = 0.0  # successes since the last slow-start step
        #: The state changed since it was last shared (a shared limiter sends it).
        self.dirty = False
        #: ... and the change is a cut or a fact, which every process should hear at once.
        self.urgent = False

    # ----------------------------------------------------------------- reading the state
    @property
    def rates(self) -> tuple[float | None, float | None]:
        """The rates in force, per second (``None``: not limited)."""
        return self._dims[0].rate, self._dims[1].rate

    @property
    def ceilings(self) -> tuple[float | None, float | None]:
        """The most the rates may grow to, per second (``None``: unknown)."""
        return self._dims[0].ceiling, self._dims[1].ceiling

    @property
    def overload_seen(self) -> bool:
        """Whether a gateway has refused a request for overload (the cap is news then)."""
        return self._overload_peak != _INF

    def states(self) -> list[str]:
        """Each limited dimension's phase: slow start, at ceiling, recovering, probing."""
        return list(dict.fromkeys(d.state() for d in self._dims if d.rate is not None))

    def describe(self, index: int) -> tuple[str, float | None, str]:
        """(name, ceiling per second, state) of a dimension, for reprs."""
        dim = self._dims[index]
        return dim.name, dim.ceiling, dim.state()

    def press(self, requests: bool, tokens: bool) -> None:
        """The limiter held a request back on these dimensions: they have earned growth."""
        if requests:
            self._dims[0].pressed = True
        if tokens:
            self._dims[1].pressed = True

    def counted(self, requests: float, tokens: float, now: float) -> None:
        """Answers other processes on the same quota had (a shared limiter reports them):
        they count in what the provider admitted, not in this process's round trips."""
        if not requests and not tokens:
            return
        self._meter(now, requests, tokens)
        self._dims[0].admitted += requests
        self._dims[1].admitted += tokens
        self._step_answers += requests

    def adapt(self, now: float) -> None:
        """Recompute the growth curve now."""
        self._grow(now)

    def export(self, offset: float = 0.0) -> dict[str, Any]:
        """The shared part of the state as plain data (times moved by ``offset``)."""
        return {"r": self._dims[0].export(offset), "t": self._dims[1].export(offset)}

    def adopt(self, data: dict[str, Any], offset: float = 0.0) -> list[str]:
        """Take a state from :meth:`export` (another process's), and apply its rates.

        Returns the dimensions it cut since the state this one held: the provider's bucket
        was empty then, so what this process holds of that dimension should go too.
        """
        cut: list[str] = []
        for dim, key in zip(self._dims, ("r", "t"), strict=True):
            part = data.get(key)
            if isinstance(part, dict):
                before = dim.last_cut
                dim.adopt(part, offset)
                if dim.last_cut > before:
                    cut.append(dim.name)
        self._apply(_now())
        return cut

    def _unavailable_storm(self, now: float) -> int | None:
        """A bare 503 came back: whether 503s are many enough now to be a cap, not chance.
        ``None`` if not; else how many the last round had refused (0: not counted)."""
        self._meter(now, 0.0, 0.0)  # rotate the buckets if due
        self._m_503 += 1.0
        refused, outcomes = self._note_round(now, True)
        # In the last round: a cap refuses what a round sends past it, all at once.
        if refused >= _STORM_MIN and refused >= _STORM_SHARE * outcomes:
            return refused
        storm = self._m_503 + self._m_prev_503
        answers = self._m_ok_r + self._m_prev_r
        if storm >= _STORM_MIN and storm >= _STORM_SHARE * (storm + answers):
            return 0
        # Where a cap was found before, a refusal at that level (or above) is the cap again;
        # below it, it is chance (taking it as a cap would ratchet the cap down to 1).
        if self.overload_seen and self._lim._in_flight + 1 >= self._overload_peak:
            return 0
        return None

    def facts(self, limit_r: float | None, limit_t: float | None, now: float) -> bool:
        """Limits the provider stated (per minute): the ceilings, never above the user's."""
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
            self.dirty = self.urgent = True
            self._apply(now)
        return changed

    def answered(self, granted_at: float, slot: bool, tokens: float, now: float) -> None:
        """A request granted at ``granted_at`` was answered, ``tokens`` charged."""
        rtt = now - granted_at
        self._meter(now, 1.0, tokens)
        self._note_round(now, False)
        if len(self._rtts) < _RTT_SAMPLES:
            self._rtts.append(rtt)
        self._dims[0].admitted += 1.0
        self._dims[1].admitted += tokens
        self._step_answers += 1.0
        self.dirty = True
        cap = self._lim._max_in_flight
        # The cap is what holds requests back, and more in flight would not only queue.
        if slot and self._lim._in_flight + 1 >= cap and not self._queueing(rtt):
            if self._overload_peak == _INF:
                # Slow start: one more per success doubles the cap every round trip.
                self._lim._max_in_flight = cap + 1.0
            else:
                # Additive increase: one more per round trip of successes, up to just below
                # where the last refusal came; past it, one more per 20 round trips (a
                # gateway's cap rarely moves: probe it gently).
                step = 1.0 if cap < self._overload_peak - 2 else 0.05
                self._lim._max_in_flight = cap + step / max(1.0, cap)
        if now - self._updated >= self._s_update_every:
            self._grow(now)

    def refused(self, granted_at: float, outcome: Outcome, now: float) -> None:
        """A request granted at ``granted_at`` was refused (throttled, overloaded, ...)."""
        kind = outcome.kind
        if kind == OVERLOADED:
            self._overloaded(granted_at, now, follow=True)
            return
        if kind == UNAVAILABLE:
            refused = self._unavailable_storm(now)
            if refused is not None:
                # Only a guess that it is a cap: one cut a round, never following what is
                # left in flight down (a stalled client sees little in flight as it reads a
                # pile of answers, and random 503s would walk the cap down to 1), but by
                # what the round had refused.
                self._overloaded(granted_at, now, follow=False, refused=refused)
            return
        if kind != THROTTLED:
            return
        dimension = outcome.dimension
        stated = None if outcome.stated_limit is None or dimension is None else \
            (dimension, outcome.stated_limit)
        changed = False
        wait = min(outcome.wait or 0.0, self._lim._max_pause)  # 3600 s is no window's end
        for dim in self._dims:
            if dimension is not None and dim.name != dimension:
                continue
            if dimension is None and dim.rate is None:
                continue  # an unnamed 429 does not invent a token limit
            if granted_at < dim.quiet_until:
                # Granted before the time the provider gave at the last cut: a window that is
                # still full (a sliding or fixed window frees room in lumps, not as a bucket
                # refills), not a sign that the new rate is too high, and what it admits
                # meanwhile is not its rate. Measured against a sliding-window server: three
                # cuts in 0.15 s took the rate from 70 to 9 requests/s, the run to 2.7x its
                # pace. (A bucket's retry-after-ms, a request's worth of refill, is shorter
                # than the cut gap, and leaves the rules above as they were.)
                continue
            if stated is not None:
                changed = self._stated(dim, stated[1], granted_at, now) or changed
            else:
                changed = self._cut(dim, granted_at, now) or changed
            if dim.last_cut == now and wait > self._s_min_cut_gap:
                dim.quiet_until = now + wait
        if changed:
            self._apply(now)
            # The provider just said its bucket is empty: so is ours. Otherwise what ours
            # saved up would go out at once into the empty one, and draw the next 429.
            for dim in self._dims:
                if dim.last_cut == now:
                    self._lim._drain(dim.name, now)
            self.dirty = self.urgent = True

    # ----------------------------------------------------------------- the controller
    def _refused(self, dim: DimensionState, now: float, granted_at: float) -> float | None:
        """A refusal on ``dim`` came back: what the provider admitted per second since the
        last one, if that span is measurable; this one starts the next span."""
        span = now - dim.empty_at
        # Answers are counted when they arrive: over a span shorter than a round trip, how
        # they queued on the way back says more than the provider's rate (a busy machine's
        # loopback round trips reach 0.1-0.2 s).
        shortest = max(self._s_min_span, now - granted_at)
        if span < shortest:
            return None  # refusals closer together extend the span instead of restarting it
        rate = dim.admitted / span if span <= self._s_max_span else None
        dim.empty_at, dim.admitted = now, 0.0
        return rate

    def _stated(self, dim: DimensionState, per_minute: float, granted_at: float,
                now: float) -> bool:
        """A 429 stated the limit: a fact, like a header (the ceiling, never above the
        user's). A rate above it drops to it and the bucket empties; no cut below it."""
        was = dim.rate
        if dim.name == "requests":
            self.facts(per_minute, None, now)
        else:
            self.facts(None, per_minute, now)
        if granted_at < dim.last_cut + self._s_min_cut_gap:
            return False  # the same round as the last cut or fact: answered already
        if was is not None and dim.rate is not None and dim.rate >= was * (1 - 1e-9):
            # Told the limit we run at, and still refused: the provider counts differently
            # (or someone else spends the same key); cut as for any 429.
            return self._cut(dim, granted_at, now)
        self._refused(dim, now, granted_at)
        dim.last_cut = now
        self._restart_curve(dim, now)
        dim.pressed = False
        return True

    def _cut(self, dim: DimensionState, granted_at: float, now: float) -> bool:
        between = self._refused(dim, now, granted_at)
        beta = self._beta
        if granted_at < dim.last_cut + self._s_min_cut_gap:
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

    def _floor(self, dim: DimensionState) -> float:
        return self._min_rate if dim.name == "requests" else 1.0

    def _curvature(self, dim: DimensionState) -> float:
        # The cube's scale: a cut to beta x the peak climbs back in ``recovery`` seconds.
        return dim.peak * (1 - self._beta) / self._recovery ** 3

    def _restart_curve(self, dim: DimensionState, now: float) -> None:
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
                if step >= self._s_slow_start_step:
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

    def _overloaded(self, granted_at: float, now: float, follow: bool = True,
                    refused: int = 0) -> None:
        # What was in flight with this request when it was refused (it is settled already).
        peak = self._lim._in_flight + 1
        if granted_at < self._overload_cut + self._s_min_cut_gap:
            # The same round of refusals: as they come back, what is still in flight is what
            # the gateway accepted. Follow it down (when the refusal surely is the cap's);
            # this is no new signal.
            if follow and peak - 1 < self._lim._max_in_flight:
                self._lim._max_in_flight = max(1.0, float(peak - 1))
                self._overload_peak = min(self._overload_peak, peak)
            elif refused:
                self._through(now)
            return
        self._overload_cut = now
        if not follow and self._lim._max_in_flight != _INF:
            # A guessed cap (bare 503s): the level is the cap in force, not what happens to be
            # in flight as a stalled client reads its answers (that walked the cap to 1).
            peak = max(2, math.ceil(self._lim._max_in_flight))
        self._overload_peak = peak
        # A gentle cut (0.9, and at least two below the refused level): a cap on requests in
        # flight is exact, unlike a rate's 429s, but a gateway may still count a request we
        # have seen answered, so the level just below the refusal is often one too many too.
        cap = min(math.floor(0.9 * peak), peak - 2)
        if self._lim._max_in_flight != _INF:
            cap = min(cap, math.ceil(self._lim._max_in_flight) - 1)
        self._lim._max_in_flight = max(1.0, float(cap))
        if refused:
            self._through(now)
        self._lim._wake()

    def _through(self, now: float) -> None:
        """A storm of bare 503s: the gateway's cap is about what gets through it, when that
        is lower than the cap in force. Taken again as the round's refusals come back; a cap
        found so is probed gently from there, not climbed back to the level that drew the
        storm.

        What gets through is what is still in flight as a refusal comes back (the refused
        come back at once, the accepted a round trip later) or, when more, the answers of
        the last round trip: a client that stalls reads a pile of answers before it sends
        again, and sees little in flight as it does (that alone walked a cap down to 1).
        """
        through = max(self._lim._in_flight, self._answered_lately(now))
        if 1 <= through < self._lim._max_in_flight:
            self._lim._max_in_flight = float(through)
            self._overload_peak = min(self._overload_peak, through + 2)

    def _apply(self, now: float) -> None:
        """Put the rates into the limiter's bucket (per its interval)."""
        interval = self._lim._interval
        rate_r, rate_t = (None if d.rate is None else
                          _exact(d.rate * interval, None if d.ceiling is None else
                                 d.ceiling * interval) for d in self._dims)
        if rate_r == self._lim._max_requests and rate_t == self._lim._max_tokens:
            return
        self.dirty = True
        self._lim._set_rates(rate_r, rate_t, now)
