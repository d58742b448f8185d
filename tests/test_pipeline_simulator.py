"""Acceptance: the default pipeline against the simulator over real loopback HTTP.

The simulator's own request log, not the client's counters, is the witness: it shows what
reached the server, when, and what the server answered.
"""

from __future__ import annotations

import collections

import pytest

import pipeline
from pipeline.errors import (
    APIConnectionError,
    APITimeoutError,
    ContextLengthExceededError,
    MalformedResponseError,
    ServerError,
)
from pipeline.limiter import TokenBucketLimiter
from pipeline.simulator import Simulator
from pipeline.stages import Backoff

pytestmark = pytest.mark.slow


def _rows(n: int) -> list[dict[str, str]]:
    return [{"text": f"review number {i}: fine product"} for i in range(n)]


def _service(sim: Simulator, limiter: TokenBucketLimiter | None = None, **options):
    limits = {"chat/completions": {"limiter": limiter}} if limiter is not None else None
    return pipeline.OpenAIService(api_key="sk-test-key", base_url=sim.base_url, limits=limits,
                                  **options)


async def test_at_the_servers_limits_no_429s_and_nothing_sent_twice():
    # 200 requests/s. The server's bucket holds 0.25 s worth (50 requests); the client's
    # limiter runs at the same rate with a smaller burst (10), which leaves room for the
    # jitter between a grant and the request's arrival (new connections, a busy loop).
    n, rpm, tpm = 2000, 12_000, 2_000_000
    server_burst, client_burst = 50, 10
    fraction = server_burst / rpm
    with Simulator(rpm=rpm, tpm=tpm, burst=fraction, latency="uniform:0.05,0.2", seed=7,
                   process=True) as sim:
        limiter = TokenBucketLimiter(rpm, tpm, burst_requests=client_burst,
                                     burst_tokens=tpm * fraction)
        async with _service(sim, limiter) as service:
            job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=20)
            results = await pipeline.run(_rows(n), job, concurrency=64)
        stats = sim.stats()
    assert all(r.ok for r in results) and len(results) == n
    assert stats.rate_limited == 0 and results.status.rate_limit_errors == 0
    assert stats.requests == n
    # Nothing stalls the run: no cooldown, no cut, no retry (each would cost a second or
    # more). How close to the fastest the server allows this gets is a benchmark's figure
    # (benchmarks/quota_control.py), not a timed assertion here.
    assert all(r.attempts == 1 for r in results)


async def test_a_limiter_set_20_percent_too_high_still_answers_every_row():
    n, rpm, tpm = 800, 6_000, 1_000_000
    with Simulator(rpm=rpm, tpm=tpm, burst=0.02, latency=0.02, seed=3, process=True) as sim:
        limiter = TokenBucketLimiter(rpm * 1.2, tpm * 1.2, burst_requests=rpm * 1.2 * 0.02,
                                     burst_tokens=tpm * 1.2 * 0.02)
        async with _service(sim, limiter) as service:
            job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=20)
            results = await pipeline.run(_rows(n), job, concurrency=64, attempts=10,
                                         backoff=Backoff(initial=0.05, maximum=1.0))
        log = sim.log()
    assert all(r.ok for r in results), collections.Counter(r.error_type for r in results)
    ok_hashes = [e.body_hash for e in log if e.outcome == "ok"]
    assert len(ok_hashes) == n == len(set(ok_hashes))  # every row answered exactly once
    # The header sync brings the limiter down to the server's limits.
    assert limiter.max_requests == pytest.approx(rpm)


async def test_faults_end_every_row_succeeded_or_failed_with_its_error_class():
    n = 600
    faults = {"server_error": 0.05, "unavailable": 0.05, "reset": 0.02, "malformed": 0.01,
              "hang": 0.01, "context_length": 0.02}
    with Simulator(latency=0.005, faults=faults, seed=11, process=True) as sim:
        async with _service(sim, timeout=0.5) as service:
            job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=20)
            results = await pipeline.run(_rows(n), job, concurrency=32, attempts=5,
                                         backoff=Backoff(initial=0.01, maximum=0.05))
        log = sim.log()
    assert [r.index for r in results] == list(range(n))  # nothing lost, nothing duplicated
    assert all(r.status in ("succeeded", "failed") for r in results)
    failed = [r for r in results if not r.ok]
    assert failed, "with these fault rates some rows must fail for good"
    for record in failed:
        assert isinstance(record.error, ContextLengthExceededError | ServerError |
                          APIConnectionError | APITimeoutError | MalformedResponseError)
    assert any(isinstance(r.error, ContextLengthExceededError) for r in failed)
    # A 400 is never retried: in the server's log, nothing follows a 400 for the same body.
    by_body: dict[str, list[int]] = collections.defaultdict(list)
    for entry in log:
        by_body[entry.body_hash].append(entry.status)
    assert all(statuses.index(400) == len(statuses) - 1
               for statuses in by_body.values() if 400 in statuses)
    # Transient faults were retried: most rows that met one still succeeded.
    assert sum(1 for r in results if r.ok and r.attempts > 1) > 0
    status = results.status
    assert status.succeeded + status.failed == n
    # The log saw every attempt the client made, and no more.
    assert len(log) == sum(r.attempts for r in results)


async def test_a_rerun_with_the_cache_sends_nothing(tmp_path):
    rows = _rows(300)
    with Simulator(latency=0.001, seed=5) as sim:
        async with _service(sim) as service:
            job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=20)
            first = await pipeline.run(rows, job, cache=tmp_path / "cache")
            sent = sim.stats().requests
            second = await pipeline.run(rows, job, cache=tmp_path / "cache")
            assert sim.stats().requests == sent == 300
    assert [r.text for r in second] == [r.text for r in first]
    assert second.status.cached == 300
