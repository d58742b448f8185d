"""pipeline.stages.decode and the re-asks of retry: structured answers decoded onto the record,
answers that do not fit asked again (counted, the limiter re-acquired) and then failed with
the validation error; never stored in the cache. Against the simulator over 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Literal

import msgspec
import pytest

import pipeline
from pipeline.core.record import Record
from pipeline.core.request import Response
from pipeline.errors import ConfigError, SchemaValidationError
from pipeline.limiter import TokenBucketLimiter
from pipeline.simulator import Simulator
from pipeline.stages import acquire, call, decode, retry
from pipeline.state.cache import ResponseCache
from pipeline.testing import InstantService


class Label(msgspec.Struct):
    """Every field required, none nullable: every spoiled answer fails to decode."""

    label: Literal["spam", "ham"]
    p: float
    reasons: list[str]


ROWS = [{"text": f"message number {i}"} for i in range(60)]


def _body(content: str | None, finish: str = "stop", refusal: str | None = None) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if refusal is not None:
        message["refusal"] = refusal
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}


def _record(body) -> Record:
    return Record(index=0, response=Response(status=200, body=body))


def _service(sim: Simulator, **options) -> pipeline.OpenAIService:
    return pipeline.OpenAIService(api_key="sk-test", base_url=sim.base_url, **options)


def _job(service, **config):
    return service.chat(model="gpt-4o-mini", prompt="Is this spam? {text}", schema=Label,
                        max_tokens=300, **config)


# -- the stage alone -----------------------------------------------------------------------
async def test_decode_puts_the_value_on_the_record():
    record = await decode(Label).process(
        _record(_body('{"label": "ham", "p": 0.2, "reasons": ["polite"]}')))
    assert record.value == Label("ham", 0.2, ["polite"]) and record.error is None and record.ok


@pytest.mark.parametrize(("body", "reason"), [
    (_body('{"label": "eggs", "p": 0.2, "reasons": []}'), "invalid"),
    (_body("Sure! here it is"), "not_json"),
    (_body('{"label": "ham"', finish="length"), "truncated"),
    (_body(None, refusal="I can't help with that"), "refusal"),
    (_body(""), "empty"),
    ("not a dict", "empty"),
])
async def test_an_answer_that_does_not_fit_is_an_error_value_never_a_raise(body, reason):
    record = await decode(Label).process(_record(body))
    assert isinstance(record.error, SchemaValidationError) and record.error.reason == reason
    assert record.value is None and not record.ok and record.status == "failed"


async def test_decode_leaves_failed_and_unanswered_records_alone():
    failed = Record(index=0, error=ValueError("x"))
    assert (await decode(Label).process(failed)).error is failed.error
    assert (await decode(Label).process(Record(index=1))).value is None


def test_decode_takes_every_schema_form_and_says_which():
    assert repr(decode(Label)) == "decode(OutputSchema('Label', struct, columns=[label, p, " \
                                  "reasons]))"
    assert decode(pipeline.output_schema(Label)).schema == pipeline.output_schema(Label)
    with pytest.raises(ConfigError):
        decode({"type": "string"})


def test_retry_refuses_a_negative_reask_budget():
    with pytest.raises(ConfigError, match="reasks"):
        retry(decode(Label), reasks=-1)


# -- re-asks, over loopback ----------------------------------------------------------------
@pytest.mark.timeout(120)
async def test_invalid_answers_are_asked_again_until_every_row_is_valid_and_counted():
    with Simulator(invalid_json=0.3, seed=11, latency=0) as sim:
        async with _service(sim) as service:
            results = await pipeline.run(ROWS, _job(service), reasks=8)
        outcomes = sim.stats().outcomes
        requests = sim.stats().requests
    assert all(r.ok for r in results) and len(results) == len(ROWS)
    assert all(isinstance(r.value, Label) for r in results)
    spoiled = outcomes.get("invalid_json", 0)
    assert 0.15 * len(ROWS) <= spoiled  # the simulator did spoil about 30%
    # every spoiled answer was asked again once: counted per row and in the status
    assert results.status.reasks == spoiled == sum(r.reasks for r in results)
    assert requests == len(ROWS) + spoiled
    assert results.status.as_dict()["reasks"] == spoiled
    assert f"{spoiled:,}" in dict(results.status._rows())[
        "re-asks (answers not fitting the schema)"]
    assert results.status.retries == 0  # re-asks are not transport retries
    assert all(r.attempts == r.reasks + 1 for r in results)


@pytest.mark.timeout(120)
async def test_a_row_that_never_fits_fails_with_the_validation_error_and_is_not_cached(
        tmp_path):
    with Simulator(invalid_json=1.0, seed=3, latency=0) as sim:
        async with _service(sim) as service:
            results = await pipeline.run(ROWS[:10], _job(service), reasks=2,
                                         cache=tmp_path / "cache")
        requests = sim.stats().requests
    assert requests == 30  # each row asked 1 + 2 times
    for record in results:
        assert record.status == "failed" and isinstance(record.error, SchemaValidationError)
        assert record.value is None and record.reasks == 2 and record.attempts == 3
        assert str(record.error).startswith(("answer for 'Label'", "answer does not fit"))
    assert results.status.failed == 10 and results.status.reasks == 20
    assert results.status.errors_by_type == {"SchemaValidationError": 10}
    with ResponseCache(tmp_path / "cache") as cache:
        assert len(cache) == 0  # an answer that does not fit is never stored
        assert all(r.cache_key not in cache for r in results)


@pytest.mark.timeout(120)
async def test_an_answer_cut_at_max_tokens_fails_at_once_without_a_reask():
    with Simulator(latency=0) as sim:
        async with _service(sim) as service:
            job = service.chat(model="gpt-4o-mini", prompt="{text}", schema=Label,
                               max_tokens=3)
            results = await pipeline.run(ROWS[:5], job, reasks=4)
        assert sim.stats().requests == 5
    assert all(r.error.reason == "truncated" and r.reasks == 0 for r in results)
    assert "max_tokens" in str(results[0].error)


@pytest.mark.timeout(120)
async def test_a_cached_answer_is_decoded_too(tmp_path):
    with Simulator(latency=0) as sim:
        async with _service(sim) as service:
            first = await pipeline.run(ROWS[:8], _job(service), cache=tmp_path / "c")
            again = await pipeline.run(ROWS[:8], _job(service), cache=tmp_path / "c")
        assert sim.stats().requests == 8
    assert all(r.cached and isinstance(r.value, Label) for r in again)
    assert [r.value for r in again] == [r.value for r in first]


class CountingLimiter(TokenBucketLimiter):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.leases = 0

    async def lease(self, requests: float = 1, tokens: float = 0):
        self.leases += 1
        return await super().lease(requests, tokens)


@pytest.mark.timeout(120)
async def test_each_reask_acquires_the_limiter_again():
    limiter = CountingLimiter(60_000, 10_000_000)
    with Simulator(invalid_json=1.0, seed=5, latency=0) as sim:
        async with _service(sim, limits={"chat/completions": {"limiter": limiter}}) as service:
            job = _job(service)
            flow = retry(acquire(job.endpoint.limiter) | call(service, job.endpoint)
                         | decode(Label), reasks=3)
            records = [await flow.process(Record(index=i, request=job.build(row)))
                       for i, row in enumerate(ROWS[:4])]
    assert limiter.leases == 16 and all(r.reasks == 3 for r in records)


async def test_a_flow_without_decode_is_unchanged():
    stage = retry(acquire(TokenBucketLimiter(60, 1000)) | call(
        InstantService(), "chat/completions"))
    assert stage.on_answered is False and "reasks" not in repr(stage)
    assert retry(decode(Label), reasks=5).on_answered is True


def test_the_default_flow_decodes_inside_the_retry_when_the_job_has_a_schema():
    service = pipeline.OpenAIService(api_key="sk-test", base_url="http://127.0.0.1:9")
    flow = pipeline.default_flow(_job(service), reasks=3)
    retry_stage = next(s for s in flow.stages() if isinstance(s, retry))
    assert [type(s).__name__ for s in retry_stage.inner.stages()] == \
        ["acquire", "call", "decode"]
    assert retry_stage.reasks == 3
    plain = pipeline.default_flow(service.chat(model="m", prompt="{text}"))
    inner = next(s for s in plain.stages() if isinstance(s, retry)).inner.stages()
    assert [type(s).__name__ for s in inner] == ["acquire", "call"]
    asyncio.run(service.aclose())


@pytest.mark.timeout(120)
async def test_answers_thrown_away_are_in_the_rows_cost_and_the_status_tokens():
    # Every answer the simulator sends was billed, whether it fitted or not: the rows' cost
    # and the status table's tokens count them all (the simulator's log is the bill).
    with Simulator(invalid_json=0.5, seed=7, latency=0) as sim:
        async with _service(sim) as service:
            results = await pipeline.run(ROWS[:20], _job(service), reasks=1)
        answered = [e for e in sim.log() if e.outcome in ("ok", "invalid_json")]
    billed_prompt = sum(e.prompt_tokens for e in answered)
    billed_completion = sum(e.completion_tokens for e in answered)
    assert any(r.reasks for r in results) and any(not r.ok for r in results)
    assert sum(r.discarded_prompt_tokens for r in results) > 0
    status = results.status
    assert (status.prompt_tokens, status.completion_tokens) == (billed_prompt, billed_completion)
    expected = pipeline.Prices().cost("gpt-4o-mini", billed_prompt, billed_completion)
    assert results.cost == pytest.approx(expected)
    assert status.cost == pytest.approx(expected)
    never_fitted = [r for r in results if not r.ok]
    assert all(pipeline.Prices().record_cost(r) > 0 for r in never_fitted)  # billed twice


@pytest.mark.timeout(120)
async def test_a_reask_tells_the_model_what_did_not_fit():
    # A model that answers the same question the same way (temperature 0) would fail every
    # re-ask of the identical request: the re-ask carries the answer and why it did not fit.
    def model(endpoint, body):
        last = body["messages"][-1]["content"]
        return ('{"label": "spam", "p": 0.9, "reasons": []}' if "does not fit" in last
                else '{"label": "maybe"}')

    with Simulator(latency=0, process=False, responder=model) as sim:
        async with _service(sim) as service:
            results = await pipeline.run(ROWS[:5], _job(service), reasks=1,
                                         keep_responses=True)  # the requests, to read
        bodies = [e for e in sim.log() if e.outcome == "ok"]
    assert all(r.ok and r.value == Label("spam", 0.9, []) for r in results), list(results)
    assert all(r.reasks == 1 for r in results) and len(bodies) == 10
    retried = results[0].request.body["messages"]
    assert [m["role"] for m in retried] == ["user", "assistant", "user"]
    assert retried[1]["content"] == '{"label": "maybe"}'
    assert "`$.label`" in retried[2]["content"] or "label" in retried[2]["content"]
    assert results[0].token_estimate > _job(service).build(ROWS[0]).token_estimate
