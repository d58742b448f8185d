"""The shared half of a Redis limiter's rate controller: its state adopted from other
processes (by version, with this process's refusals replayed on it), the pauses and cuts heard
on ``<key>:signals``, everyone's answers counted, and the offset to the Redis server's clock.

With ``adaptive=True`` the rates come from the same rate controller as
:class:`~pipeline.limiter.AdaptiveLimiter`'s, and what is shared is that controller's *state*:
the rates, ceilings, peaks, curves and cut times live in the hash, under a version number. A
process that changes the state (a 429 cut, a stated limit, a growth step) writes it with its
next lease, only over the version it started from; a 429 cut or a stated limit is also
published on ``<key>:signals`` so every process takes it at once. A process whose write lost
the race takes the newer state and replays its own refusals on it (where a refusal of a
request granted before the other's cut is old news). So N processes discover a limit as one
client does, not N times each. Every lease also reports the answers the process had since its
last one: the controller measures what the provider admitted from everyone's answers, not one
process's share of them. Times in the state are on the Redis server's clock (each process
keeps its offset to it). The in-flight cap stays per process.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec

from pipeline.limiter._base import RateLimiter
from pipeline.limiter._outcome import Outcome
from pipeline.limiter._queue import _now

__all__ = ["SharedControl"]

_OFFSET_REFRESH = 30.0  # seconds after which a clock offset is measured afresh


class SharedControl(RateLimiter):
    """Base of :class:`~pipeline.limiter.RedisLimiter`: the controller state it shares.

    Its fields are set by ``RedisLimiter.__init__``; the connection settings annotated here
    are :class:`~pipeline.limiter._redis_lease.RedisLink`'s.
    """

    __slots__ = ("_events", "_offset", "_offset_at", "_offset_rtt", "_ok_total_r",
                 "_ok_total_t", "_signals", "_unsent_r", "_unsent_t", "_ver")

    # The version of the shared state this process holds; refusals applied to it since
    # (replayed on a newer version should another process write first); the offset from this
    # process's clock to Redis's; answers not yet reported; the running totals everyone
    # reported; pauses and states heard from the channel.
    _ver: int
    _events: list[tuple[float, Outcome, float]]
    _offset: float
    _offset_rtt: float
    _offset_at: float
    _unsent_r: float
    _unsent_t: float
    _ok_total_r: float | None
    _ok_total_t: float
    _signals: int
    # The connection settings (RedisLink's).
    _redis: Any
    _url: str
    _key: str
    _redis_timeout: float
    _retry_every: float

    def _signal(self, data: bytes | str) -> None:
        """Another process (or this one) published a pause or a new controller state."""
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        kind, _, rest = text.partition(" ")
        if kind == "P":
            try:
                paused_for = float(rest)
            except ValueError:
                return
            self._signals += 1
            if paused_for > 0:
                until = _now() + paused_for
                if until > self._paused_until:
                    self._paused_until = until
            self._wake()
        elif kind == "S" and self._control is not None:
            version, _, blob = rest.partition(" ")
            try:
                ver = int(float(version))
            except ValueError:
                return
            if ver > self._ver:
                self._signals += 1
                self._adopt(ver, blob)

    def _adopt(self, ver: int, blob: str | bytes) -> None:
        """Take the shared controller state of version ``ver``; replay this process's
        refusals that are not in it yet."""
        control = self._control
        if control is None:
            return
        try:
            data = msgspec.json.decode(blob)
        except msgspec.DecodeError:
            return
        if not isinstance(data, dict):
            return
        self._ver = ver
        now = _now()
        for name in control.adopt(data, self._offset):
            # Another process was refused: the provider's bucket is empty, so what this one
            # holds of it would only draw 429s of its own.
            self._drain(name, now)
        control.dirty = control.urgent = False
        for granted_at, outcome, when in self._events:
            control.refused(granted_at, outcome, when)
        self._wake()

    async def _listen(self) -> None:
        """Hear the pauses and cuts published on ``<key>:signals`` as they happen.

        Its own connection, without a read timeout (it waits for news); it never decides
        whether Redis is up (the lease loop does): a failure here is retried quietly, and
        meanwhile the shared pause and state still arrive with every lease.
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

    def _clock_offset(self, server_now: float, sent_at: float, now: float) -> None:
        """Keep the offset from this process's clock to Redis's (the shared state's times),
        from the round trip that measured it best lately."""
        rtt = now - sent_at
        if rtt <= self._offset_rtt or now - self._offset_at > _OFFSET_REFRESH:
            self._offset = server_now - (sent_at + now) / 2
            self._offset_rtt = rtt
            self._offset_at = now

    def _shared_state(self, ver: int, blob: Any, accepted: bool, sent: bool) -> None:
        """What the script said of the controller state: ours written, or a newer one."""
        control = self._control
        if control is None:
            return
        if accepted:
            self._ver = ver
            self._events.clear()
            control.urgent = False
            control.dirty = False
        elif blob:
            self._adopt(ver, blob)
        elif sent:
            self._ver = ver  # nothing newer stored (the key expired): ours goes next time

    def _answers_elsewhere(self, total_r: float, total_t: float, sent_r: float,
                           sent_t: float, now: float) -> None:
        """Everyone's answers so far, as Redis adds them up: the others' count too in what
        the provider admitted (the controller measures the quota, not this process)."""
        if self._ok_total_r is not None and self._control is not None:
            others_r = total_r - self._ok_total_r - sent_r
            others_t = total_t - self._ok_total_t - sent_t
            if others_r > 0 or others_t > 0:
                self._control.counted(max(0.0, others_r), max(0.0, others_t), now)
        self._ok_total_r, self._ok_total_t = total_r, total_t
