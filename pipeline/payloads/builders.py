"""Payload builders: one input row in, one validated :class:`~pipeline.core.request.APIRequest` out.

A builder holds the request's defaults (model, prompt template, temperature...) and turns each
row into a request body, checked against the msgspec Structs in :mod:`pipeline.payloads.schemas`,
with the token estimate the rate limiter reserves::

    >>> classify = chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=5, seed=0)
    >>> request = classify.build({"text": "I loved it", "id": 7})
    >>> request.body
    {'model': 'gpt-4o-mini', 'messages': [{'role': 'user', 'content': 'Classify: I loved it'}], \
'max_tokens': 5, 'seed': 0}
    >>> request.path, request.token_estimate
    ('chat/completions', 17)

Rows may be mappings (a dict, a Polars row), objects with ``to_dict()`` (a pandas Series) or
``_asdict()`` (a named tuple), a plain string (the one value the template takes, or the whole
prompt when there is no template) or ``None`` (everything comes from the builder's config).

Templates are :meth:`str.format` strings over column names: ``"Summarize: {text}"``; write
``{{`` and ``}}`` for literal braces. Attribute and index lookups (``{a.b}``, ``{a[0]}``) are
refused. A value that is not text goes in as :mod:`pipeline.payloads.templates` says: lists
and dicts as compact JSON (``["a","é"]``), bytes as UTF-8 text, numpy scalars as their Python
value, datetimes in ISO 8601; a missing one (``None``, NaN, ``pd.NA``) fails the row.
``build(row, **overrides)`` overrides body fields for one call; an override of ``None``
removes a field the builder set.

Every problem is a :class:`~pipeline.errors.PayloadError` whose ``field`` names the culprit: an
unknown or ill-typed field (already when the builder is made, where it can tell), a missing
required one, a template column the row lacks (:class:`~pipeline.errors.TemplateKeyError`), or a
``None``/NaN value where text is needed. A pipeline's build stage stores it on the row's record.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeAlias

import msgspec

from pipeline.core.request import APIRequest, FilePart
from pipeline.errors import ConfigError, PayloadError
from pipeline.payloads.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    FileUploadRequest,
    FineTuningJobRequest,
    to_body,
    validate,
)
from pipeline.payloads.structured import OutputSchema
from pipeline.payloads.templates import (
    Template,
    _as_mapping,
    _column,
    _is_missing,
    _plain,
    _render,
    _split_row,
    _template,
)
from pipeline.payloads.tokens import (
    CHAT_DEFAULT_MAX_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    Tokenizer,
    chat_prompt_tokens,
    estimate_tokens,
    max_output_tokens,
    resolve_tokenizer,
)

__all__ = [
    "Builder",
    "ChatBuilder",
    "CompletionBuilder",
    "EmbeddingsBuilder",
    "FileUploadBuilder",
    "FineTuningJobBuilder",
    "PayloadPackage",
    "Template",
    "chat",
    "completion",
    "embeddings",
    "file_upload",
    "fine_tuning_job",
]

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
    pydantic model class or an :class:`~pipeline.payloads.structured.OutputSchema`. The body
    gets its strict ``response_format`` (counted in the token estimate), and a run decodes
    each answer into that type (``record.value``) and its fields into typed columns. Give
    ``schema`` or ``response_format``, not both.

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


def _template_columns(*templates: Template | None) -> dict[str, str]:
    needs: dict[str, str] = {}
    for template in templates:
        if template is not None:
            for name in template.fields:
                needs.setdefault(name, template._what)
    return needs


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


class _TextInputBuilder(Builder):
    """Shared by completions and embeddings: one text field filled from a template or column."""

    _field: ClassVar[str]
    __slots__ = ("_column", "_literal", "_template")
    _column: str | None
    _literal: Any
    _template: Template | None

    def _setup(self, template: str | None, column: str | None, literal: Any) -> None:
        name = "template" if self._field == "input" else self._field
        object.__setattr__(self, "_template", _template(template, name))
        object.__setattr__(self, "_column", column)
        object.__setattr__(self, "_literal", literal)

    @property
    def required_columns(self) -> dict[str, str]:
        """Template fields; the input column when there is no template and no literal."""
        needs = _template_columns(self._template)
        if self._template is None and self._literal is None and self._column:
            needs[self._column] = f"a{'n' if self.kind[0] in 'aeiou' else ''} {self.kind} job " \
                f"with no template (it sends the {self._column!r} column)"
        return needs

    def _text(
        self, values: Mapping[str, Any] | None, text: str | None, overrides: Mapping[str, Any]
    ) -> Any:
        if overrides.get(self._field) is not None:
            return overrides[self._field]
        if self._template is not None:
            return _render(self._template, values, text)
        if text is not None:
            return text
        column = self._column
        if (
            values is not None
            and column is not None
            and (self._literal is None or column in values)
        ):
            return _plain(_column(values, column, f"{self.kind} builder"))
        if self._literal is not None:
            return self._literal
        raise PayloadError(
            f"no {self._field}: give a template, a {self._field}= value, or a row",
            field=self._field,
        )


class CompletionBuilder(_TextInputBuilder):
    """Legacy completion requests (``POST completions``).

    ``prompt`` is a template filled from the row; without one the prompt is the row itself when
    it is a string, else its ``prompt_column``.

    >>> complete = completion(model="gpt-3.5-turbo-instruct", prompt="Q: {q}\\nA:", max_tokens=0)
    >>> complete.build({"q": "2+2?"}).body
    {'model': 'gpt-3.5-turbo-instruct', 'prompt': 'Q: 2+2?\\nA:', 'max_tokens': 0}
    """

    kind = "completion"
    path = "completions"
    request_type = CompletionRequest
    _field = "prompt"
    __slots__ = ()

    def __init__(
        self,
        model: str | None = None,
        prompt: str | None = None,
        *,
        prompt_column: str | None = "prompt",
        tokenizer: TokenizerLike = None,
        default_max_tokens: int | None = None,
        **fields: Any,
    ) -> None:
        options = {
            "model": model,
            "prompt": prompt,
            "prompt_column": None if prompt_column == "prompt" else prompt_column,
            "tokenizer": tokenizer,
            "default_max_tokens": default_max_tokens,
            **fields,
        }
        super().__init__(options, {"model": model, **fields}, tokenizer, default_max_tokens)
        self._setup(prompt, prompt_column, None)
        self._check({"model": "placeholder", "prompt": ""})

    def build(self, row: Row = None, /, **overrides: Any) -> APIRequest:
        """The completion request for ``row``."""
        values, text = _split_row(row)
        body = self._merged(overrides)
        body["prompt"] = self._text(values, text, overrides)
        return self._request(body)


class EmbeddingsBuilder(_TextInputBuilder):
    """Embedding requests (``POST embeddings``).

    The input is, in order: an ``input=`` override; the ``template`` filled from the row; the row
    itself when it is a string; the row's ``input_column``; the builder's own ``input``. A string
    ``input`` in the config is a template (``input="{title}: {text}"`` is ``template=``); a list
    there is sent as it is. A list of rows or strings makes one request embedding them all
    (up to 2,048).

    >>> embed = embeddings(model="text-embedding-3-small", dimensions=256)
    >>> embed.build({"text": "hello"}).body
    {'model': 'text-embedding-3-small', 'input': 'hello', 'dimensions': 256}
    >>> embed.build(["a", {"text": "b"}]).body["input"]
    ['a', 'b']
    """

    kind = "embeddings"
    path = "embeddings"
    request_type = EmbeddingRequest
    _field = "input"
    __slots__ = ()

    def __init__(
        self,
        model: str | None = None,
        *,
        input: Any = None,
        input_column: str | None = "text",
        template: str | None = None,
        tokenizer: TokenizerLike = None,
        **fields: Any,
    ) -> None:
        options = {
            "model": model,
            "input": input,
            "input_column": None if input_column == "text" else input_column,
            "template": template,
            "tokenizer": tokenizer,
            **fields,
        }
        super().__init__(options, {"model": model, **fields}, tokenizer, None)
        if isinstance(input, str):  # a string input is a template, like ``prompt`` elsewhere
            if template is not None:
                raise PayloadError("give input= or template=, not both", field="input")
            template, input = input, None
        self._setup(template, input_column, input)
        self._check({"model": "placeholder", "input": input if input is not None else "x"})

    def build(self, row: Row = None, /, **overrides: Any) -> APIRequest:
        """The embeddings request for ``row``, or for a list of rows as one batch."""
        body = self._merged(overrides)
        if isinstance(row, list | tuple) and overrides.get("input") is None:
            body["input"] = [self._text(*_split_row(item), {}) for item in row]
        else:
            values, text = _split_row(row)
            body["input"] = self._text(values, text, overrides)
        return self._request(body)


class FineTuningJobBuilder(Builder):
    """Fine-tuning job requests (``POST fine_tuning/jobs``).

    A string row is the ``training_file`` id; a mapping row supplies any request fields it has
    (other columns are ignored); overrides come last.

    >>> job = fine_tuning_job(model="gpt-4o-mini-2024-07-18", seed=0)
    >>> job.build("file-abc123").body
    {'model': 'gpt-4o-mini-2024-07-18', 'training_file': 'file-abc123', 'seed': 0}
    """

    kind = "fine_tuning_job"
    path = "fine_tuning/jobs"
    request_type = FineTuningJobRequest
    __slots__ = ()

    def __init__(
        self, model: str | None = None, training_file: str | None = None, **fields: Any
    ) -> None:
        options = {"model": model, "training_file": training_file, **fields}
        super().__init__(options, options, None, None)
        self._check({"model": "placeholder", "training_file": "placeholder"})

    def build(self, row: Row = None, /, **overrides: Any) -> APIRequest:
        """The fine-tuning job request for ``row``."""
        values, text = _split_row(row)
        from_row: dict[str, Any] = {}
        if text is not None:
            from_row["training_file"] = text
        elif values is not None:
            known = FineTuningJobRequest.__struct_fields__
            from_row = {
                k: _plain(v) for k, v in values.items() if k in known and not _is_missing(v)
            }
        return self._request(self._merged({**from_row, **overrides}))


_JSONL_PURPOSES = frozenset({"fine-tune", "batch", "evals"})
_FILE_SOURCES = (str, bytes, bytearray, memoryview, os.PathLike)


class FileUploadBuilder(Builder):
    """File uploads (``POST files``, multipart): the file's bytes plus a ``purpose``.

    The file is the row (a path or bytes), else the row's ``file_column``, else the builder's
    ``file``. Paths are read when ``build`` runs. Bytes need a ``filename`` unless the purpose
    takes JSONL (``fine-tune``, ``batch``, ``evals``: then it defaults to ``upload.jsonl``).

    >>> upload = file_upload(b'{"custom_id": "1"}\\n', purpose="batch")
    >>> request = upload.build()
    >>> request.files["file"], request.data
    (FilePart('upload.jsonl', 19 bytes, 'application/jsonl'), {'purpose': 'batch'})
    """

    kind = "file_upload"
    path = "files"
    request_type = FileUploadRequest
    __slots__ = ()

    def __init__(
        self,
        file: str | os.PathLike[str] | bytes | None = None,
        *,
        purpose: str | None = None,
        filename: str | None = None,
        content_type: str | None = None,
        file_column: str | None = "file",
        expires_after: Mapping[str, Any] | None = None,
    ) -> None:
        options = {
            "file": file,
            "purpose": purpose,
            "filename": filename,
            "content_type": content_type,
            "file_column": None if file_column == "file" else file_column,
            "expires_after": expires_after,
        }
        super().__init__(options, {"purpose": purpose, "expires_after": expires_after}, None, None)
        self._check({"purpose": "user_data"})

    def build(self, row: Row = None, /, **overrides: Any) -> APIRequest:
        """The upload request; overrides may change ``purpose``, ``filename``, ``content_type``
        or ``expires_after``."""
        settings = {**self._options, **{k: v for k, v in overrides.items() if v is not None}}
        unknown = set(overrides) - {"purpose", "filename", "content_type", "expires_after"}
        if unknown:
            name = sorted(unknown)[0]
            raise PayloadError(f"invalid file upload request: `{name}`: unknown field", field=name)
        source: Any = row
        if row is not None and not isinstance(row, _FILE_SOURCES):
            column = settings.get("file_column", "file")
            source = _column(_as_mapping(row), column, "file upload")
        if source is None:
            source = settings.get("file")
        if source is None:
            raise PayloadError("no file: give a path or bytes as the row or as file=", field="file")
        form = to_body(
            validate(
                {k: settings[k] for k in ("purpose", "expires_after") if k in settings},
                FileUploadRequest,
            )
        )
        content, filename = _read(source, settings.get("filename"), form["purpose"])
        content_type = settings.get("content_type") or _guess_type(filename)
        data = {"purpose": form["purpose"]}
        if "expires_after" in form:
            data["expires_after[anchor]"] = form["expires_after"]["anchor"]
            data["expires_after[seconds]"] = str(form["expires_after"]["seconds"])
        return APIRequest(
            path=self.path,
            method=self.method,
            body=None,
            data=data,
            files={"file": FilePart(filename, content, content_type)},
        )


def _read(source: Any, filename: str | None, purpose: str) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        if filename is None:
            if purpose not in _JSONL_PURPOSES:
                raise PayloadError(
                    f"uploading bytes for purpose {purpose!r} needs a filename=", field="filename"
                )
            filename = "upload.jsonl"
        return bytes(source), filename
    try:
        path = Path(source)
        return path.read_bytes(), filename or path.name
    except (OSError, TypeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise PayloadError(f"cannot read file {str(source)!r}: {reason}", field="file") from None


def _guess_type(filename: str) -> str:
    if filename.endswith(".jsonl"):
        return "application/jsonl"
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


class PayloadPackage:
    """The builders in one place, sharing a tokenizer and an output-token default.

    >>> package = PayloadPackage(default_max_tokens=256)
    >>> package.chat(model="gpt-4o-mini", prompt="{text}").build("hi").token_estimate
    264
    """

    def __init__(
        self, *, tokenizer: TokenizerLike = None, default_max_tokens: int | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.default_max_tokens = default_max_tokens

    def _shared(self, options: dict[str, Any], *, max_tokens: bool) -> dict[str, Any]:
        if self.tokenizer is not None:
            options.setdefault("tokenizer", self.tokenizer)
        if max_tokens and self.default_max_tokens is not None:
            options.setdefault("default_max_tokens", self.default_max_tokens)
        return options

    def chat(
        self, model: str | None = None, prompt: str | None = None, **options: Any
    ) -> ChatBuilder:
        """A :class:`ChatBuilder`."""
        return ChatBuilder(model, prompt, **self._shared(options, max_tokens=True))

    def completion(
        self, model: str | None = None, prompt: str | None = None, **options: Any
    ) -> CompletionBuilder:
        """A :class:`CompletionBuilder`."""
        return CompletionBuilder(model, prompt, **self._shared(options, max_tokens=True))

    def embeddings(self, model: str | None = None, **options: Any) -> EmbeddingsBuilder:
        """An :class:`EmbeddingsBuilder`."""
        return EmbeddingsBuilder(model, **self._shared(options, max_tokens=False))

    def fine_tuning_job(
        self, model: str | None = None, training_file: str | None = None, **options: Any
    ) -> FineTuningJobBuilder:
        """A :class:`FineTuningJobBuilder`."""
        return FineTuningJobBuilder(model, training_file, **options)

    def file_upload(
        self, file: str | os.PathLike[str] | bytes | None = None, **options: Any
    ) -> FileUploadBuilder:
        """A :class:`FileUploadBuilder`."""
        return FileUploadBuilder(file, **options)

    def __repr__(self) -> str:
        return (
            f"PayloadPackage(tokenizer={self.tokenizer!r}, "
            f"default_max_tokens={self.default_max_tokens!r})"
        )


_default = PayloadPackage()
chat = _default.chat
completion = _default.completion
embeddings = _default.embeddings
fine_tuning_job = _default.fine_tuning_job
file_upload = _default.file_upload
