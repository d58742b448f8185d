"""pipeline.stages._track: the progress bar and the status counts."""

from __future__ import annotations

import pytest

from pipeline.core.record import Record
from pipeline.stages import (
    track,
)
from pipeline.state.status import StatusTracker
from pipeline.testing import InstantService, run_virtual

ROWS = [{"text": f"row {i}"} for i in range(20)]


def _job(service: InstantService, **config):
    return service.chat(model="m", prompt="Classify: {text}", max_tokens=5, **config)



def test_the_progress_bar_counts_finished_rows_and_a_resumed_run_starts_where_it_left():
    stage = track(StatusTracker(), progress=True, total=2_616, initial=384)
    record = Record(index=0, row={})
    stage.begin(record)  # a row entering the chain does not move the bar
    assert stage._bar is None
    run_virtual(stage.process(record))
    bar = stage._bar
    assert (bar.n, bar.total) == (385, 3_000)
    stage.finish()


# -- the bar's postfix agrees with its count on every frame drawn (issue 20, item 18) ------
def _frames(text: str) -> list[str]:
    return [frame for frame in text.replace("\n", "\r").split("\r") if "/300" in frame]


def test_every_frame_of_the_bar_shows_the_ok_count_of_its_own_tick():
    import io
    import re

    from pipeline.errors import APIError

    drawn = io.StringIO()
    stage = track(StatusTracker(), progress=True, total=300,
                  bar_options={"file": drawn, "mininterval": 0})  # draw on every row

    async def rows():
        for i in range(300):
            failed = APIError("bad row", status=400) if i % 7 == 0 else None
            record = Record(index=i, row={})
            stage.begin(record)
            record.error = failed
            await stage.process(record)

    run_virtual(rows())
    stage.finish()
    frames = _frames(drawn.getvalue())
    assert len(frames) > 100  # drawn as it went, not only at the end
    for frame in frames:
        count = int(re.search(r"(\d+)/300", frame).group(1))
        ok = int(re.search(r"ok=(\d+)", frame).group(1))
        failed = int(re.search(r"failed=(\d+)", frame).group(1))
        assert ok + failed == count, frame
    assert "300/300" in frames[-1] and "ok=257 failed=43" in frames[-1]


# -- retries reach a track stage without hooks (issue 20, item 5) ---------------------------
KEY = "sk-test-track-0123456789abcdef"
SIM_ROWS = [{"text": f"review {i}"} for i in range(120)]


def _fault_500s(sim) -> int:
    return sum(1 for entry in sim.log() if entry.outcome == "fault:500")


async def _compose(sim, tmp_path, group: str):
    """The README's "Compose your own pipeline" flow, its stages grouped in different ways."""
    from aiostream import pipe, stream

    import pipeline
    from pipeline import ResponseCache, stages

    status = StatusTracker()
    service = pipeline.OpenAIService(base_url=sim.base_url, api_key=KEY, rpm=60_000)
    out = []
    async with service:
        with ResponseCache(tmp_path / f"cache-{group}") as cache:
            job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=5)
            head = (stages.build(job) | stages.lookup(cache)
                    | stages.retry(stages.acquire(job.endpoint)
                                   | stages.call(service, job.endpoint), attempts=6))
            tail = stages.store(cache) | stages.track(status)
            if group == "one chain":  # as the README writes it
                flows = [head | tail | pipe.filter(lambda r: r.ok)]
            elif group == "flow with an operator between":
                flows = [head | pipe.map(lambda r: r) | tail]
            else:  # two flows applied to the stream one after the other
                flows = [head, tail]
            source = stream.iterate(SIM_ROWS)
            for flow in flows:
                source = source | flow
            async with source.stream() as records:
                async for record in records:
                    out.append(record)
    return status, out


@pytest.mark.parametrize("group", ["one chain", "flow with an operator between",
                                   "two flows one after the other"])
async def test_the_readme_compose_flow_counts_the_retries_the_server_logged(tmp_path, group):
    from pipeline.simulator import Simulator
    from pipeline.testing import instant_backoff

    with Simulator(latency=0.0, api_key=KEY, faults={"500": 0.2}, seed=20) as sim, \
            instant_backoff():
        status, records = await _compose(sim, tmp_path, group)
        faults = _fault_500s(sim)
    assert faults > 10  # the simulator did fail about a fifth of the requests
    failed_on_500 = sum(1 for r in records if r.error is not None)
    assert status.retries == faults - failed_on_500 == sum(r.attempts - 1 for r in records)
    assert status.api_errors == faults and status.rate_limit_errors == 0
    assert status.succeeded + status.failed == len(SIM_ROWS)
    assert dict(status._rows())["retries"] == f"{status.retries:,}"


