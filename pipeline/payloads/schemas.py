"""Request bodies we send, typed after the OpenAI OpenAPI spec as msgspec Structs.

Every Struct forbids unknown fields and omits fields that were never set, so a body carries
exactly what the user asked for: ``temperature=0`` and ``seed=0`` are sent, an unset
``temperature`` is not. Optional fields default to :data:`msgspec.UNSET` (never ``None``), which
is why falsy values survive: only ``UNSET`` is dropped on encoding. ``None`` is refused for
top-level options (the spec allows ``null`` for many, but it means the same as leaving them
out); the builders in :mod:`pipeline.payloads` read a ``None`` option as "not set".

:func:`validate` turns a plain dict into one of these Structs and re-raises msgspec's errors as
:class:`~pipeline.errors.PayloadError` naming the field::

    >>> body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}],
    ...         "temperature": 0}
    >>> request = validate(body, ChatCompletionRequest)
    >>> to_body(request)["temperature"]
    0.0
    >>> try:
    ...     validate({**body, "temperature": "hot"}, ChatCompletionRequest)
    ... except PayloadError as exc:
    ...     print(exc.field, "|", exc)
    temperature | invalid chat completion request: `temperature`: expected `float`, got `str`

Only the fields a batch job plausibly sends are modelled; streaming is not (``stream`` must be
``False`` or absent, since the library reads whole responses).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from pipeline.errors import PayloadError

__all__ = [
    "AllowedTools",
    "AllowedToolsChoice",
    "AssistantMessage",
    "ChatCompletionRequest",
    "CompletionRequest",
    "DeveloperMessage",
    "DpoHyperparameters",
    "DpoMethod",
    "EmbeddingRequest",
    "FileExpiresAfter",
    "FileUploadRequest",
    "FineTuneMethod",
    "FineTuningJobRequest",
    "FunctionCall",
    "FunctionDefinition",
    "FunctionName",
    "FunctionTool",
    "Hyperparameters",
    "ImagePart",
    "ImageURL",
    "JsonSchemaFormat",
    "Message",
    "NamedToolChoice",
    "RefusalPart",
    "ResponseFormatJsonObject",
    "ResponseFormatJsonSchema",
    "ResponseFormatText",
    "SupervisedMethod",
    "SystemMessage",
    "TextPart",
    "ToolCall",
    "ToolMessage",
    "UserMessage",
    "WandbIntegration",
    "WandbSettings",
    "to_body",
    "validate",
]

S = TypeVar("S", bound=Struct)


class _Base(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Shared options: unknown fields are errors, unset fields are not sent."""


