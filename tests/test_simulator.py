"""The simulator's API surface, through the official ``openai`` SDK and through raw HTTP.

Every response body checked here is also validated against the OpenAI OpenAPI spec (the
``validate_schema`` fixture skips those checks cleanly when the spec file is absent).
"""

from __future__ import annotations

import hashlib
import io

import httpx
import msgspec
import openai
import pytest

from pipeline.simulator import Simulator, count_chat_tokens, count_text_tokens

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi to Ada"}]}


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=1) as sim:
        yield sim


@pytest.fixture
def client(sim):
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)


@pytest.fixture
def http(sim):
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": "Bearer sk-test"}) as c:
        yield c


def schema_ok(validate_schema, body, component):
    errors = validate_schema(body, component)
    assert not errors, errors


# -- through the SDK -----------------------------------------------------------------------------
def test_chat_completion_through_the_sdk(client, sim):
    reply = client.chat.completions.create(max_tokens=100, **CHAT)
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == count_chat_tokens(CHAT["messages"])
    assert reply.usage.completion_tokens == count_text_tokens(reply.choices[0].message.content)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_same_request_gets_the_same_answer(client):
    first = client.chat.completions.create(**CHAT)
    again = client.chat.completions.create(**CHAT)
    other = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi to Grace"}])
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content


def test_max_tokens_caps_the_answer_and_n_gives_choices(client):
    reply = client.chat.completions.create(max_tokens=3, n=2, **CHAT)
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in reply.choices)
    assert reply.usage.completion_tokens == 6


def test_legacy_completion_through_the_sdk(client):
    reply = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon")
    assert reply.object == "text_completion"
    assert reply.usage.completion_tokens <= 16  # the endpoint's default max_tokens
    assert reply.usage.prompt_tokens == count_text_tokens("Once upon")


def test_embeddings_through_the_sdk(client):
    reply = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    assert [d.index for d in reply.data] == [0, 1]
    assert len(reply.data[0].embedding) == 1536
    norm = sum(x * x for x in reply.data[0].embedding)
    assert norm == pytest.approx(1.0, abs=1e-3)
    assert reply.usage.prompt_tokens == 4
    small = client.embeddings.create(model="text-embedding-3-small", input="hello", dimensions=8)
    assert len(small.data[0].embedding) == 8


def test_embeddings_base64_through_the_sdk(client):
    # The SDK asks for base64 by default when numpy is around and decodes it itself.
    reply = client.embeddings.create(model="text-embedding-3-small", input="hi",
                                     encoding_format="base64", dimensions=4)
    assert isinstance(reply.data[0].embedding, str | list)


def test_file_upload_and_fine_tuning_job(client, sim):
    data = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", ' \
           b'"content": "hello"}]}\n'
    uploaded = client.files.create(file=("train.jsonl", io.BytesIO(data)), purpose="fine-tune")
    assert uploaded.bytes == len(data) and uploaded.purpose == "fine-tune"
    assert client.files.retrieve(uploaded.id).filename == "train.jsonl"
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=uploaded.id)
    assert job.status == "validating_files" and job.training_file == uploaded.id
    again = client.fine_tuning.jobs.retrieve(job.id)
    assert again.id == job.id and again.status in ("running", "succeeded")


def test_batch_file_upload(client):
    line = b'{"custom_id": "1", "method": "POST", "url": "/v1/embeddings", "body": {}}\n'
    uploaded = client.files.create(file=("b.jsonl", io.BytesIO(line * 3)), purpose="batch")
    assert uploaded.purpose == "batch"


def test_raw_response_exposes_rate_limit_headers():
    with Simulator(rpm=100, tpm=10_000, policy="minute") as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(max_tokens=50, **CHAT)
        assert raw.headers["x-ratelimit-limit-requests"] == "100"
        assert raw.headers["x-ratelimit-limit-tokens"] == "10000"
        assert raw.headers["x-ratelimit-remaining-requests"] == "99"
        cost = count_chat_tokens(CHAT["messages"]) + 50
        assert int(raw.headers["x-ratelimit-remaining-tokens"]) == 10_000 - cost
        assert raw.headers["x-ratelimit-reset-requests"].endswith("ms")
        assert raw.parse().choices[0].message.content


def test_rate_limit_is_a_rate_limit_error_for_the_sdk():
    with Simulator(rpm=1) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
        client.chat.completions.create(**CHAT)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(**CHAT)
        assert info.value.code == "rate_limit_exceeded"
        assert float(info.value.response.headers["retry-after"]) > 0


