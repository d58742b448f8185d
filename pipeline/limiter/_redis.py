"""One quota shared by many processes and machines: a token bucket kept in Redis.

One API key is one quota, however many processes spend it. :class:`RedisLimiter` keeps the
bucket of both dimensions (requests and tokens) in one Redis hash and changes it in one Lua
script (``EVALSHA``) that reads the *server's* clock (``redis.call('TIME')``), so the clocks of
the processes do not matter and no two processes can take the same capacity.

A process does not pay a round trip per request: it leases capacity in small chunks (by
default a tenth of a second of the rate) and spends them locally, first-in first-out, through
the same waiting machinery as every other limiter here (:class:`RateLimiter`). When what it
holds runs below half a chunk it asks for the next one in the background, so at high rates
there is far less than one round trip per acquire.

How far a window can be overdrawn. The server bucket grants at most ``rate * W + burst`` in
any window of ``W`` seconds. A chunk may be spent a little after it was granted, and each
process holds at most one chunk at a time, so all ``N`` processes together spend at most

    ``rate * W + burst + N * lease``            (on each dimension)

in any window of ``W`` seconds: with the defaults (burst half a second of the rate, lease a
tenth) four processes stay within 0.9 s of the rate above ``rate * W``, inside a provider's
bucket of one second. A single request larger than a chunk is leased on its own (then that
request's size takes the place of ``lease`` for its process). A new bucket (a key Redis does
not hold, or one expired after a minute unused) starts *empty*, not full: a window that
begins when it is created holds at most ``rate * W + N * lease``, one that begins ``t``
seconds later at most ``rate * (W + t) + N * lease`` (``t`` up to the burst's seconds).
Likewise nothing accrues during a pause, and a pause empties the shared bucket (a 429 says
the provider's is empty), so the end of a pause is not a burst either.
(Started full, the first second would hold a whole bucket on top of the rate: with limits
told too high, that burst is what the provider refuses.) The full bound is
reached only when the bucket has refilled while every process holds a whole chunk (after a
pause, or a lull in demand).

One controller for every process. With ``adaptive=True`` (the default, as for every
endpoint) the rates come from the same rate controller as
:class:`~pipeline.limiter.AdaptiveLimiter`'s, and what every process shares is that
controller's state (:mod:`pipeline.limiter._redis_state` says how). A process that starts (or
restarts) on a key takes the state the others learnt. ``adaptive=False``: fixed rates; the
lowest limits a provider states are still shared (kept in the hash).

``pause(seconds)`` (a 429's sure wait) writes "paused until" (server time) into the hash and
publishes it: every process stops granting at once, not at its next lease.

Fail closed. When Redis does not answer within ``redis_timeout`` seconds, a process goes on
alone at ``local_share`` of the quota (one over the live processes by default), so the bound
above still holds; a Redis that has *never* answered (a wrong URL or password) is a
:class:`~pipeline.errors.ConfigError` at every acquire instead
(:mod:`pipeline.limiter._redis_lease` says how). The script and the keys it keeps are in
:mod:`pipeline.limiter._redis_script`.

>>> limiter = RedisLimiter("redis://127.0.0.1:6379/0", key="openai:org-1",
...                        max_requests=10_000, max_tokens=2_000_000)   # per minute
>>> round(limiter.lease_requests, 2), round(limiter.lease_tokens)   # a tenth of a second
(16.67, 3333)
>>> limiter
<RedisLimiter redis://127.0.0.1:6379/0 key='openai:org-1' shared requests=0 held (lease 17) of 10,000 per min tokens=0 held (lease 3,333) of 2,000,000 per min adaptive (at ceiling) waiters=0 round_trips=0/0 grants>

(No connection is made until the first acquire; every process gives the same ``key``.)
"""  # noqa: E501

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from pipeline.core.durations import format_duration
from pipeline.core.extras import require
from pipeline.errors import ConfigError
from pipeline.limiter._adaptive import check_adaptive
from pipeline.limiter._control import RateController
from pipeline.limiter._outcome import OVERLOADED, THROTTLED, UNAVAILABLE, Outcome
from pipeline.limiter._queue import Lease
from pipeline.limiter._redis_lease import DEFAULT_LEASE_SECONDS, RedisLink
from pipeline.limiter._redis_url import _FEATURE, _masked, _split_key, check_redis_url
from pipeline.limiter._values import _SLACK, DEFAULT_BURST_SECONDS, LimiterSnapshot, _check_rate

