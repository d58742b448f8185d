"""Provider knowledge lives in pipeline.http only: the modules that decide the pace (the
limiters, the stages, the runner, the guard, the status) read Outcome values, never a
rate-limit header, a 429's body or its wording."""

from __future__ import annotations

import ast
import pathlib

import pipeline

ROOT = pathlib.Path(pipeline.__file__).parent
DECIDERS = ["limiter", "stages", "runner.py", "state", "core/record.py"]
HEADER_WORDS = ("x-ratelimit", "anthropic-ratelimit", "retry-after", "per min", "limit type")


def _files() -> list[pathlib.Path]:
    found: list[pathlib.Path] = []
    for name in DECIDERS:
        path = ROOT / name
        found.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant):
            docs.add(id(node.body[0].value))
    return docs


def test_no_decider_names_a_rate_limit_header_or_a_429_wording() -> None:
    wrong = []
    for path in _files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in docs:
                text = node.value.lower()
                if any(word in text for word in HEADER_WORDS):
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not wrong, "read these in pipeline.http.signals:\n" + "\n".join(wrong)


def test_the_limiters_read_no_answer_and_import_no_provider_knowledge() -> None:
    wrong = []
    for path in sorted((ROOT / "limiter").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("headers", "body", "message",
                                                                 "retry_after", "status"):
                wrong.append(f"{path.name}:{node.lineno}: .{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.startswith("pipeline.http") or (node.module == "pipeline.errors"
                    and {a.name for a in node.names} - {"ConfigError", "RequestTooLarge"})):
                wrong.append(f"{path.name}:{node.lineno}: from {node.module} import ...")
    assert not wrong, "\n".join(wrong)
