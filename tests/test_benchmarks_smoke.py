"""The benchmarks still run: a short ``--quick`` pass in a subprocess, tables printed."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from _redis_server import REDIS_SERVER, SKIP_REASON

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_limiter_benchmark_runs_quick() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/limiter_throughput.py", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for header in ("1. Uncontended", "2. Saturated", "3. Fairness", "targets (ours TokenBucket)"):
        assert header in out, f"{header!r} missing from:\n{out}"
    for column in ("us/acquire", "speed vs aiolimiter", "achieved/configured", "max/allowed",
                   "CPU s per 10k", "large waited s", "position in grant order"):
        assert column in out, f"column {column!r} missing from:\n{out}"
    for row in ("ours TokenBucket", "ours Interval", "aiolimiter", "pyrate GCRA",
                "limits moving*"):
        assert out.count(row) >= 4, f"{row!r} should appear in the legend and all 3 tables"


@pytest.mark.timeout(300)
def test_pipeline_throughput_runs_quick_with_every_baseline() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/pipeline_throughput.py", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=270, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for row in ("pipeline.run (default chain)", "bare worker pool (64 tasks, next())",
                "bare asyncio.gather + semaphore", "added per row:",
                "pipeline.run, every row cached", "bare worker pool + cache gets",
                "bare gather + cache gets", "pipeline.run [httpx]", "pipeline.run [aiohttp]",
                "3. Memory:"):
        assert row in out, f"{row!r} missing from:\n{out}"


@pytest.mark.timeout(120)
def test_ab_end_to_end_runs_each_tree_it_is_given() -> None:
    # Each child must import the tree it was given (not the working directory's, which
    # `python -c` puts first on sys.path): the script checks, and says which ran.
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ab_end_to_end.py"), str(ROOT), str(ROOT),
         "--rounds", "1", "--rows", "200"],
        cwd=ROOT.parent, capture_output=True, text=True, timeout=100, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "round 1: A " in result.stdout and " B " in result.stdout


@pytest.mark.timeout(120)
def test_e2e_breakdown_prints_every_step() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/e2e_breakdown.py", "--rows", "300", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=100, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for row in ("bare gather", "bare pool", "build | call", "+ acquire", "+ retry, track",
                "+ columns (one at a time)", "pipeline.run"):
        assert f"   {row} " in result.stdout, f"{row!r} missing from:\n{result.stdout}"


@pytest.mark.timeout(180)
def test_fault_matrix_runs_quick_and_finds_no_wrong_or_twice_paid_answer() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/fault_matrix.py", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for column in ("correct", "wrong", "failed", "paid 2x", "429s", "x base"):
        assert column in out, f"column {column!r} missing from:\n{out}"
    for kind in ("none", "server_error", "hang", "empty_choices", "null_content", "error_200",
                 "content_filter", "echo_headers"):
        assert f"\n{kind} " in out, f"{kind!r} missing from:\n{out}"
    assert "answers paid twice in all cells: 0" in out


@pytest.mark.timeout(180)
def test_shared_limiter_end_to_end_rows_run_smallest_and_pay_no_row_twice() -> None:
    # The N-process table: real `pipeline run --shared-limit` processes and the peers' httpx
    # scripts against one simulator; counts come from its log.
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    result = subprocess.run(
        [sys.executable, "benchmarks/shared_limiter.py", "--table", "e2e", "--processes", "2",
         "--rows", "100", "--budget", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for column in ("answered", "2x", "429s", "429 %", "x min", "cmds/req", "target"):
        assert column in out, f"column {column!r} missing from:\n{out}"
    rows = {}
    for line in out.splitlines():
        for label in ("ours pipeline run", "httpx, no limiter", "httpx + pyrate Redis",
                      "httpx + limits Redis"):
            if line.startswith(label):
                setting = "not told" if "not told" in line else "told right"
                rows[label, setting] = line[len(label):].split()
    assert set(rows) == {("ours pipeline run", "not told"), ("ours pipeline run", "told right"),
                         ("httpx, no limiter", "not told"), ("httpx + pyrate Redis", "told right"),
                         ("httpx + limits Redis", "told right")}, out
    for fields in rows.values():
        # setting (2 words), procs, answered, 2x, ...: every row answered, none paid twice.
        assert fields[2:5] == ["2", "100/100", "0"], out


@pytest.mark.timeout(120)
def test_memory_benchmark_runs_every_case() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/memory.py", "--rows", "2000"],
        cwd=ROOT, capture_output=True, text=True, timeout=100, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for row in ("as_completed", "run()", "run(keep_responses=True)", "run(keep_rows=False)",
                "run(a list of rows)", "run_frame (pandas)"):
        assert out.count(row) == 1, f"{row!r} missing from:\n{out}"
    assert "peak MB" in out and "B/row" in out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ray_shared_quota_runs_each_contender_and_pays_no_row_twice() -> None:
    # Ray Data actors on one Redis key: ours (AnswerBatches) and the hand-written class,
    # against one simulator; every count comes from the simulator's log.
    pytest.importorskip("ray.data", reason='ray is not installed: pip install '
                        '"ratelimited-pipeline[ray]"')
    pytest.importorskip("pyrate_limiter", reason="pyrate-limiter (a peer) is not installed")
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    result = subprocess.run(
        [sys.executable, "benchmarks/ray_shared_quota.py", "--actors", "2", "--rows", "200",
         "--rps", "50"],
        cwd=ROOT, capture_output=True, text=True, timeout=210, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for column in ("answered", "2x", "429s", "x min", "cmds/req", "target"):
        assert column in out, f"column {column!r} missing from:\n{out}"
    rows = {}
    for line in out.splitlines():
        for label in ("ours AnswerBatches", "by hand, no limiter", "by hand, pyrate Redis"):
            if line.startswith(label):
                setting = "not told" if "not told" in line else "told right"
                rows[label, setting] = line[len(label):].split()
    assert set(rows) == {("ours AnswerBatches", "not told"), ("ours AnswerBatches", "told right"),
                         ("by hand, no limiter", "not told"),
                         ("by hand, pyrate Redis", "told right")}, out
    for fields in rows.values():
        # setting (2 words), actors, answered, 2x, ...: every row answered, none paid twice.
        assert fields[2:5] == ["2", "200/200", "0"], out
    # Ours stays inside the quota; told right, not one 429 (the bucket starts empty).
    assert rows["ours AnswerBatches", "told right"][5] == "0", out


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "says"), [
    (["--actors", "two"], "--actors takes counts"),
    (["--actors", "0"], "must be positive"),
    (["--rps", "-5"], "must be positive"),
    (["--contenders", "pipeline,aiolimiter"], "--contenders: aiolimiter; choose from"),
])
def test_ray_shared_quota_refuses_bad_arguments_before_starting_anything(
        args: list[str], says: str) -> None:
    pytest.importorskip("redis", reason='redis-py is not installed: pip install '
                        '"ratelimited-pipeline[redis]"')
    result = subprocess.run([sys.executable, "benchmarks/ray_shared_quota.py", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=50, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr, result.stderr