def test_insufficient_quota_for_the_sdk():
    with Simulator(quota_tokens=0) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(**CHAT)
        assert info.value.code == "insufficient_quota"
        assert "retry-after" not in info.value.response.headers
        assert sim.stats().insufficient_quota == 1


def test_wrong_or_missing_key_is_401(validate_schema):
    with Simulator(api_key="sk-right-key-123") as sim:
        wrong = openai.OpenAI(base_url=sim.base_url, api_key="sk-wrong-key-456", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            wrong.chat.completions.create(**CHAT)
        assert "sk-wrong-key-456" not in str(info.value)  # redacted, like the real API
        right = openai.OpenAI(base_url=sim.base_url, api_key="sk-right-key-123", max_retries=0)
        assert right.chat.completions.create(**CHAT).choices
        response = httpx.post(f"{sim.base_url}/chat/completions", json=CHAT)
        assert response.status_code == 401
        schema_ok(validate_schema, response.json(), "ErrorResponse")
        assert [e.outcome for e in sim.log()] == ["unauthorized", "ok", "unauthorized"]
        assert "sk-right-key-123" not in repr(sim) and "sk-right" not in repr(sim.log())


# -- response bodies against the spec ------------------------------------------------------------
def test_every_success_body_matches_the_spec(http, validate_schema):
    chat = http.post("/chat/completions", json={**CHAT, "n": 2, "max_tokens": 5})
    schema_ok(validate_schema, chat.json(), "CreateChatCompletionResponse")
    completion = http.post("/completions", json={"model": "m", "prompt": ["a", "b"]})
    schema_ok(validate_schema, completion.json(), "CreateCompletionResponse")
    for inputs in ("text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        emb = http.post("/embeddings", json={"model": "m", "input": inputs, "dimensions": 3})
        assert emb.status_code == 200, emb.text
        schema_ok(validate_schema, emb.json(), "CreateEmbeddingResponse")
    upload = http.post("/files", data={"purpose": "fine-tune"},
                       files={"file": ("t.jsonl", b'{"messages": []}\n')})
    schema_ok(validate_schema, upload.json(), "OpenAIFile")
    file_id = upload.json()["id"]
    schema_ok(validate_schema, http.get(f"/files/{file_id}").json(), "OpenAIFile")
    job = http.post("/fine_tuning/jobs", json={"model": "gpt-4o-mini", "training_file": file_id})
    schema_ok(validate_schema, job.json(), "FineTuningJob")
    got = http.get(f"/fine_tuning/jobs/{job.json()['id']}")
    schema_ok(validate_schema, got.json(), "FineTuningJob")


BAD_BODIES = [
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temprature": 1}',
     "temprature", "unknown_parameter"),
    (b'{"model": 3, "messages": [{"role": "user", "content": "x"}]}', "model", "invalid_type"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "missing_required_parameter"),
    (b'{"model": "m"}', "messages", "missing_required_parameter"),
    (b'{"model": "m", "messages": []}', "messages", "invalid_value"),
    (b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}', "messages[0].role",
     "invalid_value"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}', "n",
     "invalid_value"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}',
     "max_tokens", "invalid_type"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}',
     "stream", "unsupported_value"),
    (b'{"model": "m", "messages": [', None, None),
    (b"[1, 2]", None, None),
    (b"", "model", "missing_required_parameter"),
]


@pytest.mark.parametrize(("body", "param", "code"), BAD_BODIES)
def test_bad_chat_bodies_get_400_with_the_spec_error_shape(http, validate_schema, body, param,
                                                           code):
    response = http.post("/chat/completions", content=body,
                         headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code,
                                                              "invalid_request_error")
    schema_ok(validate_schema, response.json(), "ErrorResponse")


@pytest.mark.parametrize(("path", "body"), [
    ("/completions", {"model": "m"}),
    ("/completions", {"model": "m", "prompt": ["a", 1]}),
    ("/embeddings", {"model": "m", "input": ""}),
    ("/embeddings", {"model": "m", "input": "x", "encoding_format": "hex"}),
    ("/fine_tuning/jobs", {"model": "m", "training_file": "file-missing"}),
    ("/fine_tuning/jobs", {"model": "m"}),
])
def test_bad_bodies_on_other_endpoints(http, validate_schema, path, body):
    response = http.post(path, json=body)
    assert response.status_code == 400, response.text
    schema_ok(validate_schema, response.json(), "ErrorResponse")


