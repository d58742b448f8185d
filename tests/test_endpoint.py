"""pipeline.http.endpoint: Endpoint (path, method, limits per interval, default config, lazy
limiter, repr), endpoint_from_url and api_method."""

from __future__ import annotations

import math

import httpx
import pytest

from pipeline import errors
from pipeline.errors import ConfigError
from pipeline.http import HTTP_METHODS, Endpoint, api_method, endpoint_from_url

SECRET = "sk-proj-SECRETSECRET0123456789"


def test_defaults_and_normalised_path():
    ep = Endpoint("/chat/completions/")
    assert ep.path == "chat/completions"
    assert ep.method == "POST"
    assert ep.max_requests is None and ep.max_tokens is None and ep.interval == 60.0
    assert dict(ep.config) == {}


def test_method_is_upper_cased_and_every_verb_accepted():
    for verb in ("get", "Post", "PUT", "patch", "delete", "head", "options"):
        assert Endpoint("x", verb).method == verb.upper()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"path": ""},
        {"path": "/"},
        {"path": None},
        {"path": "https://api.openai.com/v1/chat/completions"},
        {"path": "chat/completions?x=1"},
        {"path": "x", "method": "FETCH"},
        {"path": "x", "max_requests": 0},
        {"path": "x", "max_requests": -5},
        {"path": "x", "max_tokens": math.nan},
        {"path": "x", "max_tokens": math.inf},
        {"path": "x", "max_tokens": "100"},
        {"path": "x", "max_requests": True},
        {"path": "x", "interval": 0},
        {"path": "x", "limiter": object()},
    ],
)
def test_bad_arguments_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        Endpoint(**kwargs)


def test_per_minute_views_scale_with_the_interval():
    ep = Endpoint("embeddings", max_requests=10, max_tokens=1000, interval=1.0)
    assert (ep.rpm, ep.tpm) == (600.0, 60_000.0)
    assert Endpoint("x").rpm is None


def test_default_limiter_is_built_lazily_with_the_endpoint_limits():
    limiter_module = pytest.importorskip("pipeline.limiter")
    ep = Endpoint("chat/completions", max_requests=500, max_tokens=30_000, interval=60)
    assert ep._limiter is None
    limiter = ep.limiter
    assert isinstance(limiter, limiter_module.TokenBucketLimiter)
    assert ep.limiter is limiter  # one limiter per endpoint, not one per access
    assert (limiter.max_requests, limiter.max_tokens, limiter.interval) == (500, 30_000, 60)


def test_a_user_limiter_is_used_as_given_and_can_be_shared():
    class CountingLimiter:
        def __init__(self) -> None:
            self.calls = 0

        async def acquire(self, requests: float = 1, tokens: float = 0) -> None:
            self.calls += 1

    shared = CountingLimiter()
    a = Endpoint("chat/completions", limiter=shared)  # type: ignore[arg-type]
    b = Endpoint("completions", limiter=shared)  # type: ignore[arg-type]
    assert a.limiter is shared and b.limiter is shared


def test_config_is_a_read_only_copy_and_merges_overrides():
    source = {"model": "m", "temperature": 0}
    ep = Endpoint("chat/completions", config=source)
    source["model"] = "changed"
    assert ep.config["model"] == "m"
    with pytest.raises(TypeError):
        ep.config["model"] = "x"  # type: ignore[index]
    merged = ep.merged_config({"temperature": 0.5, "seed": 0})
    assert merged == {"model": "m", "temperature": 0.5, "seed": 0}  # falsy seed=0 survives
    assert ep.merged_config() == {"model": "m", "temperature": 0}


def test_repr_shows_path_method_limits_and_config():
    ep = Endpoint("embeddings", max_tokens=1_000_000, config={"model": "text-embedding-3-small"})
    text = repr(ep)
    assert text.startswith("Endpoint('embeddings', method='POST'")
    assert "max_tokens=1,000,000/60s" in text
    assert "text-embedding-3-small" in text
    assert "limiter=" not in text  # not built yet: repr must not build it
    assert ep._limiter is None
    assert repr(Endpoint("x", "GET")) == "Endpoint('x', method='GET', max_requests=None)"


def test_repr_includes_the_live_limiter_once_built():
    pytest.importorskip("pipeline.limiter")
    ep = Endpoint("x", max_requests=10)
    _ = ep.limiter
    assert "limiter=<AdaptiveLimiter" in repr(ep)


def test_slots_keep_endpoints_small():
    with pytest.raises(AttributeError):
        Endpoint("x").unexpected = 1  # type: ignore[attr-defined]


# -- endpoint_from_url and api_method (pipeline.http.endpoint) ------------------------------
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
