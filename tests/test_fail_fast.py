"""`pipeline run` against a provider where every request fails the same way: it stops after
a few requests with one clear message, instead of sending every row (a subprocess, loopback)."""

from __future__ import annotations

import os
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
