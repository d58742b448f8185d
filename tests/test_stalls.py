"""A run never stalls silently: a server that dies mid-run (the guard's circuit breaker), and a
429 asking for a huge wait (the capped pause). Loopback servers only; counts from their logs."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from pipeline import OpenAIService, default_flow
from pipeline.errors import APIConnectionError, RunStoppedError, TransportError
from pipeline.guard import RunGuard
from pipeline.simulator import Simulator
from pipeline.status import StatusTracker
from pipeline.testing import instant_backoff

pytestmark = pytest.mark.timeout(60)

ROWS = 300
CONCURRENCY = 16


class Outage(httpx.AsyncBaseTransport):
    """httpx's transport, counting every request it sends; it stops the simulator once
    ``stop_after`` answers have arrived (when nothing is in flight, so no answer is lost on
    the way) and starts it again on the same port ``restart_after`` seconds later (``None``:
    never)."""

    def __init__(self, sim: Simulator, stop_after: int, restart_after: float | None) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sim = sim
        self.stop_after = stop_after
        self.restart_after = restart_after
        self.sent = self.answers = self.failed = self.in_flight = 0
        self.down = self.stopped = False
        self.logs: list = []  # the simulator's log of each life
        self._idle = asyncio.Condition()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.answers >= self.stop_after and not self.stopped:
            async with self._idle:
                await self._idle.wait_for(lambda: self.in_flight == 0)
            if not self.stopped:
                self.logs.append(self.sim.log())
                self.sim.stop()
                self.stopped = self.down = True
                if self.restart_after is not None:
                    asyncio.get_running_loop().call_later(self.restart_after, self._restart)
        self.sent += 1
        self.in_flight += 1
        try:
            response = await self.inner.handle_async_request(request)
            await response.aread()  # the whole answer, before the server may go away
        except httpx.TransportError:
            self.failed += 1
            raise
        finally:
            self.in_flight -= 1
            async with self._idle:
                self._idle.notify_all()
        self.answers += 1
        return response

    def _restart(self) -> None:
        self.sim.start()
        self.down = False

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _run(sim: Simulator, outage: Outage, guard: RunGuard) -> list:
    service = OpenAIService(base_url=sim.base_url, api_key="sk-test", transport=outage,
                            adaptive=False)
    job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)

    async def rows():
        for i in range(ROWS):
            yield {"text": f"row {i}"}

    async with service:
        flow = default_flow(job, guard=guard, concurrency=CONCURRENCY, status=StatusTracker())
        records = flow.records(rows())
        try:
            return [record async for record in records]
        finally:
            await records.aclose()


def test_a_server_back_within_the_bound_gets_every_row_exactly_once():
    # It dies after 100 answers and is back 0.2 s later: the rows wait instead of spending
    # their attempts (retries are instant here: without the breaker each row would have
    # spent all 6 in well under 0.2 s), and go again at once when a probe is answered.
    with instant_backoff(), Simulator(seed=1) as sim:
        guard = RunGuard(probe_after=0.05, stop_after=30)
        outage = Outage(sim, stop_after=100, restart_after=0.2)
        records = asyncio.run(_run(sim, outage, guard))
        outage.logs.append(sim.log())
    assert guard.stopped is None
    assert [r.error for r in records if r.error is not None] == []
    assert len(records) == ROWS
    ok = Counter(e.body_hash for log in outage.logs for e in log if e.outcome == "ok")
    assert len(ok) == ROWS and set(ok.values()) == {1}  # every row answered exactly once
    # Failed sends: what was in flight, the breaker's threshold and a few probes, not
    # 200 rows x 6 attempts (1,200 before this guard had a breaker).
    assert outage.sent - ROWS == outage.failed
    assert outage.failed <= CONCURRENCY + guard.breaker_after + 6, outage.failed
    print(f"{outage.failed} failed sends")


def test_a_server_that_stays_down_stops_the_run_with_one_reason():
    with instant_backoff(), Simulator(seed=1) as sim:
        guard = RunGuard(probe_after=0.02, max_probe_after=0.05, stop_after=0.3)
        outage = Outage(sim, stop_after=100, restart_after=None)
        records = asyncio.run(_run(sim, outage, guard))
    answered = [r for r in records if r.error is None]
    unsent = [r for r in records if isinstance(r.error, RunStoppedError)]
    tried = [r for r in records if isinstance(r.error, TransportError)]
    log = outage.logs[0]
    assert len(answered) == sum(e.outcome == "ok" for e in log) >= 100
    assert len(answered) + len(unsent) + len(tried) == ROWS and unsent
    assert all(r.attempts == 0 for r in unsent)  # RunStoppedError: never sent
    assert all(r.attempts >= 1 for r in tried)  # sent ones keep their own error
    assert any(isinstance(r.error, APIConnectionError) for r in tried)
    reason = str(guard.stopped)
    assert f"the server at 127.0.0.1:{sim.port} stopped answering at " in reason, reason
    assert "run again to send the rows that were not sent" in reason
    assert outage.failed <= CONCURRENCY + guard.breaker_after + 30, outage.failed
    print(f"{outage.failed} failed sends; {len(unsent)} rows not sent; {len(tried)} tried")
