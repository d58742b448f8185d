"""Resumable runs: the journal, reruns that send nothing twice, and kill -9 in the middle."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import msgspec
import pytest

from pipeline import OpenAIService, io, payloads
from pipeline.simulator import Simulator

TEMPLATE = "Q: {text}"


def write_rows(path, n):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows([f"r{i}", f"row number {i}"] for i in range(n))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def body_hash(text):
    """The simulator's body_hash of the request the CLI sends for a row."""
    builder = payloads.chat(model="gpt-4o-mini", prompt=TEMPLATE, max_tokens=5)
    return hashlib.sha256(msgspec.json.encode(builder.build({"text": text}).body)).hexdigest()


# ------------------------------------------------------------------------------ the journal
def test_journal_drops_a_line_cut_short_and_keeps_the_latest_result(tmp_path):
    path = tmp_path / "out.csv.journal"
    journal = io.Journal(path, fingerprint="f1")
    assert journal.open() == {}
    journal.append(io.ResultRow(index=0, status="failed"))
    journal.append(io.ResultRow(index=1, status="succeeded"))
    journal.append(io.ResultRow(index=0, status="succeeded"))
    journal.close()
    with open(path, "ab") as f:
        f.write(b'{"i": 2, "stat')  # killed mid-line
    again = io.Journal(path, fingerprint="f1")
    assert again.open() == {0: io.ResultRow(index=0, status="succeeded"),
                            1: io.ResultRow(index=1, status="succeeded")}
    again.append(io.ResultRow(index=2, status="succeeded"))
    again.close()
    assert sorted(io.Journal(path, fingerprint="f1").open()) == [0, 1, 2]


def test_journal_of_another_run_is_started_afresh(tmp_path):
    path = tmp_path / "j"
    first = io.Journal(path, fingerprint="f1")
    first.open()
    first.append(io.ResultRow(index=0, status="succeeded"))
    first.close()
    other = io.Journal(path, fingerprint="f2")
    assert other.open() == {} and other.restarted
    other.close()


# ------------------------------------------------------------------------------ reruns
@pytest.fixture
def sim():
    state = {"fail": set()}

    def responder(endpoint, body):
        text = body["messages"][-1]["content"]
        if text in state["fail"]:
            raise RuntimeError("injected")  # the simulator answers 500
        return f"answer to {text}"

    with Simulator(latency=0.0, responder=responder) as simulator:
        simulator.state = state
        yield simulator


async def run_once(sim, source, output, **options):
    async with OpenAIService(api_key="sk-test-resume", base_url=sim.base_url) as service:
        job = service.chat(model="gpt-4o-mini", prompt=TEMPLATE, max_tokens=5)
        return await io.run_file(source, output, job, concurrency=8, **options)


async def test_a_rerun_sends_nothing_and_writes_the_same_output(tmp_path, sim):
    write_rows(tmp_path / "in.csv", 30)
    first = await run_once(sim, tmp_path / "in.csv", tmp_path / "out.csv")
    sent = sim.stats().requests
    output = (tmp_path / "out.csv").read_bytes()
    second = await run_once(sim, tmp_path / "in.csv", tmp_path / "out.csv")
    assert (first.succeeded, second.succeeded, second.resumed) == (30, 30, 30)
    assert sim.stats().requests == sent == 30
    assert (tmp_path / "out.csv").read_bytes() == output


async def test_failed_rows_are_retried_on_rerun(tmp_path, sim):
    write_rows(tmp_path / "in.csv", 10)
    sim.state["fail"] = {"Q: row number 3", "Q: row number 7"}
    first = await run_once(sim, tmp_path / "in.csv", tmp_path / "out.csv", attempts=1)
    assert (first.succeeded, first.failed) == (8, 2)
    assert [r["status"] for r in read_csv(tmp_path / "out.csv")].count("failed") == 2
    sim.state["fail"] = set()
    second = await run_once(sim, tmp_path / "in.csv", tmp_path / "out.csv", attempts=1)
    assert (second.resumed, second.succeeded, second.failed) == (8, 10, 0)
    assert sim.stats().requests == 12
    rows = read_csv(tmp_path / "out.csv")
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(10)]
    assert all(r["status"] == "succeeded" and r["answer"].startswith("answer") for r in rows)


async def test_a_changed_input_restarts_the_journal_and_the_cache_answers(tmp_path, sim):
    write_rows(tmp_path / "in.csv", 5)
    cache = tmp_path / "cache"
    await run_once(sim, tmp_path / "in.csv", tmp_path / "out.csv", cache=cache)
    write_rows(tmp_path / "in.csv", 6)  # one row more: positions may mean other rows now
    summary = await run_once(sim, tmp_path / "in.csv", tmp_path / "out.csv", cache=cache)
    assert summary.restarted and summary.resumed == 0
    assert summary.status.cached == 5 and sim.stats().requests == 6


