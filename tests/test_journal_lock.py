"""One run per journal: a second run on the same output refuses at once (or waits if asked),
and a lock is never left stuck by a run that died."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from pipeline import OpenAIService, io
from pipeline.io.resume import JournalBusyError, JournalLock
from pipeline.simulator import Simulator

KEY = "sk-test-lock"


def write_rows(path, n):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        writer.writerows([f"row {i}"] for i in range(n))


def cli(*args):
    return [sys.executable, "-m", "pipeline", "run", *args]


def env():
    environment = dict(os.environ, OPENAI_API_KEY=KEY)
    environment.pop("OPENAI_BASE_URL", None)
    return environment


def test_a_second_cli_run_on_one_output_exits_2_at_once_and_nothing_is_paid_twice(tmp_path):
    write_rows(tmp_path / "in.csv", 60)
    journal = tmp_path / "out.csv.journal"
    with Simulator(latency=0.1, seed=4) as sim:
        command = cli(str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"),
                      "--template", "{text}", "--base-url", sim.base_url, "--no-progress",
                      "--concurrency", "4")
        first = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the first run has answers (bounded)
            if journal.exists() and journal.read_text().count("succeeded") >= 4:
                break
            time.sleep(0.02)
        second = subprocess.run(command, env=env(), capture_output=True, text=True,
                                timeout=60)
        still_running = first.poll() is None
        _, first_err = first.communicate(timeout=60)
        log = sim.log()
    assert still_running  # the second run did not wait for the first
    assert second.returncode == 2, second.stderr
    assert "another run is using the journal" in second.stderr
    assert f"pid {first.pid} on " in second.stderr and str(journal) in second.stderr
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, first_err
    answered = Counter(e.body_hash for e in log if e.status == 200)
    assert len(answered) == 60 and max(answered.values()) == 1
    assert not os.path.exists(f"{journal}.lock")  # a run that ends removes it


def test_a_lock_held_by_a_process_killed_with_kill_9_does_not_block(tmp_path):
    journal = str(tmp_path / "out.csv.journal")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pipeline.io.resume import JournalLock\n"
         "JournalLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
         journal], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(JournalBusyError, match=f"pid {holder.pid} on .* since "):
        JournalLock(journal).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    holder.stdout.close()
    assert os.path.exists(f"{journal}.lock")  # left behind by the kill, but not locked
    lock = JournalLock(journal)
    lock.acquire()
    assert lock.held
    lock.release()


async def test_run_file_refuses_a_held_journal_or_waits_for_it_when_asked(tmp_path):
    write_rows(tmp_path / "in.csv", 10)
    output = tmp_path / "out.csv"
    held = JournalLock(f"{output}.journal")
    held.acquire()  # as another run would: a lock of its own
    with Simulator(latency=0.0) as sim:
        async with OpenAIService(api_key=KEY, base_url=sim.base_url) as service:
            job = service.chat(model="gpt-4o-mini", prompt="{text}")
            with pytest.raises(JournalBusyError, match=str(output)):
                await io.run_file(tmp_path / "in.csv", output, job)
            assert sim.stats().requests == 0
            waiting = asyncio.ensure_future(io.run_file(tmp_path / "in.csv", output, job,
                                                        wait=True))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not waiting.done() and sim.stats().requests == 0
            held.release()  # the other run ends
            summary = await waiting
    assert summary.succeeded == 10 and sim.stats().requests == 10


def test_a_journal_in_use_is_refused_even_by_a_custom_flow(tmp_path):
    # The lock lives in Journal itself: any flow writing one (write_journal) is covered.
    first = io.Journal(tmp_path / "j", fingerprint="f")
    first.open()
    with pytest.raises(JournalBusyError):
        io.Journal(tmp_path / "j", fingerprint="other").open()
    first.close()
    again = io.Journal(tmp_path / "j", fingerprint="f")
    assert again.open() == {}
    again.close()


def test_wait_for_lock_waits_for_the_running_one_then_resumes_from_its_journal(tmp_path):
    write_rows(tmp_path / "in.csv", 40)
    journal = tmp_path / "out.csv.journal"
    with Simulator(latency=0.1, seed=6) as sim:
        command = cli(str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"),
                      "--template", "{text}", "--base-url", sim.base_url, "--no-progress",
                      "--concurrency", "4")
        first = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the first run has answers (bounded)
            if journal.exists() and journal.read_text().count("succeeded") >= 4:
                break
            time.sleep(0.02)
        second = subprocess.run([*command, "--wait-for-lock"], env=env(),
                                capture_output=True, text=True, timeout=60)
        assert first.wait(timeout=60) == 0
        log = sim.log()
    assert second.returncode == 0, second.stderr
    assert "resumed: 40 rows were answered by an earlier run" in second.stderr
    answered = Counter(e.body_hash for e in log if e.status == 200)
    assert len(answered) == 40 and max(answered.values()) == 1
