"""The rate limiters: limits hold in every window, FIFO, cancellation, pause, sync, errors.

Everything runs on a virtual-time event loop: no test sleeps for real.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from _outcomes import outcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError, RequestTooLarge
from pipeline.limiter import IntervalLimiter, RateLimiter, TokenBucketLimiter
from pipeline.testing import run_virtual

EPS = 1e-6


def full_bucket(max_requests: float | None = None, max_tokens: float | None = None, *,
                interval: float = 60.0) -> TokenBucketLimiter:
    """A bucket holding a full interval's worth (the tests of the waiting machinery use it;
    the default bucket, half a second of the rate, is tested on its own)."""
    return TokenBucketLimiter(max_requests, max_tokens, interval=interval,
                              burst_requests=max_requests, burst_tokens=max_tokens)


async def _drive(limiter: RateLimiter, arrivals: list[tuple[float, float, float]]
                 ) -> list[tuple[int, float, float, float]]:
    """Start one acquire per (arrival time, requests, tokens); return grants in grant order
    as (arrival index, grant time, requests, tokens)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    grants: list[tuple[int, float, float, float]] = []

    async def one(i: int, at: float, requests: float, tokens: float) -> None:
        await asyncio.sleep(at)
        await limiter.acquire(requests, tokens)
        grants.append((i, loop.time() - start, requests, tokens))

    await asyncio.gather(*(one(i, *a) for i, a in enumerate(arrivals)))
    return grants


def _max_in_window(grants: list[tuple[int, float, float, float]], window: float, dim: int
                   ) -> float:
    """The largest amount granted within any closed window of length ``window``."""
    times = [g[1] for g in grants]
    best = 0.0
    for i, t0 in enumerate(times):
        total = sum(g[dim] for g in grants[i:] if g[1] <= t0 + window + EPS)
        best = max(best, total)
    return best


arrival_lists = st.lists(
    st.tuples(
        # Arrival times on a 1/64 s grid: exact in binary floating point, so window
        # boundaries in the checks below are not blurred by rounding.
        st.integers(min_value=0, max_value=320).map(lambda x: x / 64),
        st.integers(min_value=0, max_value=3),  # requests
        st.integers(min_value=0, max_value=900),  # tokens
    ),
    min_size=1, max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrivals=arrival_lists,
       rate_r=st.sampled_from([1.0, 2.5, 10.0]), rate_t=st.sampled_from([300.0, 1000.0]),
       burst_r=st.sampled_from([3.0, 5.0]), burst_t=st.sampled_from([900.0, 2000.0]),
       window=st.sampled_from([0.1, 1.0, 3.0]))
def test_token_bucket_never_exceeds_rate_times_window_plus_burst(
        arrivals, rate_r, rate_t, burst_r, burst_t, window):
    limiter = TokenBucketLimiter(rate_r, rate_t, interval=1.0, burst_requests=burst_r,
                                 burst_tokens=burst_t)
    grants = run_virtual(_drive(limiter, arrivals))
    assert len(grants) == len(arrivals)  # everyone is served eventually
    assert _max_in_window(grants, window, 2) <= rate_r * window + burst_r + EPS
    assert _max_in_window(grants, window, 3) <= rate_t * window + burst_t + EPS


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrivals=arrival_lists)
def test_waiters_are_granted_in_arrival_order(arrivals):
    limiter = TokenBucketLimiter(2, 500, interval=1.0, burst_requests=3, burst_tokens=900)
    # Distinct arrival times so "arrival order" is well defined.
    arrivals = [(i * 0.01 + a[0] * 0, a[1], a[2]) for i, a in enumerate(arrivals)]
    grants = run_virtual(_drive(limiter, arrivals))
    assert [g[0] for g in grants] == list(range(len(arrivals)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrivals=arrival_lists, interval=st.sampled_from([0.5, 1.0, 2.0]))
def test_interval_limiter_never_grants_past_capacity_in_a_window(arrivals, interval):
    limiter = IntervalLimiter(3, 1000, interval=interval)
    grants = run_virtual(_drive(limiter, arrivals))
    assert len(grants) == len(arrivals)
    first = min(g[1] for g in grants)
    per_window: dict[int, list[float]] = {}
    for _, t, r, k in grants:
        w = math.floor((t - first) / interval + EPS)
        acc = per_window.setdefault(w, [0.0, 0.0])
        acc[0] += r
        acc[1] += k
    for r, k in per_window.values():
        assert r <= 3 + EPS and k <= 1000 + EPS


def test_saturated_rate_matches_configured_rate():
    limiter = TokenBucketLimiter(100, interval=1.0, burst_requests=10)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(limiter.acquire() for _ in range(1010)))
        return loop.time() - start

    elapsed = run_virtual(main())
    # 10 at once from the full bucket, then 1000 at 100/s.
    assert elapsed == pytest.approx(10.0, rel=1e-6)


