"""API utilities: error classification, Retry-After, URLs, methods, uploads, cache keys."""

from __future__ import annotations

import email.utils
import hashlib
import subprocess
import sys

import aiohttp
import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import errors
from pipeline.api_utils import (
    HTTP_METHODS,
    api_method,
    cache_key,
    classify_error,
    classify_exception,
    decode_body,
    endpoint_from_url,
    mask_secret,
    redact_headers,
    redact_text,
    redact_url,
    retry_after,
    upload_file_with_retry,
)
from pipeline.request import APIRequest, FilePart, Response
from pipeline.service import JSONService

SECRET = "sk-proj-SECRETSECRET0123456789"


def openai_error(message: str, code: str | None = None, type_: str = "invalid_request_error"):
    return msgspec.json.encode(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    )


# -- classify_error ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected", "retryable"),
    [
        (
            429,
            openai_error("Rate limit reached", "rate_limit_exceeded"),
            errors.RateLimitError,
            True,
        ),
        (
            429,
            openai_error("You exceeded your quota", "insufficient_quota"),
            errors.QuotaExceededError,
            False,
        ),
        (429, openai_error("quota", None, "insufficient_quota"), errors.QuotaExceededError, False),
        (429, b"", errors.RateLimitError, True),
        (500, openai_error("oops", None, "server_error"), errors.ServerError, True),
        (502, b"<html>Bad Gateway</html>", errors.ServerError, True),
        (503, b"", errors.ServerError, True),
        (504, b"upstream timeout", errors.ServerError, True),
        (408, b"", errors.RequestTimeoutError, True),
        (409, openai_error("conflict"), errors.ConflictError, True),
        (400, openai_error("bad", "invalid_value"), errors.BadRequestError, False),
        (422, b'{"detail": "unprocessable"}', errors.BadRequestError, False),
        (
            400,
            openai_error("too long", "context_length_exceeded"),
            errors.ContextLengthExceededError,
            False,
        ),
        # vLLM says it in the message only.
        (
            400,
            openai_error("This model's maximum context length is 4096 tokens."),
            errors.ContextLengthExceededError,
            False,
        ),
        (
            401,
            openai_error("Incorrect API key", "invalid_api_key"),
            errors.AuthenticationError,
            False,
        ),
        (403, openai_error("not allowed"), errors.PermissionDeniedError, False),
        (404, openai_error("no such model", "model_not_found"), errors.NotFoundError, False),
        (405, b"", errors.APIStatusError, False),
        (302, b"", errors.APIStatusError, False),
    ],
)
def test_classify_error_maps_status_and_code_into_the_tree(status, body, expected, retryable):
    err = classify_error(status, {}, body)
    assert type(err) is expected
    assert err.retryable is retryable
    assert err.status == status
    assert str(err).startswith(str(status))


def test_classify_error_takes_message_and_code_from_openai_body():
    err = classify_error(
        429, {"Retry-After": "3"}, openai_error("Slow down", "rate_limit_exceeded")
    )
    assert str(err) == "429 Too Many Requests: Slow down (rate_limit_exceeded)"
    assert err.code == "rate_limit_exceeded"
    assert err.retry_after == 3.0
    assert err.body["error"]["message"] == "Slow down"


def test_classify_error_excerpts_a_non_json_body():
    err = classify_error(502, {}, b"<html>" + b"x" * 5000 + b"</html>")
    assert isinstance(err.body, str)
    assert len(err.body) <= 200
    assert err.body.startswith("<html>xxx") and err.body.endswith("...")


@pytest.mark.parametrize(
    "body",
    [
        {"error": "plain text error"},
        b'{"error": "plain text error"}',
        {"message": "plain text error"},
    ],
)
def test_classify_error_reads_other_error_shapes(body):
    assert "plain text error" in str(classify_error(400, None, body))


def test_classify_error_from_httpx_response_names_method_and_redacted_url():
    request = httpx.Request("POST", f"https://h.example/v1/embeddings?key={SECRET}")
    response = httpx.Response(
        503, headers={"retry-after-ms": "250"}, content=b"busy", request=request
    )
    err = classify_error(response)
    assert isinstance(err, errors.ServerError)
    assert err.retry_after == 0.25
    assert str(err).startswith("POST https://h.example/v1/embeddings?key=*** -> 503")
    assert SECRET not in str(err)


def test_classify_error_masks_secrets_in_message_body_and_headers():
    body = openai_error(f"Incorrect API key provided: {SECRET}.", "invalid_api_key")
    err = classify_error(
        401, {"X-Echo": SECRET, "Authorization": "Bearer x"}, body, secrets=[SECRET]
    )
    assert isinstance(err, errors.AuthenticationError)
    for text in (str(err), repr(err), repr(err.body), repr(err.headers)):
        assert SECRET not in text
    assert err.headers["authorization"] == "***"


