"""The answer's schema for structured outputs: what to ask for, how to read it, which columns.

An :class:`OutputSchema` is built from a msgspec Struct type, a JSON Schema dict, or a pydantic
model class (pydantic is only looked at when the caller has already imported it). It gives

- :meth:`~OutputSchema.response_format`: the OpenAI ``response_format`` body value, with the
  schema rewritten the way strict mode requires (every object ``additionalProperties: false``
  and every property ``required``; ``oneOf`` as ``anyOf``; annotations strict mode rejects,
  such as ``default``, dropped). What strict mode cannot express (free-form mappings, tuples,
  ``Any``, ``allOf``, ``minLength``...) is a :class:`~pipeline.errors.ConfigError` when the
  schema is built, never a 400 for every row of a run;
- :meth:`~OutputSchema.decode`: the answer text as a typed value, or a
  :class:`~pipeline.errors.SchemaValidationError` naming the field that failed;
- :meth:`~OutputSchema.columns` and :meth:`~OutputSchema.column_types`: the value as flat
  columns (``review.score``) with their types, so a frame whose rows all failed still has
  typed, null-filled answer columns.

>>> import msgspec
>>> class Review(msgspec.Struct):
...     sentiment: str
...     score: int
>>> schema = OutputSchema.of(Review)
>>> schema.response_format()["json_schema"]["schema"]["required"]
['sentiment', 'score']
>>> schema.decode('{"sentiment": "positive", "score": 4}')
Review(sentiment='positive', score=4)
>>> schema.decode('{"sentiment": "positive", "score": "four"}')
Traceback (most recent call last):
...
pipeline.errors.SchemaValidationError: answer does not fit 'Review' at `$.score`: \
Expected `int`, got `str`; answer: '{"sentiment": "positive", "score": "four"}'
"""

from __future__ import annotations

import copy
import hashlib
import math
import operator
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar, overload

import msgspec

from pipeline.errors import ConfigError, SchemaValidationError

__all__ = ["ColumnType", "OutputSchema", "output_schema"]

