"""pipeline.bench: the sweep's figures come from the simulator's log, and the outputs work.

The end-to-end tests run a tiny grid (a few dozen requests, time compressed) against thread-mode
simulators; they assert what the log must show, never timings.
"""

from __future__ import annotations

import asyncio
import math

import pandas as pd
import polars as pl
import pytest

from pipeline import bench
from pipeline.bench import _sweep
from pipeline.cli import main as cli_main
from pipeline.core.record import Record
from pipeline.errors import ConfigError
from pipeline.simulator import LogEntry

# 600 rpm with a 6-request bucket: 30 requests need about 2.4 s; compressed to about 0.5 s.
TINY = bench.Provider(rpm=600, tpm=200_000, burst=0.01, latency=0.05, seed=3)
FAST = {"requests": 30, "target_seconds": 0.5, "process": False}


def entry(arrival: float, outcome: str, body: str, tokens: int = 100) -> LogEntry:
    status = {"ok": 200, "rate_limited": 429, "fault:500": 500}[outcome]
    ok = outcome == "ok"
    return LogEntry(arrival=arrival, method="POST", path="/v1/chat/completions", status=status,
                    outcome=outcome, tokens=tokens, body_hash=body,
                    prompt_tokens=60 if ok else 0, completion_tokens=20 if ok else 0)


def test_measure_takes_429s_retries_and_throughput_from_the_log() -> None:
    log = [entry(0.0, "ok", "a"), entry(0.1, "rate_limited", "b"), entry(0.5, "ok", "b"),
           entry(0.6, "fault:500", "c"), entry(0.9, "ok", "c")]
    records = [Record(index=i, started=1.0, finished=1.0 + 0.1 * (i + 1)) for i in range(3)]
    records[2].error = RuntimeError("boom")  # the client's records only give failures/latency
    provider = bench.Provider(rpm=60, tpm=6_000, burst=1 / 60)  # buckets: 1 request, 100 tokens
    row = _sweep._measure(log, records, bench.Setting(), provider, k=2.0, wall=1.0, cpu=0.25)
    assert row["n_429"] == 1
    assert row["sent"] == 5
    assert row["retries"] == 2  # 5 sent, 3 distinct bodies
    assert row["failed"] == 1
    assert row["run_s"] == 2.0  # provider time = wall x time scale
    assert row["req_per_s"] == pytest.approx(3 / 2.0)  # 3 ok in 2 provider seconds
    assert row["tok_per_s"] == pytest.approx(3 * 80 / 2.0)
    # Admitted (ok + the fault, not the 429) over bucket + rate x run: 4 / (1 + 1 x 2).
    assert row["util_req"] == pytest.approx(4 / 3)
    assert row["util_tok"] == pytest.approx(400 / (100 + 100 * 2))
    assert row["p50_s"] == pytest.approx(0.4)  # 0.2 s of wall time x 2
    assert row["cpu_s"] == 0.25


def test_grid_is_every_combination_and_settings_are_checked() -> None:
    settings = bench.grid(limiters=["token_bucket", "interval"], fractions=[0.8, 1.0],
                          concurrency=[16, 64])
    assert len(settings) == 8
    assert {(s.limiter, s.fraction, s.concurrency) for s in settings} == {
        (k, f, c) for k in ("token_bucket", "interval") for f in (0.8, 1.0) for c in (16, 64)}
    with pytest.raises(ConfigError):
        bench.Setting(limiter="leaky")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        bench.Setting(concurrency=0)
    with pytest.raises(ConfigError):
        bench.Provider(rpm=600, burst=2)


def test_time_scale_compresses_the_run_to_the_target() -> None:
    provider = bench.Provider(rpm=600, burst=0.1, latency=0.2)
    # 300 requests, 60 in the bucket, 10/s: 24 s; at 4 s a setting that is x6.
    assert _sweep.auto_time_scale(provider, 300, 0, 64, target_seconds=4.0) == pytest.approx(6)
    # A run that is already short is not slowed down.
    assert _sweep.auto_time_scale(provider, 10, 0, 64) == 1.0


def test_default_buckets_hold_what_they_hold_in_the_providers_time() -> None:
    # The limiter's own default (half a second of its rate) in compressed time would hold
    # k times the requests: at 10x, 50 instead of 5, a burst the real client never sends.
    provider = bench.Provider(rpm=600, tpm=60_000)
    limiter = _sweep._limiter(bench.Setting(), provider, k=10.0)
    assert limiter.snapshot().requests_available == pytest.approx(5)  # 0.5 s at 10/s
    assert limiter.snapshot().tokens_available == pytest.approx(500)