def test_classified_errors_survive_pickling():
    import pickle

    err = classify_error(429, {"retry-after": "1"}, openai_error("x", "rate_limit_exceeded"))
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is errors.RateLimitError and copy.retry_after == 1.0 and copy.code == err.code


# -- classify_exception -----------------------------------------------------------------------


def _chained(outer: Exception, cause: Exception) -> Exception:
    try:
        raise outer from cause
    except Exception as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ReadTimeout("slow"), errors.APITimeoutError),
        (httpx.ConnectTimeout("slow"), errors.APITimeoutError),
        (httpx.PoolTimeout("slow"), errors.APITimeoutError),
        (httpx.WriteTimeout("slow"), errors.APITimeoutError),
        (TimeoutError(), errors.APITimeoutError),
        (httpx.ConnectError("refused"), errors.APIConnectionError),
        (httpx.ReadError("reset"), errors.APIConnectionError),
        (httpx.RemoteProtocolError("peer closed"), errors.APIConnectionError),
        (ConnectionResetError(104, "reset"), errors.APIConnectionError),
        (aiohttp.ServerDisconnectedError(), errors.APIConnectionError),
        (aiohttp.ClientPayloadError("truncated"), errors.APIConnectionError),
        (aiohttp.ServerTimeoutError("read"), errors.APITimeoutError),
        # httpx-aiohttp maps a reset connection to ConnectTimeout; the aiohttp cause decides.
        (
            _chained(httpx.ConnectTimeout("x"), aiohttp.ServerDisconnectedError()),
            errors.APIConnectionError,
        ),
        (_chained(httpx.ReadError("x"), aiohttp.SocketTimeoutError("x")), errors.APITimeoutError),
        (httpx.DecodingError("bad gzip"), errors.MalformedResponseError),
        (httpx.UnsupportedProtocol("ftp"), errors.APIError),
        (ValueError("who knows"), errors.APIError),
    ],
)
def test_classify_exception(exc, expected):
    err = classify_exception(exc)
    assert type(err) is expected
    assert err.retryable is expected.retryable
    assert err.status is None


def test_classify_exception_returns_api_errors_unchanged_and_redacts():
    original = errors.RateLimitError("x")
    assert classify_exception(original) is original
    err = classify_exception(
        httpx.ConnectError(f"failed for {SECRET}"), method="GET", url="http://h/x", secrets=[SECRET]
    )
    assert str(err).startswith("GET http://h/x: ConnectError: failed for")
    assert SECRET not in str(err)


# -- decode_body ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", [b'{"id": "x", "choices": [', b"<html>502</html>", b"\x00\xff garbage", b"{]"]
)
def test_decode_body_raises_malformed_for_non_json(content):
    with pytest.raises(errors.MalformedResponseError) as info:
        decode_body(content, status=200)
    assert info.value.retryable and info.value.status == 200


def test_decode_body_json_and_empty():
    assert decode_body(b'{"a": [1, 2]}') == {"a": [1, 2]}
    assert decode_body(b"") is None and decode_body(b"  \n") is None


# -- retry_after ------------------------------------------------------------------------------


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "20"}, 0.02),
        ({"Retry-After-Ms": "1500", "Retry-After": "9"}, 1.5),  # ms wins: more precise
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"x-ratelimit-reset-requests": "20ms"}, 0.02),
        ({"x-ratelimit-reset-tokens": "1.5s"}, 1.5),
        ({"x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        # The exhausted limit decides, not the longest reset.
        (
            {
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-tokens": "6m0s",
                "x-ratelimit-remaining-tokens": "5000",
            },
            1.0,
        ),
        ({"retry-after": "-1", "x-ratelimit-reset-tokens": "2s"}, 2.0),  # Azure's -1 ignored
        ({"retry-after": "soon", "retry-after-ms": "-1"}, None),
        ({"x-ratelimit-reset-requests": "-1", "x-ratelimit-reset-tokens": "abc"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({}, None),
    ],
)
def test_retry_after_formats(headers, expected):
    got = retry_after(headers, now=NOW)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_retry_after_accepts_responses_and_errors():
    assert retry_after(httpx.Response(429, headers={"Retry-After": "4"})) == 4.0
    assert retry_after(Response(status=200, body=None, headers={"retry-after": "5"})) == 5.0
    err = errors.RateLimitError("x", headers={"retry-after": "6"})
    assert retry_after(err) == 6.0
    assert retry_after(None) is None


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "retry-after",
                "retry-after-ms",
                "x-ratelimit-reset-requests",
                "x-ratelimit-reset-tokens",
                "x-ratelimit-remaining-tokens",
            ]
        ),
        st.text(max_size=40),
    )
)
def test_retry_after_never_raises_and_is_never_negative(headers):
    value = retry_after(headers)
    assert value is None or value >= 0


