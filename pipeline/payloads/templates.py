"""Prompt templates over a row's columns, and the row helpers builders share.

A row is a mapping (a dict, a Polars row), an object with ``to_dict()`` (a pandas Series) or
``_asdict()`` (a named tuple), a plain string, or ``None``. Missing values (``None``, NaN,
``pd.NA``) where text is needed are a :class:`~pipeline.errors.PayloadError` naming the column.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from pipeline.errors import PayloadError, TemplateKeyError

__all__ = ["Row", "Template", "did_you_mean"]

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


def _as_mapping(row: Row) -> Mapping[str, Any]:
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

    >>> Template("Translate to {lang}: {text}").fill({"lang": "French", "text": "Hi", "n": 1})
    'Translate to French: Hi'
    >>> Template("{{literal}} {x}").fields
    ('x',)
    """

    __slots__ = ("_static", "_what", "fields", "text")
    #: What the template is called in messages: ``prompt 'Classify: {text}'``.
    _what: str

    def __init__(self, text: str, *, name: str = "template") -> None:
        if not isinstance(text, str):
            raise PayloadError(f"{name} must be a string, not {type(text).__name__}", field=name)
        self.text = text
        self._what = f"{name} {text!r}" if len(text) <= 60 else f"{name} {text[:57]!r}..."
        fields: list[str] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise PayloadError(
                f"{name}: {exc} (write {{{{ and }}}} for literal braces)", field=name
            ) from None
        for _, field, spec, _ in parsed:
            if field is None:
                continue
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
            if type(value) is not str and _is_missing(value):
                _column(values, key, self._what)  # raises, naming the column
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
    return _as_mapping(row), None


def _plain(value: Any) -> Any:
    """numpy arrays and the like from a frame cell as plain lists."""
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) and not isinstance(value, list | str) else value
