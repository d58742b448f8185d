"""Prompt templates over a row's columns, and the row helpers builders share.

A row is a mapping (a dict, a Polars row), an object with ``to_dict()`` (a pandas Series) or
``_asdict()`` (a named tuple), a plain string, or ``None``. Missing values (``None``, NaN,
``NaT``, ``pd.NA``) where text is needed are a :class:`~pipeline.errors.PayloadError` naming
the column: never the text ``"nan"`` or ``"None"`` in a prompt.

What a ``{column}`` becomes in the text, by the value's type:

==================================  =========================================================
str                                 itself
int, float, bool, Decimal           ``str(value)`` (``3``, ``0.5``, ``True``)
list, tuple, dict (numpy arrays,    compact JSON, non-ASCII kept: ``["a","é"]``,
Polars lists and structs)           ``{"k":1}``; nested values as below
bytes                               the bytes as UTF-8 text; bytes that are not UTF-8 are a
                                    ``PayloadError`` for that row
numpy scalars                       their Python value (a float32 as its short form: ``0.1``)
datetime, date, time, pd.Timestamp  ISO 8601: ``2024-05-01T12:30:00``
numpy datetime64                    ISO 8601: ``2024-05-01T12:30:00``
None, NaN, NaT, pd.NA               a ``PayloadError`` naming the column
anything else                       ``str(value)``
==================================  =========================================================

A column used with a format spec or a conversion (``{score:.2f}``, ``{when:%Y}``, ``{x!r}``)
gets its value as it is, formatted as :meth:`str.format` does (everywhere in that template).
"""

from __future__ import annotations

import datetime
import difflib
import json
import string
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from pipeline.errors import PayloadError, TemplateKeyError

__all__ = ["Row", "Template", "as_mapping", "did_you_mean", "invalid_text"]

#: A row: a mapping, an object with ``to_dict()``/``_asdict()``, a string, or ``None``.
Row: TypeAlias = Any
_SHOWN_KEYS = 10


def _is_missing(value: Any) -> bool:
    """None, NaN (float, numpy or pandas) or ``pd.NA``, without importing pandas."""
    if value is None:
        return True
    if isinstance(value, str | int):
        return False
    try:
        return bool(value != value)  # NaN and NaT are the values unequal to themselves
    except (TypeError, ValueError):  # pd.NA refuses bool(); an array refuses it too
        return type(value).__name__ == "NAType"


def as_mapping(row: Row) -> Mapping[str, Any]:
    if type(row) is dict or isinstance(row, Mapping):
        return row
    for method in ("to_dict", "_asdict"):
        convert = getattr(row, method, None)
        if callable(convert):
            converted = convert()
            if isinstance(converted, Mapping):
                return converted
    raise PayloadError(
        f"a row must be a mapping, an object with to_dict(), a string or None, "
        f"not {type(row).__name__}"
    )


