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


def test_unused_answer_tokens_are_not_refunded_and_the_prompt_is_trued_up():
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
    # The provider counts the real prompt (5) plus max_tokens (5), used or not: the lease
    # keeps that, not the higher estimate (an over-estimate held back told-right runs 9%).
    assert estimate > 10 and kept == pytest.approx(10)
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


class _Hanging(InstantService):
    """Never answers (until cancelled)."""

    async def call(self, endpoint, request):  # type: ignore[override]
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_an_attempt_past_its_timeout_is_a_timeout_error_and_the_task_is_clean():
    service = _Hanging()
    job = _job(service)

    async def main():
        record = Record(index=0, request=job.build(ROWS[0]))
        start = asyncio.get_running_loop().time()
        await call(service, job.endpoint, timeout=2.0).process(record)
        waited = asyncio.get_running_loop().time() - start
        await asyncio.sleep(0)  # no cancel left pending on this task
        return record.error, waited, asyncio.current_task().cancelling()

    error, waited, cancelling = run_virtual(main())
    assert type(error).__name__ == "APITimeoutError" and "2 s" in str(error)
    assert waited == pytest.approx(2.0) and cancelling == 0


def test_a_cancel_from_outside_stays_a_cancel_not_a_timeout():
    service = _Hanging()
    job = _job(service)

    async def main():
        record = Record(index=0, request=job.build(ROWS[0]))
        task = asyncio.ensure_future(call(service, job.endpoint, timeout=60.0).process(record))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return record.error

    assert run_virtual(main()) is None
