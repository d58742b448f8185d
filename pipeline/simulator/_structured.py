"""Deterministic JSON answers for ``response_format`` (``json_object`` and ``json_schema``).

A pipeline that parses structured output needs answers it can parse: for
``{"type": "json_schema", "json_schema": {"schema": ...}}`` the simulator builds a value that
fits the schema (objects with every property, strings of words, numbers, booleans, enums,
arrays of one to three items, ``anyOf``/``oneOf`` take their first branch, local ``$ref``s are
followed); for ``{"type": "json_object"}`` it answers ``{"answer": "<words>"}``. Values are
picked by a hash of the request, so the same request gets the same JSON.

With ``invalid_json`` the simulator spoils some of those answers (:func:`spoil_json_text`) the
ways a model without strict mode does: prose around the JSON, JSON cut short, a required field
left out, a field of the wrong type.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgspec

from pipeline.simulator._tokens import default_answer

__all__ = ["SPOILS", "fake_json_text", "spoil_json_text"]

#: The ways :func:`spoil_json_text` spoils an answer, in the order a draw picks them.
SPOILS = ("prose", "cut", "missing", "wrong_type")

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


def spoil_json_text(text: str, response_format: dict[str, Any], rng: random.Random) -> str:
    """``text`` (a valid JSON answer) made invalid one of the :data:`SPOILS` ways, picked by
    ``rng``. ``missing`` and ``wrong_type`` break a ``json_schema`` (a field left out, or
    given a value of another type); where they cannot (a ``json_object`` answer, a field
    that takes any type) the answer is wrapped in prose instead, so it is never valid.

    >>> fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
    ...     "type": "object", "properties": {"n": {"type": "integer"}}}}}
    >>> sorted({spoil_json_text('{"n":3}', fmt, random.Random(i)) for i in range(8)})
    ['Here is the JSON you asked for: {"n":3}', '{"n', '{"n":"3"}', '{}']
    """
    how = SPOILS[rng.randrange(len(SPOILS))]
    value = msgspec.json.decode(text)
    if how in ("missing", "wrong_type") and isinstance(value, dict) and value and \
            response_format.get("type") == "json_schema":
        name = list(value)[rng.randrange(len(value))]
        if how == "missing":
            del value[name]
            return msgspec.json.encode(value).decode()
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        props = schema.get("properties") if isinstance(schema, dict) else None
        node = props.get(name) if isinstance(props, dict) else None
        wrong = _wrong_value(value[name], node) if isinstance(node, dict) else _NO_WRONG_VALUE
        if wrong is not _NO_WRONG_VALUE:
            value[name] = wrong
            return msgspec.json.encode(value).decode()
        how = "prose"
    if how == "cut":
        return text[: max(1, len(text) // 2)]
    return f"Here is the JSON you asked for: {text}"


_NO_WRONG_VALUE = object()


def _wrong_value(value: Any, node: dict[str, Any]) -> Any:
    """A value that breaks ``node`` the way a model would (a number as text, a made-up enum
    member), or ``_NO_WRONG_VALUE`` for a node that takes anything (a union)."""
    if "anyOf" in node or "oneOf" in node or isinstance(node.get("type"), list):
        return _NO_WRONG_VALUE
    if "enum" in node or "const" in node:
        return "none of the above"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return msgspec.json.encode(value).decode()
    return _NO_WRONG_VALUE  # null: a nullable field takes it
