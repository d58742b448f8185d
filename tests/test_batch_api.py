"""The Batch API: the simulator's /v1/batches, and run_batch lining answers up with rows,
resuming without a second batch, and what goes wrong (expired, failed lines, refusals)."""

from __future__ import annotations

import asyncio
import io as _io
import json
import time

import openai
import pytest

import pipeline
from pipeline import OpenAIService
from pipeline.batch_api import BatchLedger, cancel_batches, run_batch
from pipeline.errors import BatchExpiredError, ConfigError, ContextLengthExceededError
from pipeline.simulator import Simulator

ROWS = [{"text": f"review number {i}"} for i in range(40)]


def responder(endpoint, body):
    return "echo: " + body["messages"][-1]["content"]


@pytest.fixture
def sim():
    with Simulator(latency=0.0, batch_seconds=0.2, responder=responder) as s:
        yield s


async def until_submitted(cache):
    """Wait until the ledger holds a batch id (the ledger is a file: poll it)."""
    ledger = BatchLedger(cache / "batches.jsonl")
    for _ in range(2000):
        if any(c.batch_id for c in ledger.chunks().values()):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no batch was submitted")


def job_for(service, **options):
    return service.chat(model="gpt-4o-mini", prompt="Q: {text}", max_tokens=50, **options)


def test_the_openai_sdk_runs_a_batch_on_the_simulator(sim):
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{i}"}]}}
             for i in range(3)]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    upload = client.files.create(file=("in.jsonl", _io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"k": "v"})
    assert batch.status == "validating"
    states = set()
    for _ in range(200):
        batch = client.batches.retrieve(batch.id)
        states.add(batch.status)
        if batch.status == "completed":
            break
        time.sleep(0.01)  # polling for a state, as a user would; nothing is timed
    assert batch.status == "completed" and batch.request_counts.completed == 3
    assert "in_progress" in states
    out = client.files.content(batch.output_file_id).text.splitlines()
    got = {json.loads(line)["custom_id"]: json.loads(line)["response"] for line in out}
    assert set(got) == {"r0", "r1", "r2"}
    assert got["r1"]["status_code"] == 200
    assert got["r1"]["body"]["choices"][0]["message"]["content"] == "echo: 1"
    listed = client.batches.list(limit=10)
    assert [b.id for b in listed.data] == [batch.id]


async def test_run_batch_answers_every_row_in_order_and_caches_them(sim, tmp_path):
    async with OpenAIService(base_url=sim.base_url, api_key="sk-test") as service:
        job = job_for(service)
        results = await run_batch(ROWS, job, cache=tmp_path / "c", poll=0.05)
        assert [r.text for r in results] == [f"echo: Q: {row['text']}" for row in ROWS]
        assert results.status.succeeded == len(ROWS)
        assert len(sim.batches()) == 1 and sim.batch_lines_answered() == len(ROWS)
        # nothing went to the online endpoint
        assert not [e for e in sim.log() if e.path.endswith("chat/completions")]
        # An online run of the same rows pays for none of them again.
        online = await pipeline.run(ROWS, job, cache=tmp_path / "c")
        assert online.status.cached == len(ROWS)
        assert not [e for e in sim.log() if e.path.endswith("chat/completions")]


async def test_identical_requests_go_once_and_answer_every_row(sim, tmp_path):
    rows = [{"text": "same"}] * 5 + [{"text": "other"}]
    async with OpenAIService(base_url=sim.base_url, api_key="sk-test") as service:
        results = await run_batch(rows, job_for(service), cache=tmp_path / "c", poll=0.05)
    assert all(r.ok for r in results)
    assert sim.batch_lines_answered() == 2


async def test_files_are_split_by_request_count(sim, tmp_path):
    async with OpenAIService(base_url=sim.base_url, api_key="sk-test") as service:
        results = await run_batch(ROWS, job_for(service), cache=tmp_path / "c", poll=0.05,
                                  max_requests=15)
    assert all(r.ok for r in results)
    assert [b["request_counts"]["total"] for b in sim.batches()] == [15, 15, 10]


async def test_a_rerun_after_a_kill_picks_up_the_batch_instead_of_making_another(sim, tmp_path):
    cache = tmp_path / "c"
    async with OpenAIService(base_url=sim.base_url, api_key="sk-test") as service:
        job = job_for(service)
        task = asyncio.ensure_future(run_batch(ROWS, job, cache=cache, poll=0.05))
        await until_submitted(cache)
        task.cancel()  # as a kill would: the batch goes on at the provider
        with pytest.raises(asyncio.CancelledError):
            await task
        results = await run_batch(ROWS, job, cache=cache, poll=0.05)
    assert all(r.ok for r in results)
    assert len(sim.batches()) == 1 and sim.batch_lines_answered() == len(ROWS)


