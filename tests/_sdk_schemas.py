"""Validation against the official ``openai`` SDK's own types, for a checkout without the
OpenAPI document beside it (a plain clone).

``validate(instance, component)`` takes an OpenAPI component name, as the jsonschema check
in ``conftest.py`` does, and returns the list of problems (empty when the instance is
valid). Responses are the SDK's pydantic models (``ChatCompletion.model_validate(body)``);
requests are its ``*CreateParams`` TypedDicts, validated with a pydantic ``TypeAdapter``
and, stricter than the TypedDicts themselves, with no key they do not declare.
"""

from __future__ import annotations

import collections.abc
import functools
import types
import typing
from collections.abc import Callable
from typing import Any

import openai.types as t
import typing_extensions
from openai.types import completion_create_params, embedding_create_params, file_create_params
from openai.types.chat import ChatCompletion
from openai.types.chat import completion_create_params as chat_create_params
from openai.types.fine_tuning import FineTuningJob, job_create_params
from pydantic import BaseModel, TypeAdapter, ValidationError

__all__ = ["COMPONENTS", "fields", "validate"]

_RESPONSES: dict[str, type[BaseModel]] = {
    "CreateChatCompletionResponse": ChatCompletion,
    "CreateCompletionResponse": t.Completion,
    "CreateEmbeddingResponse": t.CreateEmbeddingResponse,
    "OpenAIFile": t.FileObject,
    "FineTuningJob": FineTuningJob,
    "Model": t.Model,
    "BatchError": t.BatchError,
}
_LISTS: dict[str, type[BaseModel]] = {"ListModelsResponse": t.Model,
                                      "ListFilesResponse": t.FileObject}
# (non-streaming, streaming) request TypedDicts
_REQUESTS: dict[str, tuple[Any, Any]] = {
    "CreateChatCompletionRequest": (chat_create_params.CompletionCreateParamsNonStreaming,
                                    chat_create_params.CompletionCreateParamsStreaming),
    "CreateCompletionRequest": (completion_create_params.CompletionCreateParamsNonStreaming,
                                completion_create_params.CompletionCreateParamsStreaming),
    "CreateEmbeddingRequest": (embedding_create_params.EmbeddingCreateParams,) * 2,
    "CreateFineTuningJobRequest": (job_create_params.JobCreateParams,) * 2,
}
#: Every component name this module can check.
COMPONENTS = frozenset([*_RESPONSES, *_LISTS, *_REQUESTS, "ErrorResponse", "CreateFileRequest"])


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(_eager(kind))


_ITERABLES = (collections.abc.Iterable, collections.abc.Sequence)


@functools.cache
def _eager(kind: Any) -> Any:
    """``kind`` with every ``Iterable[X]`` read as ``list[X]``, in TypedDicts and unions too.

    pydantic checks an ``Iterable`` lazily, so in ``str | Iterable[int] |
    Iterable[Iterable[int]]`` the first iterable always matches and ``[[1, 2]]`` fails when
    drained; a list is checked at once and the union tries each member."""
    if typing_extensions.is_typeddict(kind):
        hints = typing_extensions.get_type_hints(kind, include_extras=True)
        fields = {name: _eager(hint) for name, hint in hints.items()}
        eager: Any = typing_extensions.TypedDict(kind.__name__, fields,  # type: ignore[operator]
                                                 total=kind.__total__)
        return eager
    origin, args = typing_extensions.get_origin(kind), typing_extensions.get_args(kind)
    if origin is None or not args:
        return kind
    if origin in _ITERABLES:
        return list[_eager(args[0])]  # type: ignore[misc]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_eager(a) for a in args)]  # noqa: UP007
    if origin in (typing_extensions.Required, typing_extensions.NotRequired):
        return origin[_eager(args[0])]
    if origin is typing_extensions.Annotated:
        return typing_extensions.Annotated[(_eager(args[0]), *kind.__metadata__)]
    if origin is list:
        return list[_eager(args[0])]  # type: ignore[misc]
    if origin in (dict, tuple, collections.abc.Mapping):
        return origin[tuple(_eager(a) for a in args)]
    return kind


def _problems(exc: ValidationError) -> list[str]:
    return [f"{'/'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]


def _drain(value: Any) -> None:
    """Iterate what pydantic validated lazily (the SDK types lists as ``Iterable[...]``, which
    pydantic checks only when iterated)."""
    if isinstance(value, dict):
        for item in value.values():
            _drain(item)
    elif isinstance(value, list | tuple) or hasattr(value, "__next__"):
        for item in value:
            _drain(item)


def _keys(kind: Any) -> frozenset[str]:
    return frozenset(kind.__required_keys__ | kind.__optional_keys__)


def _check(check: Callable[[], Any]) -> list[str]:
    try:
        _drain(check())
    except ValidationError as exc:
        return _problems(exc)
    return []


def _request(instance: Any, kind: Any) -> list[str]:
    if not isinstance(instance, dict):
        return [f": expected an object, not {type(instance).__name__}"]
    unknown = sorted(set(instance) - _keys(kind))
    problems = [f"{key}: not a field of {kind.__name__}" for key in unknown]
    return problems + _check(lambda: _adapter(kind).validate_python(instance))


def _file_request(instance: Any) -> list[str]:
    # The SDK types `file` as bytes or a file object, which pydantic cannot build a schema
    # for; the tests pass its name. The other fields are checked as usual.
    if not isinstance(instance, dict):
        return [": expected an object"]
    problems = [] if "file" in instance else ["file: Field required"]
    purposes = typing.get_args(t.FilePurpose)
    if instance.get("purpose") not in purposes:
        problems.append(f"purpose: {instance.get('purpose')!r} is not one of {purposes}")
    unknown = sorted(set(instance) - _keys(file_create_params.FileCreateParams))
    problems += [f"{key}: not a field of FileCreateParams" for key in unknown]
    if "expires_after" in instance:
        adapter = _adapter(file_create_params.ExpiresAfter)
        problems += _check(lambda: adapter.validate_python(instance["expires_after"]))
    return problems


def validate(instance: Any, component: str) -> list[str]:
    """Problems of ``instance`` as the OpenAPI ``component``, by the SDK's types."""
    if component in _RESPONSES:
        return _check(lambda: _RESPONSES[component].model_validate(instance))
    if component in _LISTS:
        if not isinstance(instance, dict) or instance.get("object") != "list":
            return ['object: expected "list"']
        if not isinstance(instance.get("data"), list):
            return ["data: expected a list"]
        model = _LISTS[component]
        return [f"data/{i}/{p}" for i, item in enumerate(instance["data"])
                for p in _check(lambda item=item: model.model_validate(item))]
    if component == "ErrorResponse":
        if not isinstance(instance, dict) or "error" not in instance:
            return ["error: Field required"]
        return [f"error/{p}" for p in _check(lambda: t.ErrorObject.model_validate(
            instance["error"]))]
    if component in _REQUESTS:
        plain, streaming = _REQUESTS[component]
        stream = isinstance(instance, dict) and instance.get("stream") is True
        return _request(instance, streaming if stream else plain)
    if component == "CreateFileRequest":
        return _file_request(instance)
    raise KeyError(f"no SDK type stands for the OpenAPI component {component!r}")


def fields(component: str) -> set[str]:
    """The field names of a request component, by the SDK's TypedDict."""
    if component == "CreateFileRequest":
        return set(_keys(file_create_params.FileCreateParams))
    return set(_keys(_REQUESTS[component][0]))
