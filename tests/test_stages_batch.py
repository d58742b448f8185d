"""pipeline.stages.batched: embeddings in batches through the default pipeline, against the
simulator over 127.0.0.1. The simulator's own log is the witness of what was sent."""

from __future__ import annotations

import asyncio
import re

import pytest

import pipeline
from pipeline import io
from pipeline.errors import ConfigError, ContextLengthExceededError, MalformedResponseError
from pipeline.io.resume import run_file
from pipeline.limiter import TokenBucketLimiter
from pipeline.simulator import Simulator, count_input_tokens
from pipeline.stages import acquire, batched, call, retry
from pipeline.testing import instant_backoff

MODEL = "text-embedding-3-small"
TEXTS = [f"review {i}: " + "fine product " * (1 + i % 7) for i in range(300)]
ROWS = [{"text": t} for t in TEXTS]


def _requests(sim: Simulator) -> int:
    return sum(1 for e in sim.log() if e.path.endswith("/embeddings"))


def _service(sim: Simulator, **options) -> pipeline.OpenAIService:
    return pipeline.OpenAIService(api_key="sk-test", base_url=sim.base_url, **options)


@pytest.fixture
def sim():
    with Simulator(embedding_dimensions=8) as simulator:
        yield simulator


async def test_every_row_gets_the_vector_it_gets_alone_in_far_fewer_requests(sim):
    async with _service(sim) as service:
        batched_run = await pipeline.run(ROWS, service.embeddings(model=MODEL, batch_size=64))
        sent = _requests(sim)
        alone = await pipeline.run(ROWS, service.embeddings(model=MODEL, batch_size=1))
    assert sent == 5  # 300 rows, 64 a request
    assert _requests(sim) - sent == 300
    assert [r.index for r in batched_run] == list(range(300))
    for together, single in zip(batched_run, alone, strict=True):
        assert together.ok and single.ok
        assert together.embedding == single.embedding and len(together.embedding) == 8
        # The batch's usage shared by the rows' estimates: near each row's own count.
        shared, own = (r.response.body["usage"]["prompt_tokens"] for r in (together, single))
        assert abs(shared - own) <= 2
        assert together.response.body["data"][0]["index"] == 0
    assert {r.batched for r in batched_run} == {64, 44} and {r.batched for r in alone} == {0}
    status = batched_run.status
    assert status.requests == 5 and status.batched_rows == 300
    assert status.prompt_tokens == alone.status.prompt_tokens == sum(map(count_input_tokens,
                                                                         TEXTS))
    assert re.search(r"requests \(rows per request\) +5 \(60\.0 rows each\)", str(status))
    assert "rows per request" not in str(alone.status)
    assert batched_run.cost == pytest.approx(alone.cost)


async def test_by_default_a_batch_holds_up_to_2048_inputs(sim):
    rows = [{"text": f"r{i}"} for i in range(3000)]
    async with _service(sim) as service:
        results = await pipeline.run(rows, service.embeddings(model=MODEL))
    assert all(r.ok for r in results)
    assert [len(e.body_hash) > 0 for e in sim.log()] == [True, True]  # 2,048 + 952
    assert sorted({r.batched for r in results}) == [952, 2048]


