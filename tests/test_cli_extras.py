"""A missing optional package is one line naming the extra to install, exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCK = "import sys; sys.modules[{name!r}] = None; from pipeline.cli import main; " \
        "sys.exit(main({argv!r}))"


@pytest.mark.parametrize(("blocked", "argv", "extra"), [
    ("pandas", ["bench", "--rpm", "600", "--requests", "5"], "[pandas]"),
    ("matplotlib", ["bench", "--rpm", "600", "--requests", "5", "--out", "x.png"], "[plot]"),
])
def test_pipeline_bench_names_the_missing_extra(tmp_path, blocked, argv, extra):
    proc = subprocess.run([sys.executable, "-c", BLOCK.format(name=blocked, argv=argv)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert extra in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
