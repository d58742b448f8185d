"""Ctrl-C during `pipeline run`: nothing paid for is lost, and the rerun pays for nothing twice.

The first Ctrl-C stops sending, waits for the requests in flight, journals their answers and
writes the output (exit 130); a second abandons them. Counts come from the simulator's log.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import msgspec
import pytest

from pipeline import payloads
from pipeline.simulator import Simulator

pytestmark = pytest.mark.timeout(120)

ROWS = 120


def body_hash(text):
    """The simulator's body_hash of the request `pipeline run --template {text}` sends."""
    body = payloads.chat(model="gpt-4o-mini", prompt="{text}").build({"text": text}).body
    return hashlib.sha256(msgspec.json.encode(body)).hexdigest()


def journaled(journal):
    """Body hashes of the rows the journal holds as answered."""
    rows = set()
    for line in journal.read_bytes().split(b"\n")[1:]:
        try:
            item = json.loads(line)
        except ValueError:
            continue  # empty, or cut short
        if item.get("status") == "succeeded":
            rows.add(body_hash(f"row {item['i']}"))
    return rows


def run_until_answers_then_ctrl_c(command, journal, answers):
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until some answers are journaled (bounded)
        if journal.exists() and journal.read_text().count("succeeded") >= answers:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.mark.parametrize("limit", [
    # Latency-bound: 16 requests in flight, each taking 0.5 s, when Ctrl-C comes.
    pytest.param(["--concurrency", "16"], id="in-flight"),
    # Rate-bound: rows wait on the limiter (40/s); none of them may leave after Ctrl-C.
    pytest.param(["--rpm", "2400"], id="waiting-on-the-limiter"),
])
def test_ctrl_c_keeps_every_answer_in_flight_and_the_rerun_pays_for_none_twice(tmp_path, limit):
    rows = tmp_path / "rows.csv"
    rows.write_text("text\n" + "".join(f"row {i}\n" for i in range(ROWS)))
    out = tmp_path / "out.csv"
    journal = tmp_path / "out.csv.journal"
    latency = 0.5 if limit[0] == "--concurrency" else 0.05
    with Simulator(latency=latency, seed=1) as sim:
        command = [sys.executable, "-m", "pipeline.cli", "run", str(rows), "-o", str(out),
                   "--template", "{text}", "--base-url", sim.base_url, "--no-progress",
                   *limit]
        code, err = run_until_answers_then_ctrl_c(command, journal, answers=16)
        first = sim.log()
        assert code == 130, err
        assert "Traceback" not in err
        assert "Ctrl-C: nothing more is sent; " in err
        if limit[0] == "--concurrency":  # 0.5 s answers: some are always in flight
            assert "requests in flight" in err and "Ctrl-C again abandons them" in err
        assert "answered rows are saved" in err and "run the same command again" in err
        # Every answer the server sent before the process ended is in the journal.
        paid = {e.body_hash for e in first if e.status == 200}
        assert paid <= journaled(journal)
        assert len(paid) < ROWS  # sending stopped
        saved = int(err.split("interrupted: ")[1].split(" ")[0].replace(",", ""))
        assert saved == len(journaled(journal))
        # The output is written: every row, the unsent ones failed (a rerun sends them).
        assert out.read_text().count("\n") == ROWS + 1

        again = subprocess.run(command, capture_output=True, text=True, timeout=90,
                               env={**os.environ, "OPENAI_API_KEY": "sk-test"})
        assert again.returncode == 0, again.stderr
        answered = Counter(e.body_hash for e in sim.log() if e.status == 200)
    assert len(answered) == ROWS  # every row answered
    assert max(answered.values()) == 1  # and none paid twice
    assert out.read_text().count("\n") == ROWS + 1
