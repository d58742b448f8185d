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
(Started full, it let the first second reach 1.5x the rate; and when the limits told are
too high, that first burst is what the provider refuses: 4 processes told 2x, 3.7-4.5% of
the rows drew a 429 with a full start, 1.0-1.5% with an empty one.) The full bound is
reached only when the bucket has refilled while every process holds a whole chunk (after a
pause, or a lull in demand).

Shared signals. ``pause(seconds)`` (a 429's ``retry-after``) writes "paused until" (server
time) into the hash. A 429 in :meth:`settle` also cuts a shared rate factor: it becomes
``beta`` (0.7) times what it was, at most once a second, and grows back by ``regrow`` (0.02)
of the full rate per second, so 15 s after one cut the rate is whole again. The script that
records a pause or a cut publishes it on ``<key>:signals``; every process listens there (one
more connection each) and stops granting at once, not at its next lease (which may be
``sync_every`` seconds away). A 429 for a request granted before the provider's
``x-ratelimit-limit-*`` headers lowered this process's limits does not cut the factor: the
limits are right now, and a cut on top would run every process below them for seconds.
Limits the headers state are shared too: sent with the next lease, the lowest kept in the
hash, they bind the bucket whoever calls, and every process adopts them from its next
grant (told 2x on a loaded machine, the processes that had not heard yet drew 4-7% 429s).

Fail closed. When Redis does not answer within ``redis_timeout`` seconds (stalled, dead,
unreachable), a process goes on alone at ``local_share`` of the quota (default 1/8: give
``local_share=1/N`` when you run ``N`` processes), never more; it logs one warning per
outage, shows it in :meth:`snapshot` (``mode``) and the repr, tries Redis again every
``retry_every`` seconds and rejoins the shared bucket when it answers (dropping what it
accrued alone). While Redis is away the processes together spend at most
``N * local_share`` of the rate, so with ``local_share <= 1/N`` the bound above still holds.

>>> limiter = RedisLimiter("redis://127.0.0.1:6379/0", key="openai:org-1",
...                        max_requests=10_000, max_tokens=2_000_000)   # per minute
>>> round(limiter.lease_requests, 2), round(limiter.lease_tokens)   # a tenth of a second
(16.67, 3333)
>>> limiter
<RedisLimiter redis://127.0.0.1:6379/0 key='openai:org-1' shared requests=0 held (lease 17) of 10,000 per min tokens=0 held (lease 3,333) of 2,000,000 per min waiters=0 round_trips=0/0 grants>

(No connection is made until the first acquire; every process gives the same ``key``.)
"""  # noqa: E501

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec

from pipeline.core.durations import format_duration
from pipeline.core.extras import require
from pipeline.errors import ConfigError, RateLimitError
from pipeline.limiter._base import (
    _SLACK,
    DEFAULT_BURST_SECONDS,
    Lease,
    LimiterSnapshot,
    RateLimiter,
    _check_rate,
    _now,
)

__all__ = ["DEFAULT_LEASE_SECONDS", "RedisLimiter"]

logger = logging.getLogger("pipeline.limiter")

_FEATURE = "a limiter shared through Redis"

#: Seconds of the rate one lease takes from Redis by default.
DEFAULT_LEASE_SECONDS = 0.1

# KEYS[1]: the hash. ARGV: rate_r, rate_t (per second; 0 = not limited), burst_r, burst_t,
# want_r, want_t (the chunk asked for), need_r, need_t (the least worth taking), pause
# (seconds, 0 = none), beta (cut factor, 0 = none), regrow (factor per second), ttl (s),
# learned_r, learned_t (per second: limits the provider's headers stated to the caller; 0 =
# none). The lowest limits ever stated are kept in the hash and bind every caller, so the
# bucket refills at them whoever calls; they come back with the grant for the caller to adopt.
# A new pause or cut is published on KEYS[1]:signals ("<paused for> <factor>"), so every
# process applies it at once, not at its next lease.
# Grants a fraction f of (want_r, want_t), the same on both dimensions, if that covers the
# need on each; else nothing, and says how long until the need fits. Numbers come back as
# strings: Redis would truncate a Lua number to an integer.
_SCRIPT = """
local key = KEYS[1]
local rate_r, rate_t = tonumber(ARGV[1]), tonumber(ARGV[2])
local burst_r, burst_t = tonumber(ARGV[3]), tonumber(ARGV[4])
local want_r, want_t = tonumber(ARGV[5]), tonumber(ARGV[6])
local need_r, need_t = tonumber(ARGV[7]), tonumber(ARGV[8])
local pause, beta = tonumber(ARGV[9]), tonumber(ARGV[10])
local regrow, ttl = tonumber(ARGV[11]), tonumber(ARGV[12])
local learned_r, learned_t = tonumber(ARGV[13]) or 0, tonumber(ARGV[14]) or 0
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', key, 'r', 't', 'stamp', 'paused', 'factor', 'cut', 'lim_r',
                     'lim_t')
