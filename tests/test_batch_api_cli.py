"""`pipeline run --batch-api`: the same output as an online run, and kill -9 at each point of
a batch's life (making the chunk, uploading, creating, polling, collecting) never makes a
second batch or pays for a row twice."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.simulator import Simulator

KEY = "sk-test-batch"


def write_rows(path, n):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows([f"r{i}", f"row number {i}"] for i in range(n))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def command(tmp_path, sim, *extra):
    return [sys.executable, "-m", "pipeline", "run", str(tmp_path / "in.csv"),
            "-o", str(tmp_path / "out.csv"), "--base-url", sim.base_url,
            "--template", "Q: {text}", "--max-tokens", "20", "--no-progress",
            "--batch-api", "--batch-poll", "0.05", *extra]


def env():
    environment = dict(os.environ, OPENAI_API_KEY=KEY)
    environment.pop("OPENAI_BASE_URL", None)
    return environment


def test_the_batch_output_has_the_shape_of_an_online_run(tmp_path):
    write_rows(tmp_path / "in.csv", 30)
    with Simulator(latency=0.0, batch_seconds=0.3) as sim:
        done = subprocess.run(command(tmp_path, sim), env=env(), capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        batch_rows = read_csv(tmp_path / "out.csv")
        assert sim.batch_lines_answered() == 30 and len(sim.batches()) == 1
        online = subprocess.run([*command(tmp_path, sim)[:-3], "-o",
                                 str(tmp_path / "online.csv"), "--no-cache"], env=env(),
                                capture_output=True, text=True, timeout=120)
        assert online.returncode == 0, online.stderr
        online_rows = read_csv(tmp_path / "online.csv")
    assert list(batch_rows[0]) == list(online_rows[0])
    assert [r["id"] for r in batch_rows] == [f"r{i}" for i in range(30)]
    assert all(r["status"] == "succeeded" and r["answer"] for r in batch_rows)


def test_the_dry_run_shows_the_batch_cost_at_half(tmp_path):
    write_rows(tmp_path / "in.csv", 10)
    with Simulator() as sim:
        done = subprocess.run([*command(tmp_path, sim), "--dry-run"], env=env(),
                              capture_output=True, text=True, timeout=60)
        assert not sim.batches() and not sim.log()  # a dry run sends nothing
    assert done.returncode == 0, done.stderr
    assert "through the Batch API" in done.stdout and "0.5 of the online price" in done.stdout


def _ledger_events(path):
    try:
        with open(path, "rb") as f:
            return [json.loads(line)["event"] for line in f.read().splitlines()
                    if line.strip().endswith(b"}")]
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("point", ["chunk", "file", "batch", "progress", "collected"])
def test_kill_9_at_each_point_of_a_batch_then_rerun_makes_no_second_batch(tmp_path, point):
    rows = 40
    write_rows(tmp_path / "in.csv", rows)
    ledger = tmp_path / "out.csv.cache" / "batches.jsonl"
    with Simulator(latency=0.0, batch_seconds=1.5) as sim:
        proc = subprocess.Popen(command(tmp_path, sim), env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                events = _ledger_events(ledger)
                if point == "progress":
                    batches = sim.batches()
                    if batches and batches[0]["request_counts"]["completed"] > 0:
                        break
                elif point in events:
                    break
                time.sleep(0.002)  # polling the ledger file; nothing is timed
            assert proc.poll() is None, f"the run ended before the {point!r} point"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        rerun = subprocess.run(command(tmp_path, sim), env=env(), capture_output=True,
                               text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        out = read_csv(tmp_path / "out.csv")
        assert [r["id"] for r in out] == [f"r{i}" for i in range(rows)]
        assert all(r["status"] == "succeeded" for r in out)
        # One batch for the one chunk of rows, each row answered (paid) once.
        assert len(sim.batches()) == 1, [b["status"] for b in sim.batches()]
        assert sim.batch_lines_answered() == rows
        assert not [e for e in sim.log() if e.path.endswith("chat/completions")]
