"""pipeline.ray_data: AnswerBatches for Ray Data's map_batches.

What is pinned: a batch comes back in its own format (pandas, pyarrow, numpy) with the result
columns lined up row for row; a bad row fails alone; a batch that cannot run comes back all
failed with the reason instead of raising; and under a real local Ray (``ray.init``) the
workers answer every row once through a limiter shared in a real redis-server: four actors
against one simulator stay within the shared quota in every 1 s window (the documented bound
of ``RedisLimiter``); how much of the quota they use is printed (benchmarks/ray_shared_quota.py
holds that target). Your own stages reach the workers and their data comes back as columns.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Iterator, Sequence

import pytest
from _redis_server import RedisServer, redis_server_fixture

from pipeline.ray_data import AnswerBatches, BatchJob
from pipeline.simulator import Simulator

pd = pytest.importorskip("pandas", reason='pandas is not installed: pip install '
                         '"ratelimited-pipeline[ray]"')
pa = pytest.importorskip("pyarrow", reason='pyarrow is not installed: pip install '
                         '"ratelimited-pipeline[ray]"')


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(rpm=30_000, tpm=3_000_000, latency=0.005) as running:
        yield running


def _job(sim: Simulator, **extra: object) -> BatchJob:
    settings: dict[str, object] = {
        "model": "gpt-4o-mini", "prompt": "Classify: {text}", "max_tokens": 5,
        "base_url": sim.base_url, "api_key": "sk-local", "rpm": 30_000, "tpm": 3_000_000}
    return BatchJob(**{**settings, **extra})  # type: ignore[arg-type]


def _frame(n: int) -> pd.DataFrame:
    texts: list[object] = [f"review {i}" for i in range(n)]
    texts[3] = math.nan  # a row that cannot be built
    return pd.DataFrame({"id": range(n), "text": texts}, index=range(100, 100 + n))


def test_job_description_pickles_and_hides_the_key(sim: Simulator) -> None:
    job = _job(sim)
    assert pickle.loads(pickle.dumps(job)) == job
    assert "sk-local" not in repr(job) and "api_key='...'" in repr(job)
    assert pickle.loads(pickle.dumps(AnswerBatches(job))).job == job


def test_pandas_batch_comes_back_lined_up_with_a_failed_row(sim: Simulator) -> None:
    call = AnswerBatches(_job(sim))
    try:
        out = call(_frame(20))
        assert list(out["id"]) == list(range(20))
        assert list(out.columns) == ["id", "text", "answer", "status", "error", "tokens",
                                     "latency", "cost"]
        assert out.loc[3, "status"] == "failed" and "text" in out.loc[3, "error"]
        ok = out.drop(index=3)
        assert (ok["status"] == "succeeded").all() and ok["answer"].notna().all()
        assert (ok["tokens"] > 0).all() and ok["error"].isna().all()
        again = call(_frame(5))  # the same worker, the same loop and client, a second batch
        assert list(again["status"]) == ["succeeded"] * 3 + ["failed", "succeeded"]
    finally:
        call.close()


def test_your_stages_run_on_the_worker_and_their_data_comes_back_as_columns(
        sim: Simulator) -> None:
    from pipeline.stages import each

    def mark(record: object) -> None:
        record.data = {"chars": len(record.text or "")}  # type: ignore[attr-defined]

    # What Ray does with fn_constructor_args: pickle them (cloudpickle, which takes a
    # function by value) to the worker process.
    cloudpickle = pytest.importorskip("ray.cloudpickle", reason="ray is not installed: pip "
                                      "install \"ratelimited-pipeline[ray]\"")
    call = cloudpickle.loads(cloudpickle.dumps(AnswerBatches(_job(sim), [each(mark)])))
    try:
        out = call(_frame(6))
        assert list(out.columns)[-1] == "chars"
        assert out["chars"].isna().tolist() == [False] * 3 + [True] + [False] * 2
    finally:
        call.close()


def test_pyarrow_and_numpy_batches_keep_their_format(sim: Simulator) -> None:
    call = AnswerBatches(_job(sim))
    try:
        table = call(pa.Table.from_pandas(_frame(6), preserve_index=False))
        assert isinstance(table, pa.Table)
        statuses = ["succeeded"] * 3 + ["failed"] + ["succeeded"] * 2
        assert table.column("status").to_pylist() == statuses
        assert table.column("id").to_pylist() == list(range(6))
        arrays = call({"id": _frame(4)["id"].to_numpy(), "text": _frame(4)["text"].to_numpy()})
        assert isinstance(arrays, dict)
        assert list(arrays["status"]) == ["succeeded"] * 3 + ["failed"]
    finally:
        call.close()


def test_a_batch_that_cannot_run_fails_every_row_without_raising(sim: Simulator) -> None:
    call = AnswerBatches(_job(sim, prompt="Classify: {missing_column}"))
    try:
        out = call(_frame(5))
        assert list(out["status"]) == ["failed"] * 5
        assert "missing_column" in out.loc[0, "error"]
    finally:
        call.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    yield from redis_server_fixture()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_ray_data_map_batches_with_a_shared_limiter(sim: Simulator,
                                                    redis_server: RedisServer) -> None:
    ray = pytest.importorskip("ray", reason='ray is not installed: pip install '
                              '"ratelimited-pipeline[ray]"')
    pytest.importorskip("ray.data", reason="ray[data] is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        sim.reset()
        n = 400
        frame = _frame(n)
        job = _job(sim, shared_limit=f"{redis_server.url}?key=ray-test")
        # Four blocks for two actors (a repartition task would need a CPU the actors hold).
        ds = ray.data.from_pandas([frame.iloc[i::4].reset_index(drop=True) for i in range(4)])
        from pipeline.stages import each

        def mark(record: object) -> None:  # your own stage, pickled to the workers
            record.data = {"worker": os.getpid()}  # type: ignore[attr-defined]

        out = ds.map_batches(AnswerBatches, fn_constructor_args=(job, [each(mark)]),
                             concurrency=2, batch_size=50, batch_format="pandas").to_pandas()
    finally:
        ray.shutdown()
    out = out.sort_values("id").reset_index(drop=True)
    assert list(out["id"]) == list(range(n))  # every row once
    assert out.loc[3, "status"] == "failed"
    assert (out.drop(index=3)["status"] == "succeeded").all()
    workers = set(out.drop(index=3)["worker"])  # the stage ran in the actors, not here
    assert os.getpid() not in workers and 1 <= len(workers) <= 2
    answered = [e for e in sim.log() if e.outcome == "ok"]
    assert len(answered) == n - 1 == len({e.body_hash for e in answered})
    import redis

    client = redis.Redis.from_url(redis_server.url)
    assert client.exists("ray-test")  # the workers spent the shared bucket
    client.close()


def _max_in_window(times: Sequence[float], width: float) -> int:
    """The most of sorted ``times`` within any window ``[t, t + width)``."""
    best = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - width:
            start += 1
        best = max(best, end - start + 1)
    return best


class _AnswerBatchesWithPid(AnswerBatches):
    """AnswerBatches that also says which worker process answered each row."""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = super().__call__(batch)
        out["pid"] = os.getpid()
        return out


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_four_ray_actors_share_one_quota_against_one_simulator(
        redis_server: RedisServer) -> None:
    ray = pytest.importorskip("ray", reason='ray is not installed: pip install '
                              '"ratelimited-pipeline[ray]"')
    pytest.importorskip("ray.data", reason="ray[data] is not installed")
    rpm = 12_000.0  # 200 requests/s in all, the requests bind (tokens are far from it)
    rate, rows, actors = rpm / 60, 1_200, 4
    frame = pd.DataFrame({"id": range(rows), "text": [f"review {i}" for i in range(rows)]})
    with Simulator(rpm=rpm, tpm=10_000_000, latency=0.005) as sim:
        job = BatchJob(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=5,
                       base_url=sim.base_url, api_key="sk-local", rpm=rpm, tpm=10_000_000,
                       shared_limit=f"{redis_server.url}?key=ray-four")
        # The workers import this module to build _AnswerBatchesWithPid.
        path = os.pathsep.join(p for p in (os.path.dirname(__file__),
                                           os.environ.get("PYTHONPATH")) if p)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
        try:
            # Sixteen blocks, so the actors stay busy to the end; a quarter of a CPU each, so
            # four actors fit in two CPUs (they wait on the network, not on the CPU).
            blocks = [frame.iloc[i::16].reset_index(drop=True) for i in range(16)]
            out = ray.data.from_pandas(blocks).map_batches(
                _AnswerBatchesWithPid, fn_constructor_args=(job,),
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=0.25, batch_size=25, batch_format="pandas").to_pandas()
        finally:
            ray.shutdown()
        log = sim.log()
    out = out.sort_values("id").reset_index(drop=True)
    assert list(out["id"]) == list(range(rows))  # every row once, in the output
    assert (out["status"] == "succeeded").all(), out[out["status"] != "succeeded"].head()
    assert out["pid"].nunique() == actors  # four processes spent the one quota
    answered = [e for e in log if e.outcome == "ok"]
    assert len(answered) == rows == len({e.body_hash for e in answered})  # once each, sent
    assert not [e for e in log if e.outcome == "rate_limited"]
    times = sorted(e.arrival for e in answered)
    # The bound: rate * W + burst (0.5 s of the rate) + one lease (0.1 s) per actor, W being
    # 1 s at the simulator plus the grant-to-arrival jitter of a loaded machine (0.05 s).
    bound = rate * 1.05 + rate * 0.5 + actors * rate * 0.1
    peak = _max_in_window(times, 1.0)
    span = times[-1] - times[0]
    used = rows / (rate * span)  # over what the rate allows from the first to the last
    print(f"4 Ray actors: max 1 s window {peak} ({peak / rate:.2f}x the rate, bound "
          f"{bound:.0f}), utilisation {used:.1%} over {span:.1f} s")
    assert peak <= bound
    # (The utilisation, printed, is 0.95-1.0 on a quiet machine and falls when the machine
    # cannot keep four actors busy: benchmarks/ray_shared_quota.py measures it.)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_four_ray_actors_not_told_the_limit_discover_it_as_one_client(
        redis_server: RedisServer) -> None:
    # No rpm given and no rate-limit headers: the four actors' limiters share one controller
    # state through Redis, so they find the quota together instead of four times over.
    ray = pytest.importorskip("ray", reason='ray is not installed: pip install '
                              '"ratelimited-pipeline[ray]"')
    pytest.importorskip("ray.data", reason="ray[data] is not installed")
    rpm, rows, actors = 6_000.0, 1_200, 4
    frame = pd.DataFrame({"id": range(rows), "text": [f"review {i}" for i in range(rows)]})
    with Simulator(rpm=rpm, latency=0.01, headers=False) as sim:
        job = BatchJob(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=5,
                       base_url=sim.base_url, api_key="sk-local",
                       shared_limit=f"{redis_server.url}?key=ray-not-told")
        path = os.pathsep.join(p for p in (os.path.dirname(__file__),
                                           os.environ.get("PYTHONPATH")) if p)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
        try:
            blocks = [frame.iloc[i::16].reset_index(drop=True) for i in range(16)]
            out = ray.data.from_pandas(blocks).map_batches(
                _AnswerBatchesWithPid, fn_constructor_args=(job,),
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=0.25, batch_size=25, batch_format="pandas").to_pandas()
        finally:
            ray.shutdown()
        log = sim.log()
    assert (out["status"] == "succeeded").all()
    assert sorted(out["id"]) == list(range(rows))
    answered = [e for e in log if e.outcome == "ok"]
    assert len(answered) == rows == len({e.body_hash for e in answered})
    refused = sum(1 for e in log if e.outcome == "rate_limited")
    print(f"4 Ray actors, limit not told: {refused} 429s for {rows} rows")
    # One client discovering 100 requests/s draws a few dozen at most; four learning alone
    # (the old shared limiter without the controller) drew thousands.
    assert refused <= 0.08 * rows