async def test_a_tracker_that_is_also_the_retry_hook_counts_each_retry_once(tmp_path):
    import pipeline
    from pipeline.simulator import Simulator
    from pipeline.testing import instant_backoff

    with Simulator(latency=0.0, api_key=KEY, faults={"500": 0.2}, seed=21) as sim, \
            instant_backoff():
        async with pipeline.OpenAIService(base_url=sim.base_url, api_key=KEY,
                                          rpm=60_000) as service:
            job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=5)
            results = await pipeline.run(SIM_ROWS, job)  # the default flow: hooks=(status,)
        faults = _fault_500s(sim)
    status = results.status
    assert faults > 10
    failed = sum(1 for r in results if r.error is not None)
    assert status.retries == faults - failed and status.api_errors == faults
    assert not status._heard  # nothing left behind once every record finished


# -- answers not fitting the schema are not API errors (issue 20, item 16) -----------------
def test_an_answer_not_fitting_the_schema_has_its_own_row_not_other_api_errors():
    from pipeline.errors import SchemaValidationError

    status = StatusTracker()
    stage = track(status)
    reasked = SchemaValidationError("answer does not fit", reason="invalid")
    last = SchemaValidationError("answer does not fit", reason="invalid")
    record = Record(index=0, row={}, reasks=1, earlier_errors=[reasked])
    stage.begin(record)
    record.error = last
    run_virtual(stage.process(record))
    assert (status.schema_errors, status.reasks, status.api_errors, status.retries) == \
        (1, 1, 0, 0)
    rows = dict(status._rows())
    assert rows["answers not fitting the schema (failed)"] == "1"
    assert rows["re-asks (answers not fitting the schema)"] == "1"
    assert rows["other API errors"] == "0"
    assert status.as_dict()["schema_errors"] == 1


# Answers the status counts in one pass (StatusTracker._count_plain) or the long way
# (paid_tokens, record_model, record_cached_tokens, Prices.cost): both must agree, on every
# combination of these.
_USAGES = [None, "garbage", {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
           {"prompt_tokens": 0, "completion_tokens": 0}, {"prompt_tokens": True},
           {"prompt_tokens": "12", "completion_tokens": 5}, {"prompt_tokens": 10,
                                                             "total_tokens": 1.5},
           *({"prompt_tokens": 2_000, "completion_tokens": 7,
              "prompt_tokens_details": details}
             for details in (None, [], {}, {"cached_tokens": -5}, {"cached_tokens": 0},
                             {"cached_tokens": 4}, {"cached_tokens": 5_000},
                             {"cached_tokens": True}, {"cached_tokens": None}))]
_MODELS = [None, "", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "m", 7]


def test_the_one_pass_count_of_an_answer_agrees_with_the_long_way():
    import itertools

    from pipeline.core.request import APIRequest, Response
    from pipeline.errors import APIError
    from pipeline.pricing.cost import Prices

    class LongWay(StatusTracker):
        def _count_plain(self, record: Record) -> bool:
            return False

    own = Prices({"m": {"input": 1.0, "output": 2.0, "cached_input": 0.5}})
    fast_used = 0
    for usage, asked, named, cached, failed, discarded, batch, prices in itertools.product(
            _USAGES, _MODELS, _MODELS, (False, True), (False, True), (0, 3),
            (None, "batch_1"), (Prices(), None, own)):
        body: dict = {"model": named, "choices": []}
        if usage is not None:
            body["usage"] = usage
        request_body = {} if asked is None else {"model": asked}
        counts = []
        for kind in (StatusTracker, LongWay):
            tracker = kind()
            tracker.prices = prices
            record = Record(
                index=0, request=APIRequest(path="chat/completions", body=request_body),
                response=Response(status=200, body=body), cached=cached,
                discarded_prompt_tokens=discarded, batch_id=batch,
                error=APIError("boom", status=500) if failed else None)
            tracker._count_paid(record)
            counts.append((tracker.prompt_tokens, tracker.completion_tokens,
                           tracker.unpriced, round(tracker.cost, 15)))
        case = (usage, asked, named, cached, failed, discarded, batch, prices)
        assert counts[0] == counts[1], case
        fast_used += StatusTracker()._count_plain(record)
    assert fast_used > 1_000  # the one pass did count most of the plain answers
