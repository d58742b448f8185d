"""Our rate limiters side by side with aiolimiter, pyrate-limiter and limits, in one run.

Three measurements, every limiter in the same process and the same event loop:

1. **Uncontended**: ``await acquire()`` in a tight loop with capacity always there (huge
   rates). Microseconds per acquire, best of ``--reps`` repetitions (the machine is shared, so
   the best run is the least disturbed one); repetitions are interleaved across limiters so
   drift hits them alike.
2. **Saturated**: 1,000 tasks looping ``acquire`` against 20,000/s with a burst of 200 (1% of
   a second's worth) wherever the peer lets us set one. Achieved rate (steady state, after
   the first window) / configured; the most grants seen in any 1-second window (0.1 s with
   ``--quick``) / allowed (``rate x window + 200``); CPU seconds per 10,000 grants.
3. **Fairness**: the bucket is drained, one 900-token request arrives first, then 100-token
   requests arrive at twice the token rate. How long the large one waits, where it lands in
   grant order, and how many later arrivals were served before it.

Ours always tracks two dimensions: every acquire takes 1 request *and* tokens, each limited.
The peers limit a single quantity. pyrate-limiter is used through its v4 API (the installed
4.x: ``Limiter(bucket)``, ``try_acquire_async``). limits' ``hit()`` never waits, so it is
wrapped in the waiting acquire described in :func:`limits_waiting_acquire` (the output says so).

    python benchmarks/limiter_throughput.py            # about 40 s
    python benchmarks/limiter_throughput.py --quick    # a few seconds, numbers only indicative
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import limits
import pyrate_limiter as pyrate
from aiolimiter import AsyncLimiter
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from pipeline.limiter import AdaptiveLimiter, IntervalLimiter, TokenBucketLimiter

TOKENS_PER_REQUEST = 10  # ours takes (1 request, 10 tokens) per acquire in tables 1 and 2
HUGE = 10**12  # "capacity always available"
LIMITS_MIN_SLEEP = 0.001

AcquireOne = Callable[[], Awaitable[Any]]
Acquire = Callable[[int], Awaitable[Any]]


@dataclass
class Built:
    """One limiter instance, ready to drive."""

    acquire_one: AcquireOne  # one unit, bound as directly as the library allows
    acquire: Acquire  # ``amount`` units (tokens in the fairness run)
    burst: float  # the effective burst in units: what can pass at once after idling
    close: Callable[[], None] = field(default=lambda: None)
    # ``time.monotonic()`` at each grant, where the limiter grants outside the caller's task
    # (ours: in a timer callback); None where capacity is taken inside the resumed task.
    grant_stamps: list[float] | None = None


@dataclass
class Contender:
    name: str
    build: Callable[[float, float, bool, bool], Built]  # (rate/s, burst, by_tokens, record)
    note: str


# ----------------------------------------------------------------------------- ours
class _RecordingBucket:
    """Notes the clock at every grant of a token bucket (the fused fast path does not go
    through _take). Only in the saturated run: it costs a little."""

    __slots__ = ()
    grants: list[float]

    def _fast_take(self, requests: float, tokens: float, now: float) -> bool:
        if super()._fast_take(requests, tokens, now):  # type: ignore[misc]
            self.grants.append(time.monotonic())
            return True
        return False

    def _take(self, requests: float, tokens: float, now: float) -> None:
        super()._take(requests, tokens, now)  # type: ignore[misc]
        self.grants.append(time.monotonic())


class _RecordingTokenBucket(_RecordingBucket, TokenBucketLimiter):
    __slots__ = ("grants",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grants = []


class _RecordingInterval(IntervalLimiter):
    """As above; the base class's fast path calls _take, so one hook sees every grant."""

    __slots__ = ("grants",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grants: list[float] = []

    def _take(self, requests: float, tokens: float, now: float) -> None:
        super()._take(requests, tokens, now)
        self.grants.append(time.monotonic())


def build_token_bucket(rate: float, burst: float, by_tokens: bool, record: bool) -> Built:
    cls = _RecordingTokenBucket if record else TokenBucketLimiter
    if by_tokens:
        # Units are tokens; requests are limited too, loosely enough never to bind.
        limiter = cls(max_requests=rate / 20, max_tokens=rate, interval=1.0,
                      burst_requests=max(burst / 20, 1), burst_tokens=burst)
    else:
        # Units are requests; tokens (10 a request) are limited at exactly the same pace,
        # so both dimensions bind.
        limiter = cls(max_requests=rate, max_tokens=rate * TOKENS_PER_REQUEST, interval=1.0,
                      burst_requests=burst, burst_tokens=burst * TOKENS_PER_REQUEST)
    return _ours(limiter, burst, by_tokens)


class _RecordingAdaptive(_RecordingBucket, AdaptiveLimiter):
    __slots__ = ("grants",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grants = []


def build_adaptive(rate: float, burst: float, by_tokens: bool, record: bool) -> Built:
    # Told its limits (ceilings), as a user who knows them; the same bucket as above.
    cls = _RecordingAdaptive if record else AdaptiveLimiter
    if by_tokens:
        limiter = cls(max_requests=rate / 20, max_tokens=rate, interval=1.0,
                      burst_requests=max(burst / 20, 1), burst_tokens=burst)
    else:
        limiter = cls(max_requests=rate, max_tokens=rate * TOKENS_PER_REQUEST, interval=1.0,
                      burst_requests=burst, burst_tokens=burst * TOKENS_PER_REQUEST)
    return _ours(limiter, burst, by_tokens)


def build_interval(rate: float, burst: float, by_tokens: bool, record: bool) -> Built:
    # A fixed window of ``burst / rate`` seconds holding ``burst``: the same long-run rate,
    # and never more than ``burst`` at once within a window.
    cls = _RecordingInterval if record else IntervalLimiter
    interval = burst / rate
    if by_tokens:
        limiter = cls(max_requests=max(burst / 20, 1), max_tokens=burst, interval=interval)
    else:
        limiter = cls(max_requests=burst, max_tokens=burst * TOKENS_PER_REQUEST,
                      interval=interval)
    return _ours(limiter, burst, by_tokens)


def _ours(limiter: TokenBucketLimiter | IntervalLimiter, burst: float, by_tokens: bool) -> Built:
    if by_tokens:
        def acquire(amount: int) -> Awaitable[None]:
            return limiter.acquire(1, amount)
    else:
        def acquire(amount: int) -> Awaitable[None]:
            return limiter.acquire(amount, amount * TOKENS_PER_REQUEST)
    return Built(partial(limiter.acquire, 1, TOKENS_PER_REQUEST), acquire, burst,
                 grant_stamps=getattr(limiter, "grants", None))


# ----------------------------------------------------------------------------- aiolimiter
def build_aiolimiter(rate: float, burst: float, by_tokens: bool, record: bool) -> Built:
    # A leaky bucket of ``max_rate`` draining over ``time_period``: burst = max_rate.
    limiter = AsyncLimiter(burst, burst / rate)
    return Built(partial(limiter.acquire, 1), limiter.acquire, burst)


# ----------------------------------------------------------------------------- pyrate-limiter
PYRATE_BUFFER_MS = 0  # the default, 50 ms of extra sleep per wait, caps it near burst / 51 ms


def build_pyrate_gcra(rate: float, burst: float, by_tokens: bool, record: bool) -> Built:
    bucket = pyrate.StateBucket([pyrate.Rate(int(rate), 1000, burst=int(burst))],
                                algorithm=pyrate.TokenBucket())
    return _pyrate(pyrate.Limiter(bucket, buffer_ms=PYRATE_BUFFER_MS), burst)


def build_pyrate_log(rate: float, burst: float, by_tokens: bool, record: bool) -> Built:
    # The default in-memory bucket (a sliding-window log): ``burst`` per ``burst / rate``.
    window_ms = round(burst / rate * 1000)
    if window_ms < 1:  # the uncontended case: one huge per-second window
        rate_spec = pyrate.Rate(int(rate), 1000)
    else:
        rate_spec = pyrate.Rate(int(burst), window_ms)
    limiter = pyrate.Limiter(pyrate.InMemoryBucket([rate_spec]), buffer_ms=PYRATE_BUFFER_MS)
    return _pyrate(limiter, burst)


def _pyrate(limiter: pyrate.Limiter, burst: float) -> Built:
    # try_acquire_async: an asyncio.Lock per thread, then a sleep-and-retry loop (blocking).
    def acquire(amount: int) -> Awaitable[bool]:
        return limiter.try_acquire_async("bench", amount)

    return Built(partial(limiter.try_acquire_async, "bench", 1), acquire, burst, limiter.close)


# ----------------------------------------------------------------------------- limits
def limits_waiting_acquire(strategy: RateLimiter, item: limits.RateLimitItem) -> Acquire:
    """The waiting acquire we wrote for limits, whose ``hit()`` only says yes or no.

    Fast path: a ``hit()`` when nobody is queued. Otherwise queue on an ``asyncio.Lock``
    (FIFO, so one poller at a time and no thundering herd), and at the head loop: ``hit()``;
    on refusal sleep until the window's reset time from ``get_window_stats()`` (at least
    ``LIMITS_MIN_SLEEP``), then retry.
    """
    lock = asyncio.Lock()
    hit = strategy.hit

    async def acquire(amount: int = 1) -> None:
        if not lock.locked() and await hit(item, "bench", cost=amount):
            return
        async with lock:
            while not await hit(item, "bench", cost=amount):
                reset, _ = await strategy.get_window_stats(item, "bench")
                await asyncio.sleep(max(reset - time.time(), LIMITS_MIN_SLEEP))

    return acquire


def _build_limits(cls: type[RateLimiter], rate: float) -> Built:
    # limits' windows are whole seconds or more, so the burst is a full second's worth.
    item = limits.RateLimitItemPerSecond(int(rate), 1)
    acquire = limits_waiting_acquire(cls(MemoryStorage()), item)
    return Built(partial(acquire, 1), acquire, float(int(rate)))


def build_limits_moving(rate: float, burst: float, by_tokens: bool, record: bool) -> Built:
    return _build_limits(MovingWindowRateLimiter, rate)


def build_limits_sliding(rate: float, burst: float, by_tokens: bool, record: bool) -> Built:
    return _build_limits(SlidingWindowCounterRateLimiter, rate)


CONTENDERS = [
    Contender("ours Adaptive", build_adaptive,
              "the default: requests AND tokens, both limited, rates under the controller"),
    Contender("ours TokenBucket", build_token_bucket,
              "requests AND tokens, both limited; burst as configured"),
    Contender("ours Interval", build_interval,
              "requests AND tokens; fixed window of burst/rate s holding burst"),
    Contender("aiolimiter", build_aiolimiter,
              "AsyncLimiter(burst, burst/rate): leaky bucket, burst = max_rate"),
    Contender("pyrate GCRA", build_pyrate_gcra,
              f"StateBucket(Rate(rate, 1 s, burst), TokenBucket()), try_acquire_async, "
              f"buffer_ms={PYRATE_BUFFER_MS}"),
    Contender("pyrate log", build_pyrate_log,
              f"InMemoryBucket(Rate(burst, burst/rate s)) sliding log, try_acquire_async, "
              f"buffer_ms={PYRATE_BUFFER_MS}"),
    Contender("limits moving*", build_limits_moving,
              "MovingWindowRateLimiter + aio MemoryStorage, rate per 1 s (burst = a full "
              "second's worth)"),
    Contender("limits sliding*", build_limits_sliding,
              "SlidingWindowCounterRateLimiter + aio MemoryStorage, rate per 1 s"),
]
BASELINE = "aiolimiter"
OURS = "ours TokenBucket"
ADAPTIVE = "ours Adaptive"


# ----------------------------------------------------------------------------- 1. uncontended
async def time_acquires(acquire: AcquireOne, n: int) -> tuple[float, float]:
    """Wall and CPU seconds per acquire over ``n`` acquires (after a short warm-up)."""
    for _ in range(200):
        await acquire()
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(n):
        await acquire()
    return (time.perf_counter() - start) / n, (time.process_time() - cpu) / n


async def uncontended(n: int, reps: int) -> dict[str, tuple[float, float]]:
    """Best wall and best CPU seconds per acquire, each over ``reps`` interleaved runs."""
    best = {c.name: (float("inf"), float("inf")) for c in CONTENDERS}
    for _ in range(reps):
        for contender in CONTENDERS:
            built = contender.build(HUGE, HUGE, False, False)  # fresh each time: logs start empty
            try:
                wall, cpu = await time_acquires(built.acquire_one, n)
            finally:
                built.close()
            best_wall, best_cpu = best[contender.name]
            best[contender.name] = (min(best_wall, wall), min(best_cpu, cpu))
    return best


# ----------------------------------------------------------------------------- 2. saturated
@dataclass
class Saturation:
    achieved: float  # grants per second after the first window
    max_resumed: int  # most callers resumed (granted, back in their task) in any window
    max_granted: int | None  # most grants in any window, stamped where the limiter grants
    cpu_per_10k: float
    grants: int
    burst: float


def max_in_window(stamps: list[float], window: float) -> int:
    """Most stamps in any closed interval of length ``window`` (stamps sorted)."""
    most = 0
    lo = 0
    for hi, stamp in enumerate(stamps):
        while stamp - stamps[lo] > window:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


async def saturate(built: Built, workers: int, seconds: float, window: float) -> Saturation:
    acquire = built.acquire_one
    clock = time.monotonic  # what the default loop's time() returns; grant stamps use it too
    stamps: list[float] = []
    record = stamps.append
    running = True

    async def worker() -> None:
        while running:
            await acquire()
            record(clock())  # the caller resumes: this is when its request would go out

    gc.collect()
    cpu0 = time.process_time()
    start = clock()
    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await asyncio.sleep(seconds)
    running = False
    end = clock()
    cpu = time.process_time() - cpu0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Tasks already queued to resume when the run ended may still have stamped: drop them.
    stamps = [s for s in stamps if s <= end]
    granted = None
    if built.grant_stamps is not None:
        granted = max_in_window([s for s in built.grant_stamps if s <= end], window)
    steady = sum(1 for s in stamps if s >= start + window)
    return Saturation(achieved=steady / max(end - start - window, 1e-9),
                      max_resumed=max_in_window(stamps, window), max_granted=granted,
                      cpu_per_10k=cpu / max(len(stamps), 1) * 10_000, grants=len(stamps),
                      burst=built.burst)


async def saturated(rate: float, burst: float, workers: int, seconds: float,
                    window: float) -> dict[str, Saturation]:
    results = {}
    for contender in CONTENDERS:
        built = contender.build(rate, burst, False, True)
        try:
            results[contender.name] = await saturate(built, workers, seconds, window)
        finally:
            built.close()
    return results


# ----------------------------------------------------------------------------- 3. fairness
@dataclass
class Fairness:
    wait: float | None  # seconds the large request waited (None: not served in time)
    position: int | None  # 1-based place in grant order
    overtaken_by: int  # later arrivals granted before it
    total: int


async def fairness_run(built: Built, rate: float, stream_seconds: float, small: int,
                       large: int, cap: float) -> Fairness:
    loop = asyncio.get_running_loop()
    order: list[str] = []
    granted_at: dict[str, float] = {}

    async def request(name: str, amount: int) -> None:
        await built.acquire(amount)
        granted_at[name] = loop.time()
        order.append(name)

    await built.acquire(int(built.burst))  # drain: nothing left for anyone
    arrived = loop.time()
    tasks = [asyncio.create_task(request("large", large))]
    await asyncio.sleep(0)  # it is queued before any small one exists
    gap = small / (2 * rate)  # small ones arrive at twice the rate
    n_small = int(stream_seconds / gap)
    for i in range(n_small):
        tasks.append(asyncio.create_task(request(f"s{i}", small)))
        await asyncio.sleep(gap)
    _, pending = await asyncio.wait(tasks, timeout=cap)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if "large" not in granted_at:
        return Fairness(None, None, len(order), n_small + 1)
    position = order.index("large") + 1
    return Fairness(granted_at["large"] - arrived, position, position - 1, n_small + 1)


async def fairness(rate: float, burst: float, stream_seconds: float,
                   cap: float) -> dict[str, Fairness]:
    results = {}
    for contender in CONTENDERS:
        built = contender.build(rate, burst, True, False)
        try:
            results[contender.name] = await fairness_run(built, rate, stream_seconds, 100, 900,
                                                         cap)
        finally:
            built.close()
    return results


# ----------------------------------------------------------------------------- output
def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:],
                                                               strict=True))])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="short run (a few seconds) for smoke tests; numbers indicative")
    parser.add_argument("--reps", type=int, help="uncontended repetitions (best is kept)")
    parser.add_argument("--seconds", type=float, help="saturated run per limiter, seconds")
    args = parser.parse_args()

    quick = args.quick
    n_uncontended = 1_000 if quick else 10_000
    reps = args.reps or (2 if quick else 9)
    rate, burst, workers = 20_000.0, 200.0, 1_000
    window = 0.1 if quick else 1.0
    seconds = args.seconds or (0.3 if quick else 3.0)
    f_rate, f_burst = (20_000.0, 1_000.0) if quick else (10_000.0, 1_000.0)
    f_stream = 0.05 if quick else 0.5
    f_cap = 3.0 if quick else 10.0

    started = time.perf_counter()
    print(f"limiter benchmark{' (--quick: short, numbers only indicative)' if quick else ''}: "
          f"one process, one event loop, a shared 2-core machine (noisy: best-of-N in 1)")
    print()
    for contender in CONTENDERS:
        print(f"  {contender.name:<17} {contender.note}")
    print(f"  * limits' hit() never waits, so it runs in our waiting acquire: hit() at once "
          f"when nobody queues; else a FIFO asyncio.Lock, and the head retries hit() after "
          f"sleeping until get_window_stats()'s reset (at least {LIMITS_MIN_SLEEP * 1e3:g} ms)")
    print(f"  ours takes (1 request, {TOKENS_PER_REQUEST} tokens) per acquire in 1 and 2, both "
          f"dimensions limited; the peers take 1 unit of their single dimension")

    unc = asyncio.run(uncontended(n_uncontended, reps))
    base, base_cpu = unc[BASELINE]
    print()
    print(f"1. Uncontended: await acquire() x {n_uncontended:,}, capacity always there, best "
          f"of {reps} interleaved runs; speed = aiolimiter's us / this one's; CPU us "
          f"(process_time) is less disturbed by the machine's other load than wall us")
    print(table(["limiter", "us/acquire", "acquires/s", "speed vs aiolimiter", "CPU us/acquire",
                 "CPU speed vs aiolimiter"],
                [[name, f"{wall * 1e6:.2f}", f"{1 / wall:,.0f}", f"{base / wall:.2f}x",
                  f"{cpu * 1e6:.2f}", f"{base_cpu / cpu:.2f}x"]
                 for name, (wall, cpu) in unc.items()]))

    sat = asyncio.run(saturated(rate, burst, workers, seconds, window))
    allowed = rate * window + burst
    print()
    print(f"2. Saturated: {workers:,} tasks looping acquire, {rate:,.0f}/s configured, burst "
          f"{burst:,.0f} where settable, {seconds:g} s per limiter")
    print(f"   achieved = grants/s after the first {window:g} s; allowed in any {window:g} s = "
          f"{rate:,.0f} x {window:g} + {burst:,.0f} = {allowed:,.0f}; 'resumed' stamps a grant "
          f"when the caller's task runs again, 'granted' when ours grants it (in its timer "
          f"callback; ours runs as a subclass that notes it, about 1% more CPU); the peers "
          f"take capacity inside the resumed task, so for them the two are the same")
    print(table(["limiter", "eff. burst", "achieved/s", "achieved/configured",
                 f"max resumed in {window:g} s", f"max granted in {window:g} s", "max/allowed",
                 "CPU s per 10k", "grants"],
                [[name, f"{s.burst:,.0f}", f"{s.achieved:,.0f}", f"{s.achieved / rate:.3f}",
                  f"{s.max_resumed:,}",
                  "same" if s.max_granted is None else f"{s.max_granted:,}",
                  f"{(s.max_resumed if s.max_granted is None else s.max_granted) / allowed:.3f}",
                  f"{s.cpu_per_10k:.3f}", f"{s.grants:,}"]
                 for name, s in sat.items()]))

    fair = asyncio.run(fairness(f_rate, f_burst, f_stream, f_cap))
    print()
    print(f"3. Fairness: tokens {f_rate:,.0f}/s, burst {f_burst:,.0f} (limits: "
          f"{f_rate:,.0f} per 1 s window); the bucket is drained, one 900-token request "
          f"arrives first, then 100-token requests at 2x the rate for {f_stream:g} s")
    print(table(["limiter", "large waited s", "position in grant order",
                 "later arrivals served first", "requests"],
                [[name, "not served" if f.wait is None else f"{f.wait:.3f}",
                  "-" if f.position is None else f"{f.position}", f"{f.overtaken_by}",
                  f"{f.total}"] for name, f in fair.items()]))

    ours = sat[OURS]
    granted = ours.max_granted if ours.max_granted is not None else ours.max_resumed
    verdicts = [
        ("uncontended >= aiolimiter", unc[OURS][0] <= base,
         f"{unc[OURS][0] * 1e6:.2f} vs {base * 1e6:.2f} us; CPU {unc[OURS][1] * 1e6:.2f} vs "
         f"{base_cpu * 1e6:.2f} us"),
        ("adaptive uncontended >= 1.2x aiolimiter", unc[ADAPTIVE][0] * 1.2 <= base,
         f"{base / unc[ADAPTIVE][0]:.2f}x ({unc[ADAPTIVE][0] * 1e6:.2f} us)"),
        ("achieved >= 99%", ours.achieved >= 0.99 * rate, f"{ours.achieved / rate:.3f}"),
        (f"never above rate x {window:g} s + burst", granted <= allowed,
         f"granted {granted:,} <= {allowed:,.0f}; as resumed {ours.max_resumed:,}"),
        ("large request FIFO", fair[OURS].position == 1, f"position {fair[OURS].position}"),
    ]
    print()
    print("targets (ours TokenBucket): " + "; ".join(
        f"{what}: {'MET' if ok else 'MISSED'} ({detail})" for what, ok, detail in verdicts))
    print(f"(ran in {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
