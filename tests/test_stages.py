"""Stages, composition, retry, ordering, bounded pulling and cancellation (in-process service).

The HTTP side is covered against the simulator in test_pipeline_simulator.py; here the
service answers in-process so each behaviour is pinned exactly, with virtual time where
waiting matters.
"""

from __future__ import annotations

import asyncio
import gc

import msgspec
import pytest
from aiostream import pipe, stream

from pipeline import payloads
from pipeline.cache import ResponseCache
from pipeline.errors import (
    BadRequestError,
    ConfigError,
    PayloadError,
    RateLimitError,
    RequestTooLarge,
    ServerError,
)
from pipeline.limiter import TokenBucketLimiter
from pipeline.operators import map_unordered
from pipeline.record import Record
from pipeline.retry import Backoff, retry
from pipeline.runner import default_flow, run, run_sync
from pipeline.stages import Chain, Stage, acquire, build, call, lookup, store, track
from pipeline.status import StatusTracker
from pipeline.testing import InstantService, instant_backoff, run_virtual

ROWS = [{"text": f"row {i}"} for i in range(20)]


def _job(service: InstantService, **config):
    return service.chat(model="m", prompt="Classify: {text}", max_tokens=5, **config)


async def test_run_answers_every_row_in_input_order():
    service = InstantService()
    results = await run(ROWS, _job(service), concurrency=4)
    assert [r.index for r in results] == list(range(20))
    assert all(r.ok and r.text == "ok" and r.attempts == 1 for r in results)
    assert results[3].row == ROWS[3]
    assert results.status.succeeded == 20 and results.status.failed == 0
    assert service.calls == 20


async def test_a_bad_row_fails_alone_with_a_clear_error():
    service = InstantService()
    rows = [*ROWS[:5], {"other": 1}, *ROWS[5:10]]
    results = await run(rows, _job(service))
    bad = results[5]
    assert bad.status == "failed" and isinstance(bad.error, PayloadError)
    assert "text" in str(bad.error) and bad.attempts == 0
    assert [r.ok for r in results].count(True) == 10
    assert service.calls == 10  # nothing sent for the bad row


async def test_stream_yields_as_completed_and_a_slow_item_does_not_hold_back_others():
    class Slow(Stage):
        async def process(self, record: Record) -> Record:
            await asyncio.sleep(0.05 if record.index == 0 else 0)
            return record

    async with (stream.iterate(range(10)) | Slow()).stream() as records:
        order = [r.index async for r in records]
    assert sorted(order) == list(range(10))
    assert order[-1] == 0  # the slow first item came out last


def test_source_is_pulled_only_as_fast_as_work_completes():
    pulled = 0

    def rows():
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield i

    class Wait(Stage):
        async def process(self, record: Record) -> Record:
            await asyncio.sleep(1)
            return record

    async def main() -> int:
        xs = stream.iterate(rows()) | Chain(Wait(), concurrency=8) | pipe.take(16)
        await stream.list(xs)
        return pulled

    assert run_virtual(main()) <= 16 + 8 + 1


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


async def test_cache_makes_a_rerun_send_nothing(tmp_path):
    service = InstantService()
    job = _job(service)
    first = await run(ROWS, job, cache=tmp_path / "cache")
    assert service.calls == 20 and first.status.cached == 0
    second = await run(ROWS, job, cache=tmp_path / "cache")
    assert service.calls == 20  # nothing new sent
    assert second.status.cached == 20 and all(r.cached and r.text == "ok" for r in second)
    # A changed request is a different key.
    third = await run(ROWS[:2], _job(service, temperature=0), cache=tmp_path / "cache")
    assert service.calls == 22 and third.status.cached == 0


async def test_only_successes_are_cached(tmp_path):
    service = InstantService(fail=lambda r, n: BadRequestError("no", status=400))
    await run(ROWS[:3], _job(service), cache=tmp_path / "c")
    with ResponseCache(tmp_path / "c") as cache:
        assert len(cache) == 0


async def test_stages_compose_with_aiostream_operators(tmp_path):
    service = InstantService()
    job = _job(service)
    status = StatusTracker()
    with ResponseCache(tmp_path / "c") as cache:
        flow = (build(job) | lookup(cache) | retry(acquire(job.endpoint) | call(service, job))
                | store(cache) | track(status))
        xs = stream.iterate(range(30)) | pipe.map(lambda i: {"text": str(i)}) | flow \
            | pipe.filter(lambda r: r.ok) | pipe.take(10)
        got = await stream.list(xs)
    assert len(got) == 10 and all(r.ok for r in got)
    assert status.succeeded >= 10


async def test_user_stage_and_two_endpoints_in_one_flow():
    service = InstantService()
    chat = _job(service)
    embed = service.embeddings(model="e")

    class Upper(Stage):
        after_done = True

        async def process(self, record: Record) -> Record:
            record.row = {"text": record.text.upper()} if record.ok else record.row
            record.request = record.response = None
            return record

    flow = build(chat) | call(service, chat) | Upper() | build(embed) | call(service, embed)
    records = await stream.list(stream.iterate(ROWS[:3]) | flow)
    assert {r.endpoint for r in records} == {"embeddings"}
    assert all(r.ok and r.row == {"text": "OK"} for r in records)


