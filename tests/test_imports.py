"""Every module imports alone in a fresh interpreter (no import cycles, in any order), and
imports go one way, down the layers of the package."""

from __future__ import annotations

import ast
import pathlib
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


# The layers, bottom up: a module may import (at any place in it, lazily or not) only from its
# own layer or the layers below. `pipeline/__init__.py` re-exports from every layer and is not
# checked; `pipeline.io.__getattr__` lends `run_file` from `pipeline.io.resume` (one layer up,
# looked up on first use, kept for earlier versions' imports) and is the one exception.
LAYERS: list[tuple[str, ...]] = [
    ("pipeline.errors", "pipeline.core", "pipeline.schema"),
    ("pipeline.limiter", "pipeline.simulator"),
    ("pipeline.payloads", "pipeline.pricing"),
    ("pipeline.http",),
    ("pipeline.state",),
    ("pipeline.stages",),
    ("pipeline.options",),
    ("pipeline.runner",),
    ("pipeline.io", "pipeline.adapters", "pipeline.ray_data", "pipeline.batch_api"),
    ("pipeline.bench", "pipeline.testing", "pipeline.cli", "pipeline.__main__"),
]
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def _layer(module: str) -> int:
    """The layer of the most specific LAYERS entry naming ``module`` or a package of it."""
    found = [(len(n), level) for level, names in enumerate(LAYERS) for n in names
             if module == n or module.startswith(n + ".")]
    if not found:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return max(found)[1]


def _imports(path: pathlib.Path, module: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pipeline"))
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("pipeline"):
            if node.module == "pipeline":  # `from pipeline import io`: the submodules named
                found.update(f"pipeline.{a.name}" for a in node.names)
            else:
                found.add(node.module)
    return found


def test_imports_go_one_way_down_the_layers():
    root = pathlib.Path(pipeline.__file__).parent
    wrong = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module == "pipeline":
            continue
        own = _layer(module)
        for target in _imports(path, module):
            if target == "pipeline" or target.startswith(module):
                continue
            top = next((n for names in LAYERS for n in names
                        if target == n or target.startswith(n + ".")), None)
            if top is None:
                continue  # a name re-exported by pipeline/__init__ (e.g. `from pipeline import
                # run`) is checked through the module that defines it
            if _layer(target) > own and (module.split(".")[:2] != ["pipeline", "io"] or
                                         (".".join(module.split(".")[:2]), top)
                                         not in ALLOWED_UPWARD):
                wrong.append(f"{module} imports {target} (layer {_layer(target)} > {own})")
    assert not wrong, "\n".join(wrong)


def test_the_layer_table_names_every_module():
    for name in MODULES:
        _layer(name)