async def test_a_batch_created_but_not_written_down_is_found_by_its_metadata(sim, tmp_path):
    cache = tmp_path / "c"
    async with OpenAIService(base_url=sim.base_url, api_key="sk-test") as service:
        job = job_for(service)
        await run_batch(ROWS[:3], job, cache=cache, poll=0.05)
        # Forget the answers and the 'batch' and 'collected' lines, as a kill right after
        # the create call would have left things: the rerun must find that batch.
        ledger = cache / "batches.jsonl"
        kept = [line for line in ledger.read_text().splitlines()
                if json.loads(line)["event"] in ("chunk", "file")]
        ledger.write_text("\n".join(kept) + "\n")
        cache_obj = pipeline.ResponseCache(cache)
        cache_obj.clear()
        cache_obj.close()
        results = await run_batch(ROWS[:3], job, cache=cache, poll=0.05)
    assert all(r.ok for r in results)
    assert len(sim.batches()) == 1 and sim.batch_lines_answered() == 3


async def test_an_expired_batch_fails_the_rest_and_a_rerun_sends_only_those(tmp_path):
    with Simulator(latency=0.0, batch_seconds=0.2, batch_expire_after=0.5,
                   responder=responder) as sim:
        async with OpenAIService(base_url=sim.base_url, api_key="sk-test") as service:
            job = job_for(service)
            first = await run_batch(ROWS, job, cache=tmp_path / "c", poll=0.05)
            failed = [r for r in first if not r.ok]
            assert len(failed) == len(ROWS) // 2
            assert all(isinstance(r.error, BatchExpiredError) and r.retryable for r in failed)
            answered = sim.batch_lines_answered()
            assert answered == len(ROWS) // 2
            second = await run_batch(ROWS, job, cache=tmp_path / "c", poll=0.05)
            # The second batch expires halfway too: a quarter of the rows still wait.
            assert sum(r.ok for r in second) == len(ROWS) * 3 // 4
            assert [b["request_counts"]["total"] for b in sim.batches()] == [40, 20]
            assert sim.batch_lines_answered() == answered + len(ROWS) // 4


async def test_a_line_the_endpoint_refuses_fails_its_row_with_the_online_error(tmp_path):
    rows = [{"text": "fine"}, {"text": "many words " * 500}]
    with Simulator(latency=0.0, batch_seconds=0.2, context_window=400) as sim:
        async with OpenAIService(base_url=sim.base_url, api_key="sk-test") as service:
            results = await run_batch(rows, job_for(service), cache=tmp_path / "c",
                                      poll=0.05)
    assert results[0].ok
    assert isinstance(results[1].error, ContextLengthExceededError)


async def test_an_enqueued_token_refusal_is_submitted_again_after_an_earlier_batch(tmp_path):
    with Simulator(latency=0.0, batch_seconds=0.2, responder=responder,
                   batch_queue_tokens=400) as sim:
        async with OpenAIService(base_url=sim.base_url, api_key="sk-test") as service:
            results = await run_batch(ROWS, job_for(service), cache=tmp_path / "c",
                                      poll=0.05, max_requests=10)
    assert all(r.ok for r in results)
    states = [b["status"] for b in sim.batches()]
    assert states.count("completed") == 4 and "failed" in states
    assert sim.batch_lines_answered() == len(ROWS)


async def test_cancel_batches_cancels_what_the_ledger_knows(tmp_path):
    with Simulator(latency=0.0, batch_seconds=30, responder=responder) as sim:
        async with OpenAIService(base_url=sim.base_url, api_key="sk-test") as service:
            cache = tmp_path / "c"
            task = asyncio.ensure_future(run_batch(ROWS, job_for(service), cache=cache,
                                                   poll=0.05))
            await until_submitted(cache)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            cancelled = await cancel_batches(service, cache)
        assert cancelled == [sim.batches()[0]["id"]]
        assert sim.batches()[0]["status"] in ("cancelling", "cancelled")


async def test_run_batch_needs_a_cache(sim):
    async with OpenAIService(base_url=sim.base_url, api_key="sk-test") as service:
        with pytest.raises(ConfigError, match="cache"):
            await run_batch(ROWS, job_for(service), cache=None)  # type: ignore[arg-type]


async def test_batch_answers_cost_the_batch_price_and_the_dry_run_shows_both(sim, tmp_path):
    async with OpenAIService(base_url=sim.base_url, api_key="sk-test") as service:
        job = job_for(service)
        results = await run_batch(ROWS, job, cache=tmp_path / "c", poll=0.05)
        assert all(r.batch_id == sim.batches()[0]["id"] for r in results)
        prices = pipeline.Prices()
        online = sum(prices.cost("gpt-4o-mini", *r.paid_tokens()) for r in results)
        assert results.cost == pytest.approx(online / 2)
        planned = pipeline.estimate(ROWS, job)
        assert planned.batch_high == pytest.approx(planned.cost_high / 2)
        assert "through the Batch API" in str(planned)


async def test_run_batch_takes_a_pandas_frame_and_lines_up_with_it(sim, tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": ["a", "b", "c"]}, index=[7, 8, 9])
    async with OpenAIService(base_url=sim.base_url, api_key="sk-test") as service:
        results = await run_batch(frame, job_for(service), cache=tmp_path / "c", poll=0.05)
        with pytest.raises(pipeline.errors.TemplateKeyError):
            await run_batch(frame.rename(columns={"text": "other"}), job_for(service),
                            cache=tmp_path / "c", poll=0.05)
    out = results.to_pandas(frame)
    assert list(out.index) == [7, 8, 9]
    assert out["answer"].tolist() == ["echo: Q: a", "echo: Q: b", "echo: Q: c"]
