"""The simulator's parts on their own: token rule, buckets, latency, faults, HTTP parsing."""

from __future__ import annotations

import math
import random
import socket

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.simulator import (
    Faults,
    Latency,
    Simulator,
    SimulatorConfig,
    count_chat_tokens,
    count_input_tokens,
    count_text_tokens,
)
from pipeline.simulator._ratelimit import Bucket, KeyLimits


# -- token rule ----------------------------------------------------------------------------------
@given(st.text(max_size=200))
def test_text_tokens_are_a_quarter_of_the_characters_rounded_up(text):
    assert count_text_tokens(text) == math.ceil(len(text) / 4)


def test_chat_tokens_add_message_overhead_names_and_parts():
    messages = [
        {"role": "system", "content": "12345678"},                                  # 4 + 2
        {"role": "user", "name": "ada", "content": [{"type": "text", "text": "abcd"},
                                                    {"type": "image_url", "image_url": {}}]},
    ]                                                             # 4 + 1 (name) + 1 + 85
    assert count_chat_tokens(messages) == 3 + (4 + 2) + (4 + 1 + 1 + 85)


def test_input_tokens_for_every_input_shape():
    assert count_input_tokens("abcdefghi") == 3
    assert count_input_tokens(["abcd", "ef"]) == 2
    assert count_input_tokens([5, 6, 7]) == 3
    assert count_input_tokens([[1, 2], [3]]) == 3


# -- buckets -------------------------------------------------------------------------------------
def test_bucket_refills_continuously_up_to_capacity():
    bucket = Bucket(limit=60, capacity=60, now=0.0)  # one unit per second
    assert bucket.take(60, now=0.0) and not bucket.take(1, now=0.5)
    assert bucket.wait(1, now=0.5) == pytest.approx(0.5)
    assert bucket.take(1, now=1.0)
    assert bucket.remaining(now=1000.0) == 60  # never above capacity
    assert bucket.reset_in(now=1000.0) == 0
    assert bucket.wait(61, now=1000.0) == math.inf


def test_key_limits_take_both_or_nothing():
    limits = KeyLimits(rpm=10, tpm=100, burst=None, now=0.0, policy="minute")
    assert limits.acquire(90, now=0.0) == 0
    wait = limits.acquire(20, now=0.0)  # 10 tokens short at 100/60 per second
    assert wait == pytest.approx(6.0)
    assert limits.requests is not None and limits.requests.remaining(0.0) == 9  # untouched
    headers = dict(limits.headers(0.0))
    assert headers["x-ratelimit-remaining-tokens"] == "10"
    assert headers["x-ratelimit-reset-tokens"] == "54s"
    assert headers["x-ratelimit-reset-requests"] == "6s"


# -- latency and faults --------------------------------------------------------------------------
def test_latency_distributions_are_seeded_and_bounded():
    rng = random.Random(1)
    assert Latency.fixed(0.2, per_output_token=0.01).sample(rng, 10) == pytest.approx(0.3)
    uniform = [Latency.uniform(0.1, 0.2).sample(rng) for _ in range(500)]
    assert min(uniform) >= 0.1 and max(uniform) <= 0.2
    lognormal = sorted(Latency.lognormal(0.2, 0.5).sample(rng) for _ in range(2001))
    assert lognormal[1000] == pytest.approx(0.2, rel=0.1)  # the median
    assert Latency.lognormal(0.2).sample(random.Random(5)) == \
        Latency.lognormal(0.2).sample(random.Random(5))


@pytest.mark.parametrize("text", ["fast", "uniform:0.3,0.1", "uniform:1", "lognormal:", "-1"])
def test_bad_latency_text_is_a_config_error(text):
    with pytest.raises(ConfigError):
        Latency.parse(text)


def test_fault_draws_follow_the_probabilities():
    faults = Faults.parse(["500=0.2", "hang=0.1"])
    rng = random.Random(0)
    draws = [faults.draw(rng) for _ in range(10_000)]
    assert draws.count("server_error") == pytest.approx(2000, abs=200)
    assert draws.count("hang") == pytest.approx(1000, abs=150)
    assert draws.count(None) == pytest.approx(7000, abs=250)
    assert not Faults().any and Faults().draw(rng) is None


def test_config_round_trips_through_json():
    config = SimulatorConfig(rpm=5, latency=Latency.uniform(0.1, 0.2),
                             faults=Faults(reset=0.1), api_keys=("sk-hidden",))
    assert SimulatorConfig.from_json(config.to_json()) == config
    assert "hidden" not in repr(config.describe())


# -- HTTP edge cases -----------------------------------------------------------------------------
def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_keep_alive_chunked_bodies_and_connection_close():
    body = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
               % (len(body), body))
    chunked = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    with Simulator() as sim:
        # Two requests on one connection (sent back to back), the last one closing it.
        reply = raw_exchange(sim.port, request + chunked)
    assert reply.count(b"HTTP/1.1 200 OK") == 2
    assert reply.count(b"connection: close") == 1


def test_garbage_request_gets_400_and_a_closed_connection():
    with Simulator() as sim:
        reply = raw_exchange(sim.port, b"NONSENSE\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400")
        reply = raw_exchange(sim.port, b"POST /v1/embeddings HTTP/1.1\r\nContent-Length: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400")


def test_expect_100_continue_is_answered_once():
    body = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    with Simulator() as sim, socket.create_connection(("127.0.0.1", sim.port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body[:10])
        s.sendall(body[10:])
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK") and b"100 Continue" not in reply


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 30)), min_size=1, max_size=60))
def test_a_bucket_never_admits_more_than_capacity_plus_refill_in_any_window(steps):
    bucket = Bucket(limit=60, capacity=20, now=0.0)  # one unit per second, bursts of 20
    now, admitted = 0.0, []
    for dt, amount in steps:
        now += dt
        if bucket.take(amount, now):
            admitted.append((now, amount))
    for i, (start, _) in enumerate(admitted):
        for j in range(i, len(admitted)):
            window = admitted[j][0] - start
            total = sum(a for _, a in admitted[i:j + 1])
            assert total <= 20 + window * 1.0 + 1e-6
