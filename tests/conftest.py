"""Shared fixtures."""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
OPENAPI_PATH = ROOT.parent / "shared" / "openai-openapi" / "openapi.json"


@pytest.fixture(scope="session")
def openapi_spec() -> dict:
    """The OpenAI OpenAPI document from ../shared, or a clean skip when it is absent."""
    import json

    if not OPENAPI_PATH.exists():
        pytest.skip(f"OpenAPI spec not found at {OPENAPI_PATH}")
    return _fix_exclusive_bounds(json.loads(OPENAPI_PATH.read_text()))


def _fix_exclusive_bounds(node):
    """The document says OpenAPI 3.1 but keeps some 3.0-style ``exclusiveMinimum: true``
    (a flag beside ``minimum``); JSON Schema 2020-12 reads that as the number 1. Rewrite
    those to the 2020-12 form so valid values such as ``learning_rate_multiplier=0.5`` pass."""
    if isinstance(node, dict):
        for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if node.get(flag) is True and bound in node:
                node[flag] = node.pop(bound)
            elif node.get(flag) is False:
                del node[flag]
        for value in node.values():
            _fix_exclusive_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _fix_exclusive_bounds(value)
    return node


@pytest.fixture(scope="session")
def validate_schema(openapi_spec):
    """``validate_schema(instance, "CreateChatCompletionRequest")`` -> list of error messages."""
    jsonschema = pytest.importorskip("jsonschema")
    validators: dict[str, object] = {}

    def validate(instance, component: str) -> list[str]:
        if component not in validators:
            root = dict(openapi_spec)
            root["$ref"] = f"#/components/schemas/{component}"
            validators[component] = jsonschema.Draft202012Validator(root)
        return [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validators[component].iter_errors(instance)
        ]

    return validate
