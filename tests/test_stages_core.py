"""pipeline.stages._core and _map: Stage, Chain, Flow, aiostream operators, bounded pulling."""

from __future__ import annotations

import asyncio
import gc

import pytest
from aiostream import pipe, stream

from pipeline.core.record import Record
from pipeline.errors import (
    ConfigError,
)
from pipeline.runner import default_flow, run, run_sync
from pipeline.stages import (
    Backoff,
    Chain,
    Stage,
    acquire,
    build,
    call,
    lookup,
    map_unordered,
    retry,
    store,
    track,
)
from pipeline.state.cache import ResponseCache
from pipeline.state.status import StatusTracker
from pipeline.testing import InstantService, run_virtual

ROWS = [{"text": f"row {i}"} for i in range(20)]


def _job(service: InstantService, **config):
    return service.chat(model="m", prompt="Classify: {text}", max_tokens=5, **config)



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
    assert {r.path for r in records} == {"embeddings"}
    assert all(r.ok and r.row == {"text": "OK"} for r in records)


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


def test_records_do_not_keep_references_alive():
    gc.collect()
    service = InstantService()
    results = run_sync(ROWS[:2], _job(service))
    assert all(r.lease is None for r in results)


def test_chain_keeps_its_concurrency_when_extended():
    chain = Chain(build(lambda r: r), concurrency=7) | track(None)
    assert chain.concurrency == 7


async def test_map_unordered_does_not_lose_an_item_cancelled_from_inside():
    async def work(i: int) -> int:
        await asyncio.sleep(0)
        if i == 2:
            raise asyncio.CancelledError  # not the stream's doing: the run must hear of it
        return i

    with pytest.raises(asyncio.CancelledError):
        await stream.list(stream.iterate(range(10)) | map_unordered.pipe(work, limit=3))
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == 1


def test_a_slow_consumer_holds_the_source_back():
    pulled = 0

    def rows():
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield i

    async def main() -> list[int]:
        seen = []
        async with (stream.iterate(rows()) | map_unordered.pipe(_echo, limit=4)).stream() as xs:
            async for _ in xs:
                seen.append(pulled - len(seen))  # taken but not yet read
                await asyncio.sleep(1)  # the consumer is the slow part
                if len(seen) == 50:
                    break
        return seen

    assert max(run_virtual(main())) <= 4 + 4 + 1  # in the workers, waiting, being taken


def test_items_start_in_the_order_they_are_taken():
    async def main() -> list[int]:
        flow = Chain(build(lambda row: row), concurrency=8)
        return [r.row for r in sorted(await stream.list(stream.iterate(range(100)) | flow),
                                      key=lambda r: r.index)]

    assert run_virtual(main()) == list(range(100))


async def _echo(i: int) -> int:
    await asyncio.sleep(0)
    return i


def test_map_items_reads_a_plain_iterable_in_order_and_closes_a_generator():
    from pipeline.stages._map import map_items

    closed = []

    def rows():
        try:
            yield from range(10)
        finally:
            closed.append(True)

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def main() -> tuple[list[int], list[int]]:
        whole = [x async for x in map_items(rows(), double, 3)]
        early = []
        items = map_items(rows(), double, 3)
        async for x in items:
            early.append(x)
            if len(early) == 2:
                break
        await items.aclose()
        return whole, early

    whole, early = asyncio.run(main())
    assert sorted(whole) == [2 * i for i in range(10)] and len(early) == 2
    assert closed == [True, True]  # read to its end, and closed when the consumer stopped


def test_a_plain_row_generator_that_raises_fails_the_run_with_its_error():
    def rows():
        yield {"text": "a"}
        raise ValueError("row source broke")

    async def main() -> None:
        service = InstantService()
        await run(rows(), service.chat(model="m", prompt="{text}"), concurrency=2)

    with pytest.raises(ValueError, match="row source broke"):
        asyncio.run(main())


def test_map_items_hands_results_to_a_sink_and_a_sink_that_raises_stops_it():
    from pipeline.stages._map import map_items

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def drain(sink) -> list[int]:
        return [x async for x in map_items(range(20), double, 4, sink=sink)]

    got: list[int] = []
    assert asyncio.run(drain(got.append)) == []  # nothing yielded: all went to the sink
    assert sorted(got) == [2 * i for i in range(20)]

    def broken(value: int) -> None:
        if value == 10:
            raise RuntimeError("sink broke")

    with pytest.raises(RuntimeError, match="sink broke"):
        asyncio.run(drain(broken))
