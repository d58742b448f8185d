"""Ctrl-C during `pipeline run`: the console says what was saved and how to go on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from pipeline.simulator import Simulator

pytestmark = pytest.mark.timeout(120)


def test_ctrl_c_says_how_many_rows_are_saved_and_the_same_command_resumes(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("text\n" + "".join(f"row {i}\n" for i in range(300)))
    out = tmp_path / "out.csv"
    journal = tmp_path / "out.csv.journal"
    with Simulator(latency=0.05, seed=1) as sim:
        command = [sys.executable, "-m", "pipeline.cli", "run", str(rows), "-o", str(out),
                   "--template", "{text}", "--base-url", sim.base_url, "--no-progress",
                   "--rpm", "1200"]  # 20/s: 15 s in all, so there is time to interrupt
        env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until some answers are journaled (bounded)
            if journal.exists() and journal.read_text().count("succeeded") >= 20:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "answered rows are saved" in err and "run the same command again" in err
        assert "Traceback" not in err
        saved = int(err.split("interrupted: ")[1].split(" ")[0].replace(",", ""))
        assert saved >= 20

        again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=90)
        assert again.returncode == 0, again.stderr
        answered = Counter(e.body_hash for e in sim.log() if e.status == 200)
    # Every row answered; rows saved before the interrupt were not sent again.
    assert len(answered) == 300
    assert sum(answered.values()) <= 300 + 64  # at most what was in flight at the interrupt
    assert out.read_text().count("\n") == 301
