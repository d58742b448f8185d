"""pipeline.runner: run() and Results in input order, as_completed(), cancellation, run_sync."""

from __future__ import annotations

import asyncio
import itertools
import pickle

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


async def test_every_finished_record_reaches_the_results_once_a_loop_pass_at_a_time(monkeypatch):
    # run() adds the records one event-loop pass finished together, at the pass's end:
    # every row arrives once, in order, and nothing finished is left behind.
    from pipeline.core.columns import RecordColumns

    original = RecordColumns.add
    added: list[int] = []

    def add(self, record):
        added.append(record.index)
        original(self, record)

    monkeypatch.setattr(RecordColumns, "add", add)
    loop = asyncio.get_running_loop()
    marks: list[int] = []

    def mark():  # one per loop pass while the run goes on: how many were added by then
        marks.append(len(added))
        if len(added) < 200:
            loop.call_soon(mark)

    loop.call_soon(mark)
    rows = [{"text": f"row {i}"} for i in range(200)]
    results = await run(rows, _job(InstantService()), concurrency=16)
    assert sorted(added) == list(range(200))
    assert [r.index for r in results] == list(range(200))
    batches = [b - a for a, b in itertools.pairwise(marks) if b > a]
    assert batches and max(batches) > 1  # (InstantService answers many in one pass)


async def test_a_pass_that_never_waits_holds_at_most_a_few_finished_records():
    # Cache hits never wait on the network: one pass can finish a whole rerun. The sink
    # must hand records on as it goes, not hold every one until the pass ends.
    from pipeline.runner import _PASS_MOST, _PassSink

    added: list[int] = []
    sink = _PassSink(lambda record: added.append(record.index), asyncio.get_running_loop())
    for i in range(1_000):
        sink(Record(index=i))
        assert i + 1 - len(added) < _PASS_MOST
    await asyncio.sleep(0)  # the pass ends: the rest go
    assert added == list(range(1_000))


async def test_a_failure_keeping_a_record_fails_the_run_not_the_event_loop(monkeypatch):
    # A bug in keeping results (RecordColumns.add raising) must fail run(), not vanish into
    # the event loop's exception handler while the run reports success.
    from pipeline.core.columns import RecordColumns

    original = RecordColumns.add

    def add(self, record):
        if record.index == 7:
            raise RuntimeError("cannot keep row 7")
        original(self, record)

    monkeypatch.setattr(RecordColumns, "add", add)
    service = InstantService()
    with pytest.raises(RuntimeError, match="cannot keep row 7"):
        await run([{"text": f"row {i}"} for i in range(50)], _job(service), concurrency=4)


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


@pytest.mark.filterwarnings("ignore::pipeline.pricing.cost.UnknownPriceWarning")  # model "m"
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


class _Answers(InstantService):
    """Answers each request with the body ``answer(request)`` gives."""

    def __init__(self, answer, **options):
        super().__init__(**options)
        self.answer = answer

    async def call(self, endpoint, request):
        from pipeline.core.request import Response

        self.calls += 1
        return Response(status=200, body=self.answer(request),
                        headers={"x-request-id": "req_1"})


def _chat_body(text, **extra):
    message = {"role": "assistant", "content": text, "refusal": None, **extra.pop("message", {})}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": "served-as", "system_fingerprint": "fp",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11,
                      "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}},
            **extra}


async def test_results_keep_the_answers_not_the_bodies_unless_asked():
    from pipeline.core.record import KeptResponse
    from pipeline.pricing.cost import ModelPrice, Prices

    # By the model the request asked for; cached prompt tokens at their own price.
    prices = Prices({"m": ModelPrice(1.0, 2.0, cached_input=0.25)})
    service = _Answers(lambda request: _chat_body(f"answer {request.body['messages'][0]}"))
    slim = await run(ROWS, _job(service), prices=prices)
    whole = await run(ROWS, _job(service), prices=prices, keep_responses=True)
    assert not slim.responses_kept and whole.responses_kept
    assert all(type(r.response) is KeptResponse and r.request is None for r in slim)
    assert all(type(r.response) is not KeptResponse and r.request is not None for r in whole)
    # What a reader of results uses is the same either way.
    assert [r.text for r in slim] == [r.text for r in whole]
    assert [r.response.usage for r in slim] == [r.response.usage for r in whole]
    assert [r.row for r in slim] == ROWS and slim.cost == whole.cost and slim.cost > 0
    assert slim.costs() == whole.costs() == [(5 * 1.0 + 4 * 0.25 + 2 * 2.0) / 1e6] * 20
    assert slim[0].body["choices"][0]["message"]["content"] == whole[0].text
    assert slim[0].body["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}
    assert slim[0].body["model"] == "served-as" and "id" not in slim[0].body
    assert not slim[0].response.headers and whole[0].response.headers["x-request-id"]
    again = pickle.loads(pickle.dumps(slim[0]))  # results go to disk and across processes
    assert again.text == slim[0].text and again.response == slim[0].response
    assert slim.to_pandas().drop(columns="cost").equals(whole.to_pandas().drop(columns="cost"))


async def test_a_body_with_more_than_a_plain_answer_is_kept_whole():
    from pipeline.core.record import KeptResponse

    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    bodies = [_chat_body("a", message={"tool_calls": calls}),   # a tool call
              {**_chat_body("b"), "choices": [_chat_body("b")["choices"][0]] * 2},  # n=2
              _chat_body("c", citations=["x"]),                   # a field not known here
              {**_chat_body("d"), "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                             "total_tokens": 2, "completion_tokens_details":
                                                 {"reasoning_tokens": 7}}},
              _chat_body("e")]                                     # plain: slimmed
    service = _Answers(lambda request: bodies[int(request.body["messages"][0]["content"][-1])])
    results = await run([{"text": f"row {i}"} for i in range(5)], _job(service))
    kinds = [type(r.response).__name__ for r in results]
    assert kinds == ["Response"] * 4 + ["KeptResponse"]
    assert results[0].body["choices"][0]["message"]["tool_calls"] == calls
    assert results[3].body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 7}
    assert isinstance(results[4].response, KeptResponse) and results[4].text == "e"


async def test_keep_rows_false_drops_the_rows_and_run_frame_still_lines_up():
    import pandas as pd

    from pipeline import io

    service = InstantService()
    results = await run(ROWS, _job(service), keep_rows=False)
    assert all(r.row is None and r.ok for r in results)
    frame = pd.DataFrame(ROWS, index=[f"k{i}" for i in range(20)])
    out = await io.run_frame(frame, _job(service))
    assert list(out.index) == list(frame.index) and (out["answer"] == "ok").all()
    assert list(out["text"]) == [r["text"] for r in ROWS]


async def test_an_embedding_is_kept_as_its_vector():
    from pipeline.core.record import KeptResponse

    def answer(request):
        vector = [0.5, float(len(request.body["input"]))]
        return {"object": "list", "model": "e",
                "data": [{"object": "embedding", "index": 0, "embedding": vector}],
                "usage": {"prompt_tokens": 3, "total_tokens": 3}}

    service = _Answers(answer)
    results = await run(["a", "bb"], service.embeddings(model="e", batch_size=1))
    assert [type(r.response) for r in results] == [KeptResponse] * 2
    assert [r.embedding for r in results] == [[0.5, 1.0], [0.5, 2.0]]
    assert results[1].body["data"][0]["embedding"] == [0.5, 2.0] and results[1].text is None
    assert results[0].response.usage.prompt_tokens == 3
