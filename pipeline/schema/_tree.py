"""Reading a schema tree: the small questions every part of the package asks of one node.

A *tree* here is a JSON Schema as a dict. After :func:`pipeline.schema._strict.normalize` it
holds only the strict-mode subset, with local references kept as ``{"$ref": "#/$defs/NAME"}``
and their targets under the root's ``$defs``; the helpers below read such trees and never
follow a reference on their own.

>>> types_of({"type": ["string", "null"]}) == {"string", "null"}
True
>>> ref_name("#/$defs/Place", "$.home")
'Place'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pipeline.errors import ConfigError

# The JSON types, each with the check that a decoded JSON value is of it (True is not a number).
JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def ref_name(ref: Any, where: str) -> str:
    """The definition a local ``$ref`` names; a :class:`ConfigError` for any other ref."""
    for prefix in ("#/$defs/", "#/definitions/"):
        if isinstance(ref, str) and ref.startswith(prefix) and "/" not in ref[len(prefix):]:
            return ref[len(prefix):]
    raise ConfigError(f"{where}: only local refs (#/$defs/NAME) are supported, got {ref!r}")


def types_of(node: dict[str, Any]) -> set[str]:
    """The JSON types a node names (``properties`` alone means an object)."""
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return {"object"} if "properties" in node else set()


def describe(node: dict[str, Any]) -> str:
    """The node's types for an error message (``"null/string"``)."""
    types = types_of(node)
    return "/".join(sorted(types)) if types else "a schema without a type"


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict in a schema tree, the node first (refs not followed)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def used_defs(root: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    """The names in ``defs`` that ``root`` reaches, through refs in refs too."""
    used: set[str] = set()
    todo = [root]
    while todo:
        for node in walk(todo.pop()):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = ref_name(ref, "$")
                if name not in used:
                    used.add(name)
                    todo.append(defs[name])
    return used
