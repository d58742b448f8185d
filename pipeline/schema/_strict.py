"""Strict mode: one clean schema tree, what is sent, and what strict mode cannot take.

OpenAI's strict structured outputs accept a subset of JSON Schema. :func:`normalize` turns a
schema (from msgspec, pydantic or a dict) into that subset: local refs kept under ``$defs``,
``oneOf`` as ``anyOf``, a one-part ``allOf`` merged, annotations strict mode may refuse (such as
``default``) dropped. Whatever the subset cannot express (free-form mappings, tuples, ``Any``,
``allOf``, ``minLength``...) is a :class:`~pipeline.errors.ConfigError` naming where it is,
raised when the schema is built, never a 400 for every row of a run. :func:`strict` then
closes every object (``additionalProperties: false``, every property ``required``): the schema
that is sent, and the one a JSON Schema dict's answers are checked against.
:func:`check_limits` holds it to the documented size limits.

>>> tree = normalize({"type": "object", "properties": {"n": {"type": "integer",
...                                                          "default": 0}}}, lenient=False)
>>> strict(tree)
{'type': 'object', 'properties': {'n': {'type': 'integer'}}, 'required': ['n'], \
'additionalProperties': False}
>>> normalize({"type": "object", "properties": {"n": {"type": "string", "minLength": 1}}},
...           lenient=False)
Traceback (most recent call last):
...
pipeline.errors.ConfigError: $.n: 'minLength' cannot be sent in strict mode \
(strict mode takes no string lengths; say it in the description)
"""

from __future__ import annotations

import copy
import re
from typing import Any

from pipeline.errors import ConfigError
from pipeline.schema._tree import JSON_TYPES, describe, ref_name, types_of, used_defs, walk

# OpenAI's documented strict-mode limits (Structured Outputs guide, "Supported schemas").
MAX_PROPERTIES = 5000
MAX_OBJECT_DEPTH = 10
MAX_ENUM_VALUES = 1000
# Keywords strict mode accepts, by what they do.
_STRUCTURE = {"type", "properties", "required", "additionalProperties", "items", "enum",
              "const", "anyOf", "$ref", "$defs", "definitions"}
_CONSTRAINTS = {"pattern", "format", "minimum", "maximum", "exclusiveMinimum",
                "exclusiveMaximum", "multipleOf", "minItems", "maxItems"}
_ANNOTATIONS = {"title", "description"}
# Annotations dropped before sending: they change no answer, and strict mode may refuse them.
_DROPPED = {"default", "examples", "$comment", "$schema", "$id", "readOnly", "writeOnly",
            "deprecated", "discriminator", "nullable"}
_FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6",
            "uuid"}
# What msgspec and pydantic emit to describe a Python type the decoder checks by itself (a set,
# bytes, a Decimal): dropped from what is sent, so the model sees the plain JSON type.
_TYPE_HINTS = {"uniqueItems", "contentEncoding", "contentMediaType"}
_HINTS = {"minLength": "strict mode takes no string lengths; say it in the description",
          "maxLength": "strict mode takes no string lengths; say it in the description",
          "prefixItems": "a fixed-length tuple: use a list or a Struct",
          "allOf": "combine the parts into one object",
          "not": "", "if": "", "then": "", "else": "", "dependentRequired": "",
          "dependentSchemas": "", "patternProperties": "name the keys as properties",
          "propertyNames": "name the keys as properties", "minProperties": "",
          "maxProperties": "", "unevaluatedProperties": "", "unevaluatedItems": "",
          "contains": "", "minContains": "", "maxContains": ""}