class CountingLimiter(TokenBucketLimiter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.leases: list[tuple[float, float]] = []

    async def lease(self, requests=1, tokens=0):
        self.leases.append((requests, tokens))
        return await super().lease(requests, tokens)


async def test_the_limiter_is_charged_once_per_request_with_the_batch_tokens(sim):
    limiter = CountingLimiter(max_requests=6_000, max_tokens=1_000_000)
    async with _service(sim, limits={"embeddings": {"limiter": limiter}}) as service:
        job = service.embeddings(model=MODEL, batch_size=100)
        results = await pipeline.run(ROWS, job)
    estimates = [r.token_estimate for r in results]
    assert limiter.leases == [(1, sum(estimates[i:i + 100])) for i in range(0, 300, 100)]
    # The three batches are in flight together: they may reach the server in any order.
    assert sorted(e.tokens for e in sim.log()) == sorted(
        sum(map(count_input_tokens, TEXTS[i:i + 100])) for i in range(0, 300, 100))


async def test_a_batch_never_asks_the_limiter_for_more_tokens_than_it_can_grant(sim):
    limiter = CountingLimiter(max_requests=60_000, max_tokens=200, interval=1)
    async with _service(sim, limits={"embeddings": {"limiter": limiter}}) as service:
        results = await pipeline.run(ROWS[:60], service.embeddings(model=MODEL))
    assert all(r.ok for r in results)
    assert limiter.capacity() == (60_000, 200)
    assert max(tokens for _, tokens in limiter.leases) <= 200
    assert sum(tokens for _, tokens in limiter.leases) == sum(r.token_estimate for r in results)
    assert len(limiter.leases) == _requests(sim) > 1


class LyingService(pipeline.OpenAIService):
    """Drops one vector from any answer to a batch holding ``victim`` (a server that lies)."""

    victim = "review 7:"

    async def call(self, endpoint, request):
        response = await super().call(endpoint, request)
        inputs = request.body.get("input") if request.body else None
        if isinstance(inputs, list) and any(t.startswith(self.victim) for t in inputs):
            response.body["data"].pop()
        return response


async def test_a_lying_answer_fails_only_the_rows_of_its_batch_after_its_retries(sim):
    with instant_backoff():
        async with LyingService(api_key="sk-test", base_url=sim.base_url) as service:
            results = await pipeline.run(ROWS[:20], service.embeddings(model=MODEL,
                                                                        batch_size=5),
                                         attempts=3)
    failed = [r.index for r in results if not r.ok]
    assert failed == [5, 6, 7, 8, 9]
    assert all(isinstance(results[i].error, MalformedResponseError) for i in failed)
    assert {results[i].attempts for i in failed} == {3}  # one retry budget, per request
    assert _requests(sim) == 3 + 3  # three honest batches, the lying one three times
    assert results.status.retries == 2


async def test_a_row_the_server_refuses_fails_alone_not_its_batch():
    rows = [{"text": f"row {i}"} for i in range(16)]
    rows[11] = {"text": "long " * 100}  # over the context window: a 400 for its batch
    with Simulator(embedding_dimensions=8, context_window=50) as sim:
        async with _service(sim) as service:
            results = await pipeline.run(rows, service.embeddings(model=MODEL))
        log = sim.log()
    assert [r.index for r in results if not r.ok] == [11]
    assert isinstance(results[11].error, ContextLengthExceededError)
    assert sum(1 for e in log if e.status == 400) == 5  # 16 -> 8 -> 4 -> 2 -> 1 rows
    assert sum(1 for e in log if e.status == 200) == 4  # the other halves: 8, 4, 2 and 1
    assert all(r.ok for r in results if r.index != 11)
    assert {r.batched for r in results if r.ok} == {8, 4, 2, 1}


async def test_each_row_is_cached_alone_so_reruns_batched_or_not_send_nothing(sim, tmp_path):
    cache = tmp_path / "cache"
    async with _service(sim) as service:
        first = await pipeline.run(ROWS, service.embeddings(model=MODEL), cache=cache)
        sent = _requests(sim)
        again = await pipeline.run(ROWS, service.embeddings(model=MODEL), cache=cache)
        alone = await pipeline.run(ROWS, service.embeddings(model=MODEL, batch_size=1),
                                   cache=cache)
        more = await pipeline.run([*ROWS, {"text": "new"}], service.embeddings(model=MODEL),
                                  cache=cache)
    assert sent == 1 and _requests(sim) == 2  # the last run sent only the new row
    assert again.status.cached == alone.status.cached == 300 and more.status.cached == 300
    assert [r.embedding for r in again] == [r.embedding for r in alone] == \
        [r.embedding for r in first] == [r.embedding for r in more][:300]


async def test_a_resumed_file_run_sends_only_the_rows_that_failed(sim, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "\n".join(TEXTS[:20]) + "\n")
    output = tmp_path / "out.jsonl"
    with instant_backoff():
        async with LyingService(api_key="sk-test", base_url=sim.base_url) as service:
            summary = await run_file(source, output, service.embeddings(model=MODEL,
                                                                         batch_size=5),
                                     attempts=1)
    assert summary.failed == 5 and _requests(sim) == 4
    async with _service(sim) as service:
        summary = await run_file(source, output, service.embeddings(model=MODEL,
                                                                     batch_size=5))
    assert summary.failed == 0 and summary.resumed == 15
    assert _requests(sim) == 5  # one more request: the five rows that had failed
    frame = io.read(output)
    lines = list(frame.records())
    assert len(lines) == 20 and all(len(r.row["embedding"]) == 8 for r in lines)


async def test_frames_get_a_vector_column(sim):
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    np = pytest.importorskip("numpy")
    df = pd.DataFrame({"text": TEXTS[:10]}, index=[f"r{i}" for i in range(10)])
    async with _service(sim) as service:
        job = service.embeddings(model=MODEL)
        out = await io.run_frame(df, job)
        polars_out = await io.run_frame(pl.DataFrame({"text": TEXTS[:10]}), job)
        results = await pipeline.run(ROWS[:3], job)
    assert isinstance(out.loc["r3", "embedding"], np.ndarray)
    assert out.loc["r3", "embedding"].shape == (8,)
    assert np.stack(out["embedding"].to_list()).shape == (10, 8)
    assert polars_out.schema["embedding"] == pl.Array(pl.Float64, 8)
    assert polars_out["embedding"].to_numpy().shape == (10, 8)
    assert np.allclose(out["embedding"].iloc[0], polars_out["embedding"][0].to_numpy())
    assert isinstance(results.to_pandas()["embedding"][0], np.ndarray)
    assert results.to_polars().schema["embedding"] == pl.Array(pl.Float64, 8)


async def test_a_failed_row_is_a_missing_vector_in_the_frames(sim):
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    texts = ["a", "", "c"]
    async with _service(sim) as service:
        job = service.embeddings(model=MODEL)
        out = await io.run_frame(pd.DataFrame({"text": texts}), job)
        polars_out = await io.run_frame(pl.DataFrame({"text": texts}), job)
    assert out["embedding"][1] is None and out["status"].tolist()[1] == "failed"
    assert polars_out["embedding"].null_count() == 1


async def test_cancelling_a_batched_run_leaves_no_tasks():
    with Simulator(embedding_dimensions=4, latency=0.05) as sim:
        async with _service(sim) as service:
            rows = [{"text": f"row {i}"} for i in range(50_000)]
            before = asyncio.all_tasks()
            task = asyncio.ensure_future(pipeline.run(rows, service.embeddings(
                model=MODEL, batch_size=50), concurrency=4))
            while _requests(sim) < 3:  # noqa: ASYNC110 - polling the log, bounded by the timeout
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0)
            assert asyncio.all_tasks() - before == set()
            sent = _requests(sim)
            await asyncio.sleep(0.2)
            assert _requests(sim) == sent


