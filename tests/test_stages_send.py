"""pipeline.stages._send: acquire and call; leases settled with what the provider counts."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from aiostream import stream

from pipeline.core.record import Record
from pipeline.errors import (
    RateLimitError,
    RequestTooLarge,
)
from pipeline.limiter import TokenBucketLimiter
from pipeline.stages import (
    Backoff,
    acquire,
    build,
    call,
    retry,
)
from pipeline.testing import InstantService, run_virtual

ROWS = [{"text": f"row {i}"} for i in range(20)]


def _job(service: InstantService, **config):
    return service.chat(model="m", prompt="Classify: {text}", max_tokens=5, **config)



def test_a_429_pauses_the_limiter_for_everyone():
    calls: list[float] = []

    def fail(request, n):
        calls.append(asyncio.get_running_loop().time())
        if request.body["messages"][0]["content"].endswith("row 0") and n == 1:
            return RateLimitError("slow down", status=429, retry_after=5.0)
        return None

    service = InstantService(fail=fail, latency=0.01)
    limiter = TokenBucketLimiter(max_requests=1000, interval=1.0, burst_requests=1)
    job = _job(service)
    flow = (build(job) | retry(acquire(limiter) | call(service, job.endpoint), attempts=3,
                               backoff=Backoff(initial=0.01, maximum=0.01)))

    async def main():
        return await stream.list(stream.iterate(ROWS[:5]) | flow.with_concurrency(5))

    records = run_virtual(main())
    assert all(r.ok for r in records)
    # The first request went out at t=0 and was told to wait 5 s; nobody else went out
    # during the pause (bar the one that was granted before the 429 came back).
    assert len([t for t in calls if 0.02 < t < 5.0]) == 0
    assert max(calls) >= 5.0


def test_request_too_large_fails_that_row_only():
    service = InstantService()
    limiter = TokenBucketLimiter(max_tokens=50, interval=1.0)
    job = _job(service)
    flow = build(job) | acquire(limiter) | call(service, job.endpoint)
    rows = [{"text": "x" * 400}, {"text": "short"}]

    async def main():
        return sorted(await stream.list(stream.iterate(rows) | flow), key=lambda r: r.index)

    big, small = run_virtual(main())
    assert isinstance(big.error, RequestTooLarge) and big.attempts == 0
    assert small.ok


def test_unused_tokens_are_not_refunded_but_overuse_is_charged():
    service = InstantService()  # usage: 6 tokens a request
    limiter = TokenBucketLimiter(max_tokens=100_000, interval=60.0)
    job = _job(service)

    async def one(estimate_bump: int, refund: bool) -> float:
        before = limiter.snapshot().tokens_available
        request = job.build(ROWS[0])
        record = Record(index=0, request=request, token_estimate=request.token_estimate)
        record = await acquire(limiter).process(record)
        await call(service, job.endpoint, refund_unused=refund).process(record)
        return before - limiter.snapshot().tokens_available

    async def main():
        return await one(0, False), await one(0, True)

    kept, refunded = run_virtual(main())
    estimate = job.build(ROWS[0]).token_estimate
    assert kept == pytest.approx(estimate)  # the provider counts the estimate too
    assert refunded == pytest.approx(6)


def test_a_low_prompt_estimate_is_charged_what_the_provider_counts():
    service = InstantService()  # reports 5 prompt tokens
    limiter = TokenBucketLimiter(max_tokens=100_000, interval=60.0, burst_tokens=100_000)
    job = _job(service)  # max_tokens=5
    request = msgspec.structs.replace(job.build(ROWS[0]), token_estimate=2)

    async def main() -> float | None:
        record = Record(index=0, request=request, token_estimate=2)
        record = await acquire(limiter).process(record)
        await call(service, job.endpoint).process(record)
        return limiter.snapshot().tokens_available

    assert run_virtual(main()) == pytest.approx(100_000 - (5 + 5))