# ------------------------------------------------------------------------------ kill -9
def test_kill_9_then_rerun_sends_no_answered_row_twice(tmp_path):
    n, concurrency = 200, 4
    write_rows(tmp_path / "in.csv", n)
    output, journal = tmp_path / "out.csv", tmp_path / "out.csv.journal"
    with Simulator(latency=0.04, seed=3) as sim:
        command = [sys.executable, "-m", "pipeline", "run", str(tmp_path / "in.csv"),
                   "-o", str(output), "--template", TEMPLATE, "--max-tokens", "5",
                   "--concurrency", str(concurrency), "--base-url", sim.base_url,
                   "--no-progress"]
        env = dict(os.environ, OPENAI_API_KEY="sk-test-kill")
        env.pop("OPENAI_BASE_URL", None)
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        lines = 0
        # The journal's first line is its header: wait for 40 records after it.
        while lines < 41 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)  # polling the journal, not timing anything
            lines = journal.read_bytes().count(b"\n") if journal.exists() else 0
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stderr.close()
        answered = set()
        for line in journal.read_bytes().splitlines()[1:]:
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a line cut short by the kill
            if item["status"] == "succeeded":
                answered.add(item["i"])
        assert 40 <= len(answered) < n and not output.exists()

        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert "rows were answered by an earlier run" in rerun.stderr
        log = sim.log()

    counts: dict[str, int] = {}
    for item in log:
        counts[item.body_hash] = counts.get(item.body_hash, 0) + 1
    hashes = [body_hash(f"row number {i}") for i in range(n)]
    assert all(h in counts for h in hashes)  # every row was sent (and the hashes match)
    assert [i for i in answered if counts[hashes[i]] != 1] == []
    # Only rows in flight at the kill may have gone out twice.
    assert len(log) - n <= concurrency
    rows = read_csv(output)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(n)]
    assert {r["status"] for r in rows} == {"succeeded"}


# ------------------------------------------------------------------------------ the fingerprint
async def test_a_template_changed_after_its_hundredth_character_is_another_job(tmp_path, sim):
    # The fingerprint once held each option cut at 60 characters: this rerun then "resumed"
    # the French answers.
    write_rows(tmp_path / "in.csv", 12)
    head = "You are a careful translator of short product reviews. Keep the tone; keep names. "
    assert len(head) > 60
    templates = [head + "Translate this review into " + lang + ": {text}"
                 for lang in ("French", "German")]
    assert templates[0][:100] == templates[1][:100] and len(templates[0]) > 100
    for template in templates:
        async with OpenAIService(api_key="sk-test-resume", base_url=sim.base_url) as service:
            job = service.chat(model="gpt-4o-mini", prompt=template, max_tokens=200)
            summary = await io.run_file(tmp_path / "in.csv", tmp_path / "out.csv", job,
                                        concurrency=4)
    assert summary.restarted and summary.resumed == 0
    assert sim.stats().requests == 24  # the second run sent every row again
    answers = [r["answer"] for r in read_csv(tmp_path / "out.csv")]
    assert all("into German" in a for a in answers), answers[:2]


def test_the_fingerprint_covers_every_option_whole_and_no_secret():
    from pipeline.io.resume import fingerprint

    source = io.read([{"text": "a"}])
    long_system = "s" * 200
    with_key = OpenAIService(api_key="sk-secret-0123456789", base_url="http://127.0.0.1:9/v1")
    base = with_key.chat(model="gpt-4o-mini", prompt="{text}", system=long_system,
                         temperature=0)
    same = with_key.chat(model="gpt-4o-mini", prompt="{text}", system=long_system,
                         temperature=0, tokenizer=lambda text: 1)  # estimates only
    others = [
        with_key.chat(model="gpt-4o-mini", prompt="{text}", system=long_system + "!",
                      temperature=0),
        with_key.chat(model="gpt-4o", prompt="{text}", system=long_system, temperature=0),
        with_key.chat(model="gpt-4o-mini", prompt="{text}", system=long_system,
                      temperature=0.5),
        with_key.chat(model="gpt-4o-mini", prompt="{text}", system=long_system,
                      temperature=0, schema={"type": "object",
                                             "properties": {"x": {"type": "string"}}}),
        OpenAIService(api_key="k", base_url="http://127.0.0.1:8/v1").chat(
            model="gpt-4o-mini", prompt="{text}", system=long_system, temperature=0),
    ]
    first = fingerprint(source, base)
    assert fingerprint(source, same) == first
    prints = {fingerprint(source, job) for job in others}
    assert first not in prints and len(prints) == len(others)
    assert len(first) == 64 and "secret" not in first  # a sha256 hex digest, nothing more


# ------------------------------------------------------------------------------ cancelling
async def test_cancelling_run_file_keeps_what_is_journaled_and_frees_the_journal(tmp_path):
    write_rows(tmp_path / "in.csv", 60)
    journal = tmp_path / "out.csv.journal"
    with Simulator(latency=0.2, seed=2) as slow:
        async with OpenAIService(api_key="sk-test-resume", base_url=slow.base_url) as service:
            job = service.chat(model="gpt-4o-mini", prompt=TEMPLATE, max_tokens=5)
            task = asyncio.ensure_future(io.run_file(tmp_path / "in.csv",
                                                     tmp_path / "out.csv", job, concurrency=4))
            for _ in range(400):  # poll the journal (bounded), no timing
                if journal.exists() and journal.read_text().count("succeeded") >= 8:
                    break
                await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            kept = [json.loads(x) for x in journal.read_text().splitlines()[1:] if x]
            assert len(kept) >= 8 and not (tmp_path / "out.csv").exists()
            first = {e.body_hash for e in slow.log() if e.status == 200}
            # The lock went with the run: the same call again resumes.
            summary = await io.run_file(tmp_path / "in.csv", tmp_path / "out.csv", job,
                                        concurrency=8)
        assert summary.resumed == len(kept) and summary.succeeded == 60
        answered = [e.body_hash for e in slow.log() if e.status == 200]
    journaled = {body_hash(f"row number {e['i']}") for e in kept}
    lost = first - journaled  # answers in flight when cancelled: at most `concurrency`
    assert len(lost) <= 4
    assert len(answered) - 60 == len(lost)  # only those were paid twice
