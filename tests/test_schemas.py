"""pipeline.payloads.schemas: the request Structs accept what the OpenAI spec accepts, keep
falsy values, drop unset ones, and name the field in every error."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import PayloadError
from pipeline.payloads.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    FileUploadRequest,
    FineTuningJobRequest,
    to_body,
    validate,
)

USER = {"role": "user", "content": "Hi"}
CHAT = {"model": "gpt-4o-mini", "messages": [USER]}

FULL_CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "developer", "content": "Be terse."},
        {"role": "system", "content": [{"type": "text", "text": "You are a bot."}], "name": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://x.test/a.png", "detail": "low"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "cat"}'},
                }
            ],
        },
        {"role": "tool", "content": "a cat", "tool_call_id": "call_1"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
    ],
    "frequency_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 0,
    "max_tokens": 0,
    "max_completion_tokens": 100,
    "n": 1,
    "presence_penalty": 0,
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
            "strict": True,
        },
    },
    "seed": 0,
    "stop": ["\n\n", "END"],
    "temperature": 0,
    "top_p": 0,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look something up.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                "strict": False,
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    "parallel_tool_calls": False,
    "user": "",
    "metadata": {"run": "1"},
    "store": False,
    "service_tier": "auto",
    "stream": False,
}


def _assert_spec(validate_schema: Any, body: dict[str, Any], component: str) -> None:
    errors = validate_schema(body, component)
    assert not errors, errors


def test_full_chat_request_round_trips_unchanged() -> None:
    body = to_body(validate(FULL_CHAT, ChatCompletionRequest))
    assert body == FULL_CHAT
    assert list(body) == list(FULL_CHAT)  # field order is the Struct's, same as written here


def test_full_chat_request_matches_the_spec(validate_schema: Any) -> None:
    _assert_spec(
        validate_schema,
        to_body(validate(FULL_CHAT, ChatCompletionRequest)),
        "CreateChatCompletionRequest",
    )


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", 0),
        ("seed", 0),
        ("n", 1),
        ("top_p", 0),
        ("max_tokens", 0),
        ("logprobs", False),
        ("presence_penalty", 0),
        ("user", ""),
        ("stop", ""),
        ("store", False),
    ],
)
def test_falsy_values_are_sent(field: str, value: Any) -> None:
    body = to_body(validate({**CHAT, field: value}, ChatCompletionRequest))
    assert body[field] == value
    assert type(body[field]) is type(value) or isinstance(value, int)  # 0 may become 0.0


def test_unset_fields_are_not_sent() -> None:
    assert to_body(validate(CHAT, ChatCompletionRequest)) == CHAT


def test_struct_field_order_is_deterministic() -> None:
    scrambled = {"seed": 1, "messages": [USER], "temperature": 1, "model": "m"}
    body = to_body(validate(scrambled, ChatCompletionRequest))
    assert list(body) == ["model", "messages", "seed", "temperature"]
    assert msgspec.json.encode(body) == msgspec.json.encode(
        to_body(validate(dict(reversed(scrambled.items())), ChatCompletionRequest))
    )


@pytest.mark.parametrize(
    "patch, field, words",
    [
        ({"temperature": "hot"}, "temperature", "expected `float`, got `str`"),
        ({"temperature": 2.5}, "temperature", "<= 2.0"),
        ({"temprature": 1}, "temprature", "did you mean `temperature`"),
        ({"seed": True}, "seed", "expected `int`, got `bool`"),
        ({"n": 0}, "n", ">= 1"),
        ({"stream": True}, "stream", "must be False or absent"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "length <= 4"),
        ({"messages": []}, "messages", "length >= 1"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid value"),
        ({"messages": [{"content": "x"}]}, "messages[0].role", "missing required field"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "missing required field"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "messages[0].content[0].text",
            "expected `str`",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "missing"),
        ({"tool_choice": "sometimes"}, "tool_choice", "invalid enum value"),
        ({"response_format": {"type": "yaml"}}, "response_format.type", "invalid value"),
        ({"metadata": {"k": 1}}, "metadata", "expected `str`"),
        (
            {"tools": [{"type": "function", "function": {"name": "has space"}}]},
            "tools[0].function.name",
            "expected `str` matching",
        ),
    ],
)
def test_errors_name_the_field(patch: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(PayloadError) as caught:
        validate({**CHAT, **patch}, ChatCompletionRequest)
    assert caught.value.field == field
    assert f"`{field}`" in str(caught.value)
    assert words in str(caught.value)
    assert str(caught.value).startswith("invalid chat completion request: ")


def test_missing_model_is_named() -> None:
    with pytest.raises(PayloadError) as caught:
        validate({"messages": [USER]}, ChatCompletionRequest)
    assert caught.value.field == "model"
    assert "missing required field" in str(caught.value)


@pytest.mark.parametrize("prompt", ["", "text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_completion_prompt_forms(prompt: Any, validate_schema: Any) -> None:
    body = to_body(validate({"model": "m", "prompt": prompt, "seed": 0}, CompletionRequest))
    assert body["prompt"] == prompt
    _assert_spec(validate_schema, body, "CreateCompletionRequest")


@pytest.mark.parametrize(
    "prompt, words",
    [
        ([1, "a"], "not a mix"),
        ([[1], "a"], "not a mix"),
        ([[]], "must not be empty"),
        ([], "length >= 1"),
        (5, "expected `str | array`"),
    ],
)
def test_completion_prompt_errors(prompt: Any, words: str) -> None:
    with pytest.raises(PayloadError) as caught:
        validate({"model": "m", "prompt": prompt}, CompletionRequest)
    assert caught.value.field == "prompt"
    assert words in str(caught.value)


@pytest.mark.parametrize("value", ["hello", ["a", "b"], [1, 2], [[1, 2], [3, 4]]])
def test_embedding_input_forms(value: Any, validate_schema: Any) -> None:
    body = to_body(
        validate(
            {"model": "e", "input": value, "dimensions": 8, "encoding_format": "base64"},
            EmbeddingRequest,
        )
    )
    assert body == {"model": "e", "input": value, "dimensions": 8, "encoding_format": "base64"}
    _assert_spec(validate_schema, body, "CreateEmbeddingRequest")


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"input": ""}, "input"),
        ({"input": ["x"] * 2049}, "input"),
        ({"dimensions": 0}, "dimensions"),
        ({"encoding_format": "int8"}, "encoding_format"),
        ({"input": None}, "input"),
    ],
)
def test_embedding_errors(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        validate({"model": "e", "input": "x", **patch}, EmbeddingRequest)
    assert caught.value.field == field


def test_fine_tuning_job_round_trip(validate_schema: Any) -> None:
    # Multiplier and beta are >= 1 here: the spec still writes OpenAPI 3.0's boolean
    # `exclusiveMinimum: true`, which a Draft 2020-12 validator reads as the number 1.
    data = {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-abc",
        "validation_file": "file-def",
        "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": 1.5, "n_epochs": 3},
        "suffix": "mine",
        "seed": 0,
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 1.5, "n_epochs": "auto"}}},
        "integrations": [{"type": "wandb", "wandb": {"project": "p", "tags": ["a"]}}],
        "metadata": {"team": "x"},
    }
    body = to_body(validate(data, FineTuningJobRequest))
    assert body == data
    _assert_spec(validate_schema, body, "CreateFineTuningJobRequest")


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"seed": -1}, "seed"),
        ({"suffix": "x" * 65}, "suffix"),
        ({"suffix": ""}, "suffix"),
        ({"hyperparameters": {"n_epochs": "many"}}, "hyperparameters.n_epochs"),
        (
            {"hyperparameters": {"learning_rate_multiplier": 0}},
            "hyperparameters.learning_rate_multiplier",
        ),
        ({"method": {"type": "magic"}}, "method.type"),
        ({"training_file": ""}, "training_file"),
    ],
)
def test_fine_tuning_job_errors(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        validate({"model": "m", "training_file": "file-abc", **patch}, FineTuningJobRequest)
    assert caught.value.field == field
    assert "invalid fine-tuning job request" in str(caught.value)


@pytest.mark.parametrize(
    "purpose", ["fine-tune", "batch", "assistants", "vision", "user_data", "evals"]
)
def test_file_upload_purposes(purpose: str, validate_schema: Any) -> None:
    body = to_body(validate({"purpose": purpose}, FileUploadRequest))
    assert body == {"purpose": purpose}
    _assert_spec(validate_schema, {"file": "(bytes)", **body}, "CreateFileRequest")


def test_file_upload_errors() -> None:
    with pytest.raises(PayloadError) as caught:
        validate({"purpose": "training"}, FileUploadRequest)
    assert caught.value.field == "purpose"
    with pytest.raises(PayloadError) as caught:
        validate(
            {"purpose": "batch", "expires_after": {"anchor": "created_at", "seconds": 60}},
            FileUploadRequest,
        )
    assert caught.value.field == "expires_after.seconds"


@pytest.mark.parametrize(
    "struct, component",
    [
        (ChatCompletionRequest, "CreateChatCompletionRequest"),
        (CompletionRequest, "CreateCompletionRequest"),
        (EmbeddingRequest, "CreateEmbeddingRequest"),
        (FineTuningJobRequest, "CreateFineTuningJobRequest"),
        (FileUploadRequest, "CreateFileRequest"),
    ],
)
def test_every_modelled_field_exists_in_the_spec(
    struct: Any, component: str, spec_fields: Any
) -> None:
    known = spec_fields(component)
    assert set(struct.__struct_fields__) <= known, set(struct.__struct_fields__) - known


@given(
    temperature=st.floats(0, 2),
    top_p=st.floats(0, 1),
    seed=st.integers(-(2**63), 2**63 - 1),
    n=st.integers(1, 128),
    max_tokens=st.integers(0, 10**6),
    content=st.text(),
)
def test_any_in_range_values_round_trip(
    temperature: float, top_p: float, seed: int, n: int, max_tokens: int, content: str
) -> None:
    data = {
        "model": "m",
        "messages": [{"role": "user", "content": content}],
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "n": n,
        "max_tokens": max_tokens,
    }
    body = to_body(validate(data, ChatCompletionRequest))
    assert body == data
    assert msgspec.json.decode(msgspec.json.encode(body)) == data
