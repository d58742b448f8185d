"""The provider table: each row's real headers and 429/503/529 bodies read into Outcome values.

Headers and bodies are shaped after what each provider documents or has been seen sending
(mixed-case names, ``httpx.Headers``, garbage, ``-1``, RFC 3339 times, Go durations); the
errors come from :func:`pipeline.http.classify.classify_error`, as the call stage gets them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import msgspec
import pytest

from pipeline.errors import ConfigError
from pipeline.http.classify import classify_error
from pipeline.http.signals import PROVIDERS, answered, provider_for, refused


def _rfc3339(seconds_from_now: float) -> str:
    when = datetime.fromtimestamp(time.time() + seconds_from_now, UTC)
    return when.isoformat().replace("+00:00", "Z")


def _error(status: int, body: object, headers: dict[str, str] | None = None):
    return classify_error(status, headers or {}, msgspec.json.encode(body))


# ---------------------------------------------------------------------------- the table by host
@pytest.mark.parametrize("url, row", [
    ("https://api.openai.com/v1", "openai"),
    ("https://my-east.openai.azure.com/openai/deployments/gpt-4o", "azure"),
    ("https://x.cognitiveservices.azure.com", "azure"),
    ("https://gw.azure-api.net/openai", "azure"),
    ("https://api.anthropic.com/v1/", "anthropic"),
    ("https://api.groq.com/openai/v1", "groq"),
    ("https://api.together.xyz/v1", "together"),
    ("https://api.fireworks.ai/inference/v1", "fireworks"),
    ("http://127.0.0.1:4000/v1", "auto"),
    ("http://localhost:11434/v1", "auto"),
    ("not a url", "auto"),
    (None, "auto"),
])
def test_the_row_is_chosen_by_host(url, row):
    assert provider_for(url).name == row


def test_a_named_row_wins_over_the_host_and_a_wrong_name_is_a_clear_error():
    assert provider_for("http://127.0.0.1:4000/v1", "litellm").name == "litellm"
    assert provider_for("https://api.openai.com/v1", " Azure ").name == "azure"
    with pytest.raises(ConfigError, match="unknown provider 'lightllm'; known: openai"):
        provider_for(None, "lightllm")


# ---------------------------------------------------------------------------- answers, per row
def test_openai_limits_remaining_and_go_duration_resets_any_header_case():
    headers = {"X-RateLimit-Limit-Requests": "5000", "X-RateLimit-Remaining-Requests": "4999",
               "X-RateLimit-Reset-Requests": "12ms", "x-ratelimit-limit-tokens": "160000",
               "x-ratelimit-remaining-tokens": "159976", "x-ratelimit-reset-tokens": "6m0s",
               "x-ratelimit-limit-tokens_usage_based": "1"}
    for given in (headers, httpx.Headers(headers)):
        out = answered(given, tokens=24, provider=PROVIDERS["openai"])
        assert (out.limit_requests, out.remaining_requests, out.reset_requests) == (
            5000, 4999, 0.012)
        assert (out.limit_tokens, out.remaining_tokens, out.reset_tokens) == (
            160_000, 159_976, 360.0)
        assert out.tokens == 24


def test_garbage_and_minus_one_are_ignored_not_read_as_facts():
    out = answered({"x-ratelimit-limit-requests": "lots", "x-ratelimit-remaining-requests": "-1",
                    "x-ratelimit-reset-requests": "soon", "x-ratelimit-limit-tokens": "nan",
                    "x-ratelimit-remaining-tokens": "inf", "x-ratelimit-reset-tokens": "-3s"})
    assert out == answered({"server": "x"}) and not out.has_facts


def test_azure_remaining_only_and_its_minus_one_with_a_zero_reset():
    azure = PROVIDERS["azure"]
    out = answered({"x-ratelimit-remaining-requests": "119",
                    "x-ratelimit-remaining-tokens": "119872"}, provider=azure)
    assert (out.limit_requests, out.remaining_requests, out.remaining_tokens) == (
        None, 119, 119_872)
    # The Responses API's "-1, -1, 0": nothing known, and the 0 reset means nothing either.
    out = answered({"x-ratelimit-limit-tokens": "-1", "x-ratelimit-remaining-tokens": "-1",
                    "x-ratelimit-reset-tokens": "0"}, provider=azure)
    assert not out.has_facts


def test_anthropic_native_headers_with_rfc3339_resets():
    headers = httpx.Headers({
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": _rfc3339(1.2),
        "anthropic-ratelimit-tokens-limit": "8000",  # the most restrictive: output tokens
        "anthropic-ratelimit-tokens-remaining": "8000",
        "anthropic-ratelimit-input-tokens-limit": "40000",
        "anthropic-ratelimit-input-tokens-remaining": "39000",
        "anthropic-ratelimit-input-tokens-reset": "2020-01-01T00:00:00Z",  # in the past
        "anthropic-ratelimit-output-tokens-limit": "8000",
        "retry-after": "1"})
    out = answered(headers, provider=PROVIDERS["anthropic"])
    assert (out.limit_requests, out.remaining_requests) == (50, 49)
    assert 0.5 < out.reset_requests <= 1.2
    # Tokens: the input-token limit (what an estimate counts), not the output one.
    assert (out.limit_tokens, out.remaining_tokens, out.reset_tokens) == (40_000, 39_000, 0.0)


def test_anthropic_older_accounts_state_one_combined_token_limit():
    out = answered({"Anthropic-RateLimit-Tokens-Limit": "100000",
                    "Anthropic-RateLimit-Tokens-Remaining": "99000",
                    "Anthropic-RateLimit-Tokens-Reset": "not a time"},
                   provider=PROVIDERS["anthropic"])
    assert (out.limit_tokens, out.remaining_tokens, out.reset_tokens) == (100_000, 99_000, None)


def test_anthropic_openai_compatible_endpoint_states_x_ratelimit_with_rfc3339_resets():
    out = answered({"x-ratelimit-limit-requests": "50", "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": _rfc3339(3)},
                   provider=provider_for("https://api.anthropic.com/v1/"))
    assert out.limit_requests == 50 and out.remaining_requests == 0
    assert 2 < out.reset_requests <= 3


def test_groq_requests_count_per_day_and_are_left_out():
    headers = {"x-ratelimit-limit-requests": "14400", "x-ratelimit-remaining-requests": "14370",
               "x-ratelimit-reset-requests": "2m59.56s", "x-ratelimit-limit-tokens": "6000",
               "x-ratelimit-remaining-tokens": "5997", "x-ratelimit-reset-tokens": "7.66s"}
    out = answered(headers, provider=PROVIDERS["groq"])
    assert (out.limit_requests, out.remaining_requests, out.reset_requests) == (None,) * 3
    assert (out.limit_tokens, out.remaining_tokens, out.reset_tokens) == (6000, 5997, 7.66)
    # The same headers from an unknown host read as minute limits: name the row.
    assert answered(headers).limit_requests == 14_400


def test_together_counts_per_second():
    out = answered({"x-ratelimit-limit": "10", "x-ratelimit-remaining": "9",
                    "x-ratelimit-reset": "1", "x-tokenlimit-limit": "5000",
                    "x-tokenlimit-remaining": "4800"}, provider=PROVIDERS["together"])
    assert (out.limit_requests, out.remaining_requests, out.reset_requests) == (600, 9, 1.0)
    assert (out.limit_tokens, out.remaining_tokens) == (300_000, 4800)
    # An unknown host's bare x-ratelimit-limit has no known unit: not read.
    assert not answered({"x-ratelimit-limit": "10"}).has_facts


def test_fireworks_states_prompt_tokens_per_minute():
    out = answered({"X-Ratelimit-Limit-Tokens-Prompt": "3600000",
                    "X-Ratelimit-Remaining-Tokens-Prompt": "3599000",
                    "X-Ratelimit-Limit-Tokens-Generated": "36000"},
                   provider=PROVIDERS["fireworks"])
    assert (out.limit_tokens, out.remaining_tokens, out.limit_requests) == (
        3_600_000, 3_599_000, None)


def test_litellm_the_lowest_of_the_keys_and_the_upstreams_limits_binds():
    headers = {"x-ratelimit-api_key-limit-requests": "15",
               "x-ratelimit-api_key-remaining-requests": "14",
               "x-ratelimit-team-limit-requests": "100",
               "x-ratelimit-api_key-limit-tokens": "5000",
               "llm_provider-x-ratelimit-limit-requests": "2000",
               "llm_provider-x-ratelimit-remaining-requests": "1999",
               "llm_provider-x-ratelimit-limit-tokens": "160000",
               "x-litellm-response-duration-ms": "1130.4"}
    for provider in (PROVIDERS["litellm"], PROVIDERS["auto"]):
        out = answered(headers, provider=provider)
        assert (out.limit_requests, out.remaining_requests) == (15, 14)
        assert out.limit_tokens == 5000


def test_servers_that_state_nothing():
    vllm = {"date": "Mon, 26 May 2025 05:00:04 GMT", "server": "uvicorn",
            "content-type": "application/json"}
    assert answered(vllm, tokens=5) == answered(None, tokens=5) == answered({}, tokens=5)
    # The "none" row reads nothing even when a proxy in front adds headers.
    assert not answered({"x-ratelimit-limit-requests": "60"},
                        provider=PROVIDERS["none"]).has_facts


def test_a_reset_given_as_a_unix_time_is_a_time_not_a_duration():
    out = answered({"x-ratelimit-limit-requests": "60",
                    "x-ratelimit-reset-requests": str(int(time.time()) + 30)})
    assert 25 < out.reset_requests <= 30


# ------------------------------------------------------------------------- refusals, per wording
def test_openai_429_states_the_dimension_the_limit_and_an_exact_wait():
    message = ("Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): "
               "Limit 30000, Used 29937, Requested 385. Please try again in 644ms. Visit "
               "https://platform.openai.com/account/rate-limits to learn more.")
    out = refused(_error(429, {"error": {"message": message, "type": "tokens",
                                         "code": "rate_limit_exceeded"}}),
                  provider=PROVIDERS["openai"])
    assert (out.kind, out.dimension, out.stated_limit) == ("throttled", "tokens", 30_000)
    assert (out.wait, out.sure_wait, out.source) == (0.644, 0.644, "the message")


@pytest.mark.parametrize("text, wait", [
    ("Please try again in 6m0s.", 360.0), ("Please try again in 1m30.5s.", 90.5),
    ("Please try again in 6.29s. Need more tokens?", 6.29), ("try again in 20ms", 0.02),
    ("Please try again in 2 minutes.", 120.0),
])
def test_waits_in_429_texts_go_durations_included(text, wait):
    out = refused(_error(429, {"error": {"message": f"Rate limit reached. {text}"}}))
    assert out.wait == pytest.approx(wait) and out.sure_wait == pytest.approx(wait)


def test_groq_429_on_tokens_per_minute_and_per_day():
    minute = ("Rate limit reached for model `llama-3.1-70b-versatile` in organization "
              "`org_01` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Used "
              "5346, Requested 1283. Please try again in 6.29s.")
    out = refused(_error(429, {"error": {"message": minute, "type": "tokens",
                                         "code": "rate_limit_exceeded"}},
                         {"retry-after": "7"}), provider=PROVIDERS["groq"])
    assert (out.dimension, out.stated_limit, out.wait, out.sure_wait) == ("tokens", 6000, 7, 6)
    daily = minute.replace("tokens per minute (TPM)", "requests per day (RPD)")
    out = refused(_error(429, {"error": {"message": daily, "type": "requests"}}),
                  provider=PROVIDERS["groq"])
    assert (out.dimension, out.stated_limit) == ("requests", None)  # no minute rate


@pytest.mark.parametrize("message, dimension", [
    ("Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
     "2024-02-15-preview have exceeded token rate limit of your current OpenAI S0 pricing "
     "tier. Please retry after 4 seconds. Please go here: https://aka.ms/oai/quotaincrease",
     "tokens"),
    ("Requests to the Embeddings_Create Operation under Azure OpenAI API version 2024-06-01 "
     "have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry "
     "after 4 seconds.", "requests"),
    ("Your requests to gpt-4o for gpt-4o in East US have exceeded the Token Rate Limit for "
     "your current AIServices S0 pricing tier. This request was for ChatCompletions_Create "
     "under Azure OpenAI API version 2024-10-21. Please retry after 4 seconds.", "tokens"),
])
def test_azure_429_texts_name_the_dimension_and_a_rounded_wait(message, dimension):
    out = refused(_error(429, {"error": {"code": "429", "message": message}}),
                  provider=PROVIDERS["azure"])
    assert (out.kind, out.dimension, out.stated_limit) == ("throttled", dimension, None)
    assert (out.wait, out.sure_wait) == (4.0, 3.0)  # whole seconds: only 3 are sure


def test_an_api_management_gateways_429_in_front_of_azure():
    out = refused(_error(429, {"statusCode": 429, "message": "Rate limit is exceeded. Try "
                                                              "again in 6 seconds."}),
                  provider=PROVIDERS["azure"])
    assert (out.kind, out.wait, out.sure_wait, out.dimension) == ("throttled", 6, 5, None)


@pytest.mark.parametrize("message, dimension, limit", [
    ("This request would exceed the rate limit for your organization (0dcc) of 20,000 input "
     "tokens per minute. For details, refer to: https://docs.anthropic.com/en/api/rate-limits.",
     "tokens", 20_000),
    ("This request would exceed your organization's rate limit of 50 requests per minute "
     "(org: 8016, model: claude-opus-4-6).", "requests", 50),
    ("This request would exceed the rate limit for your organization (x) of 8,000 output "
     "tokens per minute.", "tokens", None),  # bounds no estimate: the dimension only
])
def test_anthropic_rate_limit_error(message, dimension, limit):
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
    out = refused(_error(429, body, {"retry-after": "2",
                                     "anthropic-ratelimit-requests-limit": "50"}),
                  provider=PROVIDERS["anthropic"])
    assert (out.kind, out.dimension, out.stated_limit) == ("throttled", dimension, limit)
    assert (out.wait, out.sure_wait, out.limit_requests) == (2, 1, 50)


def test_anthropic_429_through_the_openai_compatible_endpoint():
    body = {"error": {"code": "rate_limit_error", "type": "invalid_request_error",
                      "message": "This request would exceed the rate limit for your "
                                 "organization of 30,000 input tokens per minute."}}
    out = refused(_error(429, body), provider=provider_for("https://api.anthropic.com/v1/"))
    assert (out.kind, out.dimension, out.stated_limit) == ("throttled", "tokens", 30_000)


def test_a_429_without_a_wait_takes_the_reset_of_the_exhausted_dimension():
    headers = {"anthropic-ratelimit-input-tokens-limit": "40000",
               "anthropic-ratelimit-input-tokens-remaining": "0",
               "anthropic-ratelimit-input-tokens-reset": _rfc3339(4)}
    out = refused(_error(429, {"error": {"type": "rate_limit_error", "message": "slow"}},
                         headers), provider=PROVIDERS["anthropic"])
    assert out.dimension == "tokens" and 3 < out.wait <= 4 and out.sure_wait == out.wait
    assert out.source == "the tokens reset"


def test_together_429_error_types_and_its_503():
    out = refused(_error(429, {"error": {"message": "rate limited",
                                         "type": "dynamic_token_limited"}}),
                  provider=PROVIDERS["together"])
    assert (out.kind, out.dimension) == ("throttled", "tokens")
    out = refused(_error(429, {"error_type": "dynamic_request_limited", "message": "slow"}),
                  provider=PROVIDERS["together"])
    assert out.dimension == "requests"
    assert refused(_error(503, "Service Unavailable")).kind == "unavailable"


def test_litellm_429s_its_limiter_and_its_older_wording():
    v3 = ("Rate limit exceeded for api_key: 375840de. Limit type: requests. Current limit: 15, "
          "Remaining: 0. Limit resets at: 2025-08-22 10:00:00 UTC")
    out = refused(_error(429, {"error": {"message": v3, "type": "None", "code": "429"}},
                         {"retry-after": "60", "rate_limit_type": "requests"}),
                  provider=PROVIDERS["litellm"])
    assert (out.dimension, out.stated_limit, out.wait) == ("requests", 15, 60)
    assert out.sure_wait == 1.0  # its Retry-After is the window's length, not the time left
    older = ("429: LiteLLM Rate Limit Handler for rate limit type = team. Crossed TPM / RPM / "
             "Max Parallel Request Limit. current rpm: 1, rpm limit: 15, current tpm: 12260, "
             "tpm limit: 5000, current max_parallel_requests: 0, max_parallel_requests: "
             "9223372036854775807")
    out = refused(_error(429, {"error": {"message": older}}), provider=PROVIDERS["litellm"])
    assert (out.kind, out.dimension, out.stated_limit) == ("throttled", "tokens", 5000)
    parallel = older.replace("current max_parallel_requests: 0, max_parallel_requests: "
                             "9223372036854775807", "current max_parallel_requests: 8, "
                             "max_parallel_requests: 8").replace("current tpm: 12260",
                                                                 "current tpm: 10")
    assert refused(_error(429, {"error": {"message": parallel}})).kind == "overloaded"
    out = refused(_error(429, {"error": {"message": v3.replace(
        "requests. Current", "max_parallel_requests. Current")}},
        {"rate_limit_type": "max_parallel_requests"}))
    assert out.kind == "overloaded"


# ------------------------------------------------------------------ overloaded or unavailable
@pytest.mark.parametrize("status, body, kind", [
    (503, "Service Unavailable", "unavailable"),
    (503, {"error": {"message": "The server is temporarily unavailable"}}, "unavailable"),
    # "Overloaded" alone is no in-flight cap: OpenAI's random 503s say it (the limiter takes a
    # storm of these as a cap, not one).
    (503, {"error": {"message": "The engine is currently overloaded, please try again later."}},
     "unavailable"),
    (503, {"error": {"message": "Service Overloaded"}}, "unavailable"),  # Fireworks
    (503, {"error": {"message": "Too many requests in flight (at most 8); retry shortly.",
                     "code": "server_overloaded"}}, "overloaded"),
    (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
     "overloaded"),
    (529, "", "overloaded"),
    (429, {"error": {"message": "Too many requests in flight (at most 8); retry shortly.",
                     "code": "overloaded"}}, "overloaded"),
    (429, {"error": {"message": "Too many concurrent requests"}}, "overloaded"),
    (500, {"error": {"message": "The server had an error"}}, "failed"),
])
def test_overloaded_is_told_apart_from_unavailable(status, body, kind):
    error = classify_error(status, {}, body if isinstance(body, str) else
                           msgspec.json.encode(body))
    assert refused(error).kind == kind


def test_something_not_an_api_error_is_a_failure_and_says_nothing():
    assert refused(ValueError("x")).kind == "failed"
