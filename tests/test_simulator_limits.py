"""Rate limits, quota and injected faults of the simulator.

Timing-robust by construction: limits are tiny (a few requests per minute), so a bucket cannot
refill a whole unit while a test runs; nothing sleeps.
"""

from __future__ import annotations

import math
import socket

import httpx
import msgspec
import pytest

from pipeline.core.durations import parse_duration
from pipeline.simulator import Latency, Simulator, count_chat_tokens

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}]}
PROMPT = count_chat_tokens(CHAT["messages"])


def post(http: httpx.Client, body=None, path="/chat/completions") -> httpx.Response:
    return http.post(path, json=CHAT if body is None else body)


def test_burst_past_rpm_gets_429_with_retry_after_and_headers_count_down(validate_schema):
    with Simulator(rpm=5, tpm=1_000_000, policy="minute") as sim, \
            httpx.Client(base_url=sim.base_url) as http:
        responses = [post(http) for _ in range(8)]
        assert [r.status_code for r in responses] == [200] * 5 + [429] * 3
        remaining = [int(r.headers["x-ratelimit-remaining-requests"]) for r in responses]
        assert remaining == [4, 3, 2, 1, 0, 0, 0, 0]
        for r in responses[5:]:
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
            assert r.json()["error"]["type"] == "requests"
            # 5 per minute refills one request every 12 s
            assert 1 <= int(r.headers["retry-after"]) <= 12
            assert 0 < int(r.headers["retry-after-ms"]) <= 12_000
            assert not validate_schema(r.json(), "ErrorResponse")
            reset = parse_duration(r.headers["x-ratelimit-reset-requests"])
            assert reset is not None and 59 < reset <= 60  # a full minute to refill 5
        stats = sim.stats()
        assert stats.rate_limited == 3 and stats.ok == 5
        assert [e.outcome for e in sim.log()] == ["ok"] * 5 + ["rate_limited"] * 3