def test_the_adaptive_limiter_is_a_limiter_kind_scaled_with_time() -> None:
    from pipeline.limiter import AdaptiveLimiter

    provider = bench.Provider(rpm=600, tpm=60_000)
    limiter = _sweep._limiter(bench.Setting(limiter="adaptive", fraction=0.5), provider, k=10.0)
    assert isinstance(limiter, AdaptiveLimiter)
    assert limiter.interval == pytest.approx(6.0)  # a minute, compressed 10x
    assert limiter.ceiling_requests == pytest.approx(300)  # 0.5 x 600 per (compressed) minute
    # Its time constants follow the compression: recovery 2 s -> 0.2 s, rates per second x10.
    control = limiter._control
    assert control is not None
    assert control._recovery == pytest.approx(0.2)
    assert control._min_rate == pytest.approx(10 / 60)
    # ... and so do the controller's own timings: slow-start steps of 0.25 s -> 25 ms.
    assert control._s_slow_start_step == pytest.approx(0.025)
    unknown = _sweep._limiter(bench.Setting(limiter="adaptive"), bench.Provider(rpm=600), 1.0)
    assert unknown.ceiling_requests == pytest.approx(600)
    assert bench.grid(limiters=["adaptive", "token_bucket"])[0].limiter == "adaptive"


def test_sweep_runs_the_adaptive_limiter() -> None:
    # Told 2x the provider's limit, with no headers to correct it, the adaptive limiter
    # learns from its 429s: every row answered, the 429s a handful, not one per extra request.
    provider = bench.Provider(rpm=600, tpm=None, burst=1 / 60, latency=0.05, seed=3,
                              headers=False, error_format="text")
    df = bench.sweep(provider, [bench.Setting(limiter="adaptive", fraction=2.0, concurrency=16)],
                     requests=60, target_seconds=0.5, process=False)
    row = df.iloc[0]
    assert row["limiter"] == "adaptive"
    assert row["failed"] == 0 and row["sent"] == 60 + row["retries"]
    assert row["n_429"] < 30


def test_limiters_are_scaled_like_the_provider() -> None:
    provider = bench.Provider(rpm=600, tpm=60_000)
    limiter = _sweep._limiter(bench.Setting(fraction=0.5, burst_s=2.0), provider, k=10.0)
    assert limiter.interval == pytest.approx(6.0)  # a minute, compressed 10x
    assert limiter.max_requests == pytest.approx(300)  # per (compressed) minute
    assert limiter.snapshot().requests_available == pytest.approx(10)  # 2 s at 5 requests/s
    interval = _sweep._limiter(bench.Setting(limiter="interval", burst_s=6.0), provider, k=2.0)
    assert interval.interval == pytest.approx(3.0)  # a 6 s window, compressed 2x
    assert interval.max_requests == pytest.approx(60)  # 600 per minute -> 60 per 6 s


def test_sweep_counts_the_429s_an_oversized_burst_causes() -> None:
    # A client bucket of 6 s (60 requests) lets 20 requests go at once; the provider's holds
    # 6, so the log must show 429s. A bucket of 0.5 s at 0.9x (4.5 requests) sends none.
    settings = [bench.Setting(burst_s=6.0, concurrency=20),
                bench.Setting(fraction=0.9, burst_s=0.5, concurrency=20)]
    df = bench.sweep(TINY, settings, **FAST)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns[:6]) == list(_sweep.SETTING_COLUMNS)
    assert {"run_s", "req_per_s", "tok_per_s", "util_req", "util_tok", "n_429", "retries",
            "failed", "p50_s", "p95_s", "p99_s", "cpu_s"} <= set(df.columns)
    greedy, careful = df.iloc[0], df.iloc[1]
    assert greedy["n_429"] > 0
    assert careful["n_429"] == 0
    assert (df["failed"] == 0).all()
    assert (df["sent"] == 30 + df["retries"]).all()
    assert (df["util_req"] <= 1.0 + 1e-9).all() and (df["util_req"] > 0.3).all()
    assert df.attrs["time_scale"] > 1


def test_sweep_returns_polars_and_prints_and_plots(tmp_path) -> None:
    df = bench.sweep(TINY, [bench.Setting(concurrency=4, burst_s=0.5)], polars=True, **FAST)
    assert isinstance(df, pl.DataFrame) and df.height == 1
    text = bench.format_table(df)
    assert "util_req" in text and "token_bucket" in text
    path = tmp_path / "sweep.png"
    bench.plot(df, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_sync_sweep_refuses_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="sweep_async"):
        bench.sweep(TINY, [bench.Setting()])
    await asyncio.sleep(0)