# -- normalizing: one clean tree, or a ConfigError naming what strict mode cannot take --------
def normalize(schema: dict[str, Any], *, lenient: bool) -> dict[str, Any]:
    """The schema with local refs kept under ``$defs``, annotations dropped, ``oneOf`` as
    ``anyOf``; a root ``$ref`` (msgspec's way) is inlined. ``lenient``: the decoder checks
    Python types itself, so their JSON Schema hints (``uniqueItems``, odd formats) may go."""
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        found = schema.pop(key, None)
        if isinstance(found, dict):
            defs.update(found)
    ref = schema.get("$ref") if set(schema) == {"$ref"} else None
    norm = _Normalizer(defs, lenient, ref_name(ref, "$") if ref is not None else None)
    root = norm.node(schema, "$")
    if set(root) == {"$ref"}:
        root = dict(norm.defs[ref_name(root["$ref"], "$")])
    if "anyOf" in root:
        raise ConfigError("the schema's root is a union (anyOf): strict mode needs one object "
                          "at the root; wrap the union in a field")
    if types_of(root) != {"object"}:
        raise ConfigError(f"the schema's root must be an object, got {describe(root)}")
    used = used_defs(root, norm.defs)
    if used:
        root["$defs"] = {k: norm.defs[k] for k in norm.defs if k in used}
    return root


class _Normalizer:
    """Normalizes one node at a time; the definitions first, so an error in one names it."""

    def __init__(self, raw_defs: dict[str, Any], lenient: bool, root: str | None) -> None:
        self.raw = raw_defs
        self.lenient = lenient
        self.defs: dict[str, Any] = {}
        for key, value in raw_defs.items():
            where = "$" if key == root else f"$defs.{key}"  # errors name the root as `$`
            if not isinstance(value, dict):
                raise ConfigError(f"{where} is not a schema object")
            self.defs[key] = self.node(value, where)

    def node(self, schema: Any, where: str, depth: int = 0) -> dict[str, Any]:
        if depth > 64:
            raise ConfigError(f"{where}: the schema nests deeper than 64 levels")
        if schema is True or schema == {}:
            raise ConfigError(f"{where}: any value (Any, an empty schema) cannot be expressed "
                              "in strict mode; give it a type")
        if not isinstance(schema, dict):
            raise ConfigError(f"{where}: a schema must be an object, got {schema!r}")
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key in _DROPPED or (self.lenient and key in _TYPE_HINTS):
                continue
            if key == "allOf" and isinstance(value, list) and len(value) == 1:
                continue  # merged below
            if key in _HINTS or key in _TYPE_HINTS:
                hint = _HINTS.get(key) or "strict mode does not support it"
                raise ConfigError(f"{where}: {key!r} cannot be sent in strict mode ({hint})")
            if key not in _STRUCTURE | _CONSTRAINTS | _ANNOTATIONS | {"oneOf"}:
                raise ConfigError(f"{where}: unknown or unsupported keyword {key!r}")
            out[key] = value
        merged = schema.get("allOf")
        if isinstance(merged, list) and len(merged) == 1:  # pydantic's wrapper around a $ref
            out = {**self.node(merged[0], f"{where}.allOf[0]", depth + 1), **out}
        if "oneOf" in out:  # the same answers when the branches do not overlap; the decoder
            out["anyOf"] = out.pop("oneOf")  # still checks the value
        if "format" in out and out["format"] not in _FORMATS:
            if not self.lenient:
                raise ConfigError(f"{where}: format {out['format']!r} is not one strict mode "
                                  f"supports ({', '.join(sorted(_FORMATS))})")
            del out["format"]
        if "$ref" in out:
            ref = ref_name(out["$ref"], where)
            if ref not in self.raw:
                raise ConfigError(f"{where}: $ref {out['$ref']!r} is not in $defs")
            if len(out) > 1:  # a ref with siblings: strict mode wants it inlined
                out = {**self.node(self.raw[ref], where, depth + 1),
                       **{k: v for k, v in out.items() if k != "$ref"}}
            return out
        if "anyOf" in out:
            branches = out["anyOf"]
            if not isinstance(branches, list) or not branches:
                raise ConfigError(f"{where}: anyOf must be a non-empty list")
            out["anyOf"] = [self.node(b, f"{where}.anyOf[{i}]", depth + 1)
                            for i, b in enumerate(branches)]
        for key in ("enum", "const"):
            if key in out and "type" not in out:
                values = out["enum"] if key == "enum" else [out["const"]]
                if not isinstance(values, list) or not values:
                    raise ConfigError(f"{where}: enum must be a non-empty list")
                out["type"] = _enum_types(values)
        types = types_of(out)
        unknown = types - set(JSON_TYPES)
        if unknown:
            raise ConfigError(f"{where}: unknown type {sorted(unknown)}")
        if not types and "anyOf" not in out:
            raise ConfigError(f"{where}: a schema without a type cannot be expressed in strict "
                              "mode")
        if "object" in types:
            self._object(out, where, depth)
        if "array" in types:
            items = out.get("items")
            if items is None or items is False:
                raise ConfigError(f"{where}: an array needs 'items' in strict mode")
            out["items"] = self.node(items, f"{where}[]", depth + 1)
        if "pattern" in out:
            try:
                re.compile(out["pattern"])
            except (re.error, TypeError) as exc:
                raise ConfigError(f"{where}: pattern {out['pattern']!r} is not a valid "
                                  f"regular expression: {exc}") from None
        return out

    def _object(self, out: dict[str, Any], where: str, depth: int) -> None:
        extra = out.get("additionalProperties", False)
        if extra is not False:
            raise ConfigError(f"{where}: an object with free-form keys (dict[str, X], "
                              "additionalProperties) cannot be expressed in strict mode; name "
                              "the fields in a Struct")
        props = out.get("properties")
        if not isinstance(props, dict) or not props:
            raise ConfigError(f"{where}: an object without properties cannot be expressed in "
                              "strict mode; name its fields")
        out["properties"] = {k: self.node(v, f"{where}.{k}", depth + 1)
                             for k, v in props.items()}
        required = out.get("required", [])
        if not isinstance(required, list) or set(required) - set(props):
            raise ConfigError(f"{where}: 'required' names fields that are not properties")