# --- constrained scalars (bounds from the spec) --------------------------------------------------
NonEmptyStr = Annotated[str, Meta(min_length=1)]
Temperature = Annotated[float, Meta(ge=0, le=2)]
TopP = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
ChoiceCount = Annotated[int, Meta(ge=1, le=128)]
TokenCount = Annotated[int, Meta(ge=0)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Stop = str | Annotated[list[str], Meta(min_length=1, max_length=4)]
Metadata = Annotated[dict[str, Annotated[str, Meta(max_length=512)]], Meta(max_length=16)]
LogitBias = dict[str, Annotated[int, Meta(ge=-100, le=100)]]
Auto = Literal["auto"]

# --- message content parts (tagged on "type") ----------------------------------------------------


class TextPart(_Base, tag_field="type", tag="text"):
    """``{"type": "text", "text": ...}``"""

    text: str


class ImageURL(_Base):
    """An image by URL or ``data:`` URI; ``detail`` trades tokens for resolution."""

    url: str
    detail: Literal["auto", "low", "high"] | UnsetType = UNSET


class ImagePart(_Base, tag_field="type", tag="image_url"):
    """``{"type": "image_url", "image_url": {"url": ...}}``"""

    image_url: ImageURL


class RefusalPart(_Base, tag_field="type", tag="refusal"):
    """An assistant's refusal, replayed in a conversation."""

    refusal: str


# --- messages (tagged on "role") -----------------------------------------------------------------


class SystemMessage(_Base, tag_field="role", tag="system"):
    """Instructions from the application."""

    content: str | Annotated[list[TextPart], Meta(min_length=1)]
    name: str | UnsetType = UNSET


class DeveloperMessage(_Base, tag_field="role", tag="developer"):
    """Instructions from the developer (reasoning models' name for ``system``)."""

    content: str | Annotated[list[TextPart], Meta(min_length=1)]
    name: str | UnsetType = UNSET


class UserMessage(_Base, tag_field="role", tag="user"):
    """A user turn: text, or a list of text and image parts."""

    content: str | Annotated[list[TextPart | ImagePart], Meta(min_length=1)]
    name: str | UnsetType = UNSET


class FunctionCall(_Base):
    """The function an assistant called, with its JSON-encoded arguments."""

    name: str
    arguments: str


class ToolCall(_Base, tag_field="type", tag="function"):
    """One tool call made by the assistant."""

    id: str
    function: FunctionCall


class AssistantMessage(_Base, tag_field="role", tag="assistant"):
    """An earlier assistant turn (few-shot examples, tool-call round trips)."""

    content: (
        str | Annotated[list[TextPart | RefusalPart], Meta(min_length=1)] | UnsetType | None
    ) = UNSET
    refusal: str | UnsetType | None = UNSET
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET


class ToolMessage(_Base, tag_field="role", tag="tool"):
    """The result of a tool call, answering ``tool_call_id``."""

    content: str | Annotated[list[TextPart], Meta(min_length=1)]
    tool_call_id: str


Message = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage

# --- tools, tool_choice, response_format ---------------------------------------------------------


class FunctionDefinition(_Base):
    """A function the model may call; ``parameters`` is a JSON Schema object."""

    name: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: str | UnsetType = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class FunctionTool(_Base, tag_field="type", tag="function"):
    """``{"type": "function", "function": {...}}``"""

    function: FunctionDefinition


class FunctionName(_Base):
    """Names one function."""

    name: str


class NamedToolChoice(_Base, tag_field="type", tag="function"):
    """Force a call to one named function."""

    function: FunctionName


class AllowedTools(_Base):
    """A subset of ``tools`` the model may use."""

    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class AllowedToolsChoice(_Base, tag_field="type", tag="allowed_tools"):
    """Restrict the model to some of the tools."""

    allowed_tools: AllowedTools


class ResponseFormatText(_Base, tag_field="type", tag="text"):
    """Plain text output (the default)."""


class ResponseFormatJsonObject(_Base, tag_field="type", tag="json_object"):
    """JSON mode: any valid JSON object."""


class JsonSchemaFormat(_Base):
    """A named JSON Schema the output must match (Structured Outputs)."""

    name: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: str | UnsetType = UNSET
    schema: dict[str, Any] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class ResponseFormatJsonSchema(_Base, tag_field="type", tag="json_schema"):
    """``{"type": "json_schema", "json_schema": {...}}``"""

    json_schema: JsonSchemaFormat


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice | AllowedToolsChoice
ResponseFormat = ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema

# --- request bodies ------------------------------------------------------------------------------


class ChatCompletionRequest(_Base):
    """Body of ``POST /chat/completions`` (``CreateChatCompletionRequest``)."""

    model: NonEmptyStr
    messages: Annotated[list[Message], Meta(min_length=1)]
    frequency_penalty: Penalty | UnsetType = UNSET
    logit_bias: LogitBias | UnsetType = UNSET
    logprobs: bool | UnsetType = UNSET
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | UnsetType = UNSET
    max_tokens: TokenCount | UnsetType = UNSET
    max_completion_tokens: TokenCount | UnsetType = UNSET
    n: ChoiceCount | UnsetType = UNSET
    presence_penalty: Penalty | UnsetType = UNSET
    response_format: ResponseFormat | UnsetType = UNSET
    seed: Seed | UnsetType = UNSET
    stop: Stop | UnsetType = UNSET
    temperature: Temperature | UnsetType = UNSET
    top_p: TopP | UnsetType = UNSET
    tools: list[FunctionTool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    user: str | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    store: bool | UnsetType = UNSET
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | UnsetType = UNSET
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | UnsetType = (
        UNSET
    )
    verbosity: Literal["low", "medium", "high"] | UnsetType = UNSET
    modalities: list[Literal["text", "audio"]] | UnsetType = UNSET
    safety_identifier: Annotated[str, Meta(max_length=64)] | UnsetType = UNSET
    prompt_cache_key: str | UnsetType = UNSET
    web_search_options: dict[str, Any] | UnsetType = UNSET
    stream: Literal[False] | UnsetType = UNSET


PromptInput = str | Annotated[list[str | int | list[int]], Meta(min_length=1)]


def _check_input_forms(value: str | list[Any], name: str, *, allow_empty_str: bool) -> None:
    # msgspec unions allow one array type, so the four spec forms (str, [str], [int], [[int]])
    # are one list type here; a list must not mix them.
    if isinstance(value, str):
        if not value and not allow_empty_str:
            raise ValueError(f"`{name}` must not be an empty string")
        return
    kinds = {type(item) for item in value}
    if len(kinds) > 1:
        raise ValueError(
            f"`{name}` must be a list of strings, of token ids or of token-id lists, not a mix"
        )
    if kinds == {list} and any(not item for item in value):
        raise ValueError(f"`{name}` token-id lists must not be empty")


class CompletionRequest(_Base):
    """Body of ``POST /completions``, the legacy endpoint (``CreateCompletionRequest``)."""

    model: NonEmptyStr
    prompt: PromptInput
    best_of: Annotated[int, Meta(ge=0, le=20)] | UnsetType = UNSET
    echo: bool | UnsetType = UNSET
    frequency_penalty: Penalty | UnsetType = UNSET
    logit_bias: LogitBias | UnsetType = UNSET
    logprobs: Annotated[int, Meta(ge=0, le=5)] | UnsetType = UNSET
    max_tokens: TokenCount | UnsetType = UNSET
    n: ChoiceCount | UnsetType = UNSET
    presence_penalty: Penalty | UnsetType = UNSET
    seed: Seed | UnsetType = UNSET
    stop: Stop | UnsetType = UNSET
    suffix: str | UnsetType = UNSET
    temperature: Temperature | UnsetType = UNSET
    top_p: TopP | UnsetType = UNSET
    user: str | UnsetType = UNSET
    stream: Literal[False] | UnsetType = UNSET

    def __post_init__(self) -> None:
        _check_input_forms(self.prompt, "prompt", allow_empty_str=True)


class EmbeddingRequest(_Base):
    """Body of ``POST /embeddings`` (``CreateEmbeddingRequest``)."""

    model: NonEmptyStr
    input: str | Annotated[list[str | int | list[int]], Meta(min_length=1, max_length=2048)]
    dimensions: Annotated[int, Meta(ge=1)] | UnsetType = UNSET
    encoding_format: Literal["float", "base64"] | UnsetType = UNSET
    user: str | UnsetType = UNSET

    def __post_init__(self) -> None:
        # The API rejects an empty string; catching it here keeps the row from being sent.
        _check_input_forms(self.input, "input", allow_empty_str=False)


class Hyperparameters(_Base):
    """Fine-tuning hyperparameters (``"auto"`` or a number each)."""

    batch_size: Auto | Annotated[int, Meta(ge=1, le=256)] | UnsetType = UNSET
    learning_rate_multiplier: Auto | Annotated[float, Meta(gt=0)] | UnsetType = UNSET
    n_epochs: Auto | Annotated[int, Meta(ge=1, le=50)] | UnsetType = UNSET


class DpoHyperparameters(Hyperparameters):
    """Hyperparameters of the DPO method, which adds ``beta``."""

    beta: Auto | Annotated[float, Meta(gt=0, le=2)] | UnsetType = UNSET


class SupervisedMethod(_Base):
    """Settings of supervised fine-tuning."""

    hyperparameters: Hyperparameters | UnsetType = UNSET


class DpoMethod(_Base):
    """Settings of preference (DPO) fine-tuning."""

    hyperparameters: DpoHyperparameters | UnsetType = UNSET


class FineTuneMethod(_Base):
    """``method``: which kind of fine-tuning, with its settings (reinforcement kept untyped)."""

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | UnsetType = UNSET
    dpo: DpoMethod | UnsetType = UNSET
    reinforcement: dict[str, Any] | UnsetType = UNSET


class WandbSettings(_Base):
    """Where a fine-tuning job reports to Weights and Biases."""

    project: str
    name: str | UnsetType | None = UNSET
    entity: str | UnsetType | None = UNSET
    tags: list[str] | UnsetType = UNSET


class WandbIntegration(_Base):
    """``{"type": "wandb", "wandb": {...}}``"""

    type: Literal["wandb"]
    wandb: WandbSettings


class FineTuningJobRequest(_Base):
    """Body of ``POST /fine_tuning/jobs`` (``CreateFineTuningJobRequest``)."""

    model: NonEmptyStr
    training_file: NonEmptyStr
    validation_file: str | UnsetType = UNSET
    hyperparameters: Hyperparameters | UnsetType = UNSET
    suffix: Annotated[str, Meta(min_length=1, max_length=64)] | UnsetType = UNSET
    seed: Annotated[int, Meta(ge=0, le=2_147_483_647)] | UnsetType = UNSET
    method: FineTuneMethod | UnsetType = UNSET
    integrations: list[WandbIntegration] | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET


class FileExpiresAfter(_Base):
    """When an uploaded file expires: ``seconds`` after ``created_at`` (1 hour to 30 days)."""

    anchor: Literal["created_at"]
    seconds: Annotated[int, Meta(ge=3600, le=2_592_000)]


FilePurpose = Literal["fine-tune", "batch", "assistants", "vision", "user_data", "evals"]


class FileUploadRequest(_Base):
    """The form fields of ``POST /files`` (``CreateFileRequest``); the file travels beside them."""

    purpose: FilePurpose
    expires_after: FileExpiresAfter | UnsetType = UNSET


# --- validation ----------------------------------------------------------------------------------

_LABELS: dict[type[Struct], str] = {
    ChatCompletionRequest: "chat completion request",
    CompletionRequest: "completion request",
    EmbeddingRequest: "embeddings request",
    FineTuningJobRequest: "fine-tuning job request",
    FileUploadRequest: "file upload request",
}
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<name>[^`]*)`$")


def validate(data: Mapping[str, Any], struct_type: type[S]) -> S:
    """Convert ``data`` to ``struct_type``, raising :class:`PayloadError` naming the bad field.

    >>> validate({"model": "m", "input": "hi", "dimensions": 0}, EmbeddingRequest)
    Traceback (most recent call last):
    ...
    pipeline.errors.PayloadError: invalid embeddings request: `dimensions`: expected `int` >= 1
    """
    try:
        return msgspec.convert(data, struct_type)
    except msgspec.ValidationError as exc:
        raise _payload_error(str(exc), struct_type) from None


def to_body(request: Struct) -> dict[str, Any]:
    """The request as built-in types (dict, list, str...), fields in the Struct's order.

    >>> to_body(EmbeddingRequest(model="m", input="hi", dimensions=8))
    {'model': 'm', 'input': 'hi', 'dimensions': 8}
    """
    body: dict[str, Any] = msgspec.to_builtins(request)
    return body


def _payload_error(raw: str, struct_type: type[Struct]) -> PayloadError:
    label = _LABELS.get(struct_type, struct_type.__name__)
    match = _AT.match(raw)
    message = match["message"] if match else raw
    path = (match["path"] or "") if match else ""
    field = path.removeprefix(".").replace("[...]", "")  # "[...]" marks a dict value
    hint = ""
    named = _NAMED.match(message)
    if named:  # the field itself is the subject: name it in the path
        name = named["name"]
        field = f"{field}.{name}" if field else name
        if "unknown" in message:
            message = "unknown field"
            if not path:
                close = difflib.get_close_matches(name, struct_type.__struct_fields__, n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
        else:
            message = "missing required field"
    elif field == "stream":
        message = "must be False or absent: this library reads whole responses, not streams"
    elif message.startswith("`") and "`" in message[1:]:  # our own __post_init__ checks
        field = message[1 : message.index("`", 1)]
        message = message[message.index("`", 1) + 2 :]
    if message[:1].isupper() and not message[:2].isupper():
        message = message[0].lower() + message[1:]
    where = f"`{field}`: " if field else ""
    return PayloadError(f"invalid {label}: {where}{message}{hint}", field=field or None)