def test_both_dimensions_bind_whichever_is_tighter():
    # 600 tokens per request against 1,000 tokens/s: tokens bind, not requests.
    limiter = TokenBucketLimiter(1000, 1000, interval=1.0, burst_requests=1, burst_tokens=600)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(limiter.acquire(1, 600) for _ in range(11)))
        return loop.time() - start

    assert run_virtual(main()) == pytest.approx(6.0, rel=1e-6)


def test_large_request_is_not_starved_by_later_small_ones():
    limiter = full_bucket(max_tokens=1000, interval=1.0)

    async def main() -> list[str]:
        order: list[str] = []
        await limiter.acquire(tokens=1000)  # empty the bucket

        async def take(name: str, tokens: int, delay: float) -> None:
            await asyncio.sleep(delay)
            await limiter.acquire(tokens=tokens)
            order.append(name)

        await asyncio.gather(take("big", 900, 0.0),
                             *(take(f"small{i}", 100, 0.001 * (i + 1)) for i in range(5)))
        return order

    assert run_virtual(main()) == ["big", "small0", "small1", "small2", "small3", "small4"]


def test_newcomer_does_not_jump_the_queue_even_if_it_fits():
    limiter = full_bucket(max_tokens=1000, interval=1.0)

    async def main() -> bool:
        await limiter.acquire(tokens=800)  # 200 left
        big = asyncio.ensure_future(limiter.acquire(tokens=900))  # noqa: F841, RUF006
        await asyncio.sleep(0)
        return limiter.try_acquire(tokens=100)  # fits, but "big" waits first

    assert run_virtual(main()) is False


def test_cancelled_waiter_leaks_no_capacity():
    limiter = full_bucket(max_tokens=100, interval=1.0)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        await limiter.acquire(tokens=100)
        doomed = asyncio.ensure_future(limiter.acquire(tokens=100))
        await asyncio.sleep(0.5)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        start = loop.time()
        await limiter.acquire(tokens=100)  # half refilled: 0.5 s more, not 1.5 s
        return loop.time() - start

    assert run_virtual(main()) == pytest.approx(0.5, abs=1e-6)


def test_waiter_cancelled_right_after_grant_gives_it_back():
    limiter = full_bucket(max_tokens=100, interval=1.0)

    async def main() -> float | None:
        await limiter.acquire(tokens=100)
        task = asyncio.ensure_future(limiter.acquire(tokens=100))
        await asyncio.sleep(0)  # task is queued
        limiter.refund(tokens=100)  # grants the task at once, but it has not resumed yet...
        task.cancel()  # ...and is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await task
        return limiter.snapshot().tokens_available

    assert run_virtual(main()) == pytest.approx(100)


def test_timeout_around_acquire_cancels_cleanly():
    limiter = full_bucket(1, interval=10.0)

    async def main() -> int:
        await limiter.acquire()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await limiter.acquire()
        return limiter.snapshot().waiters

    assert run_virtual(main()) == 0


