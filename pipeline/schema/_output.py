"""The :class:`OutputSchema` itself: one object that knows what to send, how to read the
answer, and which columns it becomes; each part is done by a module beside this one (see
:mod:`pipeline.schema` for the contract).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar, overload

import msgspec

from pipeline.errors import ConfigError, SchemaValidationError
from pipeline.schema._columns import cells, layout
from pipeline.schema._dtypes import ColumnType, pandas_frame, polars_frame
from pipeline.schema._sources import NAME, Kind, read
from pipeline.schema._strict import check_limits, strict
from pipeline.schema._validate import Invalid

T = TypeVar("T")
_EXCERPT = 80  # characters of the answer quoted in an error: enough to see what went wrong


class OutputSchema(Generic[T]):
    """The schema of a structured answer; see :mod:`pipeline.schema`.

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
        if not NAME.match(name):
            raise ConfigError(f"schema name {name!r}: use 1-64 letters, digits, '_' or '-'")
        if not separator:
            raise ConfigError("separator must not be empty")
        self.source = source
        self.kind: Kind = kind
        self.name = name
        self.description = description
        self.separator = separator
        self._tree = tree  # normalized: what the user's schema requires, refs kept
        self._strict = strict(tree)
        check_limits(self._strict)
        self._decoder = decoder
        self._columns = layout(tree, separator)

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
        found = read(source)
        return OutputSchema(found.value, found.kind, found.tree, found.decoder,
                            name=name or found.name,
                            description=description or found.description, separator=separator)

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
        except Invalid as exc:
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
        return cells(self._columns, None if value is None else self._builtins(value))

    def _builtins(self, value: Any) -> Any:
        if isinstance(value, dict):  # already JSON-like (a journal's decoded value)
            return value
        if self.kind == "pydantic":
            return value.model_dump(mode="json", by_alias=True)
        return msgspec.to_builtins(value)

    def to_pandas(self, values: Sequence[T | None]) -> Any:
        """A pandas DataFrame of the answer columns, one row per value (``None``: nulls), with
        the dtypes of :meth:`column_types` even when there are no values."""
        return pandas_frame(self.column_types(), [self.columns(v) for v in values])

    def to_polars(self, values: Sequence[T | None]) -> Any:
        """A Polars DataFrame of the answer columns, typed as :meth:`column_types` says."""
        return polars_frame(self.column_types(), [self.columns(v) for v in values])

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


def _excerpt(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return repr(text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else ""))
