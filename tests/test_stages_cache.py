"""pipeline.stages._cache: lookup and store; a rerun sends nothing, only successes are kept."""

from __future__ import annotations

import errno
import http.server
import json
import logging
import os
import threading

import pytest

from pipeline.errors import (
    BadRequestError,
    ConfigError,
)
from pipeline.http import OpenAIService
from pipeline.runner import run
from pipeline.simulator import Simulator
from pipeline.stages import lookup, store
from pipeline.state.cache import ResponseCache
from pipeline.testing import InstantService

ROWS = [{"text": f"row {i}"} for i in range(20)]


def _job(service: InstantService, **config):
    return service.chat(model="m", prompt="Classify: {text}", max_tokens=5, **config)


async def test_cache_makes_a_rerun_send_nothing(tmp_path):
    service = InstantService()
    job = _job(service)
    first = await run(ROWS, job, cache=tmp_path / "cache")
    assert service.calls == 20 and first.status.cached == 0
    second = await run(ROWS, job, cache=tmp_path / "cache")
    assert service.calls == 20  # nothing new sent
    assert second.status.cached == 20 and all(r.cached and r.text == "ok" for r in second)
    # A changed request is a different key.
    third = await run(ROWS[:2], _job(service, temperature=0), cache=tmp_path / "cache")
    assert service.calls == 22 and third.status.cached == 0


async def test_only_successes_are_cached(tmp_path):
    service = InstantService(fail=lambda r, n: BadRequestError("no", status=400))
    await run(ROWS[:3], _job(service), cache=tmp_path / "c")
    with ResponseCache(tmp_path / "c") as cache:
        assert len(cache) == 0


# -- against the simulator over loopback: faults of the cache itself never fail a paid row --

KEY_A = "sk-test-cache-scope-key-A-0123456789"
KEY_B = "sk-test-cache-scope-key-B-9876543210"


def _rows(n):
    return [{"text": f"review {i}"} for i in range(n)]


def _files_hold(directory, secret: str) -> list[str]:
    found = []
    for root, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                if secret.encode() in f.read():
                    found.append(name)
    return found


async def test_a_full_cache_disk_fails_no_row_and_is_said_once(tmp_path, monkeypatch, caplog):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with Simulator(latency=0.0) as sim:
        async with OpenAIService(api_key=KEY_A, base_url=sim.base_url) as service:
            job = service.chat(model="m", prompt="Classify: {text}", max_tokens=5)
            # Flushed every 4 answers: the disk is found full again and again, said once.
            cache = ResponseCache(tmp_path / "cache", flush_every=4)
            monkeypatch.setattr(cache._cache, "set", disk_full)
            with caplog.at_level(logging.WARNING, logger="pipeline.state.cache"):
                results = await run(_rows(30), job, cache=cache, concurrency=8)
                cache.close()
            assert sim.stats().requests == 30
            assert all(r.ok and r.error is None and r.text for r in results)
            assert results.status.succeeded == 30 and results.status.failed == 0
            assert cache.failed_writes == 30 and cache.writes == 0
            assert "No space left on device" in (cache.write_error or "")
            said = [r.getMessage() for r in caplog.records if r.name == "pipeline.state.cache"]
            assert said == [f"the response cache at {tmp_path / 'cache'} cannot be written (No "
                            "space left on device); going on without caching: a rerun will "
                            "pay again for the answers from now on"]


async def test_cached_answers_keep_no_echoed_key_or_cookie(tmp_path):
    # A proxy that echoes the key back in x-api-key, set-cookie and a custom header.
    with _EchoServer() as base_url:
        async with OpenAIService(api_key=KEY_A, base_url=base_url) as service:
            job = service.chat(model="m", prompt="Classify: {text}", max_tokens=5)
            first = await run(_rows(5), job, cache=tmp_path / "cache", keep_responses=True)
            assert all(r.ok for r in first)
            assert KEY_A in first[0].response.headers["x-api-key"]  # the echo did happen
            second = await run(_rows(5), job, cache=tmp_path / "cache",
                               keep_responses=True)
    assert second.status.cached == 5
    # What a later reader needs is kept; the echoed secrets are not.
    assert second[0].response.headers == {"content-type": "application/json",
                                          "x-request-id": "req_echo"}
    assert _files_hold(tmp_path / "cache", KEY_A) == []
    assert _files_hold(tmp_path / "cache", "session=") == []