def test_cli_prints_the_table_and_writes_csv_and_png(tmp_path, capsys) -> None:
    csv_path, png_path = tmp_path / "b.csv", tmp_path / "b.png"
    code = cli_main(["bench", "--rpm", "600", "--tpm", "200000", "--burst", "0.6",
                     "--latency", "0.05", "--requests", "20", "--fractions", "1.0",
                     "--concurrency", "4", "--bursts", "0.5", "--target-seconds", "0.4",
                     "--thread", "--quiet", "--csv", str(csv_path), "--out", str(png_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "util_req" in out
    table = pd.read_csv(csv_path)
    assert len(table) == 1 and table["sent"].iloc[0] >= 20
    assert not math.isnan(table["p50_s"].iloc[0])
    assert png_path.stat().st_size > 1000


def test_the_429_axis_starts_at_zero_when_there_were_none(tmp_path) -> None:
    df = pd.DataFrame([{"limiter": "adaptive", "fraction": f, "burst_s": math.nan,
                        "concurrency": 16, "attempts": 6, "backoff_s": 0.5, "req_per_s": 9.0,
                        "util_req": 0.9, "n_429": 0} for f in (0.8, 1.0)])
    fig = bench.plot(df, tmp_path / "p.png")
    assert fig.axes[2].get_ylim() == (0.0, 1.0)  # matplotlib alone: -0.04 to 0.04
    df["n_429"] = [0, 20]
    low, high = bench.plot(df, tmp_path / "q.png").axes[2].get_ylim()
    assert low == 0 and 20 < high <= 25


def test_sweep_warns_when_no_limit_can_bind() -> None:
    roomy = bench.Provider(rpm=6_000, latency=0.0)  # a one-second bucket: 100 requests
    with pytest.warns(UserWarning, match="no rate limit will bind"):
        df = bench.sweep(roomy, [bench.Setting(concurrency=4)], requests=5, process=False)
    assert df["n_429"].iloc[0] == 0 and df["sent"].iloc[0] == 5


def test_cli_bench_runs_on_a_shared_redis_limiter(tmp_path, capsys) -> None:
    # `pipeline bench --shared-limit redis://...`: the token-bucket setting runs on a
    # RedisLimiter (a real redis-server on 127.0.0.1), with the same table as a local one.
    from _redis_server import redis_server_fixture

    servers = redis_server_fixture()  # skips, naming what to install, without redis-server
    server = next(servers)
    try:
        csv_path = tmp_path / "b.csv"
        code = cli_main(["bench", "--rpm", "3000", "--tpm", "2000000", "--burst", "0.6",
                         "--latency", "0.05", "--requests", "100", "--fractions", "0.9",
                         "--concurrency", "8", "--bursts", "0.5", "--time-scale", "1",
                         "--limiters", "token_bucket", "--no-plot",
                         "--thread", "--quiet", "--csv", str(csv_path),
                         "--shared-limit", server.url])
        assert code == 0
        table = pd.read_csv(csv_path)
        assert table["failed"].iloc[0] == 0 and table["sent"].iloc[0] >= 100
        assert table["n_429"].iloc[0] <= 2  # 0.9x of the provider's rate, half-second bucket
        assert table["util_req"].iloc[0] > 0.4  # a shared bucket starts empty: a short run pays
        import redis

        keys = redis.Redis.from_url(server.url).keys("pipeline:bench:*")
        assert keys, "the run did not go through the Redis limiter"
    finally:
        servers.close()


def test_cli_bench_sweeps_the_adaptive_limiter_on_redis_in_compressed_time(
        tmp_path, capsys) -> None:
    # The adaptive setting runs on a RedisLimiter too, with its controller's time constants
    # scaled by the bench's compression: everyone's answers reach the shared state.
    from _redis_server import redis_server_fixture

    servers = redis_server_fixture()
    server = next(servers)
    try:
        csv_path = tmp_path / "b.csv"
        code = cli_main(["bench", "--rpm", "3000", "--tpm", "2000000", "--burst", "0.6",
                         "--latency", "0.05", "--requests", "100", "--fractions", "1.0",
                         "--concurrency", "8", "--time-scale", "4",
                         "--limiters", "adaptive", "--no-plot",
                         "--thread", "--quiet", "--csv", str(csv_path),
                         "--shared-limit", server.url])
        assert code == 0
        table = pd.read_csv(csv_path)
        assert table["failed"].iloc[0] == 0 and table["sent"].iloc[0] >= 100
        assert table["n_429"].iloc[0] <= 5
        import redis

        client = redis.Redis.from_url(server.url)
        keys = [k for k in client.keys("pipeline:bench:*")
                if b":" not in k[len("pipeline:bench:"):]]
        assert keys, "the run did not go through the Redis limiter"
        assert any(float(client.hget(k, "ok_r") or 0) > 0 for k in keys)  # answers shared
    finally:
        servers.close()


def test_cli_bench_names_a_bad_shared_limit_url(capsys) -> None:
    code = cli_main(["bench", "--requests", "5", "--fractions", "1.0", "--concurrency", "2",
                     "--thread", "--quiet", "--no-plot",
                     "--shared-limit", "http://127.0.0.1:6379"])
    assert code == 2
    assert "redis://" in capsys.readouterr().err
