"""benchmarks/deployments.py runs its smallest cells and pays no row twice (no timing is
asserted: the table's ratios are for reading, not for a test on a shared machine)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(120)
def test_the_deployments_benchmark_answers_every_row_once_even_with_one_killed():
    result = subprocess.run(
        [sys.executable, "benchmarks/deployments.py", "--rows", "300", "--sizes", "2",
         "--settings", "told right,killed", "--clients", "pipeline"],
        capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()
            if line.strip().startswith("2 ") and "pipeline" in line]
    assert len(rows) == 2, result.stdout
    for cells in rows:
        at = cells.index("pipeline")  # then answered, failed, twice, ...
        answered, failed, twice = cells[at + 1:at + 4]
        assert (answered, failed, twice) == ("300", "0", "0"), result.stdout
