"""pipeline.io is private to itself: nothing outside the package imports one of its private
modules or names (the CLI, ray_data, resume's users go by ``pipeline.io``'s public names), and
each of its modules stays readable in one sitting."""

from __future__ import annotations

import ast
import pathlib

import pipeline

ROOT = pathlib.Path(pipeline.__file__).parent


def _private_io_imports(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("pipeline.io"):
            parts = node.module.split(".")
            names = [a.name for a in node.names]
            if any(p.startswith("_") for p in parts) or any(n.startswith("_") for n in names):
                found.append(f"from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("pipeline.io._")]
    return found


def test_nothing_outside_io_imports_its_private_modules_or_names():
    roots = [ROOT, ROOT.parent / "benchmarks"]
    wrong = {}
    for path in sorted(p for r in roots for p in r.rglob("*.py")):
        if (ROOT / "io") in path.parents:
            continue
        found = _private_io_imports(path)
        if found:
            wrong[str(path.relative_to(ROOT.parent))] = found
    assert not wrong


def test_every_io_module_is_under_600_lines():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines())
             for p in (ROOT / "io").glob("*.py")}
    assert sizes and not {name: n for name, n in sizes.items() if n > 600}, sizes
