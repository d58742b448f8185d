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


class _HangingSome(InstantService):
    """Answers after ``answer_after`` seconds the rows whose text ends in an even digit;
    never answers the rest (until cancelled)."""

    answer_after = 0.5

    async def call(self, endpoint, request):  # type: ignore[override]
        if request.body["messages"][-1]["content"][-1] in "02468":
            await asyncio.sleep(self.answer_after)
            return await super().call(endpoint, request)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_every_attempt_times_out_at_its_own_deadline_on_the_stage_s_one_timer():
    # Attempts start at different times, with different limits (before any answer, the
    # limit is 30 s plus max_tokens at 20 tokens/s), and many answer before theirs: each
    # that does not is cut at exactly its start plus its limit, none sooner, none later.
    service = _HangingSome()
    job = _job(service)
    jobs = {5: job, 2_000: service.chat(model="m", prompt="Classify: {text}", max_tokens=2_000)}
    stage = call(service, job.endpoint)

    async def one(row: dict, max_tokens: int, start: float) -> tuple[str, float | None]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(start)
        record = Record(index=0, request=jobs[max_tokens].build(row))
        began = loop.time()
        await stage.process(record)
        took = loop.time() - began
        return ("timeout" if record.error is not None else "ok"), took

    async def main() -> list[tuple[str, float | None]]:
        plan = [(ROWS[i], 2_000 if i % 3 == 0 else 5, 0.25 * i) for i in range(12)]
        return await asyncio.gather(*(one(*p) for p in plan))

    outcomes = run_virtual(main())
    for i, (kind, took) in enumerate(outcomes):
        if i % 2 == 0:
            assert (kind, took) == ("ok", pytest.approx(0.5)), i
        else:
            limit = 30.0 + (2_000 if i % 3 == 0 else 5) / 20.0
            assert (kind, took) == ("timeout", pytest.approx(limit)), i


def test_a_call_stage_times_out_attempts_in_one_event_loop_after_another():
    service = _Hanging()
    job = _job(service)
    stage = call(service, job.endpoint, timeout=2.0)

    async def main() -> tuple[str, float]:
        record = Record(index=0, request=job.build(ROWS[0]))
        start = asyncio.get_running_loop().time()
        await stage.process(record)
        return type(record.error).__name__, asyncio.get_running_loop().time() - start

    for _ in range(2):  # asyncio.run twice: the stage's timer is the new loop's
        kind, waited = run_virtual(main())
        assert kind == "APITimeoutError" and waited == pytest.approx(2.0)


def test_a_call_stage_in_two_event_loops_at_once_times_out_in_each():
    # (A stage shared between threads, each with its own loop: each attempt gets a timer
    # of its own in the second loop.)
    import threading

    service = _Hanging()
    job = _job(service)
    stage = call(service, job.endpoint, timeout=0.05)
    release = threading.Event()
    kinds: list[str] = []

    async def attempt() -> None:
        record = Record(index=0, request=job.build(ROWS[0]))
        await stage.process(record)
        kinds.append(type(record.error).__name__)

    async def first() -> None:
        task = asyncio.ensure_future(attempt())
        await asyncio.sleep(0)  # in flight in this loop
        release.set()
        await task

    thread = threading.Thread(target=lambda: asyncio.run(first()))
    thread.start()
    release.wait(5)
    asyncio.run(attempt())
    thread.join(5)
    assert kinds == ["APITimeoutError", "APITimeoutError"]
