"""The retry stage: throttling costs time, not attempts; errors spend attempts."""

from __future__ import annotations

import asyncio

import pytest

from pipeline import run
from pipeline.errors import (
    BadRequestError,
    ConfigError,
    RateLimitError,
    ServerError,
    ThrottledError,
)
from pipeline.stages import Backoff, build, retry, track
from pipeline.state.status import StatusTracker
from pipeline.testing import InstantService, instant_backoff, run_virtual, set_testing

ROWS = [{"text": f"row {i}"} for i in range(5)]


def _job(service: InstantService):
    return service.chat(model="m", prompt="{text}", max_tokens=5)


def _throttle(retry_after: float | None = 1.0) -> RateLimitError:
    return RateLimitError("429 Too Many Requests: Rate limit reached", status=429,
                          retry_after=retry_after)


def test_429s_do_not_spend_the_attempts_meant_for_errors():
    # 20 rate limits, then 2 server errors, then an answer: 3 attempts are enough.
    def fail(request, n):
        if n <= 20:
            return _throttle(retry_after=0.5)
        return ServerError("503", status=503) if n <= 22 else None

    service = InstantService(fail=fail)
    results = run_virtual(run(ROWS[:1], _job(service), attempts=3))
    assert results[0].ok and results[0].attempts == 23


def test_a_row_fails_on_throttling_only_past_max_wait_and_says_so():
    service = InstantService(fail=lambda request, n: _throttle(retry_after=10.0))

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        results = await run(ROWS[:1], _job(service), max_wait=60)
        return results, loop.time() - start

    results, elapsed = run_virtual(main())
    error = results[0].error
    assert isinstance(error, ThrottledError) and not error.retryable
    assert "max_wait" in str(error) and "429s" in str(error)
    assert 50 <= elapsed <= 61  # about max_wait: not 6 attempts, not forever


def test_errors_still_spend_attempts():
    service = InstantService(fail=lambda request, n: ServerError("500", status=500))
    with_instant = set_testing(True)
    try:
        results = run_virtual(run(ROWS[:1], _job(service), attempts=4))
    finally:
        set_testing(with_instant)
    assert results[0].attempts == 4 and isinstance(results[0].error, ServerError)


def test_set_testing_makes_every_wait_zero():
    previous = set_testing(True)
    try:
        assert Backoff(initial=10).delay(5) == 0
        assert Backoff().throttle_delay(3, retry_after=30) == 0
    finally:
        set_testing(previous)
    assert Backoff(initial=10, rng=__import__("random").Random(1)).delay(5) > 0


def test_retry_passes_begin_on_to_its_inner_stages():
    # build(job) | retry(track(status)): the tracker counts what entered the chain.
    status = StatusTracker()
    flow = retry(track(status)) | track(None)
    records = run_virtual(_collect(flow, range(3)))
    assert len(records) == 3
    assert (status.started, status.in_progress, status.finished) == (3, 0, 3)


async def _collect(flow, items):
    out = []
    async for record in flow.records(_aiter(items)):
        out.append(record)
    return out


async def _aiter(items):
    for item in items:
        yield item


@pytest.mark.parametrize("kwargs", [{"max_wait": -1}, {"max_wait": True}, {"attempts": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ConfigError):
        retry(build(lambda row: row), **kwargs)


def test_a_request_that_never_answers_times_out_and_is_retried():
    # The simulator's "hang" fault never answers; a 1 s attempt timeout retries it.
    from pipeline import OpenAIService
    from pipeline.errors import APITimeoutError
    from pipeline.simulator import Simulator

    rows = [{"text": f"row {i}"} for i in range(30)]

    async def main(base_url):
        async with OpenAIService(base_url=base_url, api_key="sk-t", rpm=60_000) as service:
            job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)
            previous = set_testing(True)
            try:
                return await run(rows, job, timeout=1.0, attempts=10)
            finally:
                set_testing(previous)

    with Simulator(faults={"hang": 0.2}, seed=3) as sim:
        results = asyncio.run(main(sim.base_url))
        hung = sum(1 for e in sim.log() if e.outcome == "hang")
    assert hung > 0 and all(r.ok for r in results)
    assert sum(r.attempts for r in results) == len(rows) + hung
    assert isinstance(APITimeoutError("x"), Exception)


def test_the_default_timeout_follows_the_latencies_seen():
    from pipeline.stages import LatencyWindow

    window = LatencyWindow()
    assert window.timeout() is None  # before 20 answers: the HTTP client's own
    for _ in range(50):
        window.add(0.2)
    window.add(4.0)
    assert window.timeout() == pytest.approx(24.0)  # 6 x p99, at least 10 s


def test_before_any_answer_the_timeout_follows_the_requests_output_limit():
    from pipeline.stages import call

    service = InstantService()
    stage = call(service, "chat/completions")
    short = service.chat(model="m", prompt="{text}", max_tokens=16).build({"text": "x"})
    long = service.chat(model="m", prompt="{text}", max_tokens=4_000).build({"text": "x"})
    assert stage.attempt_timeout(short) == pytest.approx(30.8)
    assert stage.attempt_timeout(long) == pytest.approx(230.0)
    assert call(service, "chat/completions", timeout=5).attempt_timeout(long) == 5


def test_retry_only_retryable_errors_and_honour_retry_after():
    def fail(request, n):
        text = request.body["messages"][0]["content"]
        if text.endswith("row 1") and n <= 2:
            return RateLimitError("slow down", status=429, retry_after=7.0)
        if text.endswith("row 2"):
            return BadRequestError("bad", status=400)
        if text.endswith("row 3") and n <= 10:
            return ServerError("boom", status=500)
        return None

    service = InstantService(fail=fail)

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        results = await run(ROWS[:4], _job(service), attempts=4,
                            backoff=Backoff(initial=0.1, maximum=1.0))
        return results, loop.time() - start

    results, elapsed = run_virtual(main())
    assert results[0].ok and results[0].attempts == 1
    assert results[1].ok and results[1].attempts == 3
    assert isinstance(results[2].error, BadRequestError) and results[2].attempts == 1
    assert isinstance(results[3].error, ServerError) and results[3].attempts == 4
    assert elapsed >= 14.0  # two waits of at least the server's retry-after
    status = results.status
    assert status.rate_limit_errors == 2 and status.retries == 2 + 3
    assert status.failed == 2 and status.api_errors == 1 + 4


def test_instant_backoff_makes_retries_free():
    service = InstantService(fail=lambda r, n: ServerError("x", status=503) if n < 6 else None)

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        with instant_backoff():
            results = await run(ROWS[:2], _job(service), attempts=6)
        return results, loop.time() - start

    results, elapsed = run_virtual(main())
    assert all(r.ok and r.attempts == 6 for r in results)
    assert elapsed == 0


def test_a_server_error_asking_for_an_hour_is_tried_again_after_a_minute():
    # A 503 with Retry-After: 3600 once, then answers: the row waits the capped minute
    # (MAX_PAUSE), not an hour, and not past max_elapsed at once either.
    def fail(request, n):
        return ServerError("503", status=503, retry_after=3600.0) if n == 1 else None

    service = InstantService(fail=fail)

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        results = await run(ROWS[:1], _job(service))
        return results, loop.time() - start

    results, elapsed = run_virtual(main())
    assert results[0].error is None and results[0].attempts == 2
    assert 60 <= elapsed <= 61
