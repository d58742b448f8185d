"""pipeline.payloads: every builder from every row form, config plus overrides, errors naming
the field, and every body built here checked against the OpenAI spec when it is present."""

from __future__ import annotations

import math
from collections import namedtuple
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.request import APIRequest, FilePart
from pipeline.errors import PayloadError, TemplateKeyError
from pipeline.payloads import (
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
from pipeline.payloads.tokens import MESSAGE_OVERHEAD_TOKENS, REPLY_PRIMER_TOKENS

COMPONENTS = {
    "chat/completions": "CreateChatCompletionRequest",
    "completions": "CreateCompletionRequest",
    "embeddings": "CreateEmbeddingRequest",
    "fine_tuning/jobs": "CreateFineTuningJobRequest",
}
Check = Callable[[APIRequest], APIRequest]


@pytest.fixture
def spec(request: pytest.FixtureRequest) -> Check:
    """``spec(request)`` asserts the request's body validates against the OpenAI spec (a no-op
    when the spec is absent, so these tests still run) and returns the request."""
    try:
        validate_schema = request.getfixturevalue("validate_schema")
    except pytest.skip.Exception:
        validate_schema = None

    def check(api_request: APIRequest) -> APIRequest:
        if validate_schema is not None:
            if api_request.path == "files":
                assert api_request.data is not None and api_request.files is not None
                form: dict[str, Any] = {
                    "file": api_request.files["file"].filename,
                    "purpose": api_request.data["purpose"],
                }
                if "expires_after[anchor]" in api_request.data:
                    form["expires_after"] = {
                        "anchor": api_request.data["expires_after[anchor]"],
                        "seconds": int(api_request.data["expires_after[seconds]"]),
                    }
                errors = validate_schema(form, "CreateFileRequest")
            else:
                errors = validate_schema(api_request.body, COMPONENTS[api_request.path])
            assert not errors, errors
        return api_request

    return check


class SeriesLike:
    """Stands in for a pandas Series: not a Mapping, but has to_dict()."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)


class PandasNA:
    """Behaves like pd.NA: comparisons give NA and bool() raises."""

    def __ne__(self, other: object) -> Any:
        return self

    def __bool__(self) -> bool:
        raise TypeError("boolean value of NA is ambiguous")


PandasNA.__name__ = "NAType"


# --- chat ----------------------------------------------------------------------------------------


def test_chat_from_template(spec: Check) -> None:
    builder = chat(
        model="gpt-4o-mini",
        prompt="Classify: {text}",
        system="You classify.",
        max_tokens=50,
        temperature=0,
    )
    request = spec(builder.build({"text": "great!", "id": 3}))
    assert request.path == "chat/completions" and request.method == "POST"
    assert request.body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You classify."},
            {"role": "user", "content": "Classify: great!"},
        ],
        "max_tokens": 50,
        "temperature": 0,
    }
    assert request.files is None and request.data is None


def test_chat_builder_is_a_small_frozen_value() -> None:
    builder = chat(
        model="gpt-4o-mini",
        prompt="Classify: {text}",
        system="You are...",
        max_tokens=50,
        temperature=0,
    )
    assert repr(builder) == (
        "ChatBuilder(model='gpt-4o-mini', prompt='Classify: {text}', "
        "system='You are...', max_tokens=50, temperature=0)"
    )
    assert (builder.kind, builder.path) == ("chat", "chat/completions")
    with pytest.raises(AttributeError):
        builder.path = "x"  # type: ignore[misc]
    assert builder == chat(
        model="gpt-4o-mini",
        prompt="Classify: {text}",
        system="You are...",
        max_tokens=50,
        temperature=0,
    )
    changed = builder.replace(temperature=None, seed=1)
    assert changed.config == {
        "model": "gpt-4o-mini",
        "prompt": "Classify: {text}",
        "system": "You are...",
        "max_tokens": 50,
        "seed": 1,
    }
    assert builder.config["temperature"] == 0  # the original is unchanged


@pytest.mark.parametrize(
    "row",
    [{"text": "hi"}, SeriesLike({"text": "hi"}), namedtuple("Row", "text other")("hi", 1), "hi"],
    ids=["dict", "to_dict", "namedtuple", "str"],
)
def test_chat_row_forms(row: Any, spec: Check) -> None:
    request = spec(chat(model="m", prompt="Say {text}").build(row))
    assert request.body is not None
    assert request.body["messages"] == [{"role": "user", "content": "Say hi"}]


def test_plain_string_row_without_template_is_the_user_message(spec: Check) -> None:
    body = spec(chat(model="m", system="Be kind.").build("hello")).body
    assert body is not None
    assert body["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "hello"},
    ]


def test_none_row_uses_config_messages(spec: Check) -> None:
    messages = [{"role": "user", "content": "fixed question"}]
    body = spec(chat(model="m", messages=messages).build()).body
    assert body is not None and body["messages"] == messages


def test_messages_from_row_column_list_or_json(spec: Check) -> None:
    conversation = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    builder = chat(model="m", system="sys")
    for cell in (conversation, msgspec.json.encode(conversation).decode()):
        body = spec(builder.build({"messages": cell, "id": 1})).body
        assert body is not None
        assert body["messages"] == [{"role": "system", "content": "sys"}, *conversation]
    renamed = chat(model="m", messages_column="history")
    body = spec(renamed.build({"history": conversation})).body
    assert body is not None and body["messages"] == conversation


def test_conversation_is_system_then_messages_then_prompt(spec: Check) -> None:
    few_shot = [{"role": "user", "content": "2+2"}, {"role": "assistant", "content": "4"}]
    body = spec(
        chat(model="m", system="Math.", messages=few_shot, prompt="{q}").build({"q": "3+3"})
    ).body
    assert body is not None
    assert [m["content"] for m in body["messages"]] == ["Math.", "2+2", "4", "3+3"]


def test_messages_override_replaces_the_configured_ones(spec: Check) -> None:
    builder = chat(model="m", messages=[{"role": "user", "content": "old"}])
    body = spec(builder.build(None, messages=[{"role": "user", "content": "new"}])).body
    assert body is not None and body["messages"] == [{"role": "user", "content": "new"}]


def test_bad_messages_column_names_the_column() -> None:
    with pytest.raises(PayloadError) as caught:
        chat(model="m").build({"messages": "not json"})
    assert caught.value.field == "messages"
    with pytest.raises(PayloadError) as caught:
        chat(model="m").build({"messages": {"role": "user"}})
    assert caught.value.field == "messages"
    with pytest.raises(PayloadError) as caught:
        chat(model="m").build({"messages": [{"role": "user"}]})
    assert caught.value.field == "messages[0].content"


def test_no_messages_at_all_is_an_error() -> None:
    with pytest.raises(PayloadError) as caught:
        chat(model="m").build({"text": "x"})
    assert caught.value.field == "messages"


def test_falsy_config_and_overrides_survive(spec: Check) -> None:
    builder = chat(model="m", prompt="{x}", seed=0, temperature=0, n=1, top_p=0, logprobs=False)
    body = spec(builder.build({"x": "q"}, presence_penalty=0, max_tokens=0)).body
    assert body is not None
    for field, value in [
        ("seed", 0),
        ("temperature", 0),
        ("n", 1),
        ("top_p", 0),
        ("logprobs", False),
        ("presence_penalty", 0),
        ("max_tokens", 0),
    ]:
        assert body[field] == value, field


def test_override_none_removes_a_config_field(spec: Check) -> None:
    body = spec(
        chat(model="m", prompt="{x}", temperature=0.2).build({"x": "q"}, temperature=None)
    ).body
    assert body is not None and "temperature" not in body


def test_config_errors_surface_when_the_builder_is_made() -> None:
    with pytest.raises(PayloadError) as caught:
        chat(model="m", prompt="{x}", temprature=0)
    assert caught.value.field == "temprature"
    assert "did you mean `temperature`" in str(caught.value)
    with pytest.raises(PayloadError) as caught:
        chat(model="m", prompt="{x}", max_tokens="fifty")
    assert caught.value.field == "max_tokens"
    with pytest.raises(PayloadError) as caught:
        chat(model="m", prompt="{x}", stream=True)
    assert caught.value.field == "stream"


def test_build_errors_name_the_field() -> None:
    builder = chat(prompt="{x}")  # no model: fine until a build without one
    with pytest.raises(PayloadError) as caught:
        builder.build({"x": "q"})
    assert caught.value.field == "model"
    assert builder.build({"x": "q"}, model="m").body is not None
    with pytest.raises(PayloadError) as caught:
        chat(model="m", prompt="{x}").build({"x": "q"}, temperature="warm")
    assert caught.value.field == "temperature"
    assert "expected `float`, got `str`" in str(caught.value)
    with pytest.raises(PayloadError) as caught:
        chat(model="m", prompt="{x}").build({"x": "q"}, prompt="other")
    assert caught.value.field == "prompt"


# --- templates -----------------------------------------------------------------------------------


def test_missing_template_key_lists_available_columns() -> None:
    row = {f"col{i}": i for i in range(30)}
    with pytest.raises(TemplateKeyError) as caught:
        chat(model="m", prompt="Hi {name}").build(row)
    error = caught.value
    assert isinstance(error, KeyError) and isinstance(error, PayloadError)
    assert error.field == "name"
    message = str(error)
    assert "'name'" in message and "'col0'" in message and "'col9'" in message
    assert "'col10'" not in message and "(20 more)" in message


@pytest.mark.parametrize("value", [None, float("nan"), PandasNA()], ids=["None", "NaN", "NA"])
def test_missing_template_value_names_the_field(value: Any) -> None:
    with pytest.raises(PayloadError) as caught:
        chat(model="m", prompt="Hi {name}").build({"name": value})
    assert caught.value.field == "name"
    assert not isinstance(caught.value, TemplateKeyError)


def test_pandas_rows_and_missing_values() -> None:
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    frame = pd.DataFrame({"text": ["a", None, np.nan], "n": [1, 2, 3]})
    builder = chat(model="m", prompt="{text} #{n}")
    outcomes: list[Any] = []
    for _, row in frame.iterrows():
        try:
            outcomes.append(builder.build(row).body["messages"][0]["content"])  # type: ignore[index]
        except PayloadError as exc:
            outcomes.append((exc.field, "missing" in str(exc)))
    assert outcomes == ["a #1", ("text", True), ("text", True)]
    with pytest.raises(PayloadError):
        builder.build({"text": np.float32("nan"), "n": 1})
    with pytest.raises(PayloadError):
        builder.build({"text": pd.NA, "n": 1})
    vectors = embeddings(model="e").build(pd.Series({"text": np.array([1, 2, 3])}))
    assert vectors.body == {"model": "e", "input": [1, 2, 3]}


def test_template_values_are_formatted_and_braces_escape() -> None:
    template = Template("{{literal}} {n} {x:.2f} {s!r}")
    assert template.fields == ("n", "x", "s")
    assert template.fill({"n": 0, "x": math.pi, "s": "q"}) == "{literal} 0 3.14 'q'"


def test_format_spec_that_does_not_fit_the_value_is_a_payload_error() -> None:
    with pytest.raises(PayloadError) as caught:
        chat(model="m", prompt="{x:.2f}").build({"x": "not a number"})
    assert caught.value.field == "x"
    with pytest.raises(PayloadError):
        chat(model="m", prompt="{x:d}").build("text row")


@pytest.mark.parametrize("text", ["{}", "{0}", "{a.b}", "{a[0]}", "{a:{w}}", "{open", "close}"])
def test_unsupported_templates_are_refused_early(text: str) -> None:
    with pytest.raises(PayloadError) as caught:
        chat(model="m", prompt=text)
    assert caught.value.field == "prompt"


def test_string_row_needs_a_single_field_template() -> None:
    with pytest.raises(PayloadError) as caught:
        chat(model="m", prompt="{a} and {b}").build("text")
    assert caught.value.field == "a"


@given(value=st.text())
@settings(max_examples=200, deadline=None)
def test_any_text_value_lands_verbatim(value: str) -> None:
    builder = chat(model="m", prompt="<<{text}>>", system="Sys {{x}}")
    request = builder.build({"text": value})
    assert request.body is not None
    assert request.body["messages"][1]["content"] == f"<<{value}>>"
    assert request.body["messages"][0]["content"] == "Sys {x}"
    # the fast path (no overrides) and the full validation path agree exactly
    assert request == builder.build({"text": value}, model="m")


# --- token estimates -----------------------------------------------------------------------------


class Words:
    def count(self, text: str) -> int:
        return len(text.split())


def test_token_estimate_is_prompt_plus_max_output_times_n() -> None:
    builder = chat(model="m", prompt="{q}", max_tokens=50, n=2, tokenizer=Words())
    request = builder.build({"q": "one two three"})
    assert request.token_estimate == REPLY_PRIMER_TOKENS + MESSAGE_OVERHEAD_TOKENS + 3 + 100
    default = chat(model="m", prompt="{q}", tokenizer=Words(), default_max_tokens=10)
    assert (
        default.build({"q": "a"}).token_estimate
        == REPLY_PRIMER_TOKENS + MESSAGE_OVERHEAD_TOKENS + 1 + 10
    )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"system": "S {a}"},
        {"messages": [{"role": "user", "content": "x y"}]},
        {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto"},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}}},
    ],
)
def test_fast_path_equals_full_path(options: dict[str, Any], spec: Check) -> None:
    builder = chat(model="m", prompt="{a} {b}", seed=0, **options)
    row = {"a": "alpha", "b": 2}
    fast = spec(builder.build(row))
    assert fast == builder.build(row, seed=0)  # an override takes the full path
    assert msgspec.json.encode(fast.body) == msgspec.json.encode(builder.build(row, seed=0).body)


# --- completion ----------------------------------------------------------------------------------


def test_completion_builder(spec: Check) -> None:
    builder = completion(model="gpt-3.5-turbo-instruct", prompt="Q: {q}\nA:", max_tokens=0, seed=0)
    assert (builder.kind, builder.path) == ("completion", "completions")
    request = spec(builder.build({"q": "2+2?"}))
    assert request.body == {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "Q: 2+2?\nA:",
        "max_tokens": 0,
        "seed": 0,
    }
    plain = completion(model="m")
    assert spec(plain.build("raw prompt")).body == {"model": "m", "prompt": "raw prompt"}
    assert spec(plain.build({"prompt": "from column"})).body == {
        "model": "m",
        "prompt": "from column",
    }
    assert spec(plain.build(None, prompt=[1, 2, 3])).body == {"model": "m", "prompt": [1, 2, 3]}
    with pytest.raises(TemplateKeyError):
        plain.build({"text": "no prompt column"})
    with pytest.raises(PayloadError) as caught:
        plain.build(None)
    assert caught.value.field == "prompt"


# --- embeddings ----------------------------------------------------------------------------------


def test_embeddings_builder(spec: Check) -> None:
    builder = embeddings(model="text-embedding-3-small", dimensions=256)
    assert (builder.kind, builder.path) == ("embeddings", "embeddings")
    assert spec(builder.build({"text": "hello", "id": 1})).body == {
        "model": "text-embedding-3-small",
        "input": "hello",
        "dimensions": 256,
    }
    assert spec(builder.build("plain")).body["input"] == "plain"  # type: ignore[index]
    batch = spec(builder.build(["a", {"text": "b"}, SeriesLike({"text": "c"})]))
    assert batch.body is not None and batch.body["input"] == ["a", "b", "c"]
    tokens = spec(builder.build({"text": [101, 2023, 102]}))
    assert tokens.body is not None and tokens.token_estimate == 3
    templated = embeddings(model="e", template="{title}: {body}")
    assert spec(templated.build({"title": "T", "body": "B"})).body["input"] == "T: B"  # type: ignore[index]
    same = embeddings(model="e", input="{title}: {body}")
    assert same.build({"title": "T", "body": "B"}) == templated.build({"title": "T", "body": "B"})
    with pytest.raises(PayloadError):
        embeddings(model="e", input="{a}", template="{b}")
    column = embeddings(model="e", input_column="doc")
    assert spec(column.build({"doc": "d"})).body["input"] == "d"  # type: ignore[index]
    fixed = embeddings(model="e", input=["x", "y"])
    assert spec(fixed.build()).body["input"] == ["x", "y"]  # type: ignore[index]


def test_embeddings_errors() -> None:
    builder = embeddings(model="e")
    with pytest.raises(TemplateKeyError) as caught:
        builder.build({"body": "x"})
    assert caught.value.field == "text"
    with pytest.raises(PayloadError) as caught:
        builder.build({"text": float("nan")})
    assert caught.value.field == "text"
    with pytest.raises(PayloadError) as caught:
        builder.build({"text": ""})
    assert caught.value.field == "input"


# --- fine-tuning jobs ----------------------------------------------------------------------------


def test_fine_tuning_job_builder(spec: Check) -> None:
    builder = fine_tuning_job(
        model="gpt-4o-mini-2024-07-18", seed=0, hyperparameters={"n_epochs": 3}
    )
    assert (builder.kind, builder.path) == ("fine_tuning_job", "fine_tuning/jobs")
    assert spec(builder.build("file-abc")).body == {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-abc",
        "hyperparameters": {"n_epochs": 3},
        "seed": 0,
    }
    row = {"training_file": "file-1", "suffix": "v2", "validation_file": None, "owner": "me"}
    body = spec(builder.build(row, seed=7)).body
    assert body is not None
    assert (body["training_file"], body["suffix"], body["seed"]) == ("file-1", "v2", 7)
    assert "validation_file" not in body and "owner" not in body
    assert spec(builder.build(None, training_file="file-2")).token_estimate == 0
    with pytest.raises(PayloadError) as caught:
        builder.build(None)
    assert caught.value.field == "training_file"


# --- file uploads --------------------------------------------------------------------------------


def test_file_upload_from_path(tmp_path: Path, spec: Check) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"messages": []}\n')
    request = spec(file_upload(path, purpose="fine-tune").build())
    assert (request.path, request.method, request.body) == ("files", "POST", None)
    assert request.files == {
        "file": FilePart("train.jsonl", b'{"messages": []}\n', "application/jsonl")
    }
    assert request.data == {"purpose": "fine-tune"}
    assert request.token_estimate == 0
    again = spec(file_upload(purpose="user_data").build(str(path), filename="x.txt"))
    assert again.files is not None and again.files["file"].filename == "x.txt"
    assert again.files["file"].content_type == "text/plain"


def test_file_upload_from_bytes_and_rows(tmp_path: Path, spec: Check) -> None:
    request = spec(file_upload(b"{}\n", purpose="batch").build())
    assert request.files is not None and request.files["file"].filename == "upload.jsonl"
    image = spec(file_upload(purpose="vision", filename="cat.png").build(b"\x89PNG"))
    assert image.files is not None and image.files["file"].content_type == "image/png"
    path = tmp_path / "data.csv"
    path.write_text("a,b\n")
    from_row = spec(file_upload(purpose="user_data").build(SeriesLike({"file": str(path)})))
    assert from_row.files is not None and from_row.files["file"].content == b"a,b\n"
    expiring = spec(
        file_upload(
            b"{}", purpose="batch", expires_after={"anchor": "created_at", "seconds": 3600}
        ).build()
    )
    assert expiring.data == {
        "purpose": "batch",
        "expires_after[anchor]": "created_at",
        "expires_after[seconds]": "3600",
    }
    assert "<3 bytes>" in repr(file_upload(b"{}\n", purpose="batch"))


def test_file_upload_errors(tmp_path: Path) -> None:
    with pytest.raises(PayloadError) as caught:
        file_upload(tmp_path / "missing.jsonl", purpose="batch").build()
    assert caught.value.field == "file" and "missing.jsonl" in str(caught.value)
    with pytest.raises(PayloadError) as caught:
        file_upload(b"\x89PNG", purpose="vision").build()
    assert caught.value.field == "filename"
    with pytest.raises(PayloadError) as caught:
        file_upload(b"x", purpose="training")
    assert caught.value.field == "purpose"
    with pytest.raises(PayloadError) as caught:
        file_upload(b"x", purpose="batch").build(None, purpsoe="batch")
    assert caught.value.field == "purpsoe"
    with pytest.raises(PayloadError) as caught:
        file_upload(purpose="batch").build()
    assert caught.value.field == "file"


# --- rows and the package ------------------------------------------------------------------------


def test_unusable_row_type_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="not int"):
        chat(model="m", prompt="{x}").build(42)


def test_package_shares_tokenizer_and_default_max_tokens() -> None:
    package = PayloadPackage(tokenizer=Words(), default_max_tokens=5)
    request = package.chat(model="m", prompt="{q}").build({"q": "a b"})
    assert request.token_estimate == REPLY_PRIMER_TOKENS + MESSAGE_OVERHEAD_TOKENS + 2 + 5
    assert package.completion(model="m").build("a b c").token_estimate == 3 + 5
    assert package.embeddings(model="e").build("a b").token_estimate == 2
    assert isinstance(package.fine_tuning_job(model="m"), FineTuningJobBuilder)
    assert isinstance(package.file_upload(b"x", purpose="batch"), FileUploadBuilder)


def _rows(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"id": i, "text": f"review {i}: fine"}


def test_many_rows_give_independent_bodies() -> None:
    builder = chat(model="m", prompt="{text}")
    requests = [builder.build(row) for row in _rows(3)]
    assert [r.body["messages"][0]["content"] for r in requests if r.body] == [
        "review 0: fine",
        "review 1: fine",
        "review 2: fine",
    ]
    assert requests[0].body is not requests[1].body


def test_required_columns_name_what_each_row_must_have() -> None:
    assert chat(model="m", system="In {lang}.", prompt="{q} {lang}").required_columns == {
        "lang": "system 'In {lang}.'", "q": "prompt '{q} {lang}'"}
    assert list(chat(model="m").required_columns) == ["messages"]
    assert chat(model="m", messages=[{"role": "user", "content": "x"}]).required_columns == {}
    assert list(embeddings(model="m", input_column="doc").required_columns) == ["doc"]
    assert list(embeddings(model="m", template="{title}: {body}").required_columns) == [
        "title", "body"]
    assert list(completion(model="m").required_columns) == ["prompt"]
    assert fine_tuning_job(model="m").required_columns == {}


def test_a_missing_column_error_suggests_the_close_one() -> None:
    with pytest.raises(TemplateKeyError, match=r"which the row lacks \(did you mean 'review'\?\)"):
        chat(model="m", prompt="{reveiw}").build({"review": "x"})
    with pytest.raises(TemplateKeyError, match=r"which the row lacks \(did you mean 'Text'\?\)"):
        chat(model="m", prompt="{text}").build({"Text": "x", "id": 1})
