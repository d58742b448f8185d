"""The decode stage: a structured answer read into its schema's type (or why it does not fit)."""

from __future__ import annotations

from typing import Any

import msgspec

from pipeline.core.record import Record
from pipeline.errors import SchemaValidationError
from pipeline.payloads.tokens import chat_prompt_tokens
from pipeline.schema import OutputSchema
from pipeline.stages._core import Stage

__all__ = ["decode"]


class decode(Stage):
    """Decode the record's answer with an :class:`~pipeline.schema.OutputSchema`.

    The value goes on ``record.value``; an answer that does not fit (not JSON, a missing or
    ill-typed field, a refusal, JSON cut at ``max_tokens``) puts a
    :class:`~pipeline.errors.SchemaValidationError` on ``record.error`` instead; it never
    raises. Inside :class:`~pipeline.stages.retry` (``retry(acquire | call | decode)``) an
    answer that does not fit is asked again, up to the retry's ``reasks``. It also decodes an
    answer that came from the cache (``on_answered``), so a cached answer becomes a value too.

    >>> import asyncio, msgspec
    >>> from pipeline.core.request import Response
    >>> class Tag(msgspec.Struct):
    ...     tag: str
    >>> record = Record(index=0, response=Response(status=200, body={"choices": [
    ...     {"message": {"content": '{"tag": "spam"}'}, "finish_reason": "stop"}]}))
    >>> asyncio.run(decode(Tag).process(record)).value
    Tag(tag='spam')
    """

    # The defaults: a cached answer is decoded too (on_answered); a failed record is skipped.

    def __init__(self, schema: Any) -> None:
        self.schema: OutputSchema[Any] = OutputSchema.of(schema)

    async def process(self, record: Record) -> Record:
        response = record.response
        if response is None or record.error is not None or record.value is not None:
            return record
        body = response.body
        try:
            if not isinstance(body, dict):
                raise SchemaValidationError(
                    f"the response body is not a chat completion (got {type(body).__name__})",
                    reason="empty")
            record.value = self.schema.decode_response(body)
        except SchemaValidationError as exc:
            record.error = exc
        except Exception as exc:  # a user's pydantic validator that raised something else
            record.error = SchemaValidationError(
                f"decoding the answer failed: {type(exc).__name__}: {exc}")
        return record

    def follow_up(self, record: Record, error: SchemaValidationError) -> None:
        """Make the record's request the re-ask: the conversation so far, the answer that
        did not fit, and why, so that a model answering the same way every time (at
        temperature 0) is not asked the very same question again.

        Only chat requests change; the record's cache key stays the original request's, so
        a valid answer is kept for the question the row asked.
        """
        request, answer = record.request, record.text
        body = request.body if request is not None else None
        if request is None or not isinstance(body, dict) or answer is None or \
                not isinstance(body.get("messages"), list):
            return
        why = error.message.split("; answer:", 1)[0]  # the excerpt is the answer itself
        added = [{"role": "assistant", "content": answer},
                 {"role": "user", "content": f"That answer does not fit the required JSON "
                                             f"schema ({why}). Answer again with JSON that "
                                             "fits it, and nothing else."}]
        extra = chat_prompt_tokens({"messages": added})
        record.request = msgspec.structs.replace(
            request, body={**body, "messages": [*body["messages"], *added]},
            token_estimate=request.token_estimate + extra)
        record.token_estimate = record.request.token_estimate

    def __repr__(self) -> str:
        return f"decode({self.schema!r})"