def test_pause_holds_every_grant_until_it_ends():
    limiter = full_bucket(1000, interval=1.0)

    async def main() -> tuple[float, bool]:
        loop = asyncio.get_running_loop()
        limiter.pause(2.0)
        refused = limiter.try_acquire()
        start = loop.time()
        await asyncio.gather(*(limiter.acquire() for _ in range(5)))
        return loop.time() - start, refused

    elapsed, refused = run_virtual(main())
    assert refused is False
    assert elapsed == pytest.approx(2.0)


def test_pause_never_shortens_a_longer_one():
    limiter = full_bucket(10, interval=1.0)

    async def main() -> float:
        limiter.pause(5)
        limiter.pause(1)
        return limiter.paused_for

    assert run_virtual(main()) == pytest.approx(5)


def test_refund_and_reconcile_return_and_take_tokens():
    limiter = full_bucket(max_tokens=1000, interval=60.0)

    async def main() -> list[float | None]:
        seen = []
        await limiter.acquire(tokens=1000)
        limiter.reconcile(estimated=1000, actual=300)  # 700 back
        seen.append(limiter.snapshot().tokens_available)
        limiter.reconcile(estimated=0, actual=900)  # used more than reserved: debt
        seen.append(limiter.snapshot().tokens_available)
        limiter.refund(tokens=10_000)  # capped at the bucket
        seen.append(limiter.snapshot().tokens_available)
        return seen

    assert run_virtual(main()) == pytest.approx([700, -200, 1000])


def test_refund_wakes_a_waiter_early():
    limiter = full_bucket(max_tokens=100, interval=100.0)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        await limiter.acquire(tokens=100)
        start = loop.time()
        waiter = asyncio.ensure_future(limiter.acquire(tokens=50))
        await asyncio.sleep(1)
        limiter.refund(tokens=50)
        await waiter
        return loop.time() - start

    assert run_virtual(main()) == pytest.approx(1.0)


def test_request_too_large_fails_at_once():
    limiter = full_bucket(max_requests=10, max_tokens=10_000)

    async def main() -> None:
        with pytest.raises(RequestTooLarge, match="12000 tokens") as info:
            await limiter.acquire(tokens=12_000)
        assert info.value.capacity == 10_000
        with pytest.raises(RequestTooLarge):
            await limiter.acquire(requests=11)
        with pytest.raises(RequestTooLarge):
            IntervalLimiter(max_tokens=5).try_acquire(tokens=6)

    run_virtual(main())


@pytest.mark.parametrize("kwargs", [
    {"max_requests": -1}, {"max_requests": 0}, {"max_tokens": math.nan},
    {"max_tokens": math.inf}, {"interval": 0}, {"max_requests": "10"},
    {"burst_requests": -5}, {"max_requests": True},
])
def test_bad_configuration_is_a_clear_error(kwargs):
    with pytest.raises(ConfigError):
        TokenBucketLimiter(**kwargs)


@pytest.mark.parametrize("amount", [{"requests": -1}, {"tokens": math.nan}, {"tokens": "5"}])
def test_bad_amounts_are_a_clear_error(amount):
    limiter = full_bucket(10, 100)
    with pytest.raises(ConfigError):
        limiter.try_acquire(**amount)
    with pytest.raises(ConfigError):
        run_virtual(limiter.acquire(**amount))
    with pytest.raises(ConfigError):
        limiter.pause(math.nan)


def test_set_rate_at_run_time_speeds_up_waiters():
    limiter = full_bucket(1, interval=1.0)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = [asyncio.ensure_future(limiter.acquire()) for _ in range(11)]
        await asyncio.sleep(0)
        limiter.set_rate(max_requests=10)  # bucket of 10 per second now
        await asyncio.gather(*tasks)
        return loop.time() - start

    # First grant from the initial bucket of 1, the other 10 at 10/s.
    assert run_virtual(main()) == pytest.approx(1.0)


