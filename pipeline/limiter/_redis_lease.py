"""A Redis limiter's link to Redis: the background lease loop (one script run per chunk,
about ten a second at most when busy), its connection, and failing closed when Redis is away.

Fail closed. When Redis does not answer within ``redis_timeout`` seconds (stalled, dead,
unreachable), a process goes on alone at ``local_share`` of the quota: by default one over
the processes that were live on the key when Redis last answered (each lease keeps the
process in a set of live members for 5 s), never more; it logs one warning per outage, shows
it in :meth:`~pipeline.limiter.RedisLimiter.snapshot` (``mode``) and the repr, tries Redis
again every ``retry_every`` seconds and rejoins the shared bucket when it answers (dropping
what it accrued alone). While Redis is away the processes together spend at most the rate.
A Redis that has *never* answered (a wrong URL or password) is no outage: every acquire
raises :class:`~pipeline.errors.ConfigError` saying what is wrong, and nothing is granted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

import msgspec

from pipeline.core.extras import require
from pipeline.errors import ConfigError
from pipeline.limiter._queue import _now
from pipeline.limiter._redis_script import LEASE_SCRIPT
from pipeline.limiter._redis_state import SharedControl
from pipeline.limiter._redis_url import _FEATURE, _masked

__all__ = ["DEFAULT_LEASE_SECONDS", "RedisLink"]

logger = logging.getLogger("pipeline.limiter")

#: Seconds of the rate one lease takes from Redis by default.
DEFAULT_LEASE_SECONDS = 0.1
_MEMBER_TTL = 5  # seconds without a call after which a process no longer counts as live


class RedisLink(SharedControl):
    """Base of :class:`~pipeline.limiter.RedisLimiter`: what talks to Redis.

    Its fields are set by ``RedisLimiter.__init__``. The local bucket's levels, rates and
    chunks are here too: every lease that lands moves them.
    """

    __slots__ = ("_burst_r", "_burst_t", "_client", "_client_loop", "_fatal", "_held_r",
                 "_held_t", "_key", "_last_error", "_last_sync", "_learned_r", "_learned_t",
                 "_lease_r", "_lease_t", "_listener", "_live", "_local", "_local_share",
                 "_local_stamp", "_member", "_member_at", "_outages", "_pending_pause",
                 "_rate_r", "_rate_t", "_redis", "_redis_timeout", "_retry_every",
                 "_round_trips", "_script", "_short_r", "_short_t", "_task", "_url",
                 "_user_share")

    _client: Any
    _client_loop: asyncio.AbstractEventLoop | None
    _script: Any
    _task: asyncio.Task[None] | None
    _listener: asyncio.Task[None] | None
    _fatal: ConfigError | None  # Redis refused us before ever answering
    _local: bool
    _local_stamp: float
    _local_share: float
    _user_share: float | None
    _live: int
    _member: str
    _member_at: float
    _last_sync: float
    _round_trips: int
    _outages: int
    _last_error: str
    # The local bucket: what is held, what the head waiter lacks, the rates,
    # sizes and chunks per second, the limits learnt, a pause not yet shared.
    _held_r: float
    _held_t: float
    _short_r: float
    _short_t: float
    _rate_r: float
    _rate_t: float
    _burst_r: float
    _burst_t: float
    _lease_r: float
    _lease_t: float
    _learned_r: float
    _learned_t: float
    _pending_pause: float

    def _wants_lease(self) -> bool:
        return bool(
            self._short_r or self._short_t or self._pending_pause
            or (self._control is not None and self._control.urgent)
            or (self._rate_r and self._held_r < self._lease_r * 0.5)
            or (self._rate_t and self._held_t < self._lease_t * 0.5))

    def _kick(self) -> None:
        """Start the background lease task if it is not running in this loop."""
        task = self._task
        if task is not None and not task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous refund, say): the next acquire starts it
        self._task = loop.create_task(self._lease_loop())
        listener = self._listener
        if listener is None or listener.done() or listener.get_loop() is not loop:
            self._listener = loop.create_task(self._listen())

    def _connect(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            retry = require("redis.asyncio.retry", feature=_FEATURE, extra="redis")
            backoff = require("redis.backoff", feature=_FEATURE, extra="redis")
            # No retries inside redis-py: a failed call means "go local now", not in 3 tries.
            self._client = self._redis.Redis.from_url(
                self._url, socket_timeout=self._redis_timeout,
                socket_connect_timeout=self._redis_timeout,
                retry=retry.Retry(backoff.NoBackoff(), 0))
            self._client_loop = loop
            self._script = self._client.register_script(LEASE_SCRIPT)
        return self._client

    async def _lease_loop(self) -> None:
        while True:
            if self._local:
                await asyncio.sleep(self._retry_every)
            sent_at = _now()
            # Once a second this process says it is live (a sorted set of members).
            member = self._member if sent_at - self._member_at >= 1.0 else ""
            want_r = max(self._lease_r, self._held_r + self._short_r) - self._held_r \
                if self._rate_r else 0.0
            want_t = max(self._lease_t, self._held_t + self._short_t) - self._held_t \
                if self._rate_t else 0.0
            pause = self._pending_pause
            control = self._control
            blob, urgent = "", False
            if control is not None and control.dirty:
                blob = msgspec.json.encode(control.export(self._offset)).decode()
                urgent = control.urgent
            sent_r, sent_t = self._unsent_r, self._unsent_t
            args = (self._rate_r, self._rate_t, self._burst_r, self._burst_t,
                    max(0.0, want_r), max(0.0, want_t), self._short_r, self._short_t, pause,
                    int(max(60.0, self._interval, 4 * self._burst_r / (self._rate_r or 1),
                            4 * self._burst_t / (self._rate_t or 1))),
                    self._learned_r, self._learned_t, self._ver, blob, "1" if urgent else "0",
                    sent_r, sent_t, member, _MEMBER_TTL)
            try:
                client = self._connect()
                reply = await asyncio.wait_for(
                    self._script(keys=[self._key], args=args, client=client),
                    self._redis_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of Redis (or of its client) means: go local
                if self._round_trips == 0 and not self._local:
                    # It never answered: a wrong URL or password, not an outage. Fail what
                    # waits (nothing was sent) rather than run on a guess of the share.
                    self._fail(exc)
                    return
                self._go_local(exc)
                continue
            self._round_trips += 1
            now = _now()
            if self._local:
                self._rejoin(now)
            (granted_r, granted_t, wait, paused_for, lim_r, lim_t, ver, out_blob, ok_r, ok_t,
             server_now, live, accepted) = reply
            granted_r, granted_t, wait, paused_for, lim_r, lim_t = (
                float(x) for x in (granted_r, granted_t, wait, paused_for, lim_r, lim_t))
            self._clock_offset(float(server_now), sent_at, now)
            if int(float(live)) >= 1:
                self._live = int(float(live))
                self._member_at = now
            if self._user_share is None:
                self._local_share = 1.0 / self._live
            self._unsent_r -= sent_r
            self._unsent_t -= sent_t
            self._shared_state(int(float(ver)), out_blob, accepted == b"1" or accepted == "1",
                               blob != "")
            self._answers_elsewhere(float(ok_r), float(ok_t), sent_r, sent_t, now)
            if control is None and ((lim_r and self._rate_r and
                                     lim_r < self._rate_r * (1 - 1e-9)) or
                                    (lim_t and self._rate_t and
                                     lim_t < self._rate_t * (1 - 1e-9))):
                # Another process learned lower limits from the provider: adopt them (as
                # per-minute figures, as the headers give them).
                self._header_limits(lim_r * 60.0 if lim_r else None,
                                    lim_t * 60.0 if lim_t else None, now)
            self._held_r += granted_r
            self._held_t += granted_t
            if granted_r or granted_t:
                self._short_r = max(0.0, self._short_r - granted_r)
                self._short_t = max(0.0, self._short_t - granted_t)
            self._last_sync = now
            if pause >= self._pending_pause:
                self._pending_pause = 0.0
            if paused_for > 0 and now + paused_for > self._paused_until:
                self._paused_until = now + paused_for
            self._wake()
            if not self._wants_lease():
                return
            if paused_for > 0:
                await asyncio.sleep(paused_for)
            else:
                # Refused, or granted less than a chunk (others want it too): ask again when
                # the need should fit, and not sooner than a lease's time on average (the
                # shared bucket holds five times that, so nothing is lost meanwhile), which
                # bounds a busy process to about 10 round trips a second: with P processes
                # sharing R grants/s, about 10 * P / R round trips per acquire. The jitter
                # keeps the processes out of lockstep: one always asking just after another
                # would find the bucket always empty (measured: 8 processes at a fixed
                # cadence got 0.06x to 2.2x an equal share; jittered, about 0.75x to 1.2x).
                await asyncio.sleep(max(wait, DEFAULT_LEASE_SECONDS * _jitter()))

    def _fail(self, exc: BaseException) -> None:
        from pipeline.limiter._redis_check import describe_redis_error

        self._fatal = ConfigError(describe_redis_error(exc, self._url))
        logger.error("%s", self._fatal)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(self._fatal)
        self._cancel_timer()

    def _go_local(self, exc: BaseException) -> None:
        if self._local:
            return
        self._local = True
        self._local_stamp = _now()
        self._outages += 1
        self._last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        logger.warning("shared limiter %s (key %r) is not answering (%s): spending %.3g of "
                       "the quota locally until it does", _masked(self._url), self._key,
                       self._last_error, self._local_share)
        self._wake()

    def _rejoin(self, now: float) -> None:
        self._local = False
        # What accrued alone is dropped (debts are kept): the shared bucket decides again.
        self._held_r = min(self._held_r, 0.0)
        self._held_t = min(self._held_t, 0.0)
        logger.warning("shared limiter %s (key %r) answers again: back on the shared quota",
                       _masked(self._url), self._key)

    async def aclose(self) -> None:
        """Stop the background lease and close the Redis connection (capacity held is
        not given back: it expires with the rate)."""
        for task in (self._task, self._listener):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                    await task
        self._task = self._listener = None
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                await client.aclose()
        self._client_loop = None


def _jitter() -> float:
    return 0.5 + random.random()