def _column(values: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        value = values[key]
    except KeyError:
        raise _key_error(key, values, what) from None
    if _is_missing(value):
        message = f"{what} needs column {key!r}, but its value is missing ({value!r})"
        raise PayloadError(message, field=key)
    return value


def did_you_mean(name: str, names: Iterable[Any]) -> str:
    """`` (did you mean 'review'?)`` when a name is close to ``name``, else ``""``.

    >>> did_you_mean("reveiw", ["id", "review", "stars"])
    " (did you mean 'review'?)"
    >>> did_you_mean("zzz", ["id", "review"])
    ''
    """
    known = [str(n) for n in names]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not close:  # a case slip ("Review") is closer than difflib's ratio says
        close = [k for k in known if k.lower() == name.lower()][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _key_error(key: str, values: Mapping[str, Any], what: str) -> TemplateKeyError:
    keys = [repr(k) for k in list(values)[: _SHOWN_KEYS + 1]]
    if len(keys) > _SHOWN_KEYS:
        keys[_SHOWN_KEYS:] = [f"... ({len(values) - _SHOWN_KEYS} more)"]
    available = ", ".join(keys) if keys else "no columns"
    return TemplateKeyError(
        f"{what} needs column {key!r}, which the row lacks{did_you_mean(key, values)}; "
        f"the row has {available}",
        field=key,
    )


class Template:
    """A :meth:`str.format` template over a row's columns, checked when it is made.

    Values that are not text go in as the module docs say: lists and dicts as compact JSON,
    bytes as UTF-8 text, datetimes in ISO 8601, a missing value is an error naming the column.

    >>> Template("Translate to {lang}: {text}").fill({"lang": "French", "text": "Hi", "n": 1})
    'Translate to French: Hi'
    >>> Template("Tags: {tags}; seen {when}").fill(
    ...     {"tags": ["café", 2], "when": datetime.date(2024, 5, 1)})
    'Tags: ["café",2]; seen 2024-05-01'
    >>> Template("{{literal}} {x}").fields
    ('x',)
    """

    __slots__ = ("_formatted", "_static", "_what", "fields", "text")
    #: What the template is called in messages: ``prompt 'Classify: {text}'``.
    _what: str

    def __init__(self, text: str, *, name: str = "template") -> None:
        if not isinstance(text, str):
            raise PayloadError(f"{name} must be a string, not {type(text).__name__}", field=name)
        self.text = text
        self._what = f"{name} {text!r}" if len(text) <= 60 else f"{name} {text[:57]!r}..."
        fields: list[str] = []
        formatted: set[str] = set()  # fields with a format spec or conversion: values as they are
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise PayloadError(
                f"{name}: {exc} (write {{{{ and }}}} for literal braces)", field=name
            ) from None
        for _, field, spec, conversion in parsed:
            if field is None:
                continue
            if spec or conversion:
                formatted.add(field)
            if field == "" or field.isdigit():
                raise PayloadError(
                    f"{name} has a positional field {{{field}}}; name a column", field=name
                )
            if "." in field or "[" in field or (spec and "{" in spec):
                raise PayloadError(
                    f"{name} field {{{field}}}: only plain column names are "
                    f"supported, no attribute, index or nested lookups",
                    field=name,
                )
            if field not in fields:
                fields.append(field)
        self.fields: tuple[str, ...] = tuple(fields)
        self._formatted = frozenset(formatted)
        self._static = text.format() if not fields else text

    def fill(self, values: Mapping[str, Any]) -> str:
        """The text with each ``{column}`` replaced by the row's value."""
        if not self.fields:
            return self._static
        found = {}
        for key in self.fields:
            try:
                value = values[key]
            except KeyError:
                raise _key_error(key, values, self._what) from None
            if type(value) is not str:
                if _is_missing(value):
                    _column(values, key, self._what)  # raises, naming the column
                if key not in self._formatted:
                    value = _as_text(value, key, self._what)
            found[key] = value
        return self._format(found)

    def fill_text(self, text: str) -> str:
        """The text with its single field replaced by ``text`` (a row that is a plain string)."""
        if len(self.fields) != 1:
            field = self.fields[0] if self.fields else None
            raise PayloadError(
                f"the row is a plain string but {self._what} has {len(self.fields)} fields; "
                "pass a mapping",
                field=field,
            )
        return self._format({self.fields[0]: text})

    def _format(self, found: dict[str, Any]) -> str:
        try:
            return self.text.format_map(found)
        except (ValueError, TypeError) as exc:  # a format spec that does not fit the value
            culprit = next(iter(found)) if len(found) == 1 else None
            raise PayloadError(
                f"{self._what} cannot format this row: {exc}", field=culprit
            ) from None

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _as_text(value: Any, key: str, what: str) -> Any:
    """A template value that is not a ``str``, as it goes into the text (the module docs'
    table). Numbers and other values ``str.format`` shows well are returned as they are."""
    kind = type(value)
    if kind is int or kind is float or kind is bool:
        return value
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(
                f"{what}: column {key!r} holds bytes that are not UTF-8 text (byte "
                f"0x{exc.object[exc.start]:02x} at position {exc.start}); decode them "
                f"to str first", field=key) from None
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()  # datetime and pd.Timestamp are dates too
    if kind.__module__ == "numpy":
        return _as_text(_numpy_value(value), key, what)
    if isinstance(value, list | tuple | dict):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                              default=_json_default)
        except (ValueError, TypeError) as exc:  # a list that holds itself
            raise PayloadError(f"{what}: column {key!r} cannot be written as JSON: {exc}",
                               field=key) from None
    return value


def _numpy_value(value: Any) -> Any:
    """A numpy scalar or array as Python values (arrays as lists); datetime64 as ISO text."""
    name = type(value).__name__
    if name == "datetime64":
        return str(value)  # ISO 8601 at the value's own precision
    if name in ("float16", "float32"):
        return float(str(value))  # float32(0.1) is 0.1, not 0.10000000149011612
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else value


def _json_default(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself inside a list or dict cell."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if type(value).__module__ == "numpy":
        return _numpy_value(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def invalid_text(value: Any, where: str = "") -> tuple[str, int, str] | None:
    """Where the first text in ``value`` (a str, or one inside lists and dicts) that UTF-8
    cannot encode is: ``(where, character position, the character)``, else ``None``.

    Only a lone surrogate (``"\\ud800"``, from ``surrogateescape`` decoding, a UTF-7 or
    ``unicode_escape`` file, or a JSON escape some parsers accept) is such text.

    >>> invalid_text({"a": "ok", "b": ["fine", "x\\ud800"]})
    ("['b'][1]", 1, '\\ud800')
    >>> invalid_text("ok") is None
    True
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return where, exc.start, value[exc.start]
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = invalid_text(key, f"{where} (a key)") or invalid_text(item,
                                                                          f"{where}[{key!r}]")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = invalid_text(item, f"{where}[{i}]")
            if found:
                return found
    return None


def _render(template: Template, values: Mapping[str, Any] | None, text: str | None) -> str:
    if text is not None:
        return template.fill_text(text)
    return template.fill(values if values is not None else {})


def _template(text: str | None, name: str) -> Template | None:
    return None if text is None else Template(text, name=name)


def _split_row(row: Row) -> tuple[Mapping[str, Any] | None, str | None]:
    if row is None:
        return None, None
    if isinstance(row, str):
        return None, row
    return as_mapping(row), None


def _plain(value: Any) -> Any:
    """numpy arrays and the like from a frame cell as plain lists."""
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) and not isinstance(value, list | str) else value