def _enum_types(values: list[Any]) -> str | list[str]:
    """The JSON type(s) of an enum's values, for an enum given without a type."""
    names = []
    for value in values:
        if value is None:
            name = "null"
        elif isinstance(value, bool):
            name = "boolean"
        elif isinstance(value, int):
            name = "integer"
        elif isinstance(value, float):
            name = "number"
        elif isinstance(value, str):
            name = "string"
        else:
            raise ConfigError(f"enum value {value!r}: strict mode takes strings, numbers, "
                              "booleans and null")
        if name not in names:
            names.append(name)
    return names[0] if len(names) == 1 else names


# -- strict: what is sent ----------------------------------------------------------------------
def strict(tree: dict[str, Any]) -> dict[str, Any]:
    """A copy of the normalized tree with every object closed and every property required."""
    out = copy.deepcopy(tree)
    for node in walk(out):
        if "object" in types_of(node) and isinstance(node.get("properties"), dict):
            node["required"] = list(node["properties"])
            node["additionalProperties"] = False
    return out


def check_limits(sent: dict[str, Any]) -> None:
    """A :class:`ConfigError` when the schema sent is past strict mode's size limits."""
    properties = enums = 0
    for node in walk(sent):
        props = node.get("properties")
        if isinstance(props, dict) and "object" in types_of(node):
            properties += len(props)
        if isinstance(node.get("enum"), list):
            enums += len(node["enum"])
    if properties > MAX_PROPERTIES:
        raise ConfigError(f"the schema has {properties} object properties; strict mode allows "
                          f"{MAX_PROPERTIES}")
    if enums > MAX_ENUM_VALUES:
        raise ConfigError(f"the schema has {enums} enum values; strict mode allows "
                          f"{MAX_ENUM_VALUES}")
    defs = sent.get("$defs", {})

    def depth(node: dict[str, Any], seen: frozenset[str]) -> int:
        best = 0
        stack: list[Any] = [node]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(item)
                continue
            if not isinstance(item, dict):
                continue
            ref = item.get("$ref")
            if isinstance(ref, str):
                name = ref_name(ref, "$")
                if name not in seen:  # a recursive schema is as deep as the answer makes it
                    best = max(best, depth(defs[name], seen | {name}))
                continue
            if isinstance(item.get("properties"), dict):
                best = max(best, 1 + max(depth(v, seen) for v in item["properties"].values()))
                continue
            stack.extend(v for k, v in item.items() if k in ("items", "anyOf"))
        return best

    levels = depth({k: v for k, v in sent.items() if k != "$defs"}, frozenset())
    if levels > MAX_OBJECT_DEPTH:
        raise ConfigError(f"the schema nests objects {levels} levels deep; strict mode allows "
                          f"{MAX_OBJECT_DEPTH}")

