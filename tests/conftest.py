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
    return json.loads(OPENAPI_PATH.read_text())


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
