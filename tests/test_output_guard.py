"""The user's files and the answers paid for: an output the tool did not write is not
overwritten, an unwritable output is refused before anything is sent, a journal that fills
up mid-run stops sending and keeps every answer, and a dry run needs no key."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from pipeline import OpenAIService, io
from pipeline.io.resume import Journal, OutputWriteError
from pipeline.simulator import Simulator

KEY = "sk-test-guard"


def pipeline_run(*args, key=KEY):
    environment = dict(os.environ)
    environment.pop("OPENAI_BASE_URL", None)
    environment.pop("OPENAI_API_KEY", None)
    if key:
        environment["OPENAI_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "pipeline", "run", *args], env=environment,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def sim():
    with Simulator(latency=0.0) as simulator:
        yield simulator


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("text\n" + "".join(f"row {i}\n" for i in range(20)))
    return path


def test_an_output_the_tool_did_not_write_is_refused_unless_overwrite(tmp_path, rows, sim):
    precious = tmp_path / "precious.csv"
    precious.write_bytes(b"name,notes\nAda,hand-made\r\n")
    before = precious.read_bytes()
    refused = pipeline_run(str(rows), "-o", str(precious), "--template", "{text}",
                           "--base-url", sim.base_url, "--no-progress")
    assert refused.returncode == 2, refused.stderr
    assert "exists" in refused.stderr and "--overwrite" in refused.stderr
    assert refused.stderr.count("\n") <= 2 and "Traceback" not in refused.stderr
    assert precious.read_bytes() == before and sim.stats().requests == 0

    forced = pipeline_run(str(rows), "-o", str(precious), "--template", "{text}",
                          "--base-url", sim.base_url, "--no-progress", "--overwrite")
    assert forced.returncode == 0, forced.stderr
    assert precious.read_text().count("\n") == 21
    # Now the tool wrote it (a journal beside it): a rerun, or another job, may replace it.
    other = pipeline_run(str(rows), "-o", str(precious), "--template", "Q: {text}",
                         "--base-url", sim.base_url, "--no-progress")
    assert other.returncode == 0, other.stderr
    assert "started afresh, and its output is replaced" in other.stderr


def _unwritable_directories(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = [("missing", missing), ("under a file", a_file)]
    if os.geteuid() != 0:  # root writes through a read-only mode
        read_only = tmp_path / "read-only"
        read_only.mkdir()
        read_only.chmod(0o500)
        cases.append(("read-only", read_only))
    return cases


def test_an_unwritable_output_directory_is_refused_before_anything_is_sent(
        tmp_path, rows, sim):
    for name, directory in _unwritable_directories(tmp_path):
        result = pipeline_run(str(rows), "-o", str(directory / "out.csv"), "--template",
                              "{text}", "--base-url", sim.base_url, "--no-progress")
        assert result.returncode == 2, (name, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("pipeline run: error: cannot write the output"), name
        assert "Traceback" not in result.stderr
    assert sim.stats().requests == 0


class _FillsUp:
    """A journal file on a disk that is full after `room` more lines."""

    def __init__(self, file, room):
        self.file, self.room = file, room

    def write(self, data):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= 1
        return self.file.write(data)

    def close(self):
        self.file.close()


async def test_a_journal_that_fills_up_stops_sending_and_loses_no_answer(
        tmp_path, rows, monkeypatch):
    output, journal = tmp_path / "out.csv", tmp_path / "out.csv.journal"
    real_open = Journal._open

    def open_on_a_small_disk(self, resume):
        entries = real_open(self, resume)
        self._file = _FillsUp(self._file, room=5)
        return entries

    with Simulator(latency=0.05, seed=5) as sim:
        async with OpenAIService(api_key=KEY, base_url=sim.base_url) as service:
            job = service.chat(model="gpt-4o-mini", prompt="{text}")
            monkeypatch.setattr(Journal, "_open", open_on_a_small_disk)
            with pytest.raises(OutputWriteError) as failure:
                await io.run_file(rows, output, job, concurrency=4)
            monkeypatch.undo()
            message = str(failure.value)
            assert message.startswith(f"cannot write the journal {journal}: "
                                      f"{os.strerror(errno.ENOSPC)}")
            first = [e.body_hash for e in sim.log() if e.status == 200]
            assert len(first) < 20  # sending stopped at once (5 lines + what was in flight)
            assert len(first) <= 5 + 1 + 4
            # Every answer that arrived is in the output, and in a whole copy of the journal.
            out = [r for r in output.read_text().splitlines()[1:] if ",succeeded," in r]
            assert len(out) == len(first)
            rescued = message.split("move ")[1].split(" to ")[0]
            assert "kept in" in message and str(output) in message
            os.replace(rescued, journal)  # there is room again
            summary = await io.run_file(rows, output, job, concurrency=4)
        answered = Counter(e.body_hash for e in sim.log() if e.status == 200)
    assert summary.resumed == len(first) and summary.succeeded == 20
    assert len(answered) == 20 and max(answered.values()) == 1  # none paid twice


async def test_an_output_that_cannot_be_written_after_the_run_keeps_the_journal(
        tmp_path, rows, sim, monkeypatch):
    import pipeline.io.resume as resume

    output = tmp_path / "out.csv"

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    async with OpenAIService(api_key=KEY, base_url=sim.base_url) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}")
        monkeypatch.setattr(resume, "write_rows", full_disk)
        with pytest.raises(OutputWriteError, match="20 answered rows are kept in the journal"):
            await io.run_file(rows, output, job)
        monkeypatch.undo()
        summary = await io.run_file(rows, output, job)
    assert summary.resumed == 20 and sim.stats().requests == 20


def test_a_dry_run_needs_no_api_key(tmp_path, rows):
    result = pipeline_run(str(rows), "-o", str(tmp_path / "out.csv"), "--template", "{text}",
                          "--dry-run", key=None)
    assert result.returncode == 0, result.stderr
    assert "rows" in result.stdout and "OPENAI_API_KEY" not in result.stderr
    assert not (tmp_path / "out.csv").exists()


def test_journal_lines_are_json(tmp_path):
    # The rescue copy is a journal: the same header and lines.
    journal = Journal(tmp_path / "j", fingerprint="f")
    journal.open()
    journal.append(io.ResultRow(index=0, answer="yes", status="succeeded"))
    journal.close()
    lines = [json.loads(x) for x in (tmp_path / "j").read_text().splitlines()]
    assert lines == [{"journal": 1, "fingerprint": "f"}, {
        "i": 0, "answer": "yes", "status": "succeeded", "error": None, "tokens": None,
        "latency": None}]