def test_tokens_per_minute_limit_counts_prompt_plus_max_tokens_times_n():
    cost = PROMPT + 20 * 2
    with Simulator(tpm=3 * cost + cost // 2, policy="minute") as sim, \
            httpx.Client(base_url=sim.base_url) as http:
        body = {**CHAT, "max_tokens": 20, "n": 2}
        responses = [post(http, body) for _ in range(4)]
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        remaining = [int(r.headers["x-ratelimit-remaining-tokens"]) for r in responses[:3]]
        expected = [sim.config.tpm - cost * k for k in (1, 2, 3)]
        # the bucket refills ~3 tokens/s between requests: allow a little of that
        assert all(e <= r <= e + 3 for r, e in zip(remaining, expected, strict=True)), remaining
        assert responses[3].json()["error"]["type"] == "tokens"
        assert "retry-after" in responses[3].headers
        assert "x-ratelimit-limit-requests" not in responses[0].headers  # no rpm configured
        assert sim.stats().tokens == 3 * cost


def test_a_request_larger_than_the_token_bucket_is_refused_without_retry_after():
    with Simulator(tpm=50) as sim:
        response = httpx.post(f"{sim.base_url}/chat/completions",
                              json={**CHAT, "max_tokens": 100})
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert "Request too large" in response.json()["error"]["message"]
        assert "retry-after" not in response.headers


def test_burst_fraction_shrinks_the_bucket():
    with Simulator(rpm=6, burst=1 / 3) as sim, httpx.Client(base_url=sim.base_url) as http:
        statuses = [post(http).status_code for _ in range(4)]
        # capacity 2 (a third of 6/min); one more request takes 10 s to refill
        assert statuses == [200, 200, 429, 429]


def test_each_api_key_has_its_own_buckets():
    with Simulator(rpm=1, api_key=["sk-a", "sk-b"]) as sim:
        def call(key):
            return httpx.post(f"{sim.base_url}/chat/completions", json=CHAT,
                              headers={"Authorization": f"Bearer {key}"}).status_code

        assert [call("sk-a"), call("sk-b"), call("sk-a"), call("sk-b")] == [200, 200, 429, 429]


def test_bad_requests_and_401s_are_not_charged():
    with Simulator(rpm=2, api_key="sk-ok", policy="minute") as sim, \
            httpx.Client(base_url=sim.base_url) as http:
        assert post(http).status_code == 401
        auth = {"Authorization": "Bearer sk-ok"}
        assert http.post("/chat/completions", json={"model": "m"}, headers=auth).status_code == 400
        assert [http.post("/chat/completions", json=CHAT, headers=auth).status_code
                for _ in range(3)] == [200, 200, 429]


def test_token_quota_then_insufficient_quota_for_everyone(validate_schema):
    cost = PROMPT + 10
    with Simulator(quota_tokens=2 * cost) as sim, httpx.Client(base_url=sim.base_url) as http:
        body = {**CHAT, "max_tokens": 10}
        statuses = [post(http, body).status_code for _ in range(4)]
        assert statuses == [200, 200, 429, 429]
        last = post(http, body)
        assert last.json()["error"]["code"] == "insufficient_quota"
        assert last.json()["error"]["type"] == "insufficient_quota"
        assert not validate_schema(last.json(), "ErrorResponse")
        assert sim.stats().insufficient_quota == 3 and sim.stats().rate_limited == 0
        sim.reset(limits=True)
        assert post(http, body).status_code == 200


def test_set_limits_at_runtime():
    with Simulator(rpm=1, policy="minute") as sim, \
            httpx.Client(base_url=sim.base_url) as http:
        assert [post(http).status_code for _ in range(2)] == [200, 429]
        sim.set_limits(rpm=3)
        assert [post(http).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert "rpm=3" in repr(sim)


# -- faults --------------------------------------------------------------------------------------
FAULTS = {"500": 0.10, "502": 0.05, "503": 0.05, "context_length": 0.05, "truncated": 0.05,
          "malformed": 0.05}
EXPECTED_OUTCOME = {"500": "fault:500", "502": "fault:502", "503": "fault:503",
                    "context_length": "fault:context_length", "truncated": "truncated",
                    "malformed": "malformed"}


def test_fault_probabilities_hold_over_a_seeded_run(validate_schema):
    n = 2000
    with Simulator(faults=FAULTS, seed=7) as sim, httpx.Client(base_url=sim.base_url) as http:
        responses = [post(http) for _ in range(n)]
        outcomes = sim.stats().outcomes
    for name, p in FAULTS.items():
        count = outcomes.get(EXPECTED_OUTCOME[name], 0)
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(count - n * p) < 4 * sigma, (name, count)
    assert abs(outcomes["ok"] - n * 0.65) < 4 * math.sqrt(n * 0.65 * 0.35)
    by_status: dict[int, int] = {}
    for r in responses:
        by_status[r.status_code] = by_status.get(r.status_code, 0) + 1
    assert by_status[500] == outcomes["fault:500"] and by_status[502] == outcomes["fault:502"]
    assert by_status[400] == outcomes["fault:context_length"]
    bad_json = 0
    for r in responses:
        if r.status_code != 200:
            assert not validate_schema(r.json(), "ErrorResponse")
            continue
        try:
            r.json()
        except ValueError:
            bad_json += 1
    assert bad_json == outcomes["truncated"] + outcomes["malformed"]


def test_the_same_seed_gives_the_same_faults():
    def run(seed):
        with Simulator(faults={"500": 0.3}, seed=seed) as sim, \
                httpx.Client(base_url=sim.base_url) as http:
            return [post(http).status_code for _ in range(40)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_context_length_fault_is_the_spec_error():
    with Simulator(faults={"context_length": 1.0}) as sim:
        response = httpx.post(f"{sim.base_url}/chat/completions", json=CHAT)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "context_length_exceeded"


def test_reset_fault_breaks_the_connection_mid_response():
    with Simulator(faults={"reset": 1.0}) as sim:
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{sim.base_url}/chat/completions", json=CHAT)
        assert sim.log()[-1].outcome == "reset" and sim.log()[-1].status == 0


def test_hang_fault_times_out_the_client_and_does_not_block_shutdown():
    sim = Simulator(faults={"hang": 1.0}).start()
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{sim.base_url}/chat/completions", json=CHAT, timeout=0.2)
        # A second client is still hanging when we stop the server.
        sock = socket.create_connection(("127.0.0.1", sim.port))
        body = msgspec.json.encode(CHAT)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        for _ in range(1_000_000):  # wait until the server has the second request
            if sim.stats().requests == 2:
                break
    finally:
        sim.stop()
    sock.settimeout(2)
    try:
        assert sock.recv(100) == b""  # closed by the server, no response
    except ConnectionResetError:
        pass
    sock.close()
    assert sim.stats().outcomes == {"hang": 2}


def test_latency_per_output_token_is_logged_per_request():
    latency = Latency.fixed(0.002, per_output_token=0.0001)
    with Simulator(latency=latency) as sim, httpx.Client(base_url=sim.base_url) as http:
        for i in range(3):
            post(http, {**CHAT, "max_tokens": 5 + 20 * i})
        for entry in sim.log():
            assert entry.latency == pytest.approx(0.002 + 0.0001 * entry.completion_tokens)
        assert len({e.completion_tokens for e in sim.log()}) > 1


def test_uniform_latency_is_drawn_per_request_and_seeded():
    def delays(seed):
        with Simulator(latency="uniform:0.001,0.004", seed=seed) as sim, \
                httpx.Client(base_url=sim.base_url) as http:
            for _ in range(5):
                post(http)
            return [e.latency for e in sim.log()]

    first = delays(1)
    assert all(0.001 <= d <= 0.004 for d in first) and len(set(first)) == 5
    assert delays(1) == first