def test_bad_uploads_and_unknown_objects(http, validate_schema):
    not_jsonl = http.post("/files", data={"purpose": "fine-tune"},
                          files={"file": ("t.jsonl", b"not json\n")})
    assert not_jsonl.status_code == 400
    bad_purpose = http.post("/files", data={"purpose": "fun"}, files={"file": ("t", b"x")})
    assert bad_purpose.json()["error"]["param"] == "purpose"
    no_file = http.post("/files", data={"purpose": "batch"})
    assert no_file.status_code == 400
    for response in (http.get("/files/file-nope"), http.get("/fine_tuning/jobs/ftjob-nope"),
                     http.post("/nowhere", json={}), http.get("/chat/completions")):
        assert response.status_code == 404
        schema_ok(validate_schema, response.json(), "ErrorResponse")


def test_paths_without_v1_prefix_work(sim):
    response = httpx.post(f"{sim.url}/chat/completions", json=CHAT)
    assert response.status_code == 200


def test_context_window_is_checked():
    with Simulator(context_window=50) as sim:
        body = {"model": "m", "messages": [{"role": "user", "content": "x" * 100}],
                "max_tokens": 40}
        response = httpx.post(f"{sim.base_url}/chat/completions", json=body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "context_length_exceeded"
        assert sim.log()[-1].outcome == "context_length"


def test_custom_responder():
    def shout(endpoint, body):
        return body["messages"][-1]["content"].upper()

    with Simulator(responder=shout) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
        reply = client.chat.completions.create(**CHAT)
        assert reply.choices[0].message.content == "SAY HI TO ADA"
        assert reply.usage.completion_tokens == count_text_tokens("SAY HI TO ADA")


# -- the request log -----------------------------------------------------------------------------
def test_log_records_arrival_cost_outcome_and_body_hash():
    with Simulator(tpm=100_000) as sim, httpx.Client(base_url=sim.base_url) as http:
        bodies = [msgspec.json.encode({**CHAT, "max_tokens": 10 + i, "n": 2}) for i in range(3)]
        for body in bodies:
            http.post("/chat/completions", content=body)
        log = sim.log()
        assert [e.body_hash for e in log] == [hashlib.sha256(b).hexdigest() for b in bodies]
        prompt = count_chat_tokens(CHAT["messages"])
        assert [e.tokens for e in log] == [prompt + (10 + i) * 2 for i in range(3)]
        assert [e.outcome for e in log] == ["ok"] * 3
        assert all(e.status == 200 and e.path == "/v1/chat/completions" for e in log)
        arrivals = [e.arrival for e in log]
        assert arrivals == sorted(arrivals) and arrivals[0] >= 0
        stats = sim.stats()
        assert stats.requests == stats.ok == 3 and stats.tokens == sum(e.tokens for e in log)
        assert stats.completion_tokens == sum(e.completion_tokens for e in log)
        sim.reset()
        assert sim.log() == [] and sim.stats().requests == 0


def test_response_format_gets_json_that_fits_the_schema(client):
    schema = {"type": "object", "properties": {
        "label": {"type": "string", "enum": ["spam", "ham"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "meta": {"$ref": "#/$defs/meta"}},
        "required": ["label", "score", "tags", "meta"], "additionalProperties": False,
        "$defs": {"meta": {"type": "object", "properties": {"n": {"type": "integer"}}}}}
    reply = client.chat.completions.create(
        response_format={"type": "json_schema",
                         "json_schema": {"name": "verdict", "schema": schema, "strict": True}},
        **CHAT)
    value = msgspec.json.decode(reply.choices[0].message.content)
    assert value["label"] in ("spam", "ham") and 0 <= value["score"] <= 1
    assert isinstance(value["tags"], list) and isinstance(value["meta"]["n"], int)
    plain = client.chat.completions.create(response_format={"type": "json_object"}, **CHAT)
    assert isinstance(msgspec.json.decode(plain.choices[0].message.content)["answer"], str)


def test_models_file_listing_and_file_content(client, http, validate_schema):
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]
    assert client.models.retrieve("my-model").id == "my-model"
    schema_ok(validate_schema, http.get("/models").json(), "ListModelsResponse")
    schema_ok(validate_schema, http.get("/models/gpt-4o").json(), "Model")
    data = b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}\n'
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    assert client.files.content(uploaded.id).content == data
    listing = http.get("/files").json()
    assert uploaded.id in [f["id"] for f in listing["data"]]
    schema_ok(validate_schema, listing, "ListFilesResponse")
    assert http.get("/files/file-nope/content").status_code == 404
