"""Shared fixtures.

Schema checks (``validate_schema``, ``spec_fields``) use the OpenAI OpenAPI document in
../shared/openai-openapi when it is there (read from there, never copied in); in a plain
clone without it they use the official ``openai`` SDK's own types instead (see
``_sdk_schemas.py``), so the same tests run everywhere.
"""

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
def validate_schema(request):
    """``validate_schema(instance, "CreateChatCompletionRequest")`` -> list of error messages:
    against the OpenAPI document when present, else against the ``openai`` SDK's types."""
    if not OPENAPI_PATH.exists():
        pytest.importorskip("openai")
        import _sdk_schemas

        return _sdk_schemas.validate
    openapi_spec = request.getfixturevalue("openapi_spec")
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


@pytest.fixture(scope="session")
def spec_fields(request):
    """``spec_fields("CreateEmbeddingRequest")`` -> the request's field names: from the
    OpenAPI document when present, else from the ``openai`` SDK's TypedDict."""
    if not OPENAPI_PATH.exists():
        pytest.importorskip("openai")
        import _sdk_schemas

        return _sdk_schemas.fields
    schemas = request.getfixturevalue("openapi_spec")["components"]["schemas"]

    def properties(schema: dict) -> set[str]:
        if "$ref" in schema:
            return properties(schemas[schema["$ref"].rsplit("/", 1)[1]])
        names = set(schema.get("properties", {}))
        for part in schema.get("allOf", []):
            names |= properties(part)
        return names

    return lambda component: properties(schemas[component])
