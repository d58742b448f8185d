"""Building requests: one input row in, one validated request with its token estimate out.

* :mod:`~pipeline.payloads.builders`: the builders (:func:`chat`, :func:`completion`,
  :func:`embeddings`, :func:`fine_tuning_job`, :func:`file_upload`) and
  :class:`PayloadPackage`, which shares a tokenizer and defaults between them.
* :mod:`~pipeline.payloads.templates`: prompt templates over a row's columns.
* :mod:`~pipeline.payloads.schemas`: the request bodies as msgspec Structs, typed after the
  OpenAI spec (unknown or ill-typed fields are a clear :class:`~pipeline.errors.PayloadError`).
* :mod:`~pipeline.payloads.tokens`: token estimates, and what a provider charges a request.

>>> request = chat(model="gpt-4o-mini", prompt="Classify: {text}").build({"text": "great"})
>>> request.path, request.body["messages"][0]["content"]
('chat/completions', 'Classify: great')
"""

from __future__ import annotations

from pipeline.payloads.builders import (
    Builder,
    ChatBuilder,
    CompletionBuilder,
    EmbeddingsBuilder,
    FileUploadBuilder,
    FineTuningJobBuilder,
    PayloadPackage,
    Template,
    chat,
    completion,
    embeddings,
    file_upload,
    fine_tuning_job,
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
