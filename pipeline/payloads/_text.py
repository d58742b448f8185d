"""Builders whose row is one text: legacy completions and embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pipeline.core.request import APIRequest
from pipeline.errors import PayloadError
from pipeline.payloads._builder import Builder, Row, TokenizerLike, _template_columns
from pipeline.payloads.schemas import (
    CompletionRequest,
    EmbeddingRequest,
)
from pipeline.payloads.templates import (
    Template,
    _column,
    _plain,
    _render,
    _split_row,
    _template,
)

__all__ = ["CompletionBuilder", "EmbeddingsBuilder"]


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

    >>> from pipeline.payloads import completion
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

    >>> from pipeline.payloads import embeddings
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