local lim_r, lim_t = tonumber(h[7]) or 0, tonumber(h[8]) or 0
if learned_r > 0 and (lim_r == 0 or learned_r < lim_r) then lim_r = learned_r end
if learned_t > 0 and (lim_t == 0 or learned_t < lim_t) then lim_t = learned_t end
if lim_r > 0 and rate_r > lim_r then
  burst_r = burst_r * lim_r / rate_r
  rate_r = lim_r
end
if lim_t > 0 and rate_t > lim_t then
  burst_t = burst_t * lim_t / rate_t
  rate_t = lim_t
end
local factor = tonumber(h[5]) or 1
local stamp = tonumber(h[3]) or now
local elapsed = math.max(0, now - stamp)
factor = math.min(1, factor + regrow * elapsed)
local cut = tonumber(h[6]) or 0
local news = false
if beta > 0 and now - cut >= 1 then
  factor = math.max(0.05, factor * beta)
  cut = now
  news = true
end
local lr = tonumber(h[1]) or 0
local lt = tonumber(h[2]) or 0
local paused = tonumber(h[4]) or 0
-- Nothing accrues while paused: the end of a pause is not a burst.
local accrued = math.max(0, now - math.max(stamp, math.min(paused, now)))
lr = math.min(burst_r * factor, lr + rate_r * factor * accrued)
lt = math.min(burst_t * factor, lt + rate_t * factor * accrued)
if pause > 0 then
  -- A pause (a 429) says the provider's bucket is empty: so is the shared one (debts kept).
  paused = math.max(paused, now + pause)
  lr = math.min(lr, 0)
  lt = math.min(lt, 0)
  news = true
end
local gr, gt, wait = 0, 0, 0
if now < paused then
  wait = paused - now
else
  local f = 1
  if rate_r > 0 and want_r > 0 then f = math.min(f, lr / want_r) end
  if rate_t > 0 and want_t > 0 then f = math.min(f, lt / want_t) end
  if f < 0 then f = 0 end
  local target_r = need_r > 0 and need_r or want_r * 0.5
  local target_t = need_t > 0 and need_t or want_t * 0.5
  target_r = math.min(target_r, burst_r * factor)
  target_t = math.min(target_t, burst_t * factor)
  local short_r = rate_r > 0 and target_r > 0 and lr < target_r
  local short_t = rate_t > 0 and target_t > 0 and lt < target_t
  if (want_r > 0 or want_t > 0) and not short_r and not short_t then
    gr = math.max(f * want_r, need_r)
    gt = math.max(f * want_t, need_t)
    if rate_r > 0 then lr = lr - gr end
    if rate_t > 0 then lt = lt - gt end
  else
    if short_r then wait = (target_r - lr) / (rate_r * factor) end
    if short_t then wait = math.max(wait, (target_t - lt) / (rate_t * factor)) end
  end
end
redis.call('HSET', key, 'r', lr, 't', lt, 'stamp', now, 'paused', paused, 'factor', factor,
           'cut', cut, 'lim_r', lim_r, 'lim_t', lim_t)
redis.call('EXPIRE', key, ttl)
if news then
  redis.call('PUBLISH', key .. ':signals', tostring(math.max(0, paused - now)) .. ' ' ..
             tostring(factor))
end
return {tostring(gr), tostring(gt), tostring(wait), tostring(factor),
        tostring(math.max(0, paused - now)), tostring(lim_r), tostring(lim_t)}
