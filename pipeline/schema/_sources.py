"""Where a schema comes from: a msgspec Struct type, a JSON Schema dict, or a pydantic model.

:func:`read` turns each into a :class:`Source`: the normalized tree (see
:mod:`pipeline.schema._strict`), a decoder from answer text to the source's own type, and the
default name and description. Every decoder raises :class:`~pipeline.schema._validate.Invalid`
for an answer that does not fit, so all three read alike in an error:

- a Struct: msgspec's typed decoder (its error's ``- at `$.x``` becomes the field);
- a JSON Schema dict: plain JSON, then checked against the strict schema that is sent, where
  every property is required and none other allowed;
- a pydantic model: ``model_validate_json``. pydantic is only looked at when the caller has
  already imported it: a model class cannot exist otherwise, and importing it costs time.

>>> found = read({"type": "object", "title": "tag", "properties": {"t": {"type": "string"}}})
>>> found.kind, found.name, found.decoder('{"t": "x"}')
('json_schema', 'tag', {'t': 'x'})
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import msgspec

from pipeline.errors import ConfigError
from pipeline.schema._strict import normalize, strict
from pipeline.schema._validate import Invalid, Validator

Kind = Literal["struct", "json_schema", "pydantic"]
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what the API takes as a json_schema name
_AT = re.compile(r"^(.*) - at `(\$[^`]*)`$", re.DOTALL)


class Source(NamedTuple):
    """A schema source read: what it was, its normalized tree, how its answers decode."""

    value: Any
    kind: Kind
    tree: dict[str, Any]
    decoder: Callable[[str | bytes], Any]
    name: str
    description: str | None


def read(source: Any) -> Source:
    """The :class:`Source` of a msgspec Struct type, a pydantic model class or a JSON Schema
    dict; a :class:`ConfigError` for anything else or a schema strict mode cannot take."""
    if isinstance(source, type) and issubclass(source, msgspec.Struct):
        return _from_struct(source)
    if _is_pydantic_model(source):
        return _from_pydantic(source)
    if isinstance(source, Mapping):
        return _from_json_schema(source)
    raise ConfigError(f"a schema is a msgspec Struct type, a JSON Schema dict or a pydantic "
                      f"model class, got {source!r}")


def _from_struct(cls: type[Any]) -> Source:
    tree = normalize(msgspec.json.schema(cls), lenient=True)
    decoder = msgspec.json.Decoder(cls)

    def decode(text: str | bytes) -> Any:
        try:
            return decoder.decode(text)
        except msgspec.ValidationError as exc:
            match = _AT.match(str(exc))
            if match:
                raise Invalid(match.group(1), match.group(2)) from None
            raise Invalid(str(exc), "$") from None
        except msgspec.DecodeError as exc:
            raise Invalid(str(exc), not_json=True) from None

    return Source(cls, "struct", tree, decode, cls.__name__, None)


def _from_json_schema(source: Mapping[str, Any]) -> Source:
    tree = normalize(copy.deepcopy(dict(source)), lenient=False)
    # The answer must fit what was asked for: the strict schema sent, where every property
    # is required and none other allowed (a file without "required" must not let a field
    # the provider left out become a silent null).
    validator = Validator(strict(tree))

    def decode(text: str | bytes) -> Any:
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise Invalid(str(exc), not_json=True) from None
        validator.check(value)
        return value

    title = source.get("title")
    desc = source.get("description")
    return Source(dict(source), "json_schema", tree, decode,
                  title if isinstance(title, str) and NAME.match(title) else "answer",
                  desc if isinstance(desc, str) else None)


def _is_pydantic_model(source: Any) -> bool:
    pydantic = sys.modules.get("pydantic")  # a model class exists only if pydantic is imported
    return (pydantic is not None and isinstance(source, type)
            and issubclass(source, pydantic.BaseModel))


def _from_pydantic(model: Any) -> Source:
    import pydantic

    tree = normalize(model.model_json_schema(), lenient=True)

    def decode(text: str | bytes) -> Any:
        try:
            return model.model_validate_json(text)
        except pydantic.ValidationError as exc:
            errors = exc.errors()
            first = errors[0] if errors else {"type": "", "loc": (), "msg": str(exc)}
            if first.get("type") == "json_invalid":
                raise Invalid(str(first.get("msg")), not_json=True) from None
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise Invalid(f"{first.get('msg')}{more}", _path(first.get("loc", ()))) from None

    doc = (model.__doc__ or "").strip()
    return Source(model, "pydantic", tree, decode, model.__name__,
                  doc.splitlines()[0] if doc else None)


def _path(parts: Sequence[Any]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
