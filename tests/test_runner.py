"""pipeline.runner: run() and Results in input order, as_completed(), cancellation, run_sync."""

from __future__ import annotations

import asyncio

import pytest
from aiostream import stream

from pipeline.core.record import Record
from pipeline.errors import (
    ConfigError,
    PayloadError,
)
from pipeline.runner import run, run_sync
from pipeline.stages import (
    Stage,
)
from pipeline.state.cache import ResponseCache
from pipeline.testing import InstantService

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
