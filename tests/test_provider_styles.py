"""Each row of the provider table end to end: the simulator speaks that provider's headers and
429 bodies (``header_style``), the library runs over loopback with the adaptive limiter and no
limits told, and the limits it learnt are read from the limiter; counts come from the
simulator's log. No test sleeps: the simulator and the limiter keep their own time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import httpx
import pytest

import pipeline
from pipeline.simulator import Simulator

pytestmark = pytest.mark.timeout(60)

RPM = 6_000  # 100 requests a second: 300 rows take about 3 s at the quota's pace
ROWS = 300


def _ceilings(service: Any) -> tuple[float | None, float | None]:
    (endpoint,) = service.endpoints.values()
    snapshot = endpoint.limiter.snapshot()
    return snapshot.ceiling_requests, snapshot.ceiling_tokens


async def _run(sim: Simulator, provider: str | None) -> tuple[Any, tuple[float | None, ...]]:
    async with pipeline.OpenAIService(base_url=sim.base_url, api_key="sk-styles",
                                      provider=provider) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=16)
        rows = [{"text": f"row {i}"} for i in range(ROWS)]
        results = await pipeline.run(rows, job, concurrency=64)
        return results, _ceilings(service)


def _answered_once(sim: Simulator, results: Any) -> None:
    assert all(r.ok for r in results), results.failed[:3]
    answered = Counter(e.body_hash for e in sim.log() if e.status == 200)
    assert len(answered) == ROWS and set(answered.values()) == {1}


@pytest.mark.parametrize("style, provider", [
    ("openai", None),           # 127.0.0.1: the auto row reads x-ratelimit-*
    ("anthropic", None),        # auto reads anthropic-ratelimit-* and its RFC 3339 resets
    ("litellm", "litellm"),     # a proxy on localhost, named
    ("litellm", None),          # ... or not: auto reads its per-key headers too
])
def test_a_style_that_states_the_limit_is_learnt_exactly(style, provider):
    with Simulator(rpm=RPM, seed=3, header_style=style) as sim:
        results, (requests, _) = asyncio.run(_run(sim, provider))
        _answered_once(sim, results)
        assert requests == RPM


def test_groq_per_day_requests_are_not_taken_for_a_minute_rate():
    # The simulator states 8,640,000 requests a day (its minute limit x 1,440) and the
    # tokens per minute; the minute limit on requests is said only by its 429s' text.
    with Simulator(rpm=RPM, tpm=600_000, seed=3, header_style="groq") as sim:
        results, (requests, tokens) = asyncio.run(_run(sim, "groq"))
        _answered_once(sim, results)
        assert (requests, tokens) == (RPM, 600_000)
    # Unnamed (a Groq-style server on another host) the day's count reads as a minute rate:
    # why provider= exists.
    with Simulator(rpm=RPM, tpm=600_000, seed=3, header_style="groq") as sim:
        results, (requests, _) = asyncio.run(_run(sim, None))
        _answered_once(sim, results)
        assert requests == RPM * 1440


@pytest.mark.parametrize("style, provider", [("azure", "azure"), ("azure", None),
                                             ("none", None), ("none", "none")])
def test_a_style_that_states_no_limit_leaves_it_to_be_discovered(style, provider):
    with Simulator(rpm=RPM, seed=3, header_style=style) as sim:
        results, (requests, _) = asyncio.run(_run(sim, provider))
        _answered_once(sim, results)
        assert requests is None  # no fact: the rate was found by slow start and 429s


@pytest.mark.parametrize("style", ["openai", "azure", "anthropic", "groq", "litellm", "none"])
def test_each_style_says_what_its_provider_says(style):
    with Simulator(rpm=60, seed=3, header_style=style) as sim, httpx.Client() as http:
        def post() -> httpx.Response:
            return http.post(f"{sim.base_url}/chat/completions", json={
                "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4})
        ok = post()
        refused = post()  # the bucket holds one request a second
    names = {n.lower() for n in ok.headers}
    expected = {"openai": "x-ratelimit-limit-requests",
                "azure": "x-ratelimit-remaining-requests",
                "anthropic": "anthropic-ratelimit-requests-reset",
                "groq": "x-ratelimit-limit-requests",
                "litellm": "x-ratelimit-api_key-limit-requests"}
    assert ok.status_code == 200 and refused.status_code == 429
    if style == "none":
        assert not [n for n in names if "ratelimit" in n]
        assert refused.text == "429 Too Many Requests" and "retry-after" not in refused.headers
    else:
        assert expected[style] in names
    if style == "groq":
        assert ok.headers["x-ratelimit-limit-requests"] == str(60 * 1440)
    if style == "anthropic":
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert "of 60 requests per minute" in refused.json()["error"]["message"]
        assert "retry-after-ms" not in refused.headers
    if style == "litellm":
        assert refused.headers["rate_limit_type"] == "requests"
        assert "Limit type: requests. Current limit: 60" in refused.json()["error"]["message"]
    if style == "azure":
        assert not [n for n in names if n.startswith("x-ratelimit-limit")]
        assert "Please retry after" in refused.json()["error"]["message"]


# ------------------------------------------------------------------------ pipeline run --provider
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OPENAI_API_KEY="sk-styles-cli")
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_provider_names_the_row_and_a_wrong_one_stops_before_sending(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"text": "row {i}"}}\n' for i in range(20)))
    with Simulator(rpm=RPM, seed=3, header_style="litellm") as sim:
        common = ["run", str(source), "--template", "{text}", "--base-url", sim.base_url,
                  "--model", "gpt-4o-mini", "--max-tokens", "8"]
        wrong = _cli(*common, "-o", str(tmp_path / "wrong.jsonl"), "--provider", "lightllm")
        assert wrong.returncode == 2, wrong.stderr
        assert "--provider 'lightllm' is not one this knows; use one of: openai, azure" in \
            wrong.stderr
        assert sim.log() == [] and not (tmp_path / "wrong.jsonl").exists()
        right = _cli(*common, "-o", str(tmp_path / "out.jsonl"), "--provider", "LiteLLM")
        assert right.returncode == 0, right.stderr
        answered = Counter(e.body_hash for e in sim.log() if e.status == 200)
        assert len(answered) == 20 and set(answered.values()) == {1}
    help_text = _cli("run", "--help").stdout
    assert "--provider NAME" in help_text and "litellm" in help_text
