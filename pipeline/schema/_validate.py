"""Checking a decoded JSON value against a normalized schema tree: the strict-mode subset.

A JSON Schema dict has no Python type for msgspec to decode into, so its answers are decoded
as plain JSON and then checked here against the strict schema that was sent (every property
required, no other allowed). :class:`Validator` raises :class:`Invalid` for the first thing that
does not fit, with the JSON path of the field (``$.review.score``) and a reason worded like
msgspec's (``Expected integer, got string``), so an answer that misses a JSON Schema dict
reads like one that misses a Struct. ``format`` is asked of the model, not checked (as
jsonschema does by default).

Why not ``jsonschema``: the subset :mod:`pipeline.schema._strict` lets through is under twenty
keywords, and ``benchmarks/schema_validation.py`` measures jsonschema's Draft 2020-12 validator
(built once per schema) at about three times this one's time per answer, flat or nested, valid
or not, with four more packages to install and import (attrs, referencing, rpds-py,
jsonschema-specifications). Where the two differ, this one follows
strict mode and msgspec: ``2.0`` is not an integer. ``tests/test_schema_validate.py`` holds it to
jsonschema's verdict on every other answer (jsonschema is a test dependency only).

>>> Validator({"type": "object", "properties": {"n": {"type": "integer"}},
...            "required": ["n"], "additionalProperties": False}).check({"n": "4"})
Traceback (most recent call last):
...
pipeline.schema._validate.Invalid: Expected integer, got string
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Any

from pipeline.schema._tree import JSON_TYPES, ref_name, types_of


class Invalid(Exception):
    """An answer that does not fit: ``reason``, the JSON path ``field``, and whether the text
    was not JSON at all (``not_json``) or the value had the wrong type (``wrong_type``)."""

    def __init__(self, reason: str, field: str | None = None, not_json: bool = False,
                 wrong_type: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.not_json = not_json
        self.wrong_type = wrong_type


class Validator:
    """Checks a decoded JSON value against a normalized tree: the strict-mode subset."""

    def __init__(self, tree: dict[str, Any]) -> None:
        self.tree = tree
        self.defs: dict[str, Any] = tree.get("$defs", {})

    def check(self, value: Any) -> None:
        """Return if ``value`` fits the tree; else raise :class:`Invalid` for the first misfit."""
        self._check(value, self.tree, "$")

    def _check(self, value: Any, node: dict[str, Any], at: str) -> None:
        ref = node.get("$ref")
        if isinstance(ref, str):
            node = self.defs[ref_name(ref, at)]
        if "anyOf" in node:
            failures = []
            for branch in node["anyOf"]:
                try:
                    self._check(value, branch, at)
                except Invalid as exc:
                    failures.append(exc)
                else:
                    break
            else:
                # The branch whose type fits says best what is wrong (a nullable object with a
                # bad field); when no type fits, say so.
                fitting = [e for e in failures if not e.wrong_type or e.field != at]
                if len(fitting) == 1:
                    raise fitting[0]
                raise Invalid(f"{_short(value)} matches none of {len(failures)} alternatives",
                              at)
        types = types_of(node)
        if types and not any(JSON_TYPES[t](value) for t in types if t in JSON_TYPES):
            raise Invalid(f"Expected {' or '.join(sorted(types))}, got {_kind_of(value)}", at,
                          wrong_type=True)
        if "enum" in node and not any(_same(value, v) for v in node["enum"]):
            raise Invalid(f"{_short(value)} is not one of {node['enum']!r}", at)
        if "const" in node and not _same(value, node["const"]):
            raise Invalid(f"{_short(value)} is not {node['const']!r}", at)
        if isinstance(value, dict) and isinstance(node.get("properties"), dict):
            self._object(value, node, at)
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            self._array(value, node, at)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            self._number(value, node, at)
        elif isinstance(value, str) and "pattern" in node \
                and re.search(node["pattern"], value) is None:
            raise Invalid(f"{_short(value)} does not match pattern {node['pattern']!r}", at)

    def _object(self, value: dict[str, Any], node: dict[str, Any], at: str) -> None:
        props: dict[str, Any] = node["properties"]
        for name in node.get("required", ()):
            if name not in value:
                raise Invalid(f"Object missing required field `{name}`", at)
        if node.get("additionalProperties") is False:
            extra = [k for k in value if k not in props]
            if extra:
                raise Invalid(f"Object has unknown field `{extra[0]}`", at)
        for name, sub in props.items():
            if name in value:
                self._check(value[name], sub, f"{at}.{name}")

    def _array(self, value: list[Any], node: dict[str, Any], at: str) -> None:
        low, high = node.get("minItems"), node.get("maxItems")
        if isinstance(low, int) and len(value) < low:
            raise Invalid(f"Expected an array of at least {low} items, got {len(value)}", at)
        if isinstance(high, int) and len(value) > high:
            raise Invalid(f"Expected an array of at most {high} items, got {len(value)}", at)
        for i, item in enumerate(value):
            self._check(item, node["items"], f"{at}[{i}]")

    def _number(self, value: float, node: dict[str, Any], at: str) -> None:
        for key, ok, sign in _BOUNDS:
            bound = node.get(key)
            if isinstance(bound, int | float) and not ok(value, bound):
                raise Invalid(f"Expected a number {sign} {bound}, got {value!r}", at)
        step = node.get("multipleOf")
        if isinstance(step, int | float) and step > 0:
            ratio = value / step
            if not math.isclose(ratio, round(ratio), rel_tol=1e-9, abs_tol=1e-9):
                raise Invalid(f"Expected a multiple of {step}, got {value!r}", at)


_BOUNDS: tuple[tuple[str, Callable[[Any, Any], Any], str], ...] = (
    ("minimum", operator.ge, ">="), ("maximum", operator.le, "<="),
    ("exclusiveMinimum", operator.gt, ">"), ("exclusiveMaximum", operator.lt, "<"))


def _same(a: Any, b: Any) -> bool:
    # JSON equality: True is not 1
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) \
        else a == b


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind_of(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if JSON_TYPES[name](value):
            return "float" if name == "number" else name
    return type(value).__name__