def test_batch_size_is_checked_and_one_means_no_batching():
    service = pipeline.OpenAIService(api_key="sk-test")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="batch_size"):
            service.embeddings(model=MODEL, batch_size=bad)
    flow = pipeline.default_flow(service.embeddings(model=MODEL))
    assert any(isinstance(s, batched) for s in flow.stages())
    assert flow.concurrency == 4 * 2048  # rows in flight: enough to fill a few batches
    flow = pipeline.default_flow(service.embeddings(model=MODEL, batch_size=1))
    assert not any(isinstance(s, batched) for s in flow.stages())
    assert flow.concurrency == 64
    flow = pipeline.default_flow(service.chat(model="gpt-4o-mini", prompt="{text}"))
    assert not any(isinstance(s, batched) for s in flow.stages())


def test_batched_checks_its_arguments():
    service = pipeline.OpenAIService(api_key="sk-test")
    endpoint = service.endpoint("embeddings")
    send = retry(acquire(endpoint) | call(service, endpoint))
    with pytest.raises(ConfigError, match="linger"):
        batched(send, linger=0)
    with pytest.raises(ConfigError, match="concurrency"):
        batched(send, concurrency=0)
    with pytest.raises(ConfigError, match="wraps"):
        batched("send")  # type: ignore[arg-type]
