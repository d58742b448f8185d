"""pipeline.http.classify: error answers and exceptions into the error tree; Retry-After."""

from __future__ import annotations

import email.utils

import aiohttp
import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import errors
from pipeline.core.request import Response
from pipeline.http.classify import classify_error, classify_exception, decode_body, retry_after

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


SECRET_KEY = "gateway-token-0123456789abcdef"  # no "sk-", no "Bearer": only a literal mask


@pytest.mark.parametrize("start", [0, 100, 185, 196, 199])
def test_decode_body_masks_secrets_in_its_excerpt_even_across_the_cut(start):
    # A proxy echoing the request: the key in full, behind "Bearer", and cut by the excerpt.
    page = ("p" * start + f" {SECRET_KEY} Authorization: Bearer {SECRET_KEY} "
            + "q" * 400).encode()
    with pytest.raises(errors.MalformedResponseError) as info:
        decode_body(page, status=200, headers={"x-echo": SECRET_KEY}, method="POST",
                    url="http://h/v1/chat/completions", secrets=[SECRET_KEY])
    err = info.value
    shown = f"{err} {err!r} {err.body} {err.headers}"
    assert SECRET_KEY[:6] not in shown, shown  # not the key, nor the start of a cut one
    assert err.code == "not_json" and len(err.body) <= 200


@pytest.mark.parametrize("status", [400, 404, 500, 502])
def test_classify_error_masks_a_key_cut_by_the_excerpt(status):
    page = ("p" * 190 + f" {SECRET_KEY} " + "q" * 400).encode()
    err = classify_error(status, {}, page, secrets=[SECRET_KEY])
    assert SECRET_KEY[:6] not in f"{err} {err.body}"


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
