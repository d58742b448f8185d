"""Deterministic JSON answers for ``response_format`` (``json_object`` and ``json_schema``).

A pipeline that parses structured output needs answers it can parse: for
``{"type": "json_schema", "json_schema": {"schema": ...}}`` the simulator builds a value that
fits the schema (objects with every property, strings of words, numbers, booleans, enums,
arrays of one to three items, ``anyOf``/``oneOf`` take their first branch, local ``$ref``s are
followed); for ``{"type": "json_object"}`` it answers ``{"answer": "<words>"}``. Values are
picked by a hash of the request, so the same request gets the same JSON.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from pipeline.simulator._tokens import default_answer

__all__ = ["fake_json_text"]

_MAX_DEPTH = 8


class _Maker:
    def __init__(self, seed: bytes, root: dict[str, Any]) -> None:
        self.seed = seed
        self.root = root
        self.counter = 0

    def _byte(self) -> int:
        self.counter += 1
        return hashlib.sha256(self.seed + self.counter.to_bytes(4, "big")).digest()[0]

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            node: Any = self.root
            for part in ref[2:].split("/"):
                node = node.get(part, {}) if isinstance(node, dict) else {}
            return node if isinstance(node, dict) else {}
        return schema

    def make(self, schema: Any, depth: int = 0) -> Any:
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return None
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][self._byte() % len(schema["enum"])]
        for key in ("anyOf", "oneOf", "allOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.make(schema[key][0], depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or (kind is None and "properties" in schema):
            props = schema.get("properties") or {}
            return {name: self.make(sub, depth + 1) for name, sub in props.items()}
        if kind == "array":
            count = max(int(schema.get("minItems", 1)), 1 + self._byte() % 3)
            count = min(count, int(schema.get("maxItems", count)))
            return [self.make(schema.get("items", {}), depth + 1) for _ in range(count)]
        if kind == "integer":
            low = int(schema.get("minimum", 0))
            high = int(schema.get("maximum", low + 100))
            return low + self._byte() % (high - low + 1)
        if kind == "number":
            bottom = float(schema.get("minimum", 0.0))
            top = float(schema.get("maximum", bottom + 1.0))
            return round(bottom + (top - bottom) * self._byte() / 255, 3)
        if kind == "boolean":
            return bool(self._byte() % 2)
        if kind == "null":
            return None
        words = 1 + self._byte() % 4
        return default_answer(self.seed + self.counter.to_bytes(4, "big"), words)


def fake_json_text(response_format: dict[str, Any], seed: bytes) -> str | None:
    """The JSON answer text for ``response_format``, or ``None`` when it asks for plain text.

    >>> fake_json_text({"type": "json_schema", "json_schema": {"name": "x", "schema": {
    ...     "type": "object", "properties": {"ok": {"type": "boolean", "const": True}}}}}, b"s")
    '{"ok":true}'
    """
    kind = response_format.get("type")
    if kind == "json_object":
        return msgspec.json.encode({"answer": default_answer(seed, 6)}).decode()
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            schema = {"type": "object"}
        return msgspec.json.encode(_Maker(seed, schema).make(schema)).decode()
    return None
