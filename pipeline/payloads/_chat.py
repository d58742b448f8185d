"""The chat builder: a prompt template (and a system one) or a messages column per row, with
the structured-output schema of a chat job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from pipeline.core.request import APIRequest
from pipeline.errors import ConfigError, PayloadError
from pipeline.payloads._builder import Builder, Row, TokenizerLike, _template_columns
from pipeline.payloads.schemas import (
    ChatCompletionRequest,
    to_body,
    validate,
)
from pipeline.payloads.templates import (
    Template,
    _is_missing,
    _plain,
    _render,
    _split_row,
    _template,
)
from pipeline.payloads.tokens import (
    CHAT_DEFAULT_MAX_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    chat_prompt_tokens,
    max_output_tokens,
)
from pipeline.schema import OutputSchema

__all__ = ["ChatBuilder"]


class ChatBuilder(Builder):
    """Chat completion requests (``POST chat/completions``).

    The conversation is ``[system] + messages + [prompt]``: ``system`` and ``prompt`` are
    templates filled from the row (as a system and a final user message); ``messages`` is a ready
    list: a ``messages=`` override, else the row's ``messages_column`` when it has a value there
    (a list, or its JSON text; ``messages_column=None`` ignores rows), else the config's.
    Other keywords are request fields (``temperature``, ``max_tokens``, ``response_format``,
    ``tools``...). ``tokenizer`` counts prompt tokens; ``default_max_tokens`` is reserved for the
    answer when the request sets no limit (see :mod:`pipeline.payloads.tokens`).

    ``schema`` asks for a structured answer: a msgspec Struct type, a JSON Schema dict, a
    pydantic model class or an :class:`~pipeline.schema.OutputSchema`. The body
    gets its strict ``response_format`` (counted in the token estimate), and a run decodes
    each answer into that type (``record.value``) and its fields into typed columns. Give
    ``schema`` or ``response_format``, not both.

    >>> from pipeline.payloads import chat
    >>> import msgspec
    >>> class Verdict(msgspec.Struct):
    ...     label: str
    ...     score: int
    >>> rate = chat(model="gpt-4o-mini", prompt="Rate: {text}", schema=Verdict)
    >>> rate.schema
    OutputSchema('Verdict', struct, columns=[label, score])
    >>> rate.build({"text": "ok"}).body["response_format"]["json_schema"]["name"]
    'Verdict'

    Requests built without overrides share the config's nested values (tools, schemas, config
    messages) rather than copying them: treat request bodies as read-only.

    >>> ask = chat(model="gpt-4o-mini", system="Answer in {lang}.", prompt="{q}")
    >>> [m["content"] for m in ask.build({"lang": "French", "q": "Hi?"}).body["messages"]]
    ['Answer in French.', 'Hi?']
    >>> chat(model="m").build("Just this text").body["messages"]
    [{'role': 'user', 'content': 'Just this text'}]
    """

    kind = "chat"
    path = "chat/completions"
    request_type = ChatCompletionRequest
    __slots__ = ("_fast", "_messages", "_messages_column", "_prompt", "_schema", "_system")
    _fast: tuple[dict[str, Any], list[Any], int] | None
    _schema: OutputSchema[Any] | None
    _messages: list[Any] | None
    _messages_column: str | None
    _prompt: Template | None
    _system: Template | None

    def __init__(
        self,
        model: str | None = None,
        prompt: str | None = None,
        *,
        system: str | None = None,
        messages: Sequence[Any] | None = None,
        messages_column: str | None = "messages",
        tokenizer: TokenizerLike = None,
        default_max_tokens: int | None = None,
        schema: Any = None,
        **fields: Any,
    ) -> None:
        output = None if schema is None else OutputSchema.of(schema)
        if output is not None:
            if fields.get("response_format") is not None:
                raise ConfigError("give schema= or response_format=, not both (schema= sends "
                                  "its own strict json_schema response_format)")
            fields["response_format"] = output.response_format()
        options = {
            "model": model,
            "prompt": prompt,
            "system": system,
            "messages": messages,
            "messages_column": None if messages_column == "messages" else messages_column,
            "tokenizer": tokenizer,
            "default_max_tokens": default_max_tokens,
            "schema": output,
            **{k: v for k, v in fields.items() if output is None or k != "response_format"},
        }
        super().__init__(options, {"model": model, **fields}, tokenizer, default_max_tokens)
        object.__setattr__(self, "_schema", output)
        object.__setattr__(self, "_prompt", _template(prompt, "prompt"))
        object.__setattr__(self, "_system", _template(system, "system"))
        object.__setattr__(self, "_messages", None if messages is None else list(messages))
        object.__setattr__(self, "_messages_column", messages_column)
        self._check(
            {
                "model": "placeholder",
                "messages": self._messages or [{"role": "user", "content": ""}],
            }
        )
        object.__setattr__(self, "_fast", self._prepare_fast_path())

    @property
    def schema(self) -> OutputSchema[Any] | None:
        """The structured answer's schema, or ``None`` for a plain-text answer."""
        return self._schema

    @property
    def required_columns(self) -> dict[str, str]:
        """Template fields; the messages column when nothing else makes a message."""
        needs = _template_columns(self._system, self._prompt)
        column = self._messages_column
        if self._prompt is None and self._system is None and not self._messages and column:
            needs[column] = f"a chat job with no prompt template (it sends the {column!r} column)"
        return needs

    def _prepare_fast_path(self) -> tuple[dict[str, Any], list[Any], int] | None:
        # Most builds change nothing but the template text. Then the body is the config,
        # validated once here, with fresh string messages put in: the same body the full path
        # gives (a test holds them equal), at a third of the cost. Its config parts (tools,
        # config messages...) are shared between requests: bodies are values, never mutated.
        if "model" not in self._body:
            return None  # the full path reports the missing model
        probe = [*(self._messages or []), {"role": "user", "content": ""}]
        body = to_body(validate({**self._body, "messages": probe}, ChatCompletionRequest))
        base = body["messages"][:-1]
        default = CHAT_DEFAULT_MAX_TOKENS
        if self._default_max_tokens is not None:
            default = self._default_max_tokens
        fixed = chat_prompt_tokens({**body, "messages": base}, self._tokenizer)
        return body, base, fixed + max_output_tokens(body, default)

    def build(self, row: Row = None, /, **overrides: Any) -> APIRequest:
        """The chat request for ``row`` (see the class docs for how messages are assembled)."""
        values, text = _split_row(row)
        body = self._merged(overrides) if overrides else None
        base: list[Any] | None = None if body is None else body.pop("messages", None)
        column = self._messages_column
        if base is None and values is not None and column is not None and column in values:
            cell = values[column]
            if not _is_missing(cell):
                base = _decode_messages(cell, column)
        fast = self._fast if body is None and base is None else None
        if base is None:
            base = self._messages if fast is None else fast[1]
        conversation: list[Any] = []
        filled: list[str] = []  # texts this build made (for the fast path's token count)
        if self._system is not None:  # from the row's columns; a plain-string row is the prompt
            filled.append(self._system.fill(values or {}))
            conversation.append({"role": "system", "content": filled[-1]})
        if base:
            conversation.extend(base)
        if self._prompt is not None:
            filled.append(_render(self._prompt, values, text))
            conversation.append({"role": "user", "content": filled[-1]})
        elif text is not None:
            filled.append(text)
            conversation.append({"role": "user", "content": text})
        if not conversation:
            raise PayloadError(
                "no messages: give a prompt template, messages=, or a row with a "
                f"{column!r} column",
                field="messages",
            )
        if fast is None:
            body = dict(self._body) if body is None else body
            body["messages"] = conversation
            return self._request(body)
        body = dict(fast[0])
        body["messages"] = conversation
        count = self._tokenizer.count
        estimate = fast[2] + sum(MESSAGE_OVERHEAD_TOKENS + count(t) for t in filled)
        return APIRequest(path=self.path, method=self.method, body=body, token_estimate=estimate)


def _decode_messages(cell: Any, column: str) -> list[Any]:
    if isinstance(cell, str | bytes):
        try:
            cell = msgspec.json.decode(cell)
        except msgspec.DecodeError as exc:
            raise PayloadError(
                f"column {column!r} is not a JSON list of messages: {exc}", field=column
            ) from None
    cell = _plain(cell)
    if not isinstance(cell, list):
        raise PayloadError(
            f"column {column!r} must hold a list of messages, not {type(cell).__name__}",
            field=column,
        )
    return cell
