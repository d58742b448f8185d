"""The benchmarks still run: a short ``--quick`` pass in a subprocess, tables printed."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

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
