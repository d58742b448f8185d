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

import os
from typing import Any

from pipeline.payloads._builder import Builder, TokenizerLike
from pipeline.payloads._chat import ChatBuilder
from pipeline.payloads._files import FileUploadBuilder, FineTuningJobBuilder
from pipeline.payloads._text import CompletionBuilder, EmbeddingsBuilder
from pipeline.payloads.templates import Template

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