"""


class RedisLimiter(RateLimiter):
    """A token bucket on requests and tokens shared through Redis by every process using it.

    Args:
        url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS); a ``?key=NAME``
            query gives the key (and wins over ``key``).
        key: the Redis key of the bucket (default ``"pipeline:limiter"``); processes
            spending one quota give the same key.
        max_requests, max_tokens: the quota per ``interval`` (``None``: not limited).
        interval: seconds; 60 makes the limits per minute (RPM, TPM).
        burst_requests, burst_tokens: the shared bucket's size; half a second of the rate
            by default, as for :class:`~pipeline.limiter.TokenBucketLimiter`.
        lease_requests, lease_tokens: the chunk a process takes from Redis at once; a tenth
            of a second of the rate by default (at least one request).
        local_share: the fraction of the quota a process spends alone while Redis does not
            answer (fail closed); ``1/N`` for ``N`` processes.
        beta, regrow: the shared rate factor's cut on a 429 and its growth per second.
        sync_every: seconds between reads of the shared pause and factor while busy.
        redis_timeout: seconds a Redis call may take before the process goes local.
        retry_every: seconds between tries to reach Redis again while local.

    The bound on overdraw, the shared pause and the fail-closed mode are described in the
    module docstring. :attr:`round_trips` and :attr:`grants` count Redis calls and local
    grants (``round_trips / grants`` is the round trips per acquire).
    """

    __slots__ = ("_beta", "_burst_r", "_burst_t", "_client", "_client_loop", "_factor", "_grants",
                 "_held_r", "_held_t", "_key", "_last_error", "_last_sync", "_learned_r",
                 "_learned_t", "_lease_r", "_lease_t", "_listener", "_local", "_local_share",
                 "_local_stamp", "_lowered_at", "_outages", "_pending_cut", "_pending_pause",
                 "_rate_r", "_rate_t", "_redis", "_redis_timeout", "_regrow", "_retry_every",
                 "_round_trips", "_script", "_short_r", "_short_t", "_signals", "_sync_every",
                 "_task", "_url", "_user_burst_r", "_user_burst_t", "_user_lease_r",
                 "_user_lease_t")

    def __init__(self, url: str, *, key: str | None = None,
                 max_requests: float | None = None, max_tokens: float | None = None,
                 interval: float = 60.0, burst_requests: float | None = None,
                 burst_tokens: float | None = None, lease_requests: float | None = None,
                 lease_tokens: float | None = None, local_share: float = 1 / 8,
                 beta: float = 0.7, regrow: float = 0.02, sync_every: float = 0.5,
                 redis_timeout: float = 0.5, retry_every: float = 1.0) -> None:
        url = check_url(url)
        self._redis = require("redis.asyncio", feature=_FEATURE, extra="redis")
        url, url_key = _split_key(url)
        key = url_key or key or "pipeline:limiter"
        if not isinstance(key, str):
            raise ConfigError(f"key must be a non-empty string, got {key!r}")
        if not isinstance(local_share, int | float) or not 0 < local_share <= 1:
            raise ConfigError(f"local_share must be in (0, 1], got {local_share!r}")
        if not isinstance(beta, int | float) or not 0 < beta < 1:
            raise ConfigError(f"beta must be between 0 and 1, got {beta!r}")
        super().__init__(max_requests, max_tokens, interval)
        self._url = url
        self._key = key
        self._user_burst_r = _check_rate("burst_requests", burst_requests)
        self._user_burst_t = _check_rate("burst_tokens", burst_tokens)
        self._user_lease_r = _check_rate("lease_requests", lease_requests)
        self._user_lease_t = _check_rate("lease_tokens", lease_tokens)
        self._local_share = float(local_share)
        self._beta = float(beta)
        self._regrow = _check_rate("regrow", regrow) or 0.02
        self._sync_every = _check_rate("sync_every", sync_every) or 0.5
        self._redis_timeout = _check_rate("redis_timeout", redis_timeout) or 0.5
        self._retry_every = _check_rate("retry_every", retry_every) or 1.0
        self._rate_r = self._rate_t = 0.0
        self._burst_r = self._burst_t = self._lease_r = self._lease_t = 0.0
        self._configure()
        self._held_r = self._held_t = 0.0  # capacity leased from Redis, not yet granted
        self._short_r = self._short_t = 0.0  # what the head waiter needs beyond that
        self._factor = 1.0
        self._local = False
        self._local_stamp = 0.0
        self._last_sync = -math.inf
        self._pending_pause = 0.0
        self._pending_cut = False
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._signals = 0  # pauses and cuts heard from the channel
        self._lowered_at = -math.inf  # when the provider's headers last lowered our limits
        self._learned_r = self._learned_t = 0.0  # those limits per second, shared through Redis
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._script: Any = None
        self._round_trips = 0
        self._grants = 0
        self._outages = 0
        self._last_error = ""

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
        share = self._local_share * self._factor
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
        if self._local:
            share = self._local_share * self._factor
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

    def _on_error(self, lease: Lease, error: BaseException, now: float) -> None:
        if isinstance(error, RateLimitError):
            # A 429 for a request granted before the provider's headers lowered our limits
            # (or by the 429 itself) is explained: the limits are right now, and cutting the
            # shared rate as well would run every process below them for 15 s (measured: 4
            # processes told 2x, 84% of the quota used with the cut, see the tests).
            if lease.granted_at > self._lowered_at:
                self._pending_cut = True
            self._pause_after(error, lease)

    def _header_limits(self, limit_r: float | None, limit_t: float | None, now: float) -> bool:
        changed = super()._header_limits(limit_r, limit_t, now)
        if changed:
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

    def _signal(self, data: bytes | str) -> None:
        """Another process (or this one) published a pause or a cut: apply it now."""
        try:
            paused_for, factor = (float(x) for x in data.split())
        except ValueError:
            return  # not ours
        self._signals += 1
        self._factor = min(1.0, max(0.0, factor))
        if paused_for > 0:
            until = _now() + paused_for
            if until > self._paused_until:
                self._paused_until = until
        self._wake()

    async def _listen(self) -> None:
        """Hear the pauses and cuts published on ``<key>:signals`` as they happen.

        Its own connection, without a read timeout (it waits for news); it never decides
        whether Redis is up (the lease loop does): a failure here is retried quietly, and
        meanwhile the shared pause and factor still arrive with every lease.
        """
        while True:
            client: Any = None
            try:
                client = self._redis.Redis.from_url(
                    self._url, socket_connect_timeout=self._redis_timeout)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(f"{self._key}:signals")
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._signal(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: the lease loop says so (once) and goes local
                pass
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose()
            await asyncio.sleep(self._retry_every)

    # ----------------------------------------------------------------- leasing from Redis
    def _wants_lease(self) -> bool:
        return bool(
            self._short_r or self._short_t or self._pending_pause or self._pending_cut
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
            self._script = self._client.register_script(_SCRIPT)
        return self._client

    async def _lease_loop(self) -> None:
        while True:
            if self._local:
                await asyncio.sleep(self._retry_every)
            want_r = max(self._lease_r, self._held_r + self._short_r) - self._held_r \
                if self._rate_r else 0.0
            want_t = max(self._lease_t, self._held_t + self._short_t) - self._held_t \
                if self._rate_t else 0.0
            pause, cut = self._pending_pause, self._pending_cut
            args = (self._rate_r, self._rate_t, self._burst_r, self._burst_t,
                    max(0.0, want_r), max(0.0, want_t), self._short_r, self._short_t,
                    pause, self._beta if cut else 0.0, self._regrow,
                    int(max(60.0, self._interval, 4 * self._burst_r / (self._rate_r or 1),
                            4 * self._burst_t / (self._rate_t or 1))),
                    self._learned_r, self._learned_t)
            try:
                client = self._connect()
                reply = await asyncio.wait_for(
                    self._script(keys=[self._key], args=args, client=client),
                    self._redis_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of Redis (or of its client) means: go local
                self._go_local(exc)
                continue
            self._round_trips += 1
            now = _now()
            if self._local:
                self._rejoin(now)
            granted_r, granted_t, wait, factor, paused_for, lim_r, lim_t = \
                (float(x) for x in reply)
            if (lim_r and self._rate_r and lim_r < self._rate_r * (1 - 1e-9)) or \
                    (lim_t and self._rate_t and lim_t < self._rate_t * (1 - 1e-9)):
                # Another process learned lower limits from the provider: adopt them (as
                # per-minute figures, as the headers give them).
                self._header_limits(lim_r * 60.0 if lim_r else None,
                                    lim_t * 60.0 if lim_t else None, now)
            self._held_r += granted_r
            self._held_t += granted_t
            if granted_r or granted_t:
                self._short_r = max(0.0, self._short_r - granted_r)
                self._short_t = max(0.0, self._short_t - granted_t)
            self._factor = factor
            self._last_sync = now
            if pause >= self._pending_pause:
                self._pending_pause = 0.0
            if cut:
                self._pending_cut = False
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

    def _go_local(self, exc: BaseException) -> None:
        if self._local:
            return
        self._local = True
        self._local_stamp = _now()
        self._outages += 1
        self._last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        logger.warning("shared limiter %s (key %r) is not answering (%s): spending %.3g of "
                       "the quota locally until it does", self.url, self._key,
                       self._last_error, self._local_share)
        self._wake()

    def _rejoin(self, now: float) -> None:
        self._local = False
        # What accrued alone is dropped (debts are kept): the shared bucket decides again.
        self._held_r = min(self._held_r, 0.0)
        self._held_t = min(self._held_t, 0.0)
        logger.warning("shared limiter %s (key %r) answers again: back on the shared quota",
                       self.url, self._key)

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

    # ----------------------------------------------------------------- inspection
    def snapshot(self) -> LimiterSnapshot:
        """As for every limiter; ``mode`` is ``"shared"`` or ``"local share (Redis down)"``."""
        snap = super().snapshot()
        mode = "shared" if not self._local else \
            f"local share {self._local_share:.3g} (Redis down)"
        return msgspec.structs.replace(snap, mode=mode)

    def stats(self) -> Mapping[str, Any]:
        """Counters: round trips, grants, their ratio, outages, the shared factor."""
        return {"round_trips": self._round_trips, "grants": self._grants,
                "round_trips_per_grant": self._round_trips / self._grants if self._grants
                else 0.0, "outages": self._outages, "factor": self._factor,
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
        if self._factor < 1:
            parts.append(f"factor={self._factor:.2f}")
        parts.append(f"waiters={snap.waiters}")
        if snap.paused_for > 0:
            parts.append(f"paused {format_duration(snap.paused_for)}")
        parts.append(f"round_trips={self._round_trips:,}/{self._grants:,} grants")
        return f"<RedisLimiter {' '.join(parts)}>"


def _jitter() -> float:
    return 0.5 + random.random()


def check_url(url: str) -> str:
    """``url`` if it is a Redis URL and redis-py is installed; else a clear error."""
    if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        shown = _masked(url) if isinstance(url, str) else url
        raise ConfigError(f"a shared limiter needs a redis://HOST:PORT/DB URL, got {shown!r}")
    require("redis.asyncio", feature=_FEATURE, extra="redis")
    return url


def _split_key(url: str) -> tuple[str, str | None]:
    """Take ``key=NAME`` out of the URL's query (redis-py does not know it)."""
    parts = urlsplit(url)
    pairs = [pair for pair in parts.query.split("&") if pair]
    keys = [pair[4:] for pair in pairs if pair.startswith("key=")]
    rest = "&".join(pair for pair in pairs if not pair.startswith("key="))
    return urlunsplit(parts._replace(query=rest)), (unquote(keys[-1]) if keys else None)


def _masked(url: str) -> str:
    """The URL with its password masked, given as ``:pw@`` or ``?password=pw``.

    >>> _masked("redis://:s3cret@h:6379/0?password=s3cret&db=1")
    'redis://:***@h:6379/0?password=***&db=1'
    """
    parts = urlsplit(url)
    if parts.password:
        user, _, _ = parts.netloc.rpartition("@")[0].partition(":")
        parts = parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}")
        url = urlunsplit(parts)
    if "password=" in parts.query:  # by hand: urlunsplit drops the "//" of unix:///path
        head, _, query = url.partition("?")
        query, hash_, fragment = query.partition("#")
        query = "&".join("password=***" if pair.startswith("password=") else pair
                         for pair in query.split("&"))
        url = f"{head}?{query}{hash_}{fragment}"
    return url