# -- endpoint_from_url ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.openai.com/v1/chat/completions", "chat/completions"),
        ("https://api.openai.com/v1/embeddings/", "embeddings"),
        ("http://127.0.0.1:8000/v1/completions", "completions"),
        ("http://localhost:11434/v1/chat/completions?stream=false", "chat/completions"),
        ("http://localhost:8000/chat/completions", "chat/completions"),
        ("https://api.openai.com/v1/fine_tuning/jobs", "fine_tuning/jobs"),
        ("https://api.openai.com/v1/files/file-abc123/content", "files/file-abc123/content"),
        ("https://proxy.example.com/llm/v1/embeddings", "embeddings"),
        (
            "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
            "?api-version=2024-10-21",
            "chat/completions",
        ),
        (
            "https://r.openai.azure.com/openai/deployments/emb/embeddings?api-version=1",
            "embeddings",
        ),
        ("https://r.openai.azure.com/openai/files?api-version=2024-10-21", "files"),
        ("https://r.openai.azure.com/openai/v1/chat/completions", "chat/completions"),
        (
            "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
            "chat/completions",
        ),
        ("HTTPS://API.OPENAI.COM/v1/chat/completions#frag", "chat/completions"),
    ],
)
def test_endpoint_from_url(url, expected):
    assert endpoint_from_url(url) == expected


def test_endpoint_from_url_relative_to_a_base_url():
    assert endpoint_from_url("https://h/api/items/1", base_url="https://h/api") == "items/1"
    with pytest.raises(errors.ConfigError, match="not under base URL"):
        endpoint_from_url("https://h/other/items", base_url="https://h/api")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "not a url",
        "chat/completions",
        "/v1/chat/completions",
        "ftp://h/v1/files",
        "https://",
        "https:///v1/chat",
        "https://api.openai.com",
        "https://api.openai.com/v1/",
        "https://h:notaport/v1/x",
        "https://h/v1/chat completions",
        None,
        42,
    ],
)
def test_endpoint_from_url_rejects_garbage(url):
    with pytest.raises(errors.ConfigError):
        endpoint_from_url(url)


def test_endpoint_from_url_error_does_not_echo_a_key():
    with pytest.raises(errors.ConfigError) as info:
        endpoint_from_url(f"ftp://h/v1/x?key={SECRET}")
    assert SECRET not in str(info.value)


# -- api_method -------------------------------------------------------------------------------


async def test_api_method_returns_the_bound_method_for_every_verb():
    async with httpx.AsyncClient() as client:
        for verb in sorted(HTTP_METHODS):
            for spelling in (verb, verb.lower(), verb.title()):
                bound = api_method(client, spelling)
                assert bound == getattr(client, verb.lower())


@pytest.mark.parametrize("method", ["FETCH", "", "CONNECT", None, 1])
def test_api_method_rejects_unknown(method):
    with pytest.raises(errors.ConfigError):
        api_method(httpx.AsyncClient(), method)


# -- upload_file_with_retry -------------------------------------------------------------------


def _upload_service(statuses: list[int], seen: list[bytes]) -> JSONService:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.read())
        status = statuses.pop(0)
        if status == 200:
            return httpx.Response(200, json={"id": "file-1", "object": "file"})
        headers = {"retry-after": "7"} if status == 429 else {}
        return httpx.Response(status, headers=headers, json={"error": {"message": "no"}})

    return JSONService("http://127.0.0.1:9/v1", transport=httpx.MockTransport(handler))


async def test_upload_rereads_the_file_and_backs_off(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"n": 1}\n')
    seen: list[bytes] = []
    service = _upload_service([503, 429, 200], seen)
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        path.write_bytes(path.read_bytes() + b'{"n": 2}\n')  # changes between attempts

    async with service:
        response = await upload_file_with_retry(
            service, path, "fine-tune", attempts=4, backoff=0.5, sleep=fake_sleep
        )
    assert response.body["id"] == "file-1"
    assert slept == [0.5, 7.0]  # backoff, then the server's retry-after (longer than 1.0)
    assert [body.count(b'{"n"') for body in seen] == [1, 2, 3]  # reread every attempt
    assert b'name="purpose"' in seen[0] and b"fine-tune" in seen[0]
    assert b'filename="train.jsonl"' in seen[0]


