"""RecordColumns and the Results built on it: a record read back is the record slim() keeps.

Every kind of finished record a run can give (answers of each endpoint, refusals, answers
kept whole, errors, decoded values, your data, counts no column takes, rows out of order or
with gaps) goes in, and what comes out must equal what ``Record.slim()`` leaves of it.
"""

from __future__ import annotations

import copy
import pickle
import sys

import msgspec
import pytest

from pipeline.core.columns import FIELD_ORDER, RecordColumns
from pipeline.core.record import KeptResponse, Record
from pipeline.core.request import APIRequest, Response
from pipeline.errors import APIError, RateLimitError, SchemaValidationError
from pipeline.runner import Results
from pipeline.state.status import StatusTracker

pytestmark = pytest.mark.timeout(60)


def chat(content: str | None = "yes", **extra: object) -> dict[str, object]:
    message: dict[str, object] = {"role": "assistant", "content": content}
    message.update(extra)
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}


def request(model: str = "gpt-4o-mini") -> APIRequest:
    return APIRequest(path="chat/completions", body={"model": model, "messages": []})


def finished(index: int, **fields: object) -> Record:
    base: dict[str, object] = dict(row={"text": f"row {index}"}, path="chat/completions",
                                   token_estimate=300 + index, attempts=1,
                                   started=100.0 + index, finished=100.5 + index,
                                   latency=0.25, request=request())
    base.update(fields)
    record = Record(index=index, **base)  # type: ignore[arg-type]
    if record.response is not None:
        record.response.latency = record.latency
    return record


def kinds() -> list[Record]:
    """One record of each kind a run finishes with."""
    big = chat()
    big["usage"] = {"prompt_tokens": 1 << 40, "completion_tokens": 1, "total_tokens": 1 << 40}
    negative = chat()
    negative["usage"] = {"prompt_tokens": -3, "completion_tokens": 1, "total_tokens": -2}
    cached = chat("cached")
    cached["usage"]["prompt_tokens_details"] = {"cached_tokens": 8}  # type: ignore[index]
    return [
        finished(0, response=Response(status=200, body=chat())),
        finished(1, response=Response(status=200, body=chat(None, refusal="I can't."))),
        finished(2, response=Response(status=200, body={
            "object": "text_completion", "model": "m",
            "choices": [{"text": "done", "index": 0, "finish_reason": "length"}]})),
        finished(3, path="embeddings", response=Response(status=200, body={
            "object": "list", "model": "e", "data": [{"index": 0, "embedding": [0.5, -1.0]}],
            "usage": {"prompt_tokens": 3, "total_tokens": 3}})),
        finished(4, response=Response(status=200, body=chat(
            None, tool_calls=[{"id": "t", "type": "function",
                               "function": {"name": "f", "arguments": "{}"}}]))),
        finished(5, response=Response(status=200, body=big)),
        finished(6, response=Response(status=200, body=negative)),
        finished(7, error=RateLimitError("slow down", status=429), attempts=3,
                 earlier_errors=[APIError("boom", status=500)]),
        finished(8, response=Response(status=200, body=chat()), cached=True, attempts=0,
                 cache_key="k" * 64),
        finished(9, response=Response(status=200, body=chat("not json")),
                 error=SchemaValidationError("does not fit"), reasks=2,
                 discarded_prompt_tokens=18, discarded_completion_tokens=2),
        finished(10, response=Response(status=200, body=chat('{"a": 1}')), value={"a": 1},
                 data={"score": 0.5}, batched=4, batch_id="batch_1"),
        finished(11),  # never answered (a run stopped before it)
        finished(12, response=Response(status=200, body=cached)),
        finished(13, response=Response(status=200, body=chat(), headers={"x": "y"}),
                 latency=0.5),  # the record's latency differs from its response's
        finished(14, response=KeptResponse(status=200, body=None, model="k", content="kept",
                                           has_usage=True, total_tokens=4)),
        finished(15, response=Response(status=200, body=["not", "a", "dict"])),
        finished(16, response=Response(status=200, body=chat("x" * 500))),
    ]


def fix_latency(record: Record) -> Record:
    if record.index == 13 and record.response is not None:
        record.response.latency = 0.125
    return record


def same(got: Record, want: Record) -> bool:
    """Equal, errors compared by type and message (a copy of an exception is not equal)."""
    def plain(record: Record) -> dict[str, object]:
        fields = msgspec.structs.asdict(record)
        for name in ("error", "earlier_errors"):
            fields[name] = repr(fields[name])
        return fields
    return plain(got) == plain(want)


def slimmed(record: Record) -> Record:
    record = copy.deepcopy(record)
    record.slim()
    return record


@pytest.mark.parametrize("order", ["in order", "reversed", "gaps"])
def test_every_kind_of_record_reads_back_as_slim_keeps_it(order: str) -> None:
    records = [fix_latency(r) for r in kinds()]
    if order == "gaps":  # a resumed run: some indices are not there
        for record in records:
            record.index *= 3
    expected = [slimmed(r) for r in records]
    given = list(reversed(records)) if order == "reversed" else records
    columns = RecordColumns()
    for record in given:
        columns.add(copy.deepcopy(record))
    columns.finish()
    read = list(columns.scan())
    assert [r.index for r in read] == [r.index for r in expected]
    for got, want in zip(read, expected, strict=True):
        assert same(got, want), (got.index, got, want)
        assert got.text == want.text and got.embedding == want.embedding
        assert got.paid_tokens() == want.paid_tokens()
        assert got.status == want.status
        assert type(got.response) is type(want.response)


def test_add_unpacks_the_fields_in_their_order() -> None:
    assert Record.__struct_fields__ == FIELD_ORDER


