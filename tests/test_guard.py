"""RunGuard: a run stops early, with one clear reason, when every later request would fail."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

from pipeline import run
from pipeline.errors import (
    APIConnectionError,
    AuthenticationError,
    NotFoundError,
    QuotaExceededError,
    RunStoppedError,
    ServerError,
)
from pipeline.state.guard import RunGuard
from pipeline.testing import InstantService, run_virtual

ROWS = [{"text": f"row {i}"} for i in range(200)]


def _job(service):
    return service.chat(model="m", prompt="{text}", max_tokens=5)


def test_insufficient_quota_stops_the_run_at_once():
    quota = QuotaExceededError("429: You exceeded your current quota", status=429,
                               code="insufficient_quota")
    service = InstantService(fail=lambda request, n: quota)
    results = run_virtual(run(ROWS, _job(service), concurrency=4))
    assert service.calls <= 4  # only what was in flight when the first answer came
    assert isinstance(results.stopped, RunStoppedError)
    assert "out of quota" in str(results.stopped)
    stopped = [r for r in results if isinstance(r.error, RunStoppedError)]
    assert len(stopped) >= len(ROWS) - 4 and all(r.attempts == 0 for r in stopped)
    assert "stopped" in results.status.summary()


def test_the_first_requests_failing_the_same_way_stop_the_run():
    wrong_key = AuthenticationError("401 Unauthorized: Incorrect API key provided",
                                    status=401)
    service = InstantService(fail=lambda request, n: wrong_key)
    results = run_virtual(run(ROWS, _job(service), concurrency=2))
    assert service.calls <= 6
    assert "Incorrect API key" in str(results.stopped)


def test_after_a_success_a_404_is_about_that_row():
    guard = RunGuard(fail_fast_after=2)
    guard.observe(None)
    for _ in range(5):
        guard.observe(NotFoundError("404", status=404))
    assert guard.stopped is None


def test_mixed_failures_do_not_stop_the_run():
    guard = RunGuard(fail_fast_after=3)
    for error in (NotFoundError("404", status=404), ServerError("500", status=500),
                  NotFoundError("404", status=404), AuthenticationError("401", status=401)):
        guard.observe(error)
    assert guard.stopped is None
    for _ in range(3):
        guard.observe(APIConnectionError("refused"))
    assert guard.stopped is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_listening_at_the_base_url_stops_the_run_with_one_message(tmp_path):
    # A real CLI run against a closed port on 127.0.0.1: a few attempts, not 200 rows' worth.
    rows = tmp_path / "rows.csv"
    rows.write_text("text\n" + "".join(f"row {i}\n" for i in range(200)))
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(rows), "-o", str(out),
         "--template", "{text}", "--base-url", f"http://127.0.0.1:{_free_port()}/v1",
         "--no-progress", "--no-cache"],
        capture_output=True, text=True, timeout=60,
        env={"OPENAI_API_KEY": "sk-test", "PATH": "", "PYTHONPATH": ""})
    assert proc.returncode != 0
    assert proc.stderr.count("stopped after") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def _outage(start: int, end: float | None):
    """A fail(request, n) for InstantService: every call from the ``start``-th on is refused
    until the loop's clock reaches ``end`` (None: never again)."""
    calls = [0]

    def fail(request, n):
        calls[0] += 1
        now = asyncio.get_running_loop().time()
        if calls[0] > start and (end is None or now < end):
            return APIConnectionError("ConnectError: connection refused")
        return None

    return fail


def test_a_server_that_stops_answering_is_probed_and_the_rows_wait_for_it():
    # Down from the 50th request until 30 s (virtual time): the rows wait, one probe at a time
    # (after 0.5 s, 1, 2, 4, 8, 8...), then every row is answered.
    service = InstantService(latency=0.01, fail=_outage(50, 30.0))
    results = run_virtual(run(ROWS, _job(service), concurrency=8))
    assert results.stopped is None and not results.failed
    refused = service.calls - len(ROWS)
    assert refused <= 8 + 5 + 10, refused  # in flight, the breaker's 5, and the probes


def test_a_server_silent_for_a_minute_stops_the_run_and_names_it():
    service = InstantService(latency=0.01, fail=_outage(50, None),
                             base_url="http://127.0.0.1:9/v1")

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        results = await run(ROWS, _job(service), concurrency=8)
        return results, loop.time() - start

    results, elapsed = run_virtual(main())
    assert 60 <= elapsed <= 75  # DEFAULT_STOP_AFTER, and a probe's wait at most
    assert "the server at 127.0.0.1:9 stopped answering at " in str(results.stopped)
    assert service.calls - 50 <= 8 + 5 + 12  # in flight, the breaker's 5, the probes
    unsent = [r for r in results if isinstance(r.error, RunStoppedError)]
    assert unsent and all(r.attempts == 0 for r in unsent)
    assert len(results.succeeded) == 50


def test_the_breaker_opens_after_a_success_and_closes_on_any_answer():
    guard = RunGuard(breaker_after=2)
    guard.observe(APIConnectionError("refused"))  # before any success: fail fast's business
    assert not guard.holding
    guard.observe(None)
    guard.observe(APIConnectionError("refused"))
    guard.observe(ServerError("500", status=500))  # the server answered: not silent
    guard.observe(APIConnectionError("refused"))
    assert not guard.holding
    guard.observe(APIConnectionError("refused"))
    assert guard.holding and guard.stopped is None
    guard.observe(ServerError("503", status=503))
    assert not guard.holding


def test_requests_in_flight_when_the_guard_stops_are_counted_in_its_reason():
    wrong_key = AuthenticationError("401 Unauthorized: Incorrect API key", status=401)
    service = InstantService(latency=0.01, fail=lambda request, n: wrong_key)
    results = run_virtual(run(ROWS, _job(service), concurrency=8))
    assert service.calls > 5  # 8 in flight at once: all of them land
    assert f"stopped after {service.calls} requests failed" in str(results.stopped)
    sent = [r for r in results if r.attempts]
    assert len(sent) == service.calls and all(
        isinstance(r.error, AuthenticationError) for r in sent)
