"""Request bodies the simulator accepts, typed after the OpenAI spec, and their 400 messages.

msgspec decodes and validates a body in one pass: unknown fields, wrong types, out-of-range
values and missing required fields all fail with a message we turn into OpenAI's wording
(``"Unrecognized request argument supplied: foo"``, ``"Missing required parameter: 'model'."``,
``"Invalid type for 'n': ..."``) and a ``param`` naming the field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

__all__ = ["ChatRequest", "CompletionRequest", "EmbeddingRequest", "FineTuningJobRequest",
           "RequestError", "check_input", "decode_body"]

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
Choices = Annotated[int, msgspec.Meta(ge=1, le=128)]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    pass


class ChatMessage(_Strict, kw_only=True):
    """One message of ``messages``; which fields a role may use is checked loosely."""

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None
    refusal: str | None = None
    audio: dict[str, Any] | None = None


class _Sampling(_Strict, kw_only=True):
    """Fields every generation endpoint shares."""

    model: str
    max_tokens: PosInt | None = None
    n: Choices | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    user: str | None = None


class ChatRequest(_Sampling, kw_only=True):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    max_completion_tokens: PosInt | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    moderation: Any = None


class CompletionRequest(_Sampling, kw_only=True):
    """``POST /v1/completions``."""

    prompt: str | list[str | int | list[int]]
    best_of: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    echo: bool | None = None
    suffix: str | None = None


class EmbeddingRequest(_Strict, kw_only=True):
    """``POST /v1/embeddings``."""

    model: str
    input: str | list[str | int | list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: PosInt | None = None
    user: str | None = None


class FineTuningJobRequest(_Strict, kw_only=True):
    """``POST /v1/fine_tuning/jobs``."""

    model: str
    training_file: str
    hyperparameters: dict[str, Any] | None = None
    suffix: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    validation_file: str | None = None
    integrations: list[dict[str, Any]] | None = None
    seed: int | None = None
    method: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None


class RequestError(Exception):
    """A 400 to send back: OpenAI's message, ``param`` and ``code``."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 status: int = 400, type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.type = type


_AT = re.compile(r" - at `\$((?:\.[A-Za-z0-9_]+|\[\d+\])*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]+)`")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")
_EXPECTED = re.compile(r"^Expected `([^`]+)`, got `([^`]+)`")

T = TypeVar("T")
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def _param(path: str, leaf: str | None = None) -> str | None:
    parts = [p for p in re.split(r"\.|(?=\[)", path) if p]
    if leaf:
        parts.append(leaf)
    if not parts:
        return None
    text = parts[0]
    for p in parts[1:]:
        text += p if p.startswith("[") else f".{p}"
    return text


def translate(exc: msgspec.DecodeError) -> RequestError:
    """Turn a msgspec error into the 400 OpenAI would send for the same mistake."""
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return RequestError(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)")
    match = _AT.search(text)
    path = match.group(1) if match else ""
    head = text[: match.start()] if match else text
    if m := _UNKNOWN.match(head):
        param = _param(path, m.group(1))
        return RequestError(f"Unrecognized request argument supplied: {param}", param,
                            "unknown_parameter")
    if m := _MISSING.match(head):
        param = _param(path, m.group(1))
        return RequestError(f"Missing required parameter: '{param}'.", param,
                            "missing_required_parameter")
    param = _param(path)
    if m := _EXPECTED.match(head):
        expected, got = m.groups()
        if param is None:
            return RequestError(f"Invalid request body: expected an object, but got {got}.")
        return RequestError(f"Invalid type for '{param}': expected {expected}, but got {got} "
                            "instead.", param, "invalid_type")
    return RequestError(f"Invalid value for '{param}': {head}.", param, "invalid_value")


def check_input(value: str | list[Any], param: str) -> None:
    """A prompt/input list must hold only strings, only token ids, or only lists of ids."""
    if isinstance(value, str):
        return
    if not value:
        raise RequestError(f"'{param}' must not be empty.", param, "invalid_value")
    first = type(value[0])
    if any(type(item) is not first for item in value):
        raise RequestError(f"Invalid type for '{param}': expected a string, an array of "
                           "strings, an array of integers or an array of integer arrays.",
                           param, "invalid_type")


def decode_body(body: bytes, kind: type[T]) -> T:
    """Decode and validate ``body`` as ``kind`` or raise :class:`RequestError`."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    if not body:
        raise RequestError("you must provide a model parameter", "model",
                           "missing_required_parameter")
    try:
        return decoder.decode(body)  # type: ignore[no-any-return]
    except msgspec.DecodeError as exc:
        raise translate(exc) from None
