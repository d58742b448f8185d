"""The build stage: a row becomes a request (or the record fails with why)."""

from __future__ import annotations

from typing import Any

from pipeline.errors import ConfigError, PipelineError
from pipeline.record import Record
from pipeline.request import APIRequest
from pipeline.stages._core import Stage

__all__ = ["build"]


class build(Stage):
    """Turn the row into a request with a builder (or a :class:`~pipeline.http.Job`).

    A row that cannot be built becomes a failed record (a ``PayloadError``); nothing is sent.
    A row that already is an :class:`~pipeline.request.APIRequest` passes through.

    >>> from pipeline.payloads import chat
    >>> stage = build(chat(model="gpt-4o-mini", prompt="Classify: {text}"))
    """

    def __init__(self, builder: Any) -> None:
        if not callable(getattr(builder, "build", None)) and not callable(builder):
            raise ConfigError(f"build() needs a payload builder or a function, got {builder!r}")
        self.builder = builder
        self._build = builder.build if callable(getattr(builder, "build", None)) else builder

    async def process(self, record: Record) -> Record:
        row = record.row
        try:
            request = row if isinstance(row, APIRequest) else self._build(row)
        except PipelineError as exc:
            record.error = exc
            return record
        except Exception as exc:  # a user's builder function failed: that row fails
            record.error = exc
            return record
        if not isinstance(request, APIRequest):
            record.error = ConfigError(f"the builder returned {type(request).__name__}, "
                                       "not an APIRequest")
            return record
        record.request = request
        record.path = request.path
        record.token_estimate = request.token_estimate
        return record

    def __repr__(self) -> str:
        return f"build({self.builder!r})"
