"""`pipeline cache` and a damaged or missing cache, from the command line, in subprocesses."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from pipeline.core.request import Response
from pipeline.simulator import Simulator
from pipeline.state.cache import ResponseCache

KEY = "sk-test-cli-cache-0123456789abcdef"
ADVICE = "it holds only answers already paid for; they will be asked again"


def pipeline_cli(*args):
    env = dict(os.environ, OPENAI_API_KEY=KEY)
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def _damaged(directory):
    directory.mkdir()
    (directory / "cache.db").write_bytes(b"\x00garbage, not a database\xff" * 500)
    return directory


def _healthy(directory, entries=3):
    with ResponseCache(directory) as cache:
        for i in range(entries):
            cache.put(f"k{i}", Response(status=200, body={"i": i}))
    return directory


@pytest.mark.parametrize("action", ["stats", "clear"])
def test_a_directory_that_is_not_a_cache_is_refused_and_left_alone(tmp_path, action):
    (tmp_path / "notes.txt").write_text("mine")
    result = pipeline_cli("cache", action, str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"pipeline cache: error: {tmp_path} is not a response "
                                     "cache (no cache.db in it)")
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # no cache.db made


@pytest.mark.parametrize("action", ["stats", "clear"])
def test_a_missing_directory_is_refused_and_not_made(tmp_path, action):
    missing = tmp_path / "nowhere"
    result = pipeline_cli("cache", action, str(missing))
    assert result.returncode == 2
    assert f"{missing} is not a response cache (no such directory)" in result.stderr
    assert not missing.exists()


def test_stats_of_a_damaged_cache_says_how_to_remove_it(tmp_path):
    cache = _damaged(tmp_path / "c")
    result = pipeline_cli("cache", "stats", str(cache))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"the response cache at {cache} is damaged (file is not a database): " \
           f"remove it with `pipeline cache clear {cache}` ({ADVICE})" in result.stderr


def test_clear_removes_a_damaged_cache_and_nothing_else(tmp_path):
    cache = _damaged(tmp_path / "c")
    (cache / "keep.txt").write_text("not the cache's")
    result = pipeline_cli("cache", "clear", str(cache))
    assert result.returncode == 0, result.stderr
    assert f"removed the damaged response cache at {cache}" in result.stdout
    assert sorted(os.listdir(cache)) == ["keep.txt"]


def test_clear_and_stats_of_a_healthy_cache(tmp_path):
    cache = _healthy(tmp_path / "c")
    stats = pipeline_cli("cache", "stats", str(cache))
    assert stats.returncode == 0 and "entries    3" in stats.stdout
    assert "scope      shared" in stats.stdout
    cleared = pipeline_cli("cache", "clear", str(cache))
    assert cleared.returncode == 0 and "removed 3 cached responses" in cleared.stdout
    with ResponseCache(cache) as reopened:
        assert len(reopened) == 0


def test_scope_is_shown_and_set(tmp_path):
    cache = _healthy(tmp_path / "c")
    assert "shared" in pipeline_cli("cache", "scope", str(cache)).stdout
    result = pipeline_cli("cache", "scope", str(cache), "key")
    assert result.returncode == 0 and "scoped by API key" in result.stdout
    assert ResponseCache(cache).scope == "key"
    assert pipeline_cli("cache", "stats", str(cache), "key").returncode == 2  # scope only


def test_run_with_a_damaged_cache_stops_before_sending_with_the_advice(tmp_path):
    with open(tmp_path / "in.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text"], ["a"], ["b"]])
    cache = _damaged(tmp_path / "cache")
    with Simulator(latency=0.0, api_key=KEY) as sim:
        result = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"),
                              "--template", "Classify: {text}", "--max-tokens", "4",
                              "--base-url", sim.base_url, "--cache", str(cache))
        assert sim.stats().requests == 0
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"remove it with `pipeline cache clear {cache}` ({ADVICE})" in result.stderr
    # ... and following the advice works: the rerun answers every row.
    assert pipeline_cli("cache", "clear", str(cache)).returncode == 0
    with Simulator(latency=0.0, api_key=KEY) as sim:
        rerun = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"),
                             "--template", "Classify: {text}", "--max-tokens", "4",
                             "--base-url", sim.base_url, "--cache", str(cache))
        assert rerun.returncode == 0, rerun.stderr
        assert sim.stats().requests == 2
