"""A run never stalls silently: a server that dies mid-run (the guard's circuit breaker), and a
429 asking for a huge wait (the capped pause). Loopback servers only; counts from their logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections import Counter

import httpx
import pytest

from pipeline import OpenAIService, default_flow, run
from pipeline.errors import APIConnectionError, RunStoppedError, ThrottledError, TransportError
from pipeline.simulator import Simulator
from pipeline.state.guard import RunGuard
from pipeline.state.status import StatusTracker
from pipeline.testing import instant_backoff, run_virtual

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


# ----------------------------------------------------------------- a 429 asking for hours

CHAT_ANSWER = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "ok"}}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}

HUGE_WAITS = {
    "Retry-After: 3600": {"retry-after": "3600"},
    "Retry-After: 86400": {"retry-after": "86400"},
    "Retry-After: a date in 9999": {"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"},
    "retry-after-ms: 1e12": {"retry-after-ms": "1e12"},
    "x-ratelimit-reset-requests: 1000h": {"x-ratelimit-reset-requests": "1000h",
                                          "x-ratelimit-remaining-requests": "0",
                                          "x-ratelimit-limit-requests": "600"},
}


class RefusingServer:
    """Answers its first ``refusals`` requests with a 429 carrying ``headers``, then 200s
    (written on ``asyncio.start_server``; it runs in the test's own virtual-time loop)."""

    def __init__(self, headers: dict[str, str], refusals: int) -> None:
        self.headers = headers
        self.refusals = refusals
        self.log: list[tuple[float, int]] = []  # (loop time, status) of every request
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RefusingServer:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                refuse = len(self.log) < self.refusals
                status = 429 if refuse else 200
                self.log.append((asyncio.get_running_loop().time(), status))
                body = json.dumps(
                    {"error": {"message": "Rate limit reached", "type": "requests",
                               "code": "rate_limit_exceeded"}} if refuse else CHAT_ANSWER
                ).encode()
                extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()) \
                    if refuse else ""
                writer.write(f"HTTP/1.1 {status} {'Too Many Requests' if refuse else 'OK'}"
                             f"\r\ncontent-type: application/json\r\ncontent-length: "
                             f"{len(body)}\r\n{extra}\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def _huge_wait_run(headers: dict[str, str], max_wait: float):
    async def main():
        async with RefusingServer(headers, refusals=3) as server:
            service = OpenAIService(base_url=server.base_url, api_key="sk-test")
            job = service.chat(model="m", prompt="{text}", max_tokens=5)
            loop = asyncio.get_running_loop()
            async with service:
                results = await run([{"text": f"row {i}"} for i in range(12)], job,
                                    concurrency=4, max_wait=max_wait)
            return results, loop.time(), server.log

    return run_virtual(main())


@pytest.mark.parametrize("case", list(HUGE_WAITS))
def test_a_429_asking_for_hours_pauses_a_minute_at_most_and_says_so(case, caplog):
    caplog.set_level(logging.WARNING, logger="pipeline.limiter")
    results, elapsed, log = _huge_wait_run(HUGE_WAITS[case], max_wait=600)
    assert [r.error for r in results if r.error is not None] == []  # every row answered
    assert sum(status == 200 for _, status in log) == 12
    assert 60 <= elapsed <= 2 * 60 + 5, elapsed  # a capped pause (and jitter), not an hour
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.limiter"]
    assert len(said) == 1, said  # once, though three 429s asked for it
    assert "the server asked to wait" in said[0] and "waiting at most 60 s at a time" \
        in said[0], said[0]
    name = case.split(":")[0]
    assert f"({name})" in said[0], said[0]


@pytest.mark.parametrize("case", list(HUGE_WAITS))
def test_a_429_asking_for_more_than_max_wait_fails_its_row_at_once(case, caplog):
    caplog.set_level(logging.WARNING, logger="pipeline.limiter")
    results, elapsed, log = _huge_wait_run(HUGE_WAITS[case], max_wait=20)
    throttled = [r for r in results if r.error is not None]
    assert len(throttled) == 3 and all(isinstance(r.error, ThrottledError)
                                       for r in throttled)
    assert "past max_wait=20 s" in str(throttled[0].error), throttled[0].error
    assert all(r.attempts == 1 for r in throttled)  # failed instead of waiting
    assert len(results.succeeded) == 9 and len(log) == 12  # the others answered once
    assert elapsed <= 20 + 5, elapsed  # everyone paused for max_wait at most
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.limiter"]
    assert len(said) == 1 and "waiting at most 20 s at a time" in said[0], said


def test_the_cli_says_a_capped_wait_once_on_the_console(tmp_path):
    # `pipeline run` against a server asking for an hour: the reason is on the console, once,
    # and with --max-wait 0.5 the refused rows fail at once (about a second in all).
    ready, box = threading.Event(), {}

    def serve() -> None:
        async def main() -> None:
            async with RefusingServer({"retry-after": "3600"}, refusals=2) as server:
                box["url"] = server.base_url
                ready.set()
                await asyncio.sleep(60)

        asyncio.run(main())

    threading.Thread(target=serve, daemon=True).start()
    assert ready.wait(10)
    rows = tmp_path / "rows.csv"
    rows.write_text("text\n" + "".join(f"row {i}\n" for i in range(6)))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(rows), "-o", str(tmp_path / "o.csv"),
         "--template", "{text}", "--base-url", box["url"], "--no-cache", "--no-progress",
         "--max-wait", "0.5", "--concurrency", "2"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "OPENAI_API_KEY": "sk-test"})
    assert proc.returncode == 1, proc.stderr
    said = "the server asked to wait 3,600 s (Retry-After); waiting at most 0.5 s at a time"
    assert proc.stderr.count(said) == 1, proc.stderr
    assert "ThrottledError (2 rows): the server asked to wait 3,600 s (Retry-After), past " \
        "max_wait=0.5 s" in proc.stderr, proc.stderr
