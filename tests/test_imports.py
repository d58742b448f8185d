"""Every module imports alone in a fresh interpreter: no import cycles, in any order."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import pipeline

MODULES = sorted(m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.")
                 if not m.name.endswith("__main__"))


def _import_alone(name: str) -> tuple[str, int, str]:
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True,
                          text=True, timeout=60)
    return name, proc.returncode, proc.stderr[-2000:]


@pytest.mark.timeout(300)
def test_every_module_imports_alone_in_a_fresh_interpreter():
    assert len(MODULES) > 30
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [r for r in pool.map(_import_alone, MODULES) if r[1] != 0]
    assert not failures, "\n\n".join(f"{name}:\n{err}" for name, _, err in failures)
