"""Column layout: an answer as flat, typed columns.

:func:`layout` reads a normalized tree once and lays out its columns: a nested object (or an
optional one) spreads into one column per field, named by joining the field names with the
separator (``review.score``); a list, a union of types, or a recursive reference stays one
column. Two fields that flatten to one name are a :class:`~pipeline.errors.ConfigError`.
:func:`cells` then reads one JSON-like value (``None`` for a failed row) into those columns.

>>> columns = layout({"type": "object", "properties": {
...     "score": {"type": "integer"},
...     "place": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {
...         "city": {"type": "string"}}}]}}}, ".")
>>> [(c.name, c.type.kind) for c in columns]
[('score', 'integer'), ('place.city', 'string')]
>>> cells(columns, {"score": 4, "place": None})
{'score': 4, 'place.city': None}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from pipeline.errors import ConfigError
from pipeline.schema._dtypes import ColumnType
from pipeline.schema._tree import ref_name, types_of


class Column(msgspec.Struct, frozen=True):
    """One answer column: its ``name``, the ``keys`` from the answer's root to its cell, and
    its :class:`ColumnType`."""

    name: str
    keys: tuple[str, ...]
    type: ColumnType


def cells(columns: Sequence[Column], data: Any) -> dict[str, Any]:
    """Column name -> cell of a JSON-like value (``None``, or a missing object on the way:
    ``None`` cells)."""
    out: dict[str, Any] = {}
    for column in columns:
        cell: Any = data
        for key in column.keys:
            cell = cell.get(key) if isinstance(cell, dict) else None
        out[column.name] = cell
    return out


def layout(tree: dict[str, Any], separator: str) -> list[Column]:
    """The columns of a normalized tree, in schema order."""
    defs: dict[str, Any] = tree.get("$defs", {})
    columns: list[Column] = []

    def deref(node: dict[str, Any], seen: frozenset[str]) -> tuple[dict[str, Any], frozenset[str]]:
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref_name(ref, "$")
            return defs[name], seen | {name}
        return node, seen

    def non_null(node: dict[str, Any]) -> list[dict[str, Any]]:
        if "anyOf" in node:
            return [b for b in node["anyOf"] if types_of(b) != {"null"}]
        return [node]

    def type_of(node: dict[str, Any], seen: frozenset[str]) -> ColumnType:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref_name(ref, "$") in seen:
            return ColumnType("object")  # recursive: kept whole
        node, seen = deref(node, seen)
        branches = non_null(node)
        if len(branches) != 1:
            kinds = {type_of(b, seen).kind for b in branches}
            return ColumnType("number") if kinds == {"integer", "number"} else ColumnType("any")
        if branches[0] is not node:
            return type_of(branches[0], seen)
        types = types_of(node) - {"null"}
        if types == {"integer", "number"}:
            return ColumnType("number")
        if len(types) != 1:
            return ColumnType("any")
        (kind,) = types
        if kind == "array":
            return ColumnType("list", type_of(node["items"], seen))
        if kind == "object":
            return ColumnType("object", None, {k: type_of(v, seen)
                                               for k, v in node["properties"].items()})
        return ColumnType(kind)

    def recursive(node: dict[str, Any], seen: frozenset[str]) -> bool:
        ref = node.get("$ref")
        return isinstance(ref, str) and ref_name(ref, "$") in seen

    def visit(node: dict[str, Any], keys: tuple[str, ...], seen: frozenset[str]) -> None:
        # A nested object (or an optional one) spreads into one column per field; a list, a
        # union of types, or a recursive reference stays one column.
        if not recursive(node, seen):
            target, inner = deref(node, seen)
            branches = non_null(target)
            if len(branches) == 1 and not recursive(branches[0], inner):
                one, inner = deref(branches[0], inner)
                if types_of(one) - {"null"} == {"object"} and isinstance(one.get("properties"),
                                                                        dict):
                    for name, sub in one["properties"].items():
                        visit(sub, (*keys, name), inner)
                    return
        columns.append(Column(separator.join(keys), keys, type_of(node, seen)))

    visit(tree, (), frozenset())
    names = [c.name for c in columns]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise ConfigError(f"two fields flatten to the column {clash!r}: choose another "
                          f"separator than {separator!r}")
    return columns