async def test_upload_gives_up_at_once_on_non_retryable_and_after_attempts(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text("{}\n")
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(errors.BadRequestError):
        await upload_file_with_retry(_upload_service([400], []), path, sleep=fake_sleep)
    assert slept == []
    with pytest.raises(errors.ServerError):
        await upload_file_with_retry(
            _upload_service([500, 500, 500], []), path, attempts=3, backoff=1, sleep=fake_sleep
        )
    assert slept == [1, 2]


async def test_upload_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(errors.InputError, match="cannot read"):
        await upload_file_with_retry(_upload_service([200], []), tmp_path / "missing.jsonl")
    with pytest.raises(errors.ConfigError):
        await upload_file_with_retry(_upload_service([200], []), tmp_path / "x", attempts=0)


# -- cache_key --------------------------------------------------------------------------------

BASE = APIRequest(
    path="chat/completions",
    body={
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 0,
        "temperature": 0.0,
    },
)


def test_cache_key_is_pinned():
    # Changing this invalidates every cache: bump the key's "v" on purpose, never by accident.
    assert cache_key(BASE) == cache_key(
        APIRequest(path="/chat/completions/", body=dict(reversed(list(BASE.body.items()))))
    )
    assert len(cache_key(BASE)) == 64
    # The key is the SHA-256 of this exact, sorted, compact JSON document.
    document = (
        b'{"body":{"input":"a","model":"m"},"data":null,"files":null,"method":"POST",'
        b'"path":"embeddings","v":1}'
    )
    assert cache_key(APIRequest(path="embeddings", body={"model": "m", "input": "a"})) == (
        hashlib.sha256(document).hexdigest()
    )


def test_cache_key_is_the_same_in_another_process():
    code = (
        "from pipeline.api_utils import cache_key; from pipeline.request import APIRequest; "
        f"print(cache_key(APIRequest(path='chat/completions', body={BASE.body!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        cwd=str(_root()),
    )
    assert out.stdout.strip() == cache_key(BASE)


def _root():
    import pathlib

    return pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "changed",
    [
        APIRequest(path="chat/completions", body={**BASE.body, "seed": 1}),
        APIRequest(path="chat/completions", body={**BASE.body, "temperature": 0.1}),
        APIRequest(path="chat/completions", body={**BASE.body, "extra": None}),
        APIRequest(
            path="chat/completions",
            body={**BASE.body, "messages": [{"role": "user", "content": "hi "}]},
        ),
        APIRequest(path="completions", body=BASE.body),
        APIRequest(path="chat/completions", method="PUT", body=BASE.body),
        APIRequest(path="chat/completions"),
    ],
)
def test_cache_key_changes_with_any_request_change(changed):
    assert cache_key(changed) != cache_key(BASE)


@given(
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4),
    st.text(min_size=1, max_size=5),
    st.integers(),
)
def test_cache_key_changes_when_a_field_is_added_or_changed(body, key, value):
    request = APIRequest(path="x", body=body)
    changed = APIRequest(path="x", body={**body, key: [value]})
    assert cache_key(request) != cache_key(changed)
    assert cache_key(request) == cache_key(APIRequest(path="x", body=dict(body)))


def test_cache_key_ignores_token_estimate_and_hashes_file_content():
    assert cache_key(msgspec.structs.replace(BASE, token_estimate=999)) == cache_key(BASE)

    def upload(content: bytes) -> APIRequest:
        return APIRequest(
            path="files", files={"file": FilePart("a.jsonl", content)}, data={"purpose": "batch"}
        )

    assert cache_key(upload(b"1")) == cache_key(upload(b"1"))
    assert cache_key(upload(b"1")) != cache_key(upload(b"2"))


def test_cache_key_with_base_url_never_contains_its_secret():
    key_a = cache_key(BASE, base_url=f"https://h/v1?key={SECRET}")
    key_b = cache_key(BASE, base_url="https://h/v1?key=other-secret-value")
    assert key_a == key_b  # the secret is not part of the key
    assert key_a != cache_key(BASE, base_url="https://elsewhere/v1")
    assert cache_key(BASE, base_url="https://h/v1/") == cache_key(BASE, base_url="https://h/v1")


# -- redaction --------------------------------------------------------------------------------


def test_redaction_helpers():
    assert mask_secret(SECRET) == "sk-...6789" and SECRET not in mask_secret(SECRET)
    text = f"Authorization: Bearer {SECRET} url=https://h/x?api-key={SECRET}&q=1 raw {SECRET}"
    redacted = redact_text(text)
    assert SECRET not in redacted and "q=1" in redacted
    assert redact_url("https://u:p@h/x?key=k1&token=t") == "https://***@h/x?key=***&token=***"
    headers = redact_headers(
        {"api-key": "abc", "Authorization": "Bearer x", "X-Other": SECRET}, secrets=[SECRET]
    )
    assert headers["api-key"] == headers["authorization"] == "***"
    assert SECRET not in headers["x-other"]
