"""The schema package's shape: its modules are private to it (everything else imports from
``pipeline.schema``), and each holds one concern in a readable size."""

from __future__ import annotations

import ast
import pathlib

import pipeline.schema

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = pathlib.Path(pipeline.schema.__file__).parent


def _private_schema_imports(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        found += [n for n in names if n.startswith("pipeline.schema._")]
    return found


def test_nothing_outside_the_package_imports_its_private_modules():
    wrong = {}
    for folder in ("pipeline", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if PACKAGE in path.parents:
                continue
            names = _private_schema_imports(path)
            if names:
                wrong[str(path.relative_to(ROOT))] = names
    assert not wrong, f"import these from pipeline.schema instead: {wrong}"


def test_every_module_of_the_package_reads_in_one_sitting():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.glob("*.py")}
    assert len(sizes) >= 5, sizes
    assert max(sizes.values()) <= 600, sizes
    assert sizes["__init__.py"] <= 60, "the package's __init__ only re-exports"
