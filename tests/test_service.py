"""Services over httpx.MockTransport: what `call` sends, returns and raises; config; secrets."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

import httpx
import msgspec
import pytest

from pipeline import errors
from pipeline.core.request import APIRequest, FilePart, Response
from pipeline.http import BaseService, Endpoint, EndpointLimits, Job, JSONService, OpenAIService

KEY = "sk-test-SUPERSECRET-0123456789abcdef"
CHAT = APIRequest(
    path="chat/completions",
    body={"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 0},
    token_estimate=10,
)
OK_BODY = {  # an answer for every shape a test sends (chat, completions, embeddings)
    "id": "c1",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "text": "hi",
                 "finish_reason": "stop"}],
    "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}

Handler = Callable[[httpx.Request], httpx.Response]


def recording(handler: Handler | None = None) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def wrapped(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        if handler is not None:
            return handler(request)
        return httpx.Response(200, json=OK_BODY, headers={"X-Request-Id": "req_1"})

    return httpx.MockTransport(wrapped), seen


def openai(handler: Handler | None = None, **kwargs) -> tuple[OpenAIService, list[httpx.Request]]:
    transport, seen = recording(handler)
    kwargs.setdefault("base_url", "http://127.0.0.1:9/v1")
    return OpenAIService(KEY, transport=transport, **kwargs), seen


# -- call -------------------------------------------------------------------------------------


async def test_call_sends_json_and_returns_a_decoded_response():
    service, seen = openai()
    async with service:
        response = await service.call("chat/completions", CHAT)
    assert isinstance(response, Response)
    assert response.status == 200
    assert response.body == OK_BODY
    assert response.usage is not None and response.usage.total_tokens == 5
    assert response.headers["x-request-id"] == "req_1"  # lower-cased names
    assert response.latency >= 0
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://127.0.0.1:9/v1/chat/completions"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert msgspec.json.decode(request.content) == CHAT.body  # seed=0 survives


async def test_call_sends_multipart_files_and_form_fields():
    service, seen = openai(lambda r: httpx.Response(200, json={"id": "file-1"}))
    upload = APIRequest(
        path="files",
        files={"file": FilePart("a.jsonl", b'{"x": 1}\n', "application/jsonl")},
        data={"purpose": "batch"},
    )
    async with service:
        response = await service.call(service.endpoint("files"), upload)
    assert response.body == {"id": "file-1"}
    content = seen[0].content
    assert seen[0].headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'filename="a.jsonl"' in content and b'{"x": 1}' in content
    assert b'name="purpose"' in content and b"batch" in content


@pytest.mark.parametrize("method", ["GET", "DELETE", "HEAD", "OPTIONS", "PUT", "PATCH"])
async def test_call_uses_the_request_method(method):
    service, seen = openai(lambda r: httpx.Response(200, json={"ok": True}))
    async with service:
        await service.call("files/file-1", APIRequest(path="files/file-1", method=method))
    assert seen[0].method == method and seen[0].content == b""


async def test_an_empty_request_path_takes_the_endpoint_path():
    service, seen = openai()
    async with service:
        await service.call(Endpoint("embeddings"), APIRequest(path="", body={"input": "x"}))
    assert seen[0].url.path == "/v1/embeddings"


async def test_raw_content_types_are_returned_as_bytes_and_empty_bodies_as_none():
    service, _ = openai(
        lambda r: httpx.Response(
            200, content=b'{"a":1}\n{"a":2}\n', headers={"content-type": "application/octet-stream"}
        )
    )
    async with service:
        response = await service.send(APIRequest(path="files/f/content", method="GET"))
    assert response.body == b'{"a":1}\n{"a":2}\n'
    service, _ = openai(lambda r: httpx.Response(204))
    async with service:
        assert (await service.send(APIRequest(path="files/f", method="DELETE"))).body is None


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, {"error": {"message": "slow", "code": "rate_limit_exceeded"}}, errors.RateLimitError),
        (429, {"error": {"code": "insufficient_quota"}}, errors.QuotaExceededError),
        (500, {"error": {"message": "boom"}}, errors.ServerError),
        (503, None, errors.ServerError),
        (
            400,
            {"error": {"message": "long", "code": "context_length_exceeded"}},
            errors.ContextLengthExceededError,
        ),
        (401, {"error": {"message": "bad key"}}, errors.AuthenticationError),
        (404, {"error": {"message": "nope"}}, errors.NotFoundError),
    ],
)
async def test_error_statuses_raise_the_classified_error(status, body, expected):
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"retry-after": "1.5"}
        if body is None:
            return httpx.Response(status, headers=headers)
        return httpx.Response(status, headers=headers, json=body)

    service, _ = openai(handler)
    async with service:
        with pytest.raises(errors.APIError) as info:
            await service.call("chat/completions", CHAT)
    err = info.value
    assert type(err) is expected and err.status == status
    assert err.retry_after == 1.5
    assert str(err).startswith("POST http://127.0.0.1:9/v1/chat/completions -> ")


async def test_a_2xx_body_that_is_not_json_is_malformed():
    service, _ = openai(lambda r: httpx.Response(200, content=b'{"id": "c1", "choi'))
    async with service:
        with pytest.raises(errors.MalformedResponseError) as info:
            await service.call("chat/completions", CHAT)
    assert info.value.retryable


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), errors.APIConnectionError),
        (httpx.ReadError("reset"), errors.APIConnectionError),
        (httpx.RemoteProtocolError("closed"), errors.APIConnectionError),
        (httpx.ReadTimeout("slow"), errors.APITimeoutError),
    ],
)
async def test_transport_failures_raise_classified_errors_without_chaining(exc, expected):
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    service, _ = openai(handler)
    async with service:
        with pytest.raises(expected) as info:
            await service.call("chat/completions", CHAT)
    # No chained transport exception: it would keep the request (and its auth header) alive.
    assert info.value.__cause__ is None and info.value.__context__ is None


async def test_a_programming_error_in_the_transport_is_not_disguised():
    def handler(request: httpx.Request) -> httpx.Response:
        raise ZeroDivisionError

    service, _ = openai(handler)
    async with service:
        with pytest.raises(ZeroDivisionError):
            await service.call("chat/completions", CHAT)


async def test_an_unencodable_body_is_a_payload_error():
    service, seen = openai()
    async with service:
        with pytest.raises(errors.PayloadError):
            await service.call("x", APIRequest(path="x", body={"when": object()}))
    assert seen == []


# -- the client -------------------------------------------------------------------------------


def test_construction_binds_no_client_and_works_across_event_loops():
    service, seen = openai()
    assert service._client is None  # nothing created outside a loop

    async def one_call() -> int:
        return (await service.call("chat/completions", CHAT)).status

    assert asyncio.run(one_call()) == 200
    first = service._client
    assert asyncio.run(one_call()) == 200  # a new loop: a new client, no "attached to a
    assert service._client is not first  # different loop" error
    assert len(seen) == 2


async def test_one_shared_client_closed_by_the_context_manager():
    service, _ = openai()
    async with service:
        await service.call("chat/completions", CHAT)
        client = service.client
        await service.call("embeddings", CHAT)
        assert service.client is client
    assert client.is_closed
    await service.call("chat/completions", CHAT)  # reopens lazily
    assert service.client is not client
    await service.aclose()
    await service.aclose()  # idempotent


async def test_timeouts_are_explicit_and_long_by_default():
    service, _ = openai()
    async with service:
        timeout = service.client.timeout
    assert (timeout.connect, timeout.read) == (10.0, 600.0)
    service, _ = openai(timeout=httpx.Timeout(1.0))
    async with service:
        assert service.client.timeout.read == 1.0
    with pytest.raises(errors.ConfigError):
        openai(timeout=-1)


async def test_transport_choices():
    service = OpenAIService(KEY, "http://127.0.0.1:9/v1", transport="aiohttp", max_connections=8)
    async with service:
        transport = service.client._transport
        assert type(transport).__name__ == "AiohttpTransport"
        assert transport.limits.max_connections == 8
    service = OpenAIService(KEY, "http://127.0.0.1:9/v1", max_connections=64)
    async with service:
        assert repr(service.client._transport) == (
            "ShardedTransport(8 pools x 8 connections, in flight 0)"
        )
    with pytest.raises(errors.ConfigError, match="unknown transport"):
        OpenAIService(KEY, "http://127.0.0.1:9/v1", transport="curl")  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError):
        OpenAIService(KEY, "http://127.0.0.1:9/v1", transport=object())  # type: ignore[arg-type]


async def test_with_proxy_variables_the_proxied_transport_keeps_the_limits(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    service = OpenAIService(KEY, "http://127.0.0.1:9/v1", max_connections=8)
    async with service:  # (routing itself: tests/test_transports.py)
        router = service.client._transport
        pool = router.transport_for(httpx.URL("https://api.example.test/v1"))._pool
        assert (pool._max_connections, pool._max_keepalive_connections) == (8, 8)


async def test_sharded_transport_sends_to_the_least_busy_pool_until_bodies_close():
    from pipeline.http.transports import ShardedTransport

    transport = ShardedTransport(limits=httpx.Limits(max_connections=24), pool_size=8)
    used: list[int] = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b"{}"

    for i in range(3):
        transport._shards[i] = httpx.MockTransport(
            lambda r, i=i: used.append(i) or httpx.Response(200, stream=Body())
        )
    request = httpx.Request("GET", "http://127.0.0.1:9/x")
    first = await transport.handle_async_request(request)
    second = await transport.handle_async_request(request)
    assert used == [0, 1] and transport._in_flight == [1, 1, 0]
    await first.aclose()
    await first.aclose()  # closing twice gives the slot back once
    third = await transport.handle_async_request(request)
    assert used == [0, 1, 0] and transport._in_flight == [1, 1, 0]
    assert [chunk async for chunk in third.stream] == [b"{}"]
    await second.aclose()
    await third.aclose()
    assert transport._in_flight == [0, 0, 0]
    await transport.aclose()


async def test_sharded_transport_counts_failed_requests_out():
    from pipeline.http.transports import ShardedTransport

    transport = ShardedTransport(limits=httpx.Limits(max_connections=8))

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    transport._shards[0] = httpx.MockTransport(refuse)
    with pytest.raises(httpx.ConnectError):
        await transport.handle_async_request(httpx.Request("GET", "http://127.0.0.1:9/x"))
    assert transport._in_flight == [0]
    transport._shards[0] = httpx.MockTransport(lambda r: httpx.Response(200, content=b"{}"))
    response = await transport.handle_async_request(httpx.Request("GET", "http://127.0.0.1:9/x"))
    assert response.is_closed and transport._in_flight == [0]  # read already: not in flight


def test_the_aiohttp_transport_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "httpx_aiohttp", None)  # import fails
    with pytest.raises(errors.ConfigError, match=r"pipeline\[fast\]"):
        OpenAIService(KEY, "http://127.0.0.1:9/v1", transport="aiohttp")


def test_base_service_is_abstract():
    with pytest.raises(TypeError):
        BaseService("http://h/v1")  # type: ignore[abstract]


@pytest.mark.parametrize("url", ["", "api.openai.com/v1", "ftp://h/v1", "https://h/v1?key=x"])
def test_bad_base_urls(url):
    with pytest.raises(errors.ConfigError):
        OpenAIService(KEY, url)


async def test_cookies_are_neither_kept_nor_sent():
    service, seen = openai(lambda r: httpx.Response(200, json=OK_BODY,
                                                         headers={"set-cookie": "a=1"}))
    async with service:
        await service.call("chat/completions", CHAT)
        await service.call("chat/completions", CHAT)
    assert "cookie" not in seen[1].headers
    response = await service.call("chat/completions", CHAT)
    assert "set-cookie" not in response.headers


async def test_the_url_cache_stays_bounded():
    service, seen = openai(lambda r: httpx.Response(200, json=OK_BODY))
    async with service:
        for i in range(1100):
            await service.send(APIRequest(path=f"files/file-{i}", method="GET"))
    assert len(service._urls) <= 1024
    assert seen[-1].url.path == "/v1/files/file-1099"


# -- endpoints and limits ---------------------------------------------------------------------


def test_endpoints_are_lazy_cached_and_configured():
    service = OpenAIService(
        KEY,
        "http://127.0.0.1:9/v1",
        rpm=100,
        tpm=10_000,
        limits={
            "embeddings": {"rpm": 3000, "tpm": 1_000_000},
            "chat/completions": {"max_requests": 5, "interval": 1, "config": {"model": "m"}},
            "files": {"method": "GET"},
        },
    )
    assert dict(service.endpoints) == {}
    chat = service.endpoint("chat/completions")
    assert service.endpoint("/chat/completions") is chat
    assert (chat.max_requests, chat.interval, chat.max_tokens) == (5, 1.0, 10_000 / 60)
    assert chat.config["model"] == "m"
    emb = service.endpoint("embeddings")
    assert (emb.rpm, emb.tpm) == (3000, 1_000_000)
    other = service.endpoint("completions")
    assert (other.rpm, other.tpm) == (100, 10_000)
    assert service.endpoint("files").method == "GET"
    assert service.endpoint("models", method="GET").method == "GET"
    assert set(service.endpoints) == {
        "chat/completions",
        "embeddings",
        "completions",
        "files",
        "models",
    }
    shared = Endpoint("chat/completions", max_requests=1)
    assert service.add_endpoint(shared) is service.endpoint("chat/completions")


@pytest.mark.parametrize(
    "limits",
    [
        {"x": {"rpn": 1}},
        {"x": {"rpm": 1, "max_requests": 1}},
        {"x": {"rpm": -1}},
        {"x": {"rpm": "10"}},
        {"x": {"tpm": 10, "interval": "1"}},
        {"x": {"interval": 0}},
    ],
)
def test_bad_limits_are_config_errors(limits):
    with pytest.raises(errors.ConfigError):
        OpenAIService(KEY, "http://127.0.0.1:9/v1", limits=limits).endpoint("x")


def test_endpoint_limits_values_say_what_the_dicts_say():
    as_values = OpenAIService(KEY, "http://127.0.0.1:9/v1", rpm=100, tpm=10_000, limits={
        "embeddings": EndpointLimits(rpm=3000, tpm=1_000_000),
        "chat/completions": EndpointLimits(max_requests=5, interval=1, config={"model": "m"}),
        "completions": EndpointLimits(tpm=None),  # None: not limited here, whatever the service
    })
    emb = as_values.endpoint("embeddings")
    assert (emb.rpm, emb.tpm) == (3000, 1_000_000)
    chat = as_values.endpoint("chat/completions")
    assert (chat.max_requests, chat.interval, chat.config["model"]) == (5, 1.0, "m")
    legacy = as_values.endpoint("completions")
    assert (legacy.rpm, legacy.tpm) == (100, None)
    assert repr(EndpointLimits(rpm=3000)) == "EndpointLimits(rpm=3000)"


def test_a_misspelt_limit_names_the_path_and_the_closest_setting():
    with pytest.raises(errors.ConfigError, match=r"'rmp' for 'embeddings' \(did you mean 'rpm'"):
        OpenAIService(KEY, "http://127.0.0.1:9/v1", limits={"embeddings": {"rmp": 3000}})
    with pytest.raises(errors.ConfigError, match="must be an EndpointLimits or a dict"):
        OpenAIService(KEY, "http://127.0.0.1:9/v1", limits={"embeddings": 3000})


# -- OpenAIService configuration --------------------------------------------------------------


def test_environment_defaults(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    service = OpenAIService()
    assert service.base_url == "https://api.openai.com/v1"
    assert service.auth_headers() == {"authorization": f"Bearer {KEY}"}
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1/")
    assert OpenAIService().base_url == "http://127.0.0.1:8000/v1"


def test_a_missing_key_for_openai_is_a_clear_error_but_local_servers_need_none(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(errors.ConfigError, match="OPENAI_API_KEY"):
        OpenAIService()
    local = OpenAIService(base_url="http://127.0.0.1:11434/v1")
    assert local.auth_headers() == {}
    assert "api_key=None" in repr(local)


async def test_organization_and_project_headers():
    service, seen = openai(organization="org-1", project="proj-1")
    async with service:
        await service.call("chat/completions", CHAT)
    assert seen[0].headers["openai-organization"] == "org-1"
    assert seen[0].headers["openai-project"] == "proj-1"


async def test_azure_urls_and_api_key_header():
    transport, seen = recording()
    service = OpenAIService(
        KEY, "https://res.openai.azure.com/", azure_api_version="2024-10-21", transport=transport
    )
    assert service.is_azure
    async with service:
        await service.call("chat/completions", CHAT)  # deployment from the model
        await service.send(APIRequest(path="files", files={"file": FilePart("a", b"x")}))
    chat, files = seen
    assert str(chat.url) == (
        "https://res.openai.azure.com/openai/deployments/m/chat/completions?api-version=2024-10-21"
    )
    assert chat.headers["api-key"] == KEY and "authorization" not in chat.headers
    assert str(files.url) == "https://res.openai.azure.com/openai/files?api-version=2024-10-21"


async def test_azure_deployment_from_argument_or_url():
    transport, seen = recording()
    by_arg = OpenAIService(
        KEY,
        "https://res.openai.azure.com/openai",
        azure_deployment="gpt 4o",
        azure_api_version="v",
        transport=transport,
    )
    by_url = OpenAIService(
        KEY,
        "https://res.openai.azure.com/openai/deployments/emb",
        azure_api_version="v",
        transport=transport,
    )
    async with by_arg, by_url:
        await by_arg.call("chat/completions", CHAT)
        await by_url.send(APIRequest(path="embeddings", body={"input": "x"}))
    assert seen[0].url.raw_path == b"/openai/deployments/gpt%204o/chat/completions?api-version=v"
    assert seen[1].url.path == "/openai/deployments/emb/embeddings"


def test_azure_configuration_errors(monkeypatch):
    for name in ("AZURE_OPENAI_ENDPOINT", "OPENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(errors.ConfigError, match="base_url"):
        OpenAIService(KEY, azure_api_version="v")
    with pytest.raises(errors.ConfigError, match="api_version"):
        OpenAIService(KEY, "https://res.openai.azure.com", azure_deployment="d")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://env.openai.azure.com")
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    service = OpenAIService(azure_deployment="d")
    assert service.auth_headers()["api-key"] == KEY
    assert service.url_for(CHAT)[0].startswith("https://env.openai.azure.com/openai/deployments/d/")


async def test_azure_without_deployment_or_model_is_a_config_error():
    transport, _ = recording()
    service = OpenAIService(
        KEY, "https://r.openai.azure.com", azure_api_version="v", transport=transport
    )
    with pytest.raises(errors.ConfigError, match="azure_deployment"):
        await service.send(APIRequest(path="embeddings", body={"input": "x"}))


# -- JSONService ------------------------------------------------------------------------------


async def test_json_service_auth_options():
    transport, seen = recording()
    token = JSONService("http://127.0.0.1:9/api", auth="tok-0123456789abcdef", transport=transport)
    basic = JSONService(
        "http://127.0.0.1:9/api", auth=("me", "pw-0123456789abcdef"), transport=transport
    )
    header = JSONService(
        "http://127.0.0.1:9/api", headers={"X-API-Key": "hdr-0123456789abcdef"}, transport=transport
    )
    async with token, basic, header:
        for service in (token, basic, header):
            await service.send(APIRequest(path="items", body={"a": 1}))
    assert seen[0].headers["authorization"] == "Bearer tok-0123456789abcdef"
    assert seen[1].headers["authorization"].startswith("Basic ")
    assert seen[2].headers["x-api-key"] == "hdr-0123456789abcdef"
    for service, secret in (
        (token, "tok-0123456789abcdef"),
        (basic, "pw-0123456789abcdef"),
        (header, "hdr-0123456789abcdef"),
    ):
        assert secret in service.secrets()
        assert secret not in repr(service)
    with pytest.raises(errors.ConfigError):
        JSONService("http://127.0.0.1:9/api", auth=42)  # type: ignore[arg-type]


# -- jobs -------------------------------------------------------------------------------------


class EchoBuilder:
    path = "embeddings"

    def build(self, row: object) -> APIRequest:
        return APIRequest(path=self.path, body={"input": str(row)})


async def test_job_builds_and_calls_through_its_service():
    service, seen = openai()
    job = service.job(EchoBuilder())
    assert isinstance(job, Job)
    assert job.endpoint is service.endpoint("embeddings") and job.path == "embeddings"
    assert job.build("a").body == {"input": "a"}
    async with service:
        response = await job.call("row-1")
    assert response.status == 200
    assert msgspec.json.decode(seen[0].content) == {"input": "row-1"}
    assert "Job('embeddings'" in repr(job)
    with pytest.raises(errors.ConfigError):
        service.job(object())  # type: ignore[arg-type]


# -- secrets ----------------------------------------------------------------------------------


async def test_the_key_never_appears_in_reprs_logs_errors(caplog):
    def echo_key(request: httpx.Request) -> httpx.Response:  # a server that echoes the key
        auth = request.headers["authorization"]
        return httpx.Response(
            401,
            headers={"x-echo": auth},
            json={
                "error": {
                    "message": f"Incorrect API key provided: {auth}",
                    "code": "invalid_api_key",
                }
            },
        )

    service, _ = openai(echo_key)
    caplog.set_level(logging.DEBUG)
    async with service:
        with pytest.raises(errors.AuthenticationError) as info:
            await service.call("chat/completions", CHAT)
        ok, _ = openai()
        await ok.call("chat/completions", CHAT)
        await ok.aclose()
    err = info.value
    texts = [
        repr(service),
        str(service),
        str(err),
        repr(err),
        repr(err.body),
        repr(err.headers),
        caplog.text,
        repr(vars(service)),
        repr(service.endpoints),
    ]
    for text in texts:
        assert KEY not in text
    assert "sk-...cdef" in repr(service)
    assert "pipeline.http" in caplog.text  # the debug log ran


async def test_openai_job_helpers_use_the_payload_builders_and_endpoint_config():
    pytest.importorskip("pipeline.payloads")
    service, seen = openai(limits={"chat/completions": {"config": {"model": "m", "seed": 0}}})
    job = service.chat(prompt="Say {word}", max_tokens=5)
    assert job.endpoint is service.endpoint("chat/completions") and job.path == "chat/completions"
    request = job.build({"word": "hi"})
    assert request.body["model"] == "m" and request.body["seed"] == 0  # from the endpoint
    assert request.body["messages"][-1]["content"] == "Say hi"
    async with service:
        assert (await job.call({"word": "hi"})).status == 200
    assert msgspec.json.decode(seen[0].content) == request.body
    assert service.embeddings(model="e", input="{text}").build({"text": "x"}).path == "embeddings"
    assert service.completions(model="c", prompt="{p}").path == "completions"
    assert service.completion(model="c", prompt="{p}").path == "completions"  # the builder's name
    assert service.fine_tuning_job(model="f", training_file="file-1").path == "fine_tuning/jobs"
    assert service.file_upload(purpose="batch").endpoint.path == "files"
    with pytest.raises(errors.PayloadError):
        service.chat(model="m", not_a_field=1)


# -- against the simulator, over real loopback HTTP --------------------------------------------

simulator = pytest.importorskip("pipeline.simulator")
Simulator = simulator.Simulator
TRANSPORTS = ["httpx", "aiohttp"]
SIM_CHAT = APIRequest(
    path="chat/completions",
    body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "seed": 0},
)


async def sim_call(sim, request: APIRequest = SIM_CHAT, *, key: str = KEY, **kwargs) -> Response:
    async with OpenAIService(key, sim.base_url, **kwargs) as service:
        return await service.send(request)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_simulator_success_on_every_endpoint(transport, tmp_path):
    from pipeline.adapters.standalone import upload_file_with_retry

    train = tmp_path / "train.jsonl"
    train.write_text(
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
    )
    with Simulator() as sim:
        async with OpenAIService(KEY, sim.base_url, transport=transport) as service:
            chat = await service.call(service.endpoint("chat/completions"), SIM_CHAT)
            emb = await service.send(
                APIRequest(
                    path="embeddings",
                    body={"model": "text-embedding-3-small", "input": "x", "dimensions": 4},
                )
            )
            comp = await service.send(
                APIRequest(
                    path="completions", body={"model": "gpt-3.5-turbo-instruct", "prompt": "x"}
                )
            )
            uploaded = await upload_file_with_retry(service, train, "fine-tune")
            fetched = await service.send(
                APIRequest(path=f"files/{uploaded.body['id']}", method="GET")
            )
            job = await service.send(
                APIRequest(
                    path="fine_tuning/jobs",
                    body={"model": "gpt-4o-mini", "training_file": uploaded.body["id"]},
                )
            )
        stats = sim.stats()
    assert chat.status == 200 and chat.body["object"] == "chat.completion"
    assert chat.usage is not None and chat.usage.total_tokens > 0
    assert chat.headers["x-request-id"].startswith("req_")
    assert len(emb.body["data"][0]["embedding"]) == 4
    assert comp.body["object"] == "text_completion"
    assert uploaded.body["purpose"] == "fine-tune" and fetched.body["id"] == uploaded.body["id"]
    assert job.body["object"] == "fine_tuning.job"
    assert stats.ok == 6


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("fault", "expected", "status"),
    [
        ("500", errors.ServerError, 500),
        ("502", errors.ServerError, 502),
        ("503", errors.ServerError, 503),
        ("context_length", errors.ContextLengthExceededError, 400),
        ("hang", errors.APITimeoutError, None),
        ("reset", errors.APIConnectionError, None),
        ("truncated", errors.MalformedResponseError, 200),
        ("malformed", errors.MalformedResponseError, 200),
    ],
)
async def test_simulator_faults_become_classified_errors(transport, fault, expected, status):
    with Simulator(faults={fault: 1.0}) as sim, pytest.raises(errors.APIError) as info:
        # A short read timeout: "hang" never answers.
        await sim_call(sim, transport=transport, timeout=0.3)
    err = info.value
    assert type(err) is expected
    assert err.status == status
    assert err.retryable is expected.retryable
    assert f"POST {sim.base_url}/chat/completions" in str(err)


async def test_simulator_many_concurrent_calls_share_few_connections():
    with Simulator() as sim:
        service = OpenAIService(KEY, sim.base_url, max_connections=16)
        async with service:
            responses = await asyncio.gather(*(service.send(SIM_CHAT) for _ in range(100)))
            transport = service.client._transport
            assert sum(transport._in_flight) == 0
    assert [r.status for r in responses] == [200] * 100


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_simulator_status_errors(transport):
    with Simulator(rpm=1) as sim:
        async with OpenAIService(KEY, sim.base_url, transport=transport) as service:
            first = await service.send(SIM_CHAT)
            with pytest.raises(errors.RateLimitError) as limited:
                await service.send(SIM_CHAT)
            with pytest.raises(errors.NotFoundError):
                await service.send(APIRequest(path="no/such/endpoint", body={}))
            with pytest.raises(errors.BadRequestError):
                await service.send(APIRequest(path="chat/completions", body={"model": "m"}))
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 60
    assert limited.value.code == "rate_limit_exceeded"
    with Simulator(quota_tokens=0) as sim, pytest.raises(errors.QuotaExceededError) as quota:
        await sim_call(sim, transport=transport)
    assert not quota.value.retryable


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_simulator_401_never_shows_the_key(transport, caplog):
    caplog.set_level(logging.DEBUG)
    with Simulator(api_key="sk-the-right-key-000000000000") as sim:
        service = OpenAIService(KEY, sim.base_url, transport=transport)
        async with service:
            with pytest.raises(errors.AuthenticationError) as info:
                await service.send(SIM_CHAT)
        ok = await sim_call(sim, key="sk-the-right-key-000000000000", transport=transport)
    assert ok.status == 200
    err = info.value
    assert err.code == "invalid_api_key" and not err.retryable
    for text in (
        str(err),
        repr(err),
        repr(err.body),
        repr(err.headers),
        repr(service),
        caplog.text,
    ):
        assert KEY not in text


async def test_simulator_job_through_the_payload_builder():
    pytest.importorskip("pipeline.payloads")
    with Simulator() as sim:
        async with OpenAIService(KEY, sim.base_url) as service:
            job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=5)
            responses = await asyncio.gather(*(job.call({"text": str(i)}) for i in range(20)))
        log = sim.log()
    assert all(r.status == 200 for r in responses)
    assert len(log) == 20


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_answered_call_leaves_nothing_for_the_garbage_collector(transport):
    # httpx's stream wrapper points back at its response: uncut, each call left about 40
    # objects in a cycle (the response, its request, headers, the transport's response)
    # that only a collection frees, and a run paid for those collections on every request.
    import gc

    with Simulator(process=True) as sim:  # (its objects in a process of its own)
        async with OpenAIService(KEY, sim.base_url, transport=transport) as service:
            endpoint = service.endpoint("chat/completions")
            await service.call(endpoint, SIM_CHAT)  # connect, warm up
            gc.collect()
            gc.disable()
            try:
                for _ in range(50):
                    response = await service.call(endpoint, SIM_CHAT)
                    assert response.status == 200
                found = gc.collect()
            finally:
                gc.enable()
    assert found < 50, f"{found} objects in cycles after 50 calls"