def test_the_record_of_a_plain_answer_is_rebuilt_not_held() -> None:
    columns = RecordColumns()
    columns.add(finished(0, response=Response(status=200, body=chat())))
    columns.finish()
    assert "response" not in columns._sparse and "record" not in columns._sparse
    assert type(columns.record(0).response) is KeptResponse


def test_short_answers_that_repeat_are_one_string() -> None:
    columns = RecordColumns()
    for i in range(3):
        body = chat("".join(["posi", "tive"]))  # a new string each time, as a decoder gives
        columns.add(finished(i, response=Response(status=200, body=body)))
    columns.finish()
    texts = [r.text for r in columns.scan()]
    assert texts == ["positive"] * 3 and texts[0] is texts[1] is texts[2]


def test_a_record_read_once_is_kept_and_a_change_to_it_stays() -> None:
    columns = RecordColumns()
    for i in range(3):
        columns.add(finished(i, response=Response(status=200, body=chat())))
    columns.finish()
    results = Results(status=StatusTracker(), columns=columns)
    results[1].data = {"checked": True}
    assert results[1].data == {"checked": True}
    assert results[1] is results[1]
    for record in results:
        record.value = record.index
    assert [r.value for r in results.scan()] == [0, 1, 2]
    assert results[-1].index == 2 and [r.index for r in results[1:]] == [1, 2]
    with pytest.raises(IndexError):
        results[3]
    with pytest.raises(TypeError, match="ints or slices, not str"):
        results["text"]  # type: ignore[call-overload]


def test_scan_does_not_keep_what_it_builds() -> None:
    columns = RecordColumns()
    columns.add(finished(0, response=Response(status=200, body=chat())))
    columns.finish()
    results = Results(status=StatusTracker(), columns=columns)
    first = next(results.scan())
    assert first is not next(results.scan())
    assert columns._read is None


def test_succeeded_and_failed_are_told_from_the_columns() -> None:
    columns = RecordColumns()
    records = kinds()
    for record in records:
        columns.add(copy.deepcopy(record))
    columns.finish()
    results = Results(status=StatusTracker(), columns=columns)
    assert [r.index for r in results.failed] == [r.index for r in records if r.error]
    assert [r.index for r in results.succeeded] == [r.index for r in records if r.ok]
    # A change made to a record decides where it is listed.
    results[0].error = ValueError("a stage of mine says no")
    assert 0 in [r.index for r in results.failed]
    assert 0 not in [r.index for r in results.succeeded]


def test_whole_records_are_held_as_they_are() -> None:
    records = kinds()
    columns = RecordColumns(whole=True)
    for record in records:
        columns.add(record)
    columns.finish()
    assert all(a is b for a, b in zip(columns.scan(), records, strict=True))


def test_rows_dropped_when_asked() -> None:
    for whole in (False, True):
        columns = RecordColumns(whole=whole, rows=False)
        columns.add(finished(0, response=Response(status=200, body=chat())))
        columns.finish()
        assert columns.record(0).row is None


def test_results_made_from_records_keep_them_in_the_order_given() -> None:
    records = [Record(index=2, row="c"), Record(index=0, row="a")]
    results = Results(records, StatusTracker())
    assert [r.row for r in results] == ["c", "a"] and results[0] is records[0]
    assert results == records and results != records[:1]


def test_columns_pickle_with_their_changes() -> None:
    columns = RecordColumns()
    for i in range(2):
        columns.add(finished(i, response=Response(status=200, body=chat())))
    columns.finish()
    results = Results(status=StatusTracker(), columns=columns)
    results[0].data = 7
    back = pickle.loads(pickle.dumps(columns))
    assert [r.data for r in back.scan()] == [7, None] and back.record(1).text == "yes"


def test_a_row_of_columns_is_small() -> None:
    """What a plain answered row costs, besides the row and the answer text: well under
    the ~480 bytes of a Record with its KeptResponse."""
    n = 2_000
    columns = RecordColumns(rows=False)
    for i in range(n):
        columns.add(finished(i, response=Response(status=200, body=chat("ok"))))
    columns.finish()
    size = sum(sys.getsizeof(getattr(columns, name)) for name in columns.__slots__)
    assert size / n < 150, size / n


def test_a_run_over_http_keeps_columns_a_reader_can_change() -> None:
    """pipeline.run against the simulator over loopback: answers and failures read back
    from the columns, a change to a record reaches the frame, nothing is lost."""
    import asyncio

    import pipeline
    from pipeline.simulator import Simulator

    rows = [{"text": f"row {i}"} for i in range(60)]
    with Simulator(latency=0.0, faults={"context_length": 0.2}, seed=5) as sim:
        async def main() -> Results:
            async with pipeline.OpenAIService(api_key="sk-test", base_url=sim.base_url,
                                              adaptive=False) as service:
                job = service.chat(model="gpt-4o-mini", prompt="Say: {text}", max_tokens=5)
                return await pipeline.run(rows, job, concurrency=8, attempts=1)

        results = asyncio.run(main())
    assert len(results) == 60 and [r.index for r in results.scan()] == list(range(60))
    assert results.failed and results.succeeded
    assert len(results.failed) + len(results.succeeded) == 60
    assert all(r.row is rows[r.index] for r in results.scan())
    assert all(type(r.response) is KeptResponse and r.text for r in results.succeeded)
    assert all(r.error is not None and r.response is None for r in results.failed)
    first = results.succeeded[0]
    first.data = {"checked": True}
    frame = results.to_pandas()
    assert frame["checked"].tolist() == [True if i == first.index else None
                                         for i in range(60)]
    assert frame["status"].tolist() == [r.status for r in results.scan()]
    assert results.cost is not None and results.cost > 0
