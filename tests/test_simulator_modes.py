"""The simulator's provider modes: rate-limit policies, the in-flight cap, headers, retry-after
variants, 429 body formats and per-model limits.

Each mode is exercised over loopback HTTP with httpx or the ``openai`` SDK. Nothing sleeps to
measure time: HTTP tests that depend on time swap the simulator's clock for a :class:`Clock`
the test moves by hand (the app reads ``time.monotonic`` only to stamp arrivals and drive its
limits; the sockets and latency timers keep the real clock), and the limiter classes are also
tested directly with explicit ``now=`` values.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import subprocess
import sys
import types

import httpx
import openai
import pytest

from pipeline import bench
from pipeline.cli import bench as cli_bench
from pipeline.cli import serve as sim_cli
from pipeline.core.durations import parse_duration
from pipeline.errors import ConfigError
from pipeline.simulator import Simulator, SimulatorConfig, count_chat_tokens
from pipeline.simulator import _app as sim_app
from pipeline.simulator._ratelimit import Bucket, KeyLimits, Window

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 10}
COST = count_chat_tokens(CHAT["messages"]) + 10
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


class Clock:
    """A hand-moved stand-in for the ``time`` module inside the simulator's app."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def at(self, seconds: float) -> None:
        """Set the time to ``seconds`` after the start (exact, unlike repeated advances)."""
        self.now = 1000.0 + seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(sim_app, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


def post(http: httpx.Client, body=None, **headers) -> httpx.Response:
    return http.post("/chat/completions", json=CHAT if body is None else body, headers=headers)


def statuses(http: httpx.Client, n: int, body=None) -> list[int]:
    return [post(http, body).status_code for _ in range(n)]


def rate_headers(response: httpx.Response) -> set[str]:
    return {name for name in response.headers if name.startswith("x-ratelimit-")}


# -- policy="second" (the default) -----------------------------------------------------------
def test_second_is_the_default_policy():
    assert SimulatorConfig().policy == "second"
    assert Simulator().config.policy == "second"


def test_second_bucket_admits_a_second_of_the_limit_then_refills_per_second(clock):
    with Simulator(rpm=600) as sim, httpx.Client(base_url=sim.base_url) as http:
        # 600 a minute enforced as 10 a second: 10 at once, not 600.
        responses = [post(http) for _ in range(11)]
        assert [r.status_code for r in responses] == [200] * 10 + [429]
        assert responses[0].headers["x-ratelimit-limit-requests"] == "600"  # the minute limit
        assert responses[9].headers["x-ratelimit-remaining-requests"] == "0"
        assert responses[10].headers["retry-after-ms"] == "100"  # one request per 100 ms
        assert parse_duration(responses[10].headers["x-ratelimit-reset-requests"]) == 1.0
        clock.at(0.1)
        assert statuses(http, 2) == [200, 429]
        clock.at(1.1)  # a full second refills the bucket, and no more
        assert statuses(http, 11) == [200] * 10 + [429]
        clock.at(61.1)
        assert statuses(http, 11) == [200] * 10 + [429]
        assert sim.stats().ok == 31 and sim.stats().rate_limited == 4


def test_minute_policy_keeps_the_full_minute_bucket(clock):
    with Simulator(rpm=600, policy="minute") as sim, httpx.Client(base_url=sim.base_url) as http:
        assert statuses(http, 600) == [200] * 600
        assert statuses(http, 1) == [429]
        clock.at(0.1)  # refills at the same 10 a second
        assert statuses(http, 2) == [200, 429]


def test_a_request_bigger_than_the_second_bucket_is_admitted_into_a_full_bucket(clock):
    big = {**CHAT, "max_tokens": 500}  # more than the 100-token bucket, less than 6,000
    big_cost = COST + 490
    with Simulator(tpm=6_000) as sim, httpx.Client(base_url=sim.base_url) as http:
        first = post(http, big)
        assert first.status_code == 200
        assert first.headers["x-ratelimit-remaining-tokens"] == "0"  # in debt
        # The debt (big_cost - 100) and this request are repaid at 100 tokens a second.
        blocked = post(http)
        assert blocked.status_code == 429 and blocked.json()["error"]["type"] == "tokens"
        debt = big_cost - 100
        expected_ms = (debt + COST) / 100 * 1000
        assert abs(int(blocked.headers["retry-after-ms"]) - expected_ms) <= 1
        clock.at(debt / 100)  # debt repaid: the level is back at 0, not enough for COST
        assert post(http).status_code == 429
        clock.at(debt / 100 + 2.0)  # full again: the big request fits again
        assert post(http, big).status_code == 200
        # Only a request larger than the whole minute limit is refused for good.
        clock.at(100.0)
        too_large = post(http, {**CHAT, "max_tokens": 6_000})
        assert too_large.status_code == 429
        assert "Request too large" in too_large.json()["error"]["message"]
        assert "retry-after" not in too_large.headers
        assert sim.stats().ok == 2


def test_second_bucket_debt_directly():
    bucket = Bucket(limit=6_000, capacity=100, now=0.0, debt=True)
    assert bucket.wait(500, now=0.0) == 0 and bucket.take(500, now=0.0)
    assert bucket.level == -400 and bucket.remaining(now=0.0) == 0
    assert bucket.wait(1, now=0.0) == pytest.approx(4.01)
    assert not bucket.take(500, now=4.0)  # back at 0, not full: a big request waits
    assert bucket.wait(500, now=4.0) == pytest.approx(1.0)  # until the bucket is full
    assert bucket.take(500, now=5.0)
    assert bucket.wait(6_001, now=100.0) == math.inf
    plain = Bucket(limit=6_000, capacity=100, now=0.0)  # the "minute"-style bucket: no debt
    assert plain.wait(500, now=0.0) == math.inf and not plain.take(500, now=0.0)


def test_second_policy_key_limits_refill_one_second_of_the_limit():
    limits = KeyLimits(rpm=600, tpm=None, burst=None, now=0.0)
    assert [limits.acquire(1, now=0.0) for _ in range(10)] == [0.0] * 10
    assert limits.acquire(1, now=0.0) == pytest.approx(0.1)
    assert limits.acquire(1, now=0.1) == 0.0
    assert sum(limits.acquire(1, now=100.0) == 0 for _ in range(20)) == 10  # never above 10


def test_burst_overrides_the_second_buckets_capacity(clock):
    with Simulator(rpm=600, burst=0.05) as sim, httpx.Client(base_url=sim.base_url) as http:
        assert statuses(http, 31) == [200] * 30 + [429]  # 3 s worth


# -- policy="window" -------------------------------------------------------------------------
def test_window_allows_its_share_per_window_and_resets_at_boundaries(clock):
    with Simulator(rpm=60, policy="window", window=2.0) as sim, \
            httpx.Client(base_url=sim.base_url) as http:
        clock.at(0.5)
        assert statuses(http, 2) == [200, 200]  # 60 a minute = 2 per 2 s window
        refused = post(http)
        assert refused.status_code == 429
        assert refused.headers["retry-after-ms"] == "1500"  # to the boundary at 2.0
        assert refused.headers["retry-after"] == "2"
        assert parse_duration(refused.headers["x-ratelimit-reset-requests"]) == 1.5
        clock.at(1.99)  # still the first window
        assert statuses(http, 1) == [429]
        clock.at(2.0)  # a new window
        assert statuses(http, 3) == [200, 200, 429]
        clock.at(5.9)  # in the window [4, 6): a fresh count, not a sliding one
        assert statuses(http, 3) == [200, 200, 429]
        clock.at(6.0)
        assert statuses(http, 2) == [200, 200]
        assert sim.stats().rate_limited == 4


def test_window_counts_tokens_per_window(clock):
    with Simulator(tpm=60 * COST, policy="window", window=2.0) as sim, \
            httpx.Client(base_url=sim.base_url) as http:
        assert statuses(http, 2) == [200, 200]  # 2 x COST per window of 2 s
        response = post(http)
        assert response.status_code == 429 and response.json()["error"]["type"] == "tokens"
        assert "x-ratelimit-limit-requests" not in response.headers  # no rpm configured
        too_large = post(http, {**CHAT, "max_tokens": 10 + 2 * COST})  # > a window's worth
        assert "Request too large" in too_large.json()["error"]["message"]
        clock.at(2.0)
        assert statuses(http, 3) == [200, 200, 429]
        assert sim.stats().tokens == 4 * COST


def test_window_directly_aligned_to_multiples_of_its_length():
    window = Window(limit=60, length=2.0, origin=100.0, now=103.5)  # in [102, 104)
    assert window.reset_in(now=103.5) == pytest.approx(0.5)
    assert window.take(2, now=103.5) and not window.take(1, now=103.99)
    assert window.wait(1, now=103.99) == pytest.approx(0.01)
    assert window.take(2, now=104.0) and window.remaining(now=104.0) == 0
    assert window.remaining(now=109.0) == 2  # several windows later: one reset, not many
    assert window.wait(3, now=109.0) == math.inf
    limits = KeyLimits(rpm=60, tpm=600, burst=None, now=0.0, policy="window", window=2.0)
    assert limits.acquire(15, now=0.0) == 0 and limits.acquire(15, now=1.0) == pytest.approx(1.0)
    assert limits.requests is not None and limits.requests.remaining(1.0) == 1  # untouched


def test_window_settings_are_checked():
    with pytest.raises(ConfigError, match="window"):
        Simulator(rpm=10, policy="window", window=2.0)  # 0.33 per window: nothing could pass
    with pytest.raises(ConfigError, match="burst"):
        Simulator(rpm=600, policy="window", burst=0.5)
    with pytest.raises(ConfigError, match="window"):
        Simulator(policy="window", window=0)
    with pytest.raises(ConfigError, match="policy"):
        Simulator(policy="hour")  # type: ignore[arg-type]


# -- max_in_flight ---------------------------------------------------------------------------
async def until(condition, polls: int = 10_000) -> None:
    """Yield to the loop until ``condition()`` holds (a bounded poll, not a timing)."""
    for _ in range(polls):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


async def test_max_in_flight_refuses_requests_over_the_cap_at_once():
    async with Simulator(rpm=6_000, max_in_flight=2, latency=1.0) as sim, \
            httpx.AsyncClient(base_url=sim.base_url, timeout=10) as http:
        slow = [asyncio.create_task(http.post("/chat/completions", json=CHAT))
                for _ in range(2)]
        await until(lambda: sim.stats().requests == 2)  # both admitted, waiting out latency
        refused = await asyncio.gather(*(http.post("/chat/completions", json=CHAT)
                                         for _ in range(3)))
        assert [r.status_code for r in refused] == [429] * 3
        for r in refused:
            assert r.json()["error"]["code"] == "overloaded"
            assert not rate_headers(r) and "retry-after" not in r.headers
            assert len(r.content) < 200  # a short body
        assert [r.status_code for r in await asyncio.gather(*slow)] == [200, 200]
        after = await http.post("/chat/completions", json=CHAT)  # the slots are free again
        assert after.status_code == 200
        stats = sim.stats()
        assert (stats.ok, stats.overloaded, stats.rate_limited) == (3, 3, 0)
        assert stats.outcomes == {"ok": 3, "overloaded": 3}
        assert stats.max_in_flight == 2
        assert sim.log()[2].outcome == "overloaded" and sim.log()[2].status == 429


async def test_overload_status_503_as_text_and_the_sdk_errors():
    async with Simulator(max_in_flight=1, latency=1.0, overload_status=503,
                         error_format="text") as sim, \
            httpx.AsyncClient(base_url=sim.base_url, timeout=10) as http:
        slow = asyncio.create_task(http.post("/chat/completions", json=CHAT))
        await until(lambda: sim.stats().requests == 1)
        refused = await http.post("/chat/completions", json=CHAT)
        assert refused.status_code == 503 and refused.text == "503 Service Unavailable"
        assert refused.headers["content-type"].startswith("text/plain")
        client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-x", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(**CHAT)
        await client.close()
        assert (await slow).status_code == 200
        assert sim.stats().overloaded == 2


def test_max_in_flight_is_checked():
    with pytest.raises(ConfigError, match="max_in_flight"):
        Simulator(max_in_flight=0)
    with pytest.raises(ConfigError, match="overload_status"):
        Simulator(max_in_flight=2, overload_status=500)


# -- headers and retry-after -----------------------------------------------------------------
def test_headers_off_sends_no_rate_limit_headers():
    with Simulator(rpm=1, tpm=10_000, headers=False) as sim, \
            httpx.Client(base_url=sim.base_url) as http:
        ok, refused = post(http), post(http)
        assert (ok.status_code, refused.status_code) == (200, 429)
        assert not rate_headers(ok) and not rate_headers(refused)
        assert "x-request-id" in ok.headers
        assert "retry-after" in refused.headers  # retry-after is not an x-ratelimit header
    with Simulator(rpm=1, tpm=10_000) as sim, httpx.Client(base_url=sim.base_url) as http:
        assert rate_headers(post(http)) == set(RATE_HEADERS)


@pytest.mark.parametrize(("mode", "expected"), [
    ("both", {"retry-after", "retry-after-ms"}), ("seconds", {"retry-after"}),
    ("ms", {"retry-after-ms"}), ("none", set())])
def test_retry_after_variants(clock, mode, expected):
    with Simulator(rpm=60, retry_after=mode) as sim, httpx.Client(base_url=sim.base_url) as http:
        assert post(http).status_code == 200
        clock.at(0.25)
        refused = post(http)
        assert refused.status_code == 429
        assert {h for h in ("retry-after", "retry-after-ms") if h in refused.headers} == expected
        if "retry-after" in expected:
            assert refused.headers["retry-after"] == "1"  # 0.75 s, rounded up to whole seconds
        if "retry-after-ms" in expected:
            assert refused.headers["retry-after-ms"] == "750"


def test_retry_after_and_error_format_are_checked():
    with pytest.raises(ConfigError, match="retry_after"):
        Simulator(retry_after="minutes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="error_format"):
        Simulator(error_format="xml")  # type: ignore[arg-type]


# -- error_format ----------------------------------------------------------------------------
def test_openai_format_is_the_default_body(validate_schema):
    with Simulator(rpm=1) as sim, httpx.Client(base_url=sim.base_url) as http:
        post(http)
        refused = post(http)
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
        assert error["param"] is None
        assert error["message"].startswith("Rate limit reached for model in organization")
        assert "requests per min (RPM): Limit 1, Requested 1" in error["message"]
        assert refused.headers["content-type"] == "application/json"
        assert not validate_schema(refused.json(), "ErrorResponse")


def test_azure_format_body_wording_and_headers(clock):
    with Simulator(rpm=2, tpm=60 * (COST + 5), error_format="azure", policy="minute") as sim, \
            httpx.Client(base_url=sim.base_url) as http:
        ok = post(http)
        assert rate_headers(ok) == {"x-ratelimit-remaining-requests",
                                    "x-ratelimit-remaining-tokens"}
        post(http)
        by_calls = post(http)
        assert by_calls.status_code == 429
        assert by_calls.headers["content-type"] == "application/json"
        error = by_calls.json()["error"]
        assert set(error) == {"code", "message"} and error["code"] == "429"
        assert error["message"].startswith(
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            "2024-06-01 have exceeded call rate limit of your current OpenAI S0 pricing tier. "
            "Please retry after 30 seconds.")
        assert "retry-after" in by_calls.headers
        assert rate_headers(by_calls) == {"x-ratelimit-remaining-requests",
                                          "x-ratelimit-remaining-tokens"}
    with Simulator(tpm=COST, error_format="azure") as sim, \
            httpx.Client(base_url=sim.base_url) as http:
        post(http)
        by_tokens = post(http).json()["error"]["message"]
        assert "have exceeded token rate limit of your current OpenAI S0 pricing tier" in by_tokens
        assert "Please retry after 60 seconds." in by_tokens


def test_text_format_is_a_plain_429_without_rate_limit_headers():
    with Simulator(rpm=1, tpm=10_000, error_format="text") as sim, \
            httpx.Client(base_url=sim.base_url) as http:
        assert post(http).status_code == 200
        refused = post(http)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "text/plain"
        assert refused.content == b"429 Too Many Requests"
        assert not rate_headers(refused)
        assert refused.headers["retry-after"] == "60"
        assert sim.stats().rate_limited == 1


@pytest.mark.parametrize("fmt", ["openai", "azure", "text"])
def test_the_openai_sdk_raises_rate_limit_error_for_each_format(fmt):
    with Simulator(rpm=1, error_format=fmt) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
        client.chat.completions.create(**CHAT)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(**CHAT)
        assert caught.value.status_code == 429
        if fmt == "azure":
            assert "call rate limit" in caught.value.message
        client.close()


# -- model_limits ----------------------------------------------------------------------------
def test_model_limits_apply_per_model_and_the_key_limit_still_binds():
    limits = {"gpt-4o": {"rpm": 2, "tpm": None}}
    with Simulator(rpm=4, model_limits=limits, policy="minute") as sim, \
            httpx.Client(base_url=sim.base_url) as http:
        big = {**CHAT, "model": "gpt-4o"}
        first = post(http, big)
        assert first.headers["x-ratelimit-limit-requests"] == "2"  # the model's own limit
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert post(http, big).status_code == 200
        refused = post(http, big)
        assert refused.status_code == 429
        assert refused.json()["error"]["message"].startswith("Rate limit reached for gpt-4o ")
        # The refused gpt-4o request took nothing from the key: 2 of its 4 are left.
        mini = post(http)
        assert mini.headers["x-ratelimit-limit-requests"] == "4"  # the key's limit
        assert mini.headers["x-ratelimit-remaining-requests"] == "1"
        assert post(http).status_code == 200
        by_key = post(http)
        assert by_key.status_code == 429  # the key's 4 are spent
        assert "for model in organization" in by_key.json()["error"]["message"]
        assert sim.stats().ok == 4 and sim.stats().rate_limited == 2


def test_model_limits_are_per_key_and_per_model(clock):
    limits = {"gpt-4o": {"rpm": 60}, "gpt-4o-mini": {"rpm": 120}}  # 1 and 2 a second
    with Simulator(model_limits=limits) as sim, httpx.Client(base_url=sim.base_url) as http:
        big = {**CHAT, "model": "gpt-4o"}
        assert statuses(http, 2, big) == [200, 429]
        assert statuses(http, 3) == [200, 200, 429]  # gpt-4o-mini has its own bucket
        assert post(http, big, authorization="Bearer sk-other").status_code == 200
        assert statuses(http, 1, {**CHAT, "model": "gpt-3.5-turbo"}) == [200]  # no limits
        clock.at(1.0)
        assert statuses(http, 2, big) == [200, 429]


def test_model_and_key_scopes_are_taken_atomically():
    key = KeyLimits(rpm=10, tpm=100, burst=None, now=0.0, policy="minute")
    model = KeyLimits(rpm=None, tpm=50, burst=None, now=0.0, policy="minute")
    assert key.acquire(40, now=0.0, also=model) == 0
    assert key.acquire(20, now=0.0, also=model) > 0  # the model lacks room: take nothing
    assert key.tokens is not None and key.tokens.remaining(0.0) == 60
    assert key.requests is not None and key.requests.remaining(0.0) == 9
    assert key.acquire(61, now=0.0) > 0
    key.acquire(60, now=0.0)  # the key is now empty; the model still has 10
    assert key.acquire(5, now=0.0, also=model) > 0
    assert model.tokens is not None and model.tokens.remaining(0.0) == 10


def test_model_limits_are_checked():
    with pytest.raises(ConfigError, match="model_limits"):
        Simulator(model_limits={"gpt-4o": {"rpd": 5}})
    with pytest.raises(ConfigError, match="model_limits"):
        Simulator(model_limits={"gpt-4o": {"rpm": -1}})


# -- process mode ----------------------------------------------------------------------------
def test_the_config_crosses_a_process_boundary_as_json():
    config = Simulator(rpm=3, policy="window", window=60.0, model_limits={"gpt-4o": {"rpm": 1}},
                       max_in_flight=5, overload_status=503, headers=False, retry_after="ms",
                       error_format="text").config
    assert SimulatorConfig.from_json(config.to_json()) == config


def test_process_mode_carries_the_new_settings():
    with Simulator(process=True, rpm=3, policy="window", window=60.0,
                   model_limits={"gpt-4o": {"rpm": 1}}, headers=False, retry_after="ms",
                   error_format="text", max_in_flight=50, overload_status=503) as sim, \
            httpx.Client(base_url=sim.base_url) as http:
        big = {**CHAT, "model": "gpt-4o"}
        ok = post(http, big)
        assert ok.status_code == 200 and not rate_headers(ok)
        refused = post(http, big)  # the model's 1 per window
        assert refused.status_code == 429 and refused.content == b"429 Too Many Requests"
        assert "retry-after" not in refused.headers
        assert 0 < int(refused.headers["retry-after-ms"]) <= 60_000
        assert statuses(http, 3) == [200, 200, 429]  # the key's 3 per window
        stats = sim.stats()
        assert (stats.ok, stats.rate_limited, stats.overloaded) == (3, 2, 0)
        assert "policy=window 60s" in repr(sim) and "max_in_flight=50 (503)" in repr(sim)


# -- the CLIs --------------------------------------------------------------------------------
def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    sim_cli.configure(parser)
    return parser


def test_serve_flags_build_the_config():
    args = serve_parser().parse_args([
        "--rpm", "600", "--tpm", "90000", "--policy", "window", "--window", "2",
        "--max-in-flight", "8", "--overload-status", "503", "--no-headers",
        "--retry-after", "seconds", "--error-format", "azure",
        "--model-limit", "gpt-4o=500,30000", "--model-limit", "gpt-4o-mini=,200000"])
    config = sim_cli._config(args)
    assert (config.policy, config.window, config.max_in_flight, config.overload_status) == (
        "window", 2.0, 8, 503)
    assert (config.headers, config.retry_after, config.error_format) == (False, "seconds",
                                                                         "azure")
    assert config.model_limits == {"gpt-4o": {"rpm": 500.0, "tpm": 30_000.0},
                                   "gpt-4o-mini": {"rpm": None, "tpm": 200_000.0}}
    defaults = sim_cli._config(serve_parser().parse_args([]))
    assert defaults == SimulatorConfig()


@pytest.mark.parametrize("argv", [["--policy", "hour"], ["--model-limit", "gpt-4o"],
                                  ["--model-limit", "gpt-4o=five,6"],
                                  ["--overload-status", "500"],
                                  ["--retry-after", "always"], ["--error-format", "xml"]])
def test_serve_rejects_bad_flags(argv, capsys):
    with pytest.raises(SystemExit):
        serve_parser().parse_args(argv)
    assert "error" in capsys.readouterr().err


def test_serve_help_lists_the_mode_flags():
    result = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--help"],
                            capture_output=True, text=True, timeout=60, check=True)
    for flag in ("--policy", "--window", "--max-in-flight", "--overload-status", "--no-headers",
                 "--retry-after", "--error-format", "--model-limit"):
        assert flag in result.stdout


def bench_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_bench.configure(parser)
    return parser.parse_args(list(argv))


def test_bench_flags_reach_the_provider(monkeypatch):
    seen = {}

    def fake_sweep(provider, settings, **options):
        seen["provider"] = provider
        raise ConfigError("stop here")  # main reports it and returns 2

    monkeypatch.setattr(bench, "sweep", fake_sweep)
    args = bench_args("--policy", "window", "--window", "6", "--max-in-flight", "4",
                      "--error-format", "text", "--retry-after", "none", "--no-headers",
                      "--model-limit", "bench-model=300,")
    assert cli_bench.main(args) == 2
    provider = seen["provider"]
    assert (provider.policy, provider.window, provider.burst) == ("window", 6.0, None)
    assert (provider.max_in_flight, provider.error_format, provider.retry_after) == (
        4, "text", "none")
    assert provider.headers is False
    assert provider.model_limits == {"bench-model": {"rpm": 300.0, "tpm": None}}
    assert cli_bench.main(bench_args()) == 2
    assert seen["provider"].burst == 0.1 and seen["provider"].policy == "second"
    assert cli_bench.main(bench_args("--burst", "policy", "--policy", "minute")) == 2
    assert seen["provider"].burst is None and seen["provider"].bucket_requests == 600
    assert cli_bench.main(bench_args("--policy", "window", "--burst", "0.5")) == 2


def test_bench_provider_scales_the_modes_with_time():
    provider = bench.Provider(rpm=600, tpm=60_000, policy="window", window=6.0,
                              model_limits={"bench-model": {"rpm": 300, "tpm": None}},
                              max_in_flight=8, error_format="azure")
    options = provider.simulator_options(10.0)
    assert options["window"] == pytest.approx(0.6) and options["burst"] is None
    assert options["rpm"] == 6_000 and options["model_limits"] == {
        "bench-model": {"rpm": 3_000, "tpm": None}}
    assert options["max_in_flight"] == 8  # requests in flight do not scale (Little's law)
    assert provider.bucket_requests == 60  # one 6 s window
    assert "window 6 s" in provider.describe() and "max 8 in flight" in provider.describe()
    second = bench.Provider(rpm=600).simulator_options(10.0)
    assert second["burst"] == pytest.approx(1 / 600)  # 10 requests, as the real 1 s bucket
    with pytest.raises(ConfigError):
        bench.Provider(rpm=600, policy="window", burst=0.1)
    with pytest.raises(ConfigError):
        bench.Provider(rpm=600, max_in_flight=0)


def test_bench_runs_a_sweep_against_a_simulator_with_the_providers_modes(monkeypatch):
    started = []

    class Recording(Simulator):
        def start(self):
            started.append(self.config)
            return super().start()

    monkeypatch.setattr(bench._sweep, "Simulator", Recording)
    provider = bench.Provider(rpm=600, tpm=None, policy="window", window=1.0, latency=0.05,
                              max_in_flight=64, error_format="azure", seed=1)
    df = bench.sweep(provider, [bench.Setting(concurrency=4, burst_s=0.5)], requests=20,
                     target_seconds=0.3, process=False)
    k = df.attrs["time_scale"]
    (config,) = started
    assert (config.policy, config.max_in_flight, config.error_format) == ("window", 64, "azure")
    assert config.window == pytest.approx(1.0 / k) and config.rpm == pytest.approx(600 * k)
    row = df.iloc[0]
    assert row["sent"] == 20 + row["retries"] and row["failed"] == 0
    assert "window 1 s" in df.attrs["provider"]


# -- 200s without an answer (issue 19, item 2) -------------------------------------------------
def test_serve_accepts_the_bad_answer_faults():
    args = serve_parser().parse_args(["--fault", "empty_body=0.1", "null_content=0.05",
                                      "not_json=0.05", "--fault", "error_in_200=0.02",
                                      "content_filter=0.03", "echo_headers=0.01"])
    faults = sim_cli._config(args).faults
    assert (faults.empty_body, faults.null_content, faults.malformed, faults.error_200,
            faults.content_filter, faults.echo_headers) == (0.1, 0.05, 0.05, 0.02, 0.03, 0.01)


@pytest.mark.parametrize(("kind", "check"), [
    ("empty_body", lambda r: r.content == b""),
    ("null_body", lambda r: r.json() is None),
    ("empty_object", lambda r: r.json() == {}),
    ("list_body", lambda r: r.json() == []),
    ("empty_choices", lambda r: r.json()["choices"] == [] and r.json()["id"]),
    ("null_content", lambda r: r.json()["choices"][0]["message"] == {
        "role": "assistant", "content": None, "refusal": None, "annotations": []}),
    ("error_200", lambda r: r.json()["error"]["code"] == "upstream_error"),
    ("content_filter", lambda r: r.json()["choices"][0]["finish_reason"] == "content_filter"
     and r.json()["choices"][0]["message"]["content"] is None
     and r.json()["usage"]["prompt_tokens"] > 0),
    ("echo_headers", lambda r: r.headers["content-type"] == "text/plain"
     and "authorization: Bearer sk-echo-me-0123456789" in r.text
     and "credential sk-echo-me-0123456789 " in r.text),
])
def test_each_bad_answer_fault_sends_its_200_body(kind, check):
    with Simulator(faults={kind: 1.0}, rpm=600) as sim, httpx.Client(
            base_url=sim.base_url, headers={"authorization": "Bearer sk-echo-me-0123456789"}
    ) as http:
        response = post(http)
        stats = sim.stats()
        (entry,) = sim.log()
    assert response.status_code == 200 and check(response), response.content
    assert entry.outcome == f"fault:{kind}" and entry.status == 200
    assert stats.faults == 1 and stats.ok == 0
    assert response.headers["x-ratelimit-remaining-requests"] == "9"  # it was charged


def test_a_mix_of_bad_answer_faults_is_drawn_by_probability():
    faults = {"empty_body": 0.1, "null_content": 0.1, "error_200": 0.1, "content_filter": 0.1}
    with Simulator(faults=faults, seed=3) as sim, httpx.Client(base_url=sim.base_url) as http:
        codes = statuses(http, 400)
        outcomes = sim.stats().outcomes
    assert set(codes) == {200}
    for kind in faults:
        assert 20 <= outcomes[f"fault:{kind}"] <= 65, outcomes
    assert 180 <= outcomes["ok"] <= 300


def test_a_completion_and_an_embedding_get_bad_answers_of_their_own_shape():
    with Simulator(faults={"null_content": 1.0}) as sim, httpx.Client(
            base_url=sim.base_url) as http:
        text = http.post("/completions", json={"model": "gpt-3.5-turbo-instruct",
                                               "prompt": "hi", "max_tokens": 5}).json()
        vectors = http.post("/embeddings", json={"model": "text-embedding-3-small",
                                                 "input": ["a", "b"]}).json()
    assert text["choices"][0]["text"] is None
    assert [item["embedding"] for item in vectors["data"]] == [None, None]
