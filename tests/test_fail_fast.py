"""`pipeline run` against a provider where every request fails the same way: it stops after
a few requests with one clear message, instead of sending every row (a subprocess, loopback)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from pipeline.simulator import Simulator

pytestmark = pytest.mark.timeout(120)
ROWS = 300


def _run(tmp_path, sim, *extra, key="sk-test"):
    rows = tmp_path / "rows.csv"
    rows.write_text("text\n" + "".join(f"row {i}\n" for i in range(ROWS)))
    command = [sys.executable, "-m", "pipeline.cli", "run", str(rows), "-o",
               str(tmp_path / "out.csv"), "--template", "{text}", "--base-url", sim.base_url,
               "--no-progress", "--no-cache", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=100,
                          env={**os.environ, "OPENAI_API_KEY": key})


@pytest.mark.parametrize("case", ["wrong key", "unknown model", "out of quota"])
def test_a_run_where_every_request_fails_the_same_way_stops_early(tmp_path, case):
    options: dict = {"seed": 1}
    extra: tuple[str, ...] = ()
    key = "sk-test"
    if case == "wrong key":
        options["api_key"] = "sk-the-right-one"
        key = "sk-a-wrong-one"
        expected = "Incorrect API key"
    elif case == "unknown model":
        options["models"] = ("gpt-4o-mini",)
        extra = ("--model", "gpt-5-imaginary")
        expected = "does not exist"
    else:
        options["quota_tokens"] = 0
        expected = "out of quota"
    with Simulator(**options) as sim:
        proc = _run(tmp_path, sim, *extra, key=key)
        sent = len(sim.log())
    assert proc.returncode == 1, proc.stderr
    assert sent <= 64 + 5, f"{sent} requests sent"  # what was in flight, not every row
    assert expected in proc.stderr
    assert "stopped" in proc.stderr and "Traceback" not in proc.stderr
    assert "look transient" not in proc.stderr  # the advice: fix the cause first
    assert key not in proc.stderr or case != "wrong key"  # the key is never printed
    if case != "out of quota":
        # Requests in flight when the guard stopped still landed: the reason counts what the
        # server saw (it said "5" when the server had seen 9 or 10).
        assert f"stopped after {sent} requests failed the same way" in proc.stderr, \
            proc.stderr
        # Rows sent keep their own error; only rows never sent are "not sent".
        assert f"({sent} rows)" in proc.stderr and f"{ROWS - sent} rows were not sent" \
            in proc.stderr, proc.stderr


def test_one_row_never_sent_is_said_in_the_singular(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("text\n" + "".join(f"row {i}\n" for i in range(6)))
    with Simulator(api_key="sk-the-right-one") as sim:
        command = [sys.executable, "-m", "pipeline.cli", "run", str(rows), "-o",
                   str(tmp_path / "out.csv"), "--template", "{text}", "--base-url",
                   sim.base_url, "--no-progress", "--no-cache", "--concurrency", "1"]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=100,
                              env={**os.environ, "OPENAI_API_KEY": "sk-a-wrong-one"})
        sent = len(sim.log())
    assert sent == 5 and proc.returncode == 1, proc.stderr
    assert "AuthenticationError (5 rows)" in proc.stderr
    assert "  1 row was not sent" in proc.stderr and "1 rows" not in proc.stderr.replace(
        "wrote 1 rows", ""), proc.stderr


def test_a_row_tried_against_a_closed_port_keeps_its_own_error(tmp_path):
    # One row against a port where nothing listens: tried 5 times, then the guard stops the
    # run. The row was sent (it is not "1 rows were not sent"): its error is the refusal.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rows = tmp_path / "rows.csv"
    rows.write_text("text\nhello\n")
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "pipeline.cli", "run", str(rows), "-o", str(out),
               "--template", "{text}", "--base-url", f"http://127.0.0.1:{port}/v1",
               "--no-progress", "--no-cache"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=100,
                          env={**os.environ, "OPENAI_API_KEY": "sk-test"})
    assert proc.returncode == 1, proc.stderr
    assert "not sent" not in proc.stderr and "RunStoppedError" not in proc.stderr
    assert "stopped after 5 requests failed the same way" in proc.stderr
    assert re.search(r"retries\s+4\n", proc.stderr), proc.stderr  # no phantom 5th retry
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["error"].startswith("APIConnectionError"), line