T = TypeVar("T")
Kind = Literal["struct", "json_schema", "pydantic"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EXCERPT = 80  # characters of the answer quoted in an error: enough to see what went wrong
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


class ColumnType(msgspec.Struct, frozen=True):
    """The type of one answer column.

    ``kind`` is the JSON type: ``"string"``, ``"integer"``, ``"number"``, ``"boolean"``,
    ``"list"`` (``items`` is the element type), ``"object"`` (a nested value kept whole:
    ``fields`` when known), or ``"any"`` (a union of several types). Every column is
    nullable: a failed row gets nulls, and the row's ``error`` says why.

    >>> ColumnType("integer").pandas, ColumnType("list", ColumnType("number")).python
    ('Int64', <class 'list'>)
    """

    kind: str
    items: ColumnType | None = None
    fields: dict[str, ColumnType] | None = None

    _PYTHON: ClassVar[dict[str, type]] = {"string": str, "integer": int, "number": float,
                                          "boolean": bool, "list": list, "object": dict,
                                          "any": object}
    # Nullable extension dtypes, so a null is <NA> in an int column, never a float NaN.
    _PANDAS: ClassVar[dict[str, str]] = {"string": "string", "integer": "Int64",
                                         "number": "Float64", "boolean": "boolean"}

    @property
    def python(self) -> type:
        """The Python type of a cell (``str``, ``int``, ``float``, ``bool``, ``list``,
        ``dict``, or ``object`` for a union)."""
        return self._PYTHON[self.kind]

    @property
    def pandas(self) -> str:
        """The pandas dtype name (``"Int64"``, ``"Float64"``, ``"boolean"``, ``"string"``,
        ``"object"`` for lists, nested values and unions)."""
        return self._PANDAS.get(self.kind, "object")

    def polars(self) -> Any:
        """The Polars dtype (imports polars): ``pl.Int64``, ``pl.List(pl.Float64)``,
        ``pl.Struct(...)``; ``pl.Object`` for a union."""
        import polars as pl

        scalar = {"string": pl.String, "integer": pl.Int64, "number": pl.Float64,
                  "boolean": pl.Boolean}
        if self.kind in scalar:
            return scalar[self.kind]
        if self.kind == "list" and self.items is not None:
            inner = self.items.polars()
            return pl.Object if inner == pl.Object else pl.List(inner)
        if self.kind == "object" and self.fields:
            fields = {name: t.polars() for name, t in self.fields.items()}
            if pl.Object not in fields.values():
                return pl.Struct(fields)
        return pl.Object


class _Column(msgspec.Struct, frozen=True):
    name: str
    keys: tuple[str, ...]
    type: ColumnType


class OutputSchema(Generic[T]):
    """The schema of a structured answer; see the module docs.

    Build one with :meth:`of` (or :func:`output_schema`), which takes a msgspec Struct type,
    a JSON Schema dict, a pydantic model class, or an OutputSchema. ``name`` (letters, digits,
    ``_`` and ``-``, at most 64) defaults to the type's name or the dict's ``title``;
    ``separator`` joins nested field names into column names.

    >>> schema = OutputSchema.of({"type": "object", "title": "label", "properties": {
    ...     "label": {"enum": ["spam", "ham"]}, "why": {"type": ["string", "null"]}}})
    >>> schema.decode('{"label": "spam", "why": null}')
    {'label': 'spam', 'why': None}
    >>> schema.decode('{"label": "eggs", "why": null}')
    Traceback (most recent call last):
    ...
    pipeline.errors.SchemaValidationError: answer does not fit 'label' at `$.label`: \
'eggs' is not one of ['spam', 'ham']; answer: '{"label": "eggs", "why": null}'
    """

    __slots__ = ("_columns", "_decoder", "_strict", "_tree", "description", "kind", "name",
                 "separator", "source")

    def __init__(self, source: Any, kind: Kind, tree: dict[str, Any],
                 decoder: Callable[[str | bytes], T], *, name: str,
                 description: str | None = None, separator: str = ".") -> None:
        if not _NAME.match(name):
            raise ConfigError(f"schema name {name!r}: use 1-64 letters, digits, '_' or '-'")
        if not separator:
            raise ConfigError("separator must not be empty")
        self.source = source
        self.kind: Kind = kind
        self.name = name
        self.description = description
        self.separator = separator
        self._tree = tree  # normalized: what the user's schema requires, refs kept
        self._strict = _strict(tree)
        _check_limits(self._strict)
        self._decoder = decoder
        self._columns = _layout(tree, separator)

    # -- construction ------------------------------------------------------------------------
    @overload
    @classmethod
    def of(cls, source: OutputSchema[T], *, name: str | None = ...,
           description: str | None = ..., separator: str = ...) -> OutputSchema[T]: ...
    @overload
    @classmethod
    def of(cls, source: type[T], *, name: str | None = ..., description: str | None = ...,
           separator: str = ...) -> OutputSchema[T]: ...
    @overload
    @classmethod
    def of(cls, source: Mapping[str, Any], *, name: str | None = ...,
           description: str | None = ...,
           separator: str = ...) -> OutputSchema[dict[str, Any]]: ...
    @classmethod
    def of(cls, source: Any, *, name: str | None = None, description: str | None = None,
           separator: str = ".") -> OutputSchema[Any]:
        """The schema of ``source``: a msgspec Struct type, a JSON Schema dict, a pydantic
        model class, or an OutputSchema (returned as is unless options are given)."""
        if isinstance(source, OutputSchema):
            if name is None and description is None and separator == source.separator:
                return source
            return OutputSchema(source.source, source.kind, source._tree, source._decoder,
                                name=name or source.name,
                                description=description or source.description,
                                separator=separator)
        if isinstance(source, type) and issubclass(source, msgspec.Struct):
            return _from_struct(source, name, description, separator)
        if _is_pydantic_model(source):
            return _from_pydantic(source, name, description, separator)
        if isinstance(source, Mapping):
            return _from_json_schema(source, name, description, separator)
        raise ConfigError(f"a schema is a msgspec Struct type, a JSON Schema dict or a pydantic "
                          f"model class, got {source!r}")

    # -- what is sent ------------------------------------------------------------------------
    @property
    def schema(self) -> dict[str, Any]:
        """The strict-mode JSON Schema sent to the provider (a copy)."""
        return copy.deepcopy(self._strict)

    def response_format(self) -> dict[str, Any]:
        """The ``response_format`` value of a chat completions body.

        >>> import msgspec
        >>> class Tag(msgspec.Struct):
        ...     tag: str
        >>> OutputSchema.of(Tag).response_format()  # doctest: +NORMALIZE_WHITESPACE
        {'type': 'json_schema', 'json_schema': {'name': 'Tag', 'schema': {'title': 'Tag',
         'type': 'object', 'properties': {'tag': {'type': 'string'}}, 'required': ['tag'],
         'additionalProperties': False}, 'strict': True}}
        """
        spec: dict[str, Any] = {"name": self.name}
        if self.description:
            spec["description"] = self.description
        spec["schema"] = self.schema
        spec["strict"] = True
        return {"type": "json_schema", "json_schema": spec}

    # -- what comes back ---------------------------------------------------------------------
    def decode(self, text: str | bytes) -> T:
        """The answer text as a value of the schema's type (a Struct, a pydantic model, or
        for a JSON Schema dict the validated JSON value). Raises
        :class:`SchemaValidationError`."""
        if not text or not text.strip():
            raise SchemaValidationError(f"answer for {self.name!r} is empty", reason="empty")
        try:
            return self._decoder(text)
        except _Invalid as exc:
            raise self._error(text, exc.reason, exc.field, exc.not_json) from None

    def decode_response(self, body: Mapping[str, Any]) -> T:
        """Decode the first choice of a chat completion response body: a refusal, or an
        answer cut at ``max_tokens``, is a :class:`SchemaValidationError` saying so.

        >>> schema = OutputSchema.of({"type": "object", "properties": {"n": {"type": "integer"}}})
        >>> schema.decode_response({"choices": [{"message": {"content": '{"n": 1}'},
        ...                                      "finish_reason": "stop"}]})
        {'n': 1}
        """
        choices = body.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(message, dict):
            raise SchemaValidationError("the response has no message to decode", reason="empty")
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            raise SchemaValidationError(f"the model refused: {_excerpt(refusal)}",
                                        excerpt=_excerpt(refusal), reason="refusal")
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        if first is not None and first.get("finish_reason") == "length":
            raise SchemaValidationError(
                f"answer for {self.name!r} was cut at max_tokens (finish_reason 'length'); "
                f"raise max_tokens; answer: {_excerpt(text)}", excerpt=_excerpt(text),
                reason="truncated")
        return self.decode(text)

    def _error(self, text: str | bytes, reason: str, field: str | None,
               not_json: bool) -> SchemaValidationError:
        excerpt = _excerpt(text)
        if not_json:
            return SchemaValidationError(
                f"answer for {self.name!r} is not JSON ({reason}); answer: {excerpt}",
                excerpt=excerpt, reason="not_json")
        where = f" at `{field}`" if field else ""
        return SchemaValidationError(
            f"answer does not fit {self.name!r}{where}: {reason}; answer: {excerpt}",
            field=field, excerpt=excerpt)

    # -- columns -----------------------------------------------------------------------------
    def column_types(self) -> dict[str, ColumnType]:
        """Column name -> :class:`ColumnType`, in schema order; nested objects are flattened
        (``"address.city"``), lists stay one column.

        >>> import msgspec
        >>> Place = msgspec.defstruct("Place", [("city", str)])
        >>> Person = msgspec.defstruct("Person", [("age", int), ("home", Place | None),
        ...                                       ("tags", list[str])])
        >>> {k: t.pandas for k, t in OutputSchema.of(Person).column_types().items()}
        {'age': 'Int64', 'home.city': 'string', 'tags': 'object'}
        """
        return {c.name: c.type for c in self._columns}

    def columns(self, value: T | None) -> dict[str, Any]:
        """The value as flat columns (``None``, a failed row: every column ``None``). Values
        are JSON-like: a datetime or an enum becomes its JSON text, a nested list of structs a
        list of dicts.

        >>> import msgspec
        >>> Place = msgspec.defstruct("Place", [("city", str)])
        >>> Person = msgspec.defstruct("Person", [("age", int), ("home", Place | None),
        ...                                       ("tags", list[str])])
        >>> schema = OutputSchema.of(Person)
        >>> schema.columns(Person(41, Place("Oslo"), ["a"]))
        {'age': 41, 'home.city': 'Oslo', 'tags': ['a']}
        >>> schema.columns(None)
        {'age': None, 'home.city': None, 'tags': None}
        """
        data = None if value is None else self._builtins(value)
        out: dict[str, Any] = {}
        for column in self._columns:
            cell: Any = data
            for key in column.keys:
                cell = cell.get(key) if isinstance(cell, dict) else None
            out[column.name] = cell
        return out

    def _builtins(self, value: Any) -> Any:
        if isinstance(value, dict):  # already JSON-like (a journal's decoded value)
            return value
        if self.kind == "pydantic":
            return value.model_dump(mode="json", by_alias=True)
        return msgspec.to_builtins(value)

    def to_pandas(self, values: Sequence[T | None]) -> Any:
        """A pandas DataFrame of the answer columns, one row per value (``None``: nulls), with
        the dtypes of :meth:`column_types` even when there are no values."""
        import pandas as pd

        data = [self.columns(v) for v in values]
        frame = {}
        for name, kind in self.column_types().items():
            cells = [row[name] for row in data]
            if kind.pandas == "object":
                frame[name] = pd.Series(cells, dtype="object")
            else:
                frame[name] = pd.Series(pd.array(cells, dtype=kind.pandas))
        return pd.DataFrame(frame, index=pd.RangeIndex(len(data)))

    def to_polars(self, values: Sequence[T | None]) -> Any:
        """A Polars DataFrame of the answer columns, typed as :meth:`column_types` says."""
        import polars as pl

        data = [self.columns(v) for v in values]
        return pl.DataFrame([pl.Series(name, [row[name] for row in data], dtype=kind.polars())
                             for name, kind in self.column_types().items()])

    @property
    def fingerprint(self) -> str:
        """A short hash of what is sent (:meth:`response_format`) and how it becomes columns:
        it names the schema in a builder's repr, so a resume journal of another schema is
        not taken for this one's.

        >>> OutputSchema.of({"type": "object", "properties": {"n": {"type": "integer"}}}
        ...                 ).fingerprint == OutputSchema.of({"type": "object", "properties": {
        ...                     "n": {"type": "integer"}}}).fingerprint
        True
        """
        text = msgspec.json.encode([self.kind, self.separator, self.response_format()],
                                   order="deterministic")
        return hashlib.sha256(text).hexdigest()[:12]

    def __eq__(self, other: object) -> bool:
        # Equal when they send the same schema, decode into the same type and lay out the
        # same columns (two OutputSchema.of(Review) calls make equal builders).
        if not isinstance(other, OutputSchema):
            return NotImplemented
        same_source = self.source is other.source if self.kind != "json_schema" else \
            self.source == other.source
        return same_source and self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        names = [c.name for c in self._columns]
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        return f"OutputSchema({self.name!r}, {self.kind}, columns=[{shown}])"


@overload
def output_schema(source: OutputSchema[T]) -> OutputSchema[T]: ...
@overload
def output_schema(source: type[T]) -> OutputSchema[T]: ...
@overload
def output_schema(source: Mapping[str, Any]) -> OutputSchema[dict[str, Any]]: ...
def output_schema(source: Any) -> OutputSchema[Any]:
    """:meth:`OutputSchema.of` with its defaults: the one place that accepts every schema form.

    >>> output_schema({"type": "object", "properties": {"ok": {"type": "boolean"}}})
    OutputSchema('answer', json_schema, columns=[ok])
    """
    return OutputSchema.of(source)


# -- the three sources --------------------------------------------------------------------------
class _Invalid(Exception):
    def __init__(self, reason: str, field: str | None = None, not_json: bool = False,
                 wrong_type: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.not_json = not_json
        self.wrong_type = wrong_type


_AT = re.compile(r"^(.*) - at `(\$[^`]*)`$", re.DOTALL)


def _from_struct(cls: type[Any], name: str | None, description: str | None,
                 separator: str) -> OutputSchema[Any]:
    tree = _normalize_root(msgspec.json.schema(cls), lenient=True)
    decoder = msgspec.json.Decoder(cls)

    def decode(text: str | bytes) -> Any:
        try:
            return decoder.decode(text)
        except msgspec.ValidationError as exc:
            match = _AT.match(str(exc))
            if match:
                raise _Invalid(match.group(1), match.group(2)) from None
            raise _Invalid(str(exc), "$") from None
        except msgspec.DecodeError as exc:
            raise _Invalid(str(exc), not_json=True) from None

    return OutputSchema(cls, "struct", tree, decode, name=name or cls.__name__,
                        description=description, separator=separator)


def _from_json_schema(source: Mapping[str, Any], name: str | None, description: str | None,
                      separator: str) -> OutputSchema[Any]:
    tree = _normalize_root(copy.deepcopy(dict(source)), lenient=False)
    # The answer must fit what was asked for: the strict schema sent, where every property
    # is required and none other allowed (a file without "required" must not let a field
    # the provider left out become a silent null).
    validator = _Validator(_strict(tree))

    def decode(text: str | bytes) -> Any:
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise _Invalid(str(exc), not_json=True) from None
        validator.check(value)
        return value

    title = source.get("title")
    default = title if isinstance(title, str) and _NAME.match(title) else "answer"
    desc = source.get("description")
    return OutputSchema(dict(source), "json_schema", tree, decode, name=name or default,
                        description=description or (desc if isinstance(desc, str) else None),
                        separator=separator)


def _is_pydantic_model(source: Any) -> bool:
    pydantic = sys.modules.get("pydantic")  # a model class exists only if pydantic is imported
    return (pydantic is not None and isinstance(source, type)
            and issubclass(source, pydantic.BaseModel))


def _from_pydantic(model: Any, name: str | None, description: str | None,
                   separator: str) -> OutputSchema[Any]:
    import pydantic

    tree = _normalize_root(model.model_json_schema(), lenient=True)

    def decode(text: str | bytes) -> Any:
        try:
            return model.model_validate_json(text)
        except pydantic.ValidationError as exc:
            errors = exc.errors()
            first = errors[0] if errors else {"type": "", "loc": (), "msg": str(exc)}
            if first.get("type") == "json_invalid":
                raise _Invalid(str(first.get("msg")), not_json=True) from None
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise _Invalid(f"{first.get('msg')}{more}", _path(first.get("loc", ()))) from None

    doc = (model.__doc__ or "").strip()
    return OutputSchema(model, "pydantic", tree, decode, name=name or model.__name__,
                        description=description or (doc.splitlines()[0] if doc else None),
                        separator=separator)


def _path(parts: Sequence[Any]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _excerpt(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return repr(text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else ""))


# -- normalizing: one clean tree, or a ConfigError naming what strict mode cannot take --------
def _normalize_root(schema: dict[str, Any], *, lenient: bool) -> dict[str, Any]:
    """The schema with local refs kept under ``$defs``, annotations dropped, ``oneOf`` as
    ``anyOf``; a root ``$ref`` (msgspec's way) is inlined. ``lenient``: the decoder checks
    Python types itself, so their JSON Schema hints (``uniqueItems``, odd formats) may go."""
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        found = schema.pop(key, None)
        if isinstance(found, dict):
            defs.update(found)
    ref = schema.get("$ref") if set(schema) == {"$ref"} else None
    norm = _Normalizer(defs, lenient, _ref_name(ref, "$") if ref is not None else None)
    root = norm.node(schema, "$")
    if set(root) == {"$ref"}:
        root = dict(norm.defs[_ref_name(root["$ref"], "$")])
    if "anyOf" in root:
        raise ConfigError("the schema's root is a union (anyOf): strict mode needs one object "
                          "at the root; wrap the union in a field")
    if _types(root) != {"object"}:
        raise ConfigError(f"the schema's root must be an object, got {_describe(root)}")
    used = _used_defs(root, norm.defs)
    if used:
        root["$defs"] = {k: norm.defs[k] for k in norm.defs if k in used}
    return root


class _Normalizer:
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
            ref = _ref_name(out["$ref"], where)
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
                out["type"] = _json_types(values)
        types = _types(out)
        unknown = types - set(_Validator.CHECKS)
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


def _ref_name(ref: Any, where: str) -> str:
    for prefix in ("#/$defs/", "#/definitions/"):
        if isinstance(ref, str) and ref.startswith(prefix) and "/" not in ref[len(prefix):]:
            return ref[len(prefix):]
    raise ConfigError(f"{where}: only local refs (#/$defs/NAME) are supported, got {ref!r}")


def _json_types(values: list[Any]) -> str | list[str]:
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


def _types(node: dict[str, Any]) -> set[str]:
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return {"object"} if "properties" in node else set()


def _describe(node: dict[str, Any]) -> str:
    types = _types(node)
    return "/".join(sorted(types)) if types else "a schema without a type"


def _walk(node: Any) -> Any:
    """Every dict in a schema tree (refs not followed)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _used_defs(root: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    used: set[str] = set()
    todo = [root]
    while todo:
        for node in _walk(todo.pop()):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = _ref_name(ref, "$")
                if name not in used:
                    used.add(name)
                    todo.append(defs[name])
    return used


# -- strict: what is sent ----------------------------------------------------------------------
def _strict(tree: dict[str, Any]) -> dict[str, Any]:
    """A copy of the normalized tree with every object closed and every property required."""
    out = copy.deepcopy(tree)
    for node in _walk(out):
        if "object" in _types(node) and isinstance(node.get("properties"), dict):
            node["required"] = list(node["properties"])
            node["additionalProperties"] = False
    return out


def _check_limits(strict: dict[str, Any]) -> None:
    properties = enums = 0
    for node in _walk(strict):
        props = node.get("properties")
        if isinstance(props, dict) and "object" in _types(node):
            properties += len(props)
        if isinstance(node.get("enum"), list):
            enums += len(node["enum"])
    if properties > MAX_PROPERTIES:
        raise ConfigError(f"the schema has {properties} object properties; strict mode allows "
                          f"{MAX_PROPERTIES}")
    if enums > MAX_ENUM_VALUES:
        raise ConfigError(f"the schema has {enums} enum values; strict mode allows "
                          f"{MAX_ENUM_VALUES}")
    defs = strict.get("$defs", {})

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
                name = _ref_name(ref, "$")
                if name not in seen:  # a recursive schema is as deep as the answer makes it
                    best = max(best, depth(defs[name], seen | {name}))
                continue
            if isinstance(item.get("properties"), dict):
                best = max(best, 1 + max(depth(v, seen) for v in item["properties"].values()))
                continue
            stack.extend(v for k, v in item.items() if k in ("items", "anyOf"))
        return best

    levels = depth({k: v for k, v in strict.items() if k != "$defs"}, frozenset())
    if levels > MAX_OBJECT_DEPTH:
        raise ConfigError(f"the schema nests objects {levels} levels deep; strict mode allows "
                          f"{MAX_OBJECT_DEPTH}")


# -- validating a JSON value (JSON Schema dicts; no jsonschema package at runtime) -------------
class _Validator:
    """Checks a decoded JSON value against a normalized tree: the strict-mode subset."""

    CHECKS: ClassVar[dict[str, Callable[[Any], bool]]] = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }

    def __init__(self, tree: dict[str, Any]) -> None:
        self.tree = tree
        self.defs: dict[str, Any] = tree.get("$defs", {})

    def check(self, value: Any) -> None:
        self._check(value, self.tree, "$")

    def _check(self, value: Any, node: dict[str, Any], at: str) -> None:
        ref = node.get("$ref")
        if isinstance(ref, str):
            node = self.defs[_ref_name(ref, at)]
        if "anyOf" in node:
            failures = []
            for branch in node["anyOf"]:
                try:
                    self._check(value, branch, at)
                except _Invalid as exc:
                    failures.append(exc)
                else:
                    break
            else:
                # The branch whose type fits says best what is wrong (a nullable object with a
                # bad field); when no type fits, say so.
                fitting = [e for e in failures if not e.wrong_type or e.field != at]
                if len(fitting) == 1:
                    raise fitting[0]
                raise _Invalid(f"{_short(value)} matches none of {len(failures)} alternatives",
                               at)
        types = _types(node)
        if types and not any(self.CHECKS[t](value) for t in types if t in self.CHECKS):
            raise _Invalid(f"Expected {' or '.join(sorted(types))}, got {_kind_of(value)}", at,
                           wrong_type=True)
        if "enum" in node and not any(_same(value, v) for v in node["enum"]):
            raise _Invalid(f"{_short(value)} is not one of {node['enum']!r}", at)
        if "const" in node and not _same(value, node["const"]):
            raise _Invalid(f"{_short(value)} is not {node['const']!r}", at)
        if isinstance(value, dict) and isinstance(node.get("properties"), dict):
            self._object(value, node, at)
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            self._array(value, node, at)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            self._number(value, node, at)
        elif isinstance(value, str) and "pattern" in node \
                and re.search(node["pattern"], value) is None:
            raise _Invalid(f"{_short(value)} does not match pattern {node['pattern']!r}", at)

    def _object(self, value: dict[str, Any], node: dict[str, Any], at: str) -> None:
        props: dict[str, Any] = node["properties"]
        for name in node.get("required", ()):
            if name not in value:
                raise _Invalid(f"Object missing required field `{name}`", at)
        if node.get("additionalProperties") is False:
            extra = [k for k in value if k not in props]
            if extra:
                raise _Invalid(f"Object has unknown field `{extra[0]}`", at)
        for name, sub in props.items():
            if name in value:
                self._check(value[name], sub, f"{at}.{name}")

    def _array(self, value: list[Any], node: dict[str, Any], at: str) -> None:
        low, high = node.get("minItems"), node.get("maxItems")
        if isinstance(low, int) and len(value) < low:
            raise _Invalid(f"Expected an array of at least {low} items, got {len(value)}", at)
        if isinstance(high, int) and len(value) > high:
            raise _Invalid(f"Expected an array of at most {high} items, got {len(value)}", at)
        for i, item in enumerate(value):
            self._check(item, node["items"], f"{at}[{i}]")

    def _number(self, value: float, node: dict[str, Any], at: str) -> None:
        for key, ok, sign in _BOUNDS:
            bound = node.get(key)
            if isinstance(bound, int | float) and not ok(value, bound):
                raise _Invalid(f"Expected a number {sign} {bound}, got {value!r}", at)
        step = node.get("multipleOf")
        if isinstance(step, int | float) and step > 0:
            ratio = value / step
            if not math.isclose(ratio, round(ratio), rel_tol=1e-9, abs_tol=1e-9):
                raise _Invalid(f"Expected a multiple of {step}, got {value!r}", at)


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
        if _Validator.CHECKS[name](value):
            return "float" if name == "number" else name
    return type(value).__name__


# -- columns -----------------------------------------------------------------------------------
def _layout(tree: dict[str, Any], separator: str) -> list[_Column]:
    defs: dict[str, Any] = tree.get("$defs", {})
    columns: list[_Column] = []

    def deref(node: dict[str, Any], seen: frozenset[str]) -> tuple[dict[str, Any], frozenset[str]]:
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = _ref_name(ref, "$")
            return defs[name], seen | {name}
        return node, seen

    def non_null(node: dict[str, Any]) -> list[dict[str, Any]]:
        if "anyOf" in node:
            return [b for b in node["anyOf"] if _types(b) != {"null"}]
        return [node]

    def type_of(node: dict[str, Any], seen: frozenset[str]) -> ColumnType:
        ref = node.get("$ref")
        if isinstance(ref, str) and _ref_name(ref, "$") in seen:
            return ColumnType("object")  # recursive: kept whole
        node, seen = deref(node, seen)
        branches = non_null(node)
        if len(branches) != 1:
            kinds = {type_of(b, seen).kind for b in branches}
            return ColumnType("number") if kinds == {"integer", "number"} else ColumnType("any")
        if branches[0] is not node:
            return type_of(branches[0], seen)
        types = _types(node) - {"null"}
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
        return isinstance(ref, str) and _ref_name(ref, "$") in seen

    def visit(node: dict[str, Any], keys: tuple[str, ...], seen: frozenset[str]) -> None:
        # A nested object (or an optional one) spreads into one column per field; a list, a
        # union of types, or a recursive reference stays one column.
        if not recursive(node, seen):
            target, inner = deref(node, seen)
            branches = non_null(target)
            if len(branches) == 1 and not recursive(branches[0], inner):
                one, inner = deref(branches[0], inner)
                if _types(one) - {"null"} == {"object"} and isinstance(one.get("properties"),
                                                                        dict):
                    for name, sub in one["properties"].items():
                        visit(sub, (*keys, name), inner)
                    return
        columns.append(_Column(separator.join(keys), keys, type_of(node, seen)))

    visit(tree, (), frozenset())
    names = [c.name for c in columns]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise ConfigError(f"two fields flatten to the column {clash!r}: choose another "
                          f"separator than {separator!r}")
    return columns