__all__ = ["DEFAULT_LEASE_SECONDS", "RedisLimiter"]


class RedisLimiter(RedisLink):
    """A token bucket on requests and tokens shared through Redis by every process using it.

    Args:
        url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS); a ``?key=NAME``
            query gives the key (and wins over ``key``).
        key: the Redis key of the bucket (default ``"pipeline:limiter"``); processes
            spending one quota give the same key.
        max_requests, max_tokens: the quota per ``interval``. Adaptive (the default): the
            ceilings, ``None`` where unknown (discovered, as by
            :class:`~pipeline.limiter.AdaptiveLimiter`); fixed (``adaptive=False``): the
            rates, ``None`` for not limited.
        interval: seconds; 60 makes the limits per minute (RPM, TPM).
        adaptive: one rate controller for every process on the key (see the module
            docstring); ``False``: fixed rates, as :class:`~pipeline.limiter.TokenBucketLimiter`.
        burst_requests, burst_tokens: the shared bucket's size; half a second of the rate
            by default, as for :class:`~pipeline.limiter.TokenBucketLimiter`.
        lease_requests, lease_tokens: the chunk a process takes from Redis at once; a tenth
            of a second of the rate by default (at least one request).
        local_share: the fraction of the quota a process spends alone while Redis does not
            answer (fail closed); by default one over the processes that were live on the
            key when Redis last answered.
        start_rate, beta, recovery, min_rate, start_in_flight, time_scale: the adaptive
            controller's settings (:class:`~pipeline.limiter.AdaptiveLimiter`'s).
        sync_every: seconds between reads of the shared pause and state while busy.
        redis_timeout: seconds a Redis call may take before the process goes local.
        retry_every: seconds between tries to reach Redis again while local.

    The bound on overdraw, the shared pause and state, and the fail-closed mode are described
    in the module docstring. :attr:`round_trips` and :attr:`grants` count Redis calls and
    local grants (``round_trips / grants`` is the round trips per acquire).
    """

    # Its settings; the bucket's and the link's fields are RedisLink's, the shared state's
    # SharedControl's (all of them are set here, in __init__).
    __slots__ = ("_adaptive", "_grants", "_lowered_at", "_sync_every", "_user_burst_r",
                 "_user_burst_t", "_user_lease_r", "_user_lease_t")

    def __init__(self, url: str, *, key: str | None = None,
                 max_requests: float | None = None, max_tokens: float | None = None,
                 interval: float = 60.0, adaptive: bool = True,
                 burst_requests: float | None = None,
                 burst_tokens: float | None = None, lease_requests: float | None = None,
                 lease_tokens: float | None = None, local_share: float | None = None,
                 start_rate: float = 20.0, beta: float = 0.7, recovery: float = 2.0,
                 min_rate: float = 1 / 60, start_in_flight: int = 8, time_scale: float = 1.0,
                 sync_every: float = 0.5, redis_timeout: float = 0.5,
                 retry_every: float = 1.0) -> None:
        url = check_redis_url(url)
        self._redis = require("redis.asyncio", feature=_FEATURE, extra="redis")
        url, url_key = _split_key(url)
        key = url_key or key or "pipeline:limiter"
        if not isinstance(key, str):
            raise ConfigError(f"key must be a non-empty string, got {key!r}")
        if local_share is not None and (isinstance(local_share, bool) or
                                        not isinstance(local_share, int | float) or
                                        not 0 < local_share <= 1):
            raise ConfigError(f"local_share must be in (0, 1], got {local_share!r}")
        if not isinstance(adaptive, bool):
            raise ConfigError(f"adaptive must be True or False, got {adaptive!r}")
        start, ceiling_r, ceiling_t, interval_s = check_adaptive(
            max_requests, max_tokens, interval, start_rate, beta, recovery, min_rate,
            start_in_flight)
        if adaptive:
            # The rates in force start at the ceilings, or at ``start_rate`` where unknown.
            first_r = max_requests if ceiling_r is not None else start * interval_s
            super().__init__(first_r, max_tokens, interval)
        else:
            super().__init__(max_requests, max_tokens, interval)
        self._adaptive = adaptive
        self._url = url
        self._key = key
        self._user_burst_r = _check_rate("burst_requests", burst_requests)
        self._user_burst_t = _check_rate("burst_tokens", burst_tokens)
        self._user_lease_r = _check_rate("lease_requests", lease_requests)
        self._user_lease_t = _check_rate("lease_tokens", lease_tokens)
        self._user_share = None if local_share is None else float(local_share)
        # Until Redis has said how many processes are live: an eighth.
        self._local_share = self._user_share or 1 / 8
        self._sync_every = _check_rate("sync_every", sync_every) or 0.5
        self._redis_timeout = _check_rate("redis_timeout", redis_timeout) or 0.5
        self._retry_every = _check_rate("retry_every", retry_every) or 1.0
        self._rate_r = self._rate_t = 0.0
        self._burst_r = self._burst_t = self._lease_r = self._lease_t = 0.0
        self._configure()
        if adaptive:
            recovery_s = _check_rate("recovery", recovery)
            floor = _check_rate("min_rate", min_rate)
            assert recovery_s is not None and floor is not None
            scale = _check_rate("time_scale", time_scale)
            assert scale is not None
            self._control = RateController(self, ceiling_r, ceiling_t, start=start,
                                           beta=beta, recovery=recovery_s, min_rate=floor,
                                           time_scale=scale)
            self._slotted = True
            self._max_in_flight = float(start_in_flight)
            self._limits_changed()
        self._held_r = self._held_t = 0.0  # capacity leased from Redis, not yet granted
        self._short_r = self._short_t = 0.0  # what the head waiter needs beyond that
        self._local = False
        self._local_stamp = 0.0
        self._last_sync = -math.inf
        self._pending_pause = 0.0
        self._task = None
        self._listener = None
        self._signals = 0  # pauses and states heard from the channel
        self._lowered_at = -math.inf  # when the provider's headers last lowered our limits
        self._learned_r = self._learned_t = 0.0  # those limits per second, shared through Redis
        self._client = None
        self._client_loop = None
        self._script = None
        self._round_trips = 0
        self._grants = 0
        self._outages = 0
        self._last_error = ""
        # The shared controller state: the version this process holds, refusals applied to
        # it since (replayed on a newer version should another process write first), the
        # offset from this process's clock to Redis's, answers not yet reported, and the
        # running totals everyone reported.
        self._ver = 0
        self._events = []
        self._offset = 0.0
        self._offset_rtt = math.inf
        self._offset_at = -math.inf
        self._unsent_r = self._unsent_t = 0.0
        self._ok_total_r = None
        self._ok_total_t = 0.0
        self._live = 1
        self._member_at = -math.inf
        self._fatal = None  # Redis refused us before ever answering
        self._member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # ----------------------------------------------------------------- configuration
    def _configure(self) -> None:
        def dim(limit: float | None, burst: float | None, lease: float | None,
                floor: float) -> tuple[float, float, float]:
            if limit is None:
                return 0.0, 0.0, 0.0
            rate = limit / self._interval
            bucket = burst or rate * DEFAULT_BURST_SECONDS
            chunk = lease or max(floor, rate * DEFAULT_LEASE_SECONDS)
            return rate, max(bucket, chunk), min(chunk, max(bucket, chunk))

        self._rate_r, self._burst_r, self._lease_r = dim(
            self._max_requests, self._user_burst_r, self._user_lease_r, 1.0)
        self._rate_t, self._burst_t, self._lease_t = dim(
            self._max_tokens, self._user_burst_t, self._user_lease_t, 0.0)
        self._limits_changed()

    def _rates_changed(self, now: float) -> None:
        self._configure()

    @property
    def url(self) -> str:
        """The Redis URL, password masked."""
        return _masked(self._url)

    @property
    def key(self) -> str:
        """The Redis key of the shared bucket."""
        return self._key

    @property
    def lease_requests(self) -> float:
        """Requests taken from Redis per lease (0: requests not limited)."""
        return self._lease_r

    @property
    def lease_tokens(self) -> float:
        """Tokens taken from Redis per lease (0: tokens not limited)."""
        return self._lease_t

    @property
    def round_trips(self) -> int:
        """Redis calls made so far (each one script run)."""
        return self._round_trips

    @property
    def grants(self) -> int:
        """Grants made locally so far (acquires and leases)."""
        return self._grants

    @property
    def shared(self) -> bool:
        """Whether the limiter spends the shared bucket now (``False``: Redis is away and it
        runs on its local share)."""
        return not self._local

    # ----------------------------------------------------------------- policy hooks
    def _accrue(self, now: float) -> None:
        """While Redis is away, the local share refills what this process holds."""
        if not self._local:
            return
        elapsed = now - self._local_stamp
        if elapsed <= 0:
            return
        self._local_stamp = now
        share = self._local_share
        if self._rate_r:
            cap = max(self._burst_r * self._local_share, self._held_r + self._short_r, 1.0)
            self._held_r = min(cap, self._held_r + elapsed * self._rate_r * share)
        if self._rate_t:
            cap = max(self._burst_t * self._local_share, self._held_t + self._short_t)
            self._held_t = min(cap, self._held_t + elapsed * self._rate_t * share)

    def _delay(self, requests: float, tokens: float, now: float) -> float:
        self._accrue(now)
        short_r = requests - self._held_r if self._rate_r and requests else 0.0
        short_t = tokens - self._held_t if self._rate_t and tokens else 0.0
        if short_r <= _SLACK * requests:
            short_r = 0.0
        if short_t <= _SLACK * tokens:
            short_t = 0.0
        if not short_r and not short_t:
            return 0.0
        self._short_r, self._short_t = short_r, short_t
        if self._control is not None:
            self._control.press(bool(short_r), bool(short_t))
        if self._local:
            share = self._local_share
            delay = 0.0
            if short_r:
                delay = short_r / (self._rate_r * share)
            if short_t:
                delay = max(delay, short_t / (self._rate_t * share))
            self._kick()
            return delay
        self._kick()
        # The lease in the background wakes the waiters when it lands; this timer is only a
        # fallback, should no lease ever land.
        return max(self._sync_every, self._retry_every)

    def _take(self, requests: float, tokens: float, now: float) -> None:
        self._accrue(now)
        self._held_r -= requests
        self._held_t -= tokens
        self._short_r = self._short_t = 0.0
        self._grants += 1
        if self._wants_lease() or now - self._last_sync > self._sync_every:
            self._kick()

    def _give(self, requests: float, tokens: float, now: float) -> None:
        # Given-back capacity stays here (capped at one chunk, so the bound holds);
        # negative amounts are a debt that the next leases pay.
        self._accrue(now)
        self._held_r = min(self._held_r + requests, max(self._lease_r, self._held_r))
        self._held_t = min(self._held_t + tokens, max(self._lease_t, self._held_t))

    def _available(self, now: float) -> tuple[float | None, float | None]:
        self._accrue(now)
        return (self._held_r if self._rate_r else None, self._held_t if self._rate_t else None)

    def _capacity(self) -> tuple[float | None, float | None]:
        cap_r = max(self._burst_r, self._max_requests) if self._max_requests else None
        cap_t = max(self._burst_t, self._max_tokens) if self._max_tokens else None
        return cap_r, cap_t

    # ----------------------------------------------------------------- shared signals
    def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds``, here at once and in every process at its next lease."""
        seconds = min(seconds, self._max_pause)  # shared as capped here (MAX_PAUSE)
        super().pause(seconds)
        if seconds > self._pending_pause:
            self._pending_pause = float(seconds)
        self._kick()

    def _on_error(self, lease: Lease, outcome: Outcome, now: float) -> None:
        control = self._control
        if control is not None and outcome.kind in (THROTTLED, OVERLOADED, UNAVAILABLE):
            # Kept until the state it changed is written: should another process write first,
            # it is replayed on that state (where it may be old news).
            self._events.append((lease.granted_at, outcome, now))
            del self._events[:-64]
        super()._on_error(lease, outcome, now)
        if control is not None and control.urgent:
            self._kick()  # tell every process now, not at the next lease

    def _on_success(self, lease: Lease, tokens: float | None, now: float) -> None:
        super()._on_success(lease, tokens, now)
        self._unsent_r += 1.0
        self._unsent_t += lease.tokens if tokens is None else tokens

    def _drain(self, name: str, now: float) -> None:
        if name == "requests":
            self._held_r = min(self._held_r, 0.0)
        else:
            self._held_t = min(self._held_t, 0.0)

    def _header_limits(self, limit_r: float | None, limit_t: float | None, now: float) -> bool:
        changed = super()._header_limits(limit_r, limit_t, now)
        if changed and self._control is not None:
            self._kick()  # the controller's state is shared: tell Redis now
        elif changed:
            self._lowered_at = now
            # What the provider stated is a fact for every process: sent with the next
            # lease, kept in the hash, it binds the shared bucket whoever calls (measured:
            # 4 processes told 2x, each learning alone, drew 4-7% 429s on a loaded machine
            # while the late starters still asked at the told rate).
            if limit_r is not None and self._max_requests is not None:
                self._learned_r = self._max_requests / self._interval
            if limit_t is not None and self._max_tokens is not None:
                self._learned_t = self._max_tokens / self._interval
            self._kick()  # tell Redis now, not at the next lease
        return changed

    # ----------------------------------------------------------------- leasing from Redis
    async def acquire(self, requests: float = 1, tokens: float = 0) -> None:
        if self._fatal is not None:
            raise self._fatal
        await super().acquire(requests, tokens)

    async def lease(self, requests: float = 1, tokens: float = 0) -> Lease:
        if self._fatal is not None:
            raise self._fatal
        return await super().lease(requests, tokens)

    # ----------------------------------------------------------------- inspection
    def snapshot(self) -> LimiterSnapshot:
        """As for every limiter; ``mode`` is ``"shared"`` or ``"local share (Redis down)"``."""
        snap = super().snapshot()
        mode = "shared" if not self._local else \
            f"local share {self._local_share:.3g} (Redis down)"
        control = self._control
        if control is None:
            return msgspec.structs.replace(snap, mode=mode)
        states = control.states()
        ceiling_r, ceiling_t = control.ceilings
        return msgspec.structs.replace(
            snap, mode=f"{mode}, {' / '.join(states) if states else 'unlimited'}",
            ceiling_requests=None if ceiling_r is None else ceiling_r * self._interval,
            ceiling_tokens=None if ceiling_t is None else ceiling_t * self._interval,
            max_in_flight=self._max_in_flight if control.overload_seen else None)

    def stats(self) -> Mapping[str, Any]:
        """Counters: round trips, grants, their ratio, outages, the shared state's version, the
        live processes."""
        return {"round_trips": self._round_trips, "grants": self._grants,
                "round_trips_per_grant": self._round_trips / self._grants if self._grants
                else 0.0, "outages": self._outages, "state_version": self._ver,
                "live_processes": self._live,
                "signals": self._signals,
                "shared": not self._local, "last_error": self._last_error}

    def __repr__(self) -> str:
        snap = self.snapshot()
        per = "min" if snap.interval == 60.0 else format_duration(snap.interval)

        def dim(name: str, held: float | None, limit: float | None, lease: float) -> str:
            if limit is None or held is None:
                return f"{name}=unlimited"
            return f"{name}={held:,.0f} held (lease {lease:,.0f}) of {limit:,.0f} per {per}"

        parts = [f"{self.url} key={self._key!r}",
                 "shared" if not self._local else
                 f"LOCAL {self._local_share:.3g} share (Redis down: {self._last_error})",
                 dim("requests", snap.requests_available, snap.max_requests, self._lease_r),
                 dim("tokens", snap.tokens_available, snap.max_tokens, self._lease_t)]
        if self._control is not None:
            states = self._control.states()
            parts.append(f"adaptive ({' / '.join(states) if states else 'unlimited'})")
        parts.append(f"waiters={snap.waiters}")
        if snap.paused_for > 0:
            parts.append(f"paused {format_duration(snap.paused_for)}")
        parts.append(f"round_trips={self._round_trips:,}/{self._grants:,} grants")
        return f"<RedisLimiter {' '.join(parts)}>"
