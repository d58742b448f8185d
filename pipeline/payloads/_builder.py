"""The base of every builder: config defaults, per-call overrides, validation against the
request Structs, the token estimate, an immutable value with a readable repr.

What a builder is for, and the rules every one follows, are in :mod:`pipeline.payloads.builders`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeAlias

import msgspec

from pipeline.core.request import APIRequest
from pipeline.payloads.schemas import (
    to_body,
    validate,
)
from pipeline.payloads.templates import Template
from pipeline.payloads.tokens import (
    Tokenizer,
    estimate_tokens,
    resolve_tokenizer,
)
from pipeline.schema import OutputSchema

__all__ = ["Builder", "Row", "TokenizerLike"]


#: A row: a mapping, an object with ``to_dict()``/``_asdict()``, a string, or ``None``.
Row: TypeAlias = Any
TokenizerLike: TypeAlias = Tokenizer | Callable[[str], int] | None


class Builder:
    """Base of the builders: config defaults, per-call overrides, validation, token estimate.

    Subclasses set ``kind``, ``path`` and the request Struct, and say how a row becomes a body.
    Builders are immutable; :meth:`replace` makes a changed copy.
    """

    kind: ClassVar[str] = ""
    path: ClassVar[str] = ""
    method: ClassVar[str] = "POST"
    request_type: ClassVar[type[msgspec.Struct]]
    _options: dict[str, Any]
    _body: dict[str, Any]
    _tokenizer: Tokenizer
    _default_max_tokens: int | None

    __slots__ = ("_body", "_default_max_tokens", "_options", "_tokenizer")

    def __init__(
        self,
        options: dict[str, Any],
        body: dict[str, Any],
        tokenizer: TokenizerLike,
        default_max_tokens: int | None,
    ) -> None:
        # options: everything given to the constructor (for repr/replace), minus Nones;
        # body: the request fields among them.
        object.__setattr__(self, "_options", {k: v for k, v in options.items() if v is not None})
        object.__setattr__(self, "_body", {k: v for k, v in body.items() if v is not None})
        object.__setattr__(self, "_tokenizer", resolve_tokenizer(tokenizer))
        object.__setattr__(self, "_default_max_tokens", default_max_tokens)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; use .replace(...)")

    @property
    def config(self) -> dict[str, Any]:
        """The options this builder was made with (a copy)."""
        return dict(self._options)

    @property
    def schema(self) -> OutputSchema[Any] | None:
        """The structured answer's schema (chat with ``schema=``), else ``None``."""
        return None

    def replace(self, **changes: Any) -> Builder:
        """A copy with some options changed (``None`` removes one).

        >>> from pipeline.payloads import chat
        >>> chat(model="gpt-4o-mini", prompt="{q}").replace(temperature=0)
        ChatBuilder(model='gpt-4o-mini', prompt='{q}', temperature=0)
        """
        merged = {**self._options, **changes}
        return type(self)(**{k: v for k, v in merged.items() if v is not None})

    def build(self, row: Row = None, /, **overrides: Any) -> APIRequest:
        """The request for one row; ``overrides`` replace body fields for this call only."""
        raise NotImplementedError

    @property
    def required_columns(self) -> dict[str, str]:
        """The columns every mapping row needs, each with what needs it (for messages).

        Run code checks these against a file's header before sending anything
        (:func:`pipeline.io.check_columns`), so a misspelt ``{column}`` fails once, not per row.

        >>> from pipeline.payloads import chat
        >>> chat(model="m", system="Answer in {lang}.", prompt="{q}").required_columns
        {'lang': "system 'Answer in {lang}.'", 'q': "prompt '{q}'"}
        """
        return {}

    def _merged(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        body = dict(self._body)
        for key, value in overrides.items():
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
        return body

    def _request(self, body: dict[str, Any]) -> APIRequest:
        built = to_body(validate(body, self.request_type))
        estimate = estimate_tokens(
            built, self.path, tokenizer=self._tokenizer, default_max_tokens=self._default_max_tokens
        )
        return APIRequest(path=self.path, method=self.method, body=built, token_estimate=estimate)

    def _check(self, placeholders: Mapping[str, Any]) -> None:
        # Surface unknown and ill-typed config fields now, not on the first of 50,000 rows.
        # Placeholders stand in for what rows supply, so only config errors can remain.
        validate({**placeholders, **self._body}, self.request_type)

    def __repr__(self) -> str:
        shown = []
        for key, value in self._options.items():
            # A schema is shown by name and fingerprint: the repr is part of a resume
            # journal's fingerprint, so another schema must show as another repr.
            text = f"{value.name}#{value.fingerprint}" if isinstance(value, OutputSchema) \
                else _short_repr(value)
            shown.append(f"{key}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Builder)
            and type(other) is type(self)
            and (other._options == self._options)
        )

    __hash__ = None  # type: ignore[assignment]


def _short_repr(value: Any, limit: int = 60) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _template_columns(*templates: Template | None) -> dict[str, str]:
    needs: dict[str, str] = {}
    for template in templates:
        if template is not None:
            for name in template.fields:
                needs.setdefault(name, template._what)
    return needs