def test_set_rate_can_lift_and_add_a_dimension():
    limiter = full_bucket(10)
    limiter.set_rate(max_requests=None, max_tokens=500)
    assert (limiter.max_requests, limiter.max_tokens) == (None, 500)
    # A dimension that becomes limited starts with a full default bucket: half a second.
    assert limiter.snapshot().tokens_available == pytest.approx(500 / 60 / 2)


def test_update_from_headers_lowers_limits_and_remaining():
    limiter = full_bucket(max_requests=10_000, max_tokens=1_000_000)

    async def main() -> None:
        limiter.observe(outcome(headers={
            "x-ratelimit-limit-requests": "5000",
            "X-RateLimit-Limit-Tokens": "2000000",  # higher than ours: ignored
            "x-ratelimit-remaining-requests": "4",
            "x-ratelimit-remaining-tokens": "garbage",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-reset-tokens": "6m0s",
        }))
        snap = limiter.snapshot()
        assert snap.max_requests == 5000
        assert snap.max_tokens == 1_000_000
        assert snap.requests_available == pytest.approx(4, abs=0.01)
        assert snap.tokens_available == pytest.approx(1_000_000)

    run_virtual(main())


@pytest.mark.parametrize("value", ["-1", "", "abc", "nan", "inf", None, "1e400"])
def test_update_from_headers_ignores_missing_and_garbage(value):
    limiter = full_bucket(max_requests=100, max_tokens=1000)
    headers = {} if value is None else {
        "x-ratelimit-limit-requests": value, "x-ratelimit-remaining-tokens": value,
        "x-ratelimit-reset-requests": value}
    limiter.observe(outcome(headers=headers))
    snap = limiter.snapshot()
    assert (snap.max_requests, snap.max_tokens) == (100, 1000)
    assert snap.requests_available == pytest.approx(100)
    assert snap.tokens_available == pytest.approx(1000)


def test_header_limits_apply_to_an_unlimited_dimension():
    limiter = TokenBucketLimiter()
    limiter.observe(outcome(headers={"x-ratelimit-limit-requests": "60"}))
    assert limiter.max_requests == 60


def test_interval_limiter_restores_full_capacity_each_interval():
    limiter = IntervalLimiter(max_requests=3, interval=10.0)

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        times = []
        for _ in range(7):
            await limiter.acquire()
            times.append(loop.time() - start)
        return times

    assert run_virtual(main()) == pytest.approx([0, 0, 0, 10, 10, 10, 20])


def test_interval_limiter_aligns_its_window_to_the_server_reset():
    limiter = IntervalLimiter(max_requests=1, interval=60.0)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        await limiter.acquire()
        # (A reset counts beside a limit or what remains: Azure's lone "0" says nothing.)
        limiter.observe(outcome(headers={"x-ratelimit-remaining-requests": "0",
                                         "x-ratelimit-reset-requests": "2s"}))
        start = loop.time()
        await limiter.acquire()
        return loop.time() - start

    assert run_virtual(main()) == pytest.approx(2.0)


def test_limiter_is_not_bound_to_the_loop_it_was_made_in():
    limiter = full_bucket(2, interval=0.05)

    async def burst() -> None:
        await asyncio.gather(*(limiter.acquire() for _ in range(4)))

    asyncio.run(burst())  # real loops, a few tens of milliseconds
    asyncio.run(burst())


def test_async_with_takes_one_request():
    limiter = full_bucket(5)

    async def main() -> float | None:
        async with limiter:
            pass
        return limiter.snapshot().requests_available

    assert run_virtual(main()) == pytest.approx(4)


def test_repr_and_snapshot_show_live_state():
    limiter = TokenBucketLimiter(max_requests=600, max_tokens=90_000, burst_requests=10,
                                 burst_tokens=90_000)

    async def main() -> str:
        await asyncio.gather(*(limiter.acquire(tokens=10) for _ in range(10)))
        waiting = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        limiter.pause(3)
        text = repr(limiter)
        waiting.cancel()
        return text

    text = run_virtual(main())
    assert "requests=0/600 per min" in text
    assert "tokens=89,900/90,000 per min" in text
    assert "waiters=1" in text and "paused 3s" in text and "next wake in 3s" in text


