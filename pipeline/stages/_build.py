"""The build stage: a row becomes a request (or the record fails with why)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import msgspec

from pipeline.core.protocols import BuilderLike
from pipeline.core.record import Record
from pipeline.core.request import APIRequest
from pipeline.errors import ConfigError, PayloadError, PipelineError
from pipeline.payloads.templates import as_mapping, invalid_text
from pipeline.stages._core import Stage

__all__ = ["build"]

_encode = msgspec.json.encode


class build(Stage):
    """Turn the row into a request with a builder (or a :class:`~pipeline.http.Job`).

    A row that cannot be built becomes a failed record (a ``PayloadError``); nothing is sent.
    A row that already is an :class:`~pipeline.core.request.APIRequest` passes through. Either way
    the request body must be JSON that UTF-8 can carry: a lone surrogate (``"x\\ud800"``) in
    a row's value, or a value JSON cannot hold, fails that row alone with a ``PayloadError``
    naming the column and the character's position, instead of failing later, at the cache
    key or the send, for the whole run.

    >>> from pipeline.payloads import chat
    >>> stage = build(chat(model="gpt-4o-mini", prompt="Classify: {text}"))
    """

    on_answered = False  # a request stage: an answered record needs none

    def __init__(self, builder: BuilderLike | Callable[[Any], APIRequest]) -> None:
        if not callable(getattr(builder, "build", None)) and not callable(builder):
            raise ConfigError(f"build() needs a payload builder or a function, got {builder!r}")
        self.builder = builder
        method = getattr(builder, "build", None)
        self._build = cast("Callable[[Any], APIRequest]",
                           method if callable(method) else builder)

    async def process(self, record: Record) -> Record:
        row = record.row
        try:
            request = row if isinstance(row, APIRequest) else self._build(row)
        except PipelineError as exc:
            record.error = exc
            return record
        except UnicodeError:  # a tokenizer meeting a lone surrogate, say
            record.error = _not_text(row, None)
            return record
        except Exception as exc:  # a user's builder function failed: that row fails
            record.error = exc
            return record
        if not isinstance(request, APIRequest):
            record.error = ConfigError(f"the builder returned {type(request).__name__}, "
                                       "not an APIRequest")
            return record
        error = _unsendable(request, row)
        if error is not None:
            record.error = error
            return record
        record.request = request
        record.path = request.path
        record.token_estimate = request.token_estimate
        return record

    def __repr__(self) -> str:
        return f"build({self.builder!r})"


def _unsendable(request: APIRequest, row: Any) -> PayloadError | None:
    """Why ``request`` cannot be sent (its body is not JSON in UTF-8), else ``None``.

    The body is encoded once here (about 0.2 µs for a short chat body, a tenth of building
    it): the send and the cache key encode it too, where a failure would end the run."""
    try:
        if request.body is not None:
            _encode(request.body)
        if request.data:
            for value in request.data.values():
                value.encode("utf-8")
    except UnicodeEncodeError:
        return _not_text(row, request)
    except (TypeError, ValueError, OverflowError) as exc:
        return PayloadError(f"the request body cannot be sent as JSON: {exc}")
    return None


def _not_text(row: Any, request: APIRequest | None) -> PayloadError:
    """The error for a row whose text UTF-8 cannot encode, naming where the bad character is:
    the row's column (a ready request's source row too), else the request body's field."""
    found: tuple[str, int, str] | None = None
    column: str | None = None
    values: Any = getattr(row, "source_row", None) if isinstance(row, APIRequest) else row
    if isinstance(values, str):
        found = invalid_text(values, "the row")
    elif values is not None:
        try:
            mapping = as_mapping(values)
        except PayloadError:
            mapping = {}
        for key, value in mapping.items():
            found = invalid_text(key, "a column name")
            inside = invalid_text(value)
            if inside is not None:
                path, position, char = inside
                found = (f"column {key!r}" + (f" at {path}" if path else ""), position, char)
                column = str(key)
            if found:
                break
    if found is None and request is not None:
        found = invalid_text(request.body, "the request body at ") or invalid_text(
            request.data, "the form field ")
    where, position, char = found if found else ("a value", 0, "?")
    return PayloadError(
        f"{where} is not valid text: character {position} is {char!a}, a lone surrogate "
        f"that UTF-8 cannot encode (nothing was sent for this row; clean the value, e.g. "
        f"value.encode('utf-8', 'replace').decode())", field=column)