async def test_a_cache_scoped_by_key_serves_each_key_only_its_own_answers(tmp_path):
    cache_dir = tmp_path / "shared-cache"
    with Simulator(latency=0.0, api_key=(KEY_A, KEY_B)) as sim:
        async with OpenAIService(api_key=KEY_A, base_url=sim.base_url) as a, \
                OpenAIService(api_key=KEY_B, base_url=sim.base_url) as b, \
                OpenAIService(api_key="sk-not-a-valid-key-000000000", base_url=sim.base_url,
                              ) as invalid:
            def job(service):
                return service.chat(model="m", prompt="Classify: {text}", max_tokens=5)

            await run(_rows(10), job(a), cache=cache_dir, cache_scope="key")
            assert sim.stats().requests == 10
            # Another key asks the same questions: every row is sent, and paid, by that key.
            second = await run(_rows(10), job(b), cache=cache_dir, cache_scope="key")
            assert sim.stats().requests == 20 and second.status.cached == 0
            assert all(r.ok for r in second)
            # The scope is kept by the directory: a run that does not ask for it is scoped too,
            # and a wrong key gets no answer it did not pay for.
            wrong = await run(_rows(10), job(invalid), cache=cache_dir)
            assert wrong.status.cached == 0 and not any(r.ok for r in wrong)
            # Each key's own rerun is free.
            again = await run(_rows(10), job(a), cache=cache_dir)
            assert again.status.cached == 10
    assert ResponseCache(cache_dir).scope == "key"
    for key in (KEY_A, KEY_B):
        assert _files_hold(cache_dir, key) == []


async def test_without_a_scope_a_shared_cache_serves_any_key(tmp_path):
    # The documented default (README, "Sharing a cache"): the key is not in the cache key.
    with Simulator(latency=0.0, api_key=KEY_A) as sim:
        async with OpenAIService(api_key=KEY_A, base_url=sim.base_url) as a, \
                OpenAIService(api_key=KEY_B, base_url=sim.base_url) as b:
            await run(_rows(5), a.chat(model="m", prompt="{text}", max_tokens=5),
                      cache=tmp_path / "c")
            served = await run(_rows(5), b.chat(model="m", prompt="{text}", max_tokens=5),
                               cache=tmp_path / "c")
            assert sim.stats().requests == 5 and served.status.cached == 5


class _EchoServer:
    """A loopback chat server that echoes the request's key in its response headers."""

    def __enter__(self) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                key = self.headers.get("authorization", "").removeprefix("Bearer ")
                body = json.dumps({
                    "id": "chatcmpl-echo", "object": "chat.completion", "created": 0,
                    "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant",
                                                           "content": "ok"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                }).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.send_header("x-request-id", "req_echo")
                self.send_header("x-api-key", key)
                self.send_header("set-cookie", f"session={key}; Path=/")
                self.send_header("x-echo-authorization", f"Bearer {key}")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_a_key_scoped_cache_needs_the_services_secrets_in_a_hand_built_flow(tmp_path):
    with ResponseCache(tmp_path, scope="key") as cache:
        for stage in (lookup, store):
            with pytest.raises(ConfigError, match="scoped by API key"):
                stage(cache)
            assert stage(cache, secrets=[KEY_A]).scope != stage(cache, secrets=[KEY_B]).scope
    with ResponseCache(tmp_path / "shared") as cache:
        assert lookup(cache).scope is None and lookup(cache, secrets=[KEY_A]).scope is None
