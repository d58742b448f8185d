"""A gateway's in-flight cap is told apart from random server errors, end to end against the
simulator over loopback: random bare 503s leave the requests in flight alone; a cap that
refuses with bare 503s is found and held; all rows answered once either way."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import OpenAIService, run
from pipeline.simulator import Simulator

pytestmark = pytest.mark.timeout(60)

ROWS = 600


async def _run(sim: Simulator) -> Any:
    """Run the rows; the endpoint's (adaptive) limiter, for its state afterwards."""
    service = OpenAIService(api_key="sk-local", base_url=sim.base_url)
    job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=4)
    try:
        results = await run([{"text": f"row {i}"} for i in range(ROWS)], job, concurrency=64,
                            timeout=2.0)
    finally:
        await service.aclose()
    assert len(results.succeeded) == ROWS
    return job.endpoint.limiter


def _answered_once(sim: Simulator) -> None:
    ok = [e for e in sim.log() if e.outcome == "ok"]
    assert len(ok) == ROWS and len({e.body_hash for e in ok}) == ROWS


async def test_random_bare_503s_do_not_shrink_the_requests_in_flight() -> None:
    # OpenAI's random 503 ("The engine is currently overloaded") at 3%: a server error to
    # retry, not a cap; taken as one it collapsed 64 in flight to 1 or 2.
    with Simulator(latency=0.02, faults={"unavailable": 0.03}, seed=3) as sim:
        limiter = await _run(sim)
        assert sim.stats().faults > 0
        # No overload was taken: the in-flight cap was never cut (the snapshot shows a cap
        # only once one was); every 503 taken as a cap kept 8 of a clean run's 31 in flight.
        assert limiter.snapshot().max_in_flight is None
        _answered_once(sim)


async def test_a_cap_refusing_with_bare_503s_is_found_and_held() -> None:
    # A gateway at 16 in flight answering plain "503 Service Unavailable": many at once, as
    # the requests in flight rise, is the cap; it is found, then seldom hit again.
    with Simulator(latency=0.02, max_in_flight=16, overload_status=503,
                   error_format="text") as sim:
        await _run(sim)
        refused = sum(1 for e in sim.log() if e.outcome == "overloaded")
        assert 0 < refused <= 0.2 * ROWS
        _answered_once(sim)


async def test_random_503s_at_a_cap_do_not_ratchet_it_down() -> None:
    with Simulator(latency=0.02, max_in_flight=16, overload_status=503, error_format="text",
                   faults={"unavailable": 0.03}, seed=5) as sim:
        limiter = await _run(sim)
        refused = sum(1 for e in sim.log() if e.outcome == "overloaded")
        assert refused <= 0.2 * ROWS
        # The in-flight cap stays near the gateway's 16 (a ratchet would end near 1).
        assert limiter.max_in_flight >= 8
        _answered_once(sim)
