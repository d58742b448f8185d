"""RunGuard: a run stops early, with one clear reason, when every later request would fail."""

from __future__ import annotations

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
from pipeline.guard import RunGuard
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