def test_header_limits_shrink_an_explicit_burst_in_proportion():
    limiter = TokenBucketLimiter(max_requests=1200, burst_requests=120)
    limiter.observe(outcome(headers={"x-ratelimit-limit-requests": "600"}))
    assert limiter.max_requests == 600
    assert limiter.snapshot().requests_available == pytest.approx(60)


def test_default_bucket_holds_half_a_second_of_the_rate():
    # A provider enforcing 6,000/min as 100/s holds 100: the client's default bucket holds
    # 50 of them, leaving the rest for network jitter (never a minute's worth at once).
    limiter = TokenBucketLimiter(max_requests=6_000, max_tokens=600_000)
    snap = limiter.snapshot()
    assert (snap.requests_available, snap.tokens_available) == (50, 5_000)
    assert sum(limiter.try_acquire() for _ in range(200)) == 50


def test_a_request_larger_than_the_bucket_waits_for_a_full_bucket_then_owes_the_rest():
    limiter = TokenBucketLimiter(max_tokens=60_000)  # 1,000 tokens/s, bucket 500

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        times = []
        for tokens in (4_000, 100, 4_000):
            await limiter.acquire(tokens=tokens)
            times.append(loop.time())
        return times

    # 4,000 at once (full bucket) -> owes 3,500: the next 100 waits 3.6 s; the next 4,000
    # needs a full bucket again: 0.5 s more.
    assert run_virtual(main()) == pytest.approx([0.0, 3.6, 4.1])


def test_only_a_request_above_the_whole_interval_limit_is_too_large():
    limiter = TokenBucketLimiter(max_tokens=60_000)
    with pytest.raises(RequestTooLarge):
        limiter.try_acquire(tokens=60_001)
    assert limiter.try_acquire(tokens=60_000)


def test_a_pause_lasts_max_pause_at_most_and_a_capped_429_is_said_once(caplog):
    from pipeline.errors import RateLimitError
    from pipeline.limiter import MAX_PAUSE

    limiter = TokenBucketLimiter(max_requests=600)
    limiter.pause(3600)
    assert MAX_PAUSE - 1 < limiter.paused_for <= MAX_PAUSE == limiter.max_pause
    with pytest.raises(ConfigError):
        limiter.max_pause = -1

    async def main():
        for _ in range(3):
            lease = await limiter.lease()
            limiter.settle(lease, outcome(error=RateLimitError(
                "429", status=429, headers={"retry-after": "86400"}, retry_after=86400.0)))
        return limiter.paused_for

    limiter = TokenBucketLimiter(max_requests=600)
    limiter.max_pause = 30
    caplog.set_level("WARNING", logger="pipeline.limiter")
    assert run_virtual(main()) == 30
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.limiter"]
    assert said == ["the server asked to wait 86,400 s (Retry-After); waiting at most 30 s "
                    "at a time"]


def test_wait_estimate_counts_the_pause_the_bucket_and_the_queue():
    limiter = TokenBucketLimiter(max_requests=10, max_tokens=1_000, interval=1.0,
                                 burst_requests=1, burst_tokens=100)

    async def main() -> list[float]:
        await limiter.acquire(1, 100)  # both buckets empty now
        seen = [limiter.wait_estimate(1, 0), limiter.wait_estimate(1, 100)]
        waiters = [asyncio.ensure_future(limiter.acquire(1, 0)) for _ in range(3)]
        await asyncio.sleep(0)
        seen.append(limiter.wait_estimate(1, 0))  # behind three: four requests at 10/s
        assert limiter.queued == 3
        limiter.pause(2.0)
        seen.append(limiter.wait_estimate(1, 0))
        for waiter in waiters:
            waiter.cancel()
        return seen

    bucket, tokens, queued, paused = run_virtual(main())
    assert bucket == pytest.approx(0.1) and tokens == pytest.approx(0.1)
    assert queued == pytest.approx(0.4) and paused == pytest.approx(2.0)