async def test_cancelling_a_run_leaves_no_tasks_and_keeps_completed_answers(tmp_path):
    service = InstantService(latency=0.01)
    job = _job(service)
    rows = [{"text": f"row {i}"} for i in range(100_000)]
    before = asyncio.all_tasks()
    task = asyncio.ensure_future(run(rows, job, cache=tmp_path / "c", concurrency=16))
    while service.calls < 50:  # noqa: ASYNC110 - polling a plain counter, bounded by the timeout
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()
    with ResponseCache(tmp_path / "c") as cache:
        kept = len(cache)
    assert kept >= 34  # every completed response was flushed to the cache
    sent = service.calls
    await asyncio.sleep(0.05)
    assert service.calls == sent  # nothing goes out after the cancel


def test_run_sync_works_from_plain_code_and_refuses_inside_a_loop():
    results = run_sync(ROWS[:3], _job(InstantService()))
    assert [r.ok for r in results] == [True] * 3

    async def inside():
        with pytest.raises(RuntimeError, match=r"await pipeline\.run"):
            run_sync(ROWS[:3], _job(InstantService()))

    asyncio.run(inside())


async def test_map_unordered_propagates_a_bug_and_cancels_the_rest():
    started: list[int] = []

    async def work(i: int) -> int:
        started.append(i)
        if i == 3:
            raise ZeroDivisionError("bug")
        await asyncio.sleep(10)
        return i

    with pytest.raises(ZeroDivisionError):
        await stream.list(stream.iterate(range(10)) | map_unordered.pipe(work, limit=4))
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == 1  # only this test's own task is left


def test_bad_stage_arguments_are_clear_errors():
    with pytest.raises(ConfigError):
        Chain(build(lambda r: r), concurrency=0)
    with pytest.raises(ConfigError):
        retry(build(lambda r: r), attempts=0)
    with pytest.raises(ConfigError):
        acquire(object())
    with pytest.raises(ConfigError):
        call(object())
    with pytest.raises(ConfigError):
        build(42)
    with pytest.raises(ConfigError):
        Backoff(initial=float("nan"))


def test_reprs_say_what_the_flow_is():
    service = InstantService()
    job = _job(service)
    flow = default_flow(job, status=StatusTracker())
    text = repr(flow)
    assert "build(" in text and "retry(" in text and "acquire(" in text and "track(" in text
    assert "sk-instant" not in text


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


async def test_build_accepts_ready_requests_and_functions():
    request = payloads.chat(model="m", prompt="{text}").build({"text": "hi"})
    service = InstantService()
    job = _job(service)
    records = await stream.list(stream.iterate([request]) | (build(job) | call(service, job)))
    assert records[0].ok and records[0].request is request
    records = await stream.list(stream.iterate([1]) | build(lambda row: 1 / 0))
    assert isinstance(records[0].error, ZeroDivisionError)


def test_records_do_not_keep_references_alive():
    gc.collect()
    service = InstantService()
    results = run_sync(ROWS[:2], _job(service))
    assert all(r.reservation is None for r in results)


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


def test_chain_keeps_its_concurrency_when_extended():
    chain = Chain(build(lambda r: r), concurrency=7) | track(None)
    assert chain.concurrency == 7


async def test_run_takes_frames_and_refuses_things_that_are_not_rows(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": ["a", "b", None]}, index=[10, 20, 30])
    results = await run(frame, _job(InstantService()))
    assert [r.index for r in results] == [0, 1, 2]
    assert [r.status for r in results] == ["succeeded", "succeeded", "failed"]
    csv = tmp_path / "rows.csv"
    csv.write_text("text\nhello\n")
    assert [r.ok for r in await run(csv, _job(InstantService()))] == [True]
    for bad in ("rows.csv", {"text": "x"}, 42):
        with pytest.raises(ConfigError):
            await run(bad, _job(InstantService()))


async def test_results_become_frames_lined_up_with_the_rows():
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    rows = [{"text": "a"}, {"other": 1}, {"text": "c"}]
    results = await run(rows, _job(InstantService()))
    frame = results.to_pandas()
    assert list(frame["status"]) == ["succeeded", "failed", "succeeded"]
    assert frame["answer"].iloc[0] == "ok" and "text" in str(frame["error"].iloc[1])
    like = pd.DataFrame({"text": ["a", None, "c"]}, index=["x", "y", "z"])
    assert list(results.to_pandas(like).index) == ["x", "y", "z"]
    assert results.to_polars()["status"].to_list() == ["succeeded", "failed", "succeeded"]
    assert isinstance(results.to_polars(), pl.DataFrame)


def test_the_progress_bar_counts_finished_rows_and_a_resumed_run_starts_where_it_left():
    stage = track(StatusTracker(), progress=True, total=2_616, initial=384)
    record = Record(index=0, row={})
    stage.begin(record)  # a row entering the chain does not move the bar
    assert stage._bar is None
    run_virtual(stage.process(record))
    bar = stage._bar
    assert (bar.n, bar.total) == (385, 3_000)
    stage.finish()
