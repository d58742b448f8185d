"""Rate limiters for requests AND tokens per interval.

A provider such as OpenAI limits a key on two dimensions at once: requests per minute and
tokens per minute. A limiter here grants ``(requests, tokens)`` atomically on both.

Every limiter is one waiting machinery (:class:`RateLimiter`, a FIFO queue) over a bucket;
the adaptive ones add one rate controller (``_control.RateController``) that drives
whichever bucket is in use from :class:`Outcome` values (``pipeline.http.signals`` reads them
from the provider's answers; nothing here knows a header):

* :class:`AdaptiveLimiter` (the default of every endpoint): a token bucket whose rates follow
  the provider's answers, the user's limits acting as ceilings (slow start when they are
  unknown, a cut on each round of 429s, CUBIC growth back, an in-flight cap on overload).
* :class:`TokenBucketLimiter` (``adaptive=False``) refills continuously at fixed rates: in any
  window of length ``W`` it grants at most ``rate * W + burst`` on each dimension.
* :class:`RedisLimiter` shares one quota among processes and machines: a token bucket in
  Redis, leased in small chunks, driven by the same rate controller, whose state every
  process shares; it fails closed to a share by live processes when Redis is away.
* :class:`IntervalLimiter` restores full capacity at the start of every ``interval`` (the
  classic "N per minute" window). It never grants past capacity and owns no background task.

The waiting machinery, shared by both:

* Waiters are served strictly first-in, first-out. A large request at the head is not
  overtaken by later small ones (it would starve), and a newcomer never jumps the queue.
* One timer, armed for the moment the head waiter can be served; no polling, and only the
  waiters actually granted are woken (no thundering herd).
* ``pause(seconds)`` holds every grant until the cooldown ends (after a 429, say), for at
  most ``max_pause`` seconds (:data:`MAX_PAUSE`, 60 s; a longer wait is said once).
* A cancelled waiter takes nothing; if it is cancelled just after being granted, the grant
  is given back.
* A request that can never fit (more than the bucket holds) raises :class:`RequestTooLarge`
  at once instead of waiting forever.
* Nothing is bound to the event loop the limiter was created in: the clock and the timer
  come from whichever loop is running when it is used.

>>> import asyncio
>>> limiter = TokenBucketLimiter(max_requests=600, max_tokens=90_000)  # per minute
>>> async def main():
...     await limiter.acquire(tokens=1_200)      # 1 request, 1,200 tokens
...     async with limiter:                      # 1 request, no tokens
...         pass
...     limiter.reconcile(estimated=1_200, actual=800)   # the response used fewer
>>> asyncio.run(main())
"""

from __future__ import annotations

from pipeline.limiter._adaptive import AdaptiveLimiter
from pipeline.limiter._base import RateLimiter
from pipeline.limiter._interval import IntervalLimiter
from pipeline.limiter._outcome import Dimension, Outcome, OutcomeKind
from pipeline.limiter._queue import Lease, set_clock
from pipeline.limiter._redis import RedisLimiter
from pipeline.limiter._redis_check import check_redis
from pipeline.limiter._redis_url import check_redis_url
from pipeline.limiter._token_bucket import TokenBucketLimiter
from pipeline.limiter._values import (
    DEFAULT_BURST_SECONDS,
    DEFAULT_COOLDOWN,
    KEEP,
    MAX_PAUSE,
    LimiterSnapshot,
)

__all__ = [
    "DEFAULT_BURST_SECONDS",
    "DEFAULT_COOLDOWN",
    "KEEP",
    "MAX_PAUSE",
    "AdaptiveLimiter",
    "Dimension",
    "IntervalLimiter",
    "Lease",
    "LimiterSnapshot",
    "Outcome",
    "OutcomeKind",
    "RateLimiter",
    "RedisLimiter",
    "TokenBucketLimiter",
    "check_redis",
    "check_redis_url",
    "set_clock",
]
