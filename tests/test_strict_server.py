"""The pipeline against a provider written here by hand, sharing nothing with the simulator.

The simulator and the adaptive limiter were built side by side, so they could share an
assumption without anyone noticing (both spoke of token buckets). This server is written
from scratch on ``asyncio.start_server`` and enforces its limit another way: a **sliding
window log**, at most ``N`` requests (and ``T`` tokens) in *any* one-second span, with
nothing saved up by a quiet spell beyond what the window forgets. It says as little as a
strict gateway does: no ``x-ratelimit-*`` headers, a 429 whose body is FastAPI's
``{"detail": ...}`` (vLLM's and many proxies' shape) and a ``Retry-After`` as an HTTP date,
which has whole-second resolution. It counts tokens its own way (characters / 4 + max_tokens),
not as the client estimates them.

Every cell checks from the server's own log that every row was answered exactly once, and
bounds the 429s (5% of the rows) and the limiter's rate cuts (a window still full from one
overshoot must not be read as a lower rate, cut after cut). The wall time against the
window's sustained pace (rows / rate: 1.2-1.4x seen) is printed with ``-s``, not asserted: a
test that times itself fails on a loaded machine.

Written against this server, the adaptive limiter was found cutting three times in 0.15 s
(70 to 9 requests/s, 2.7x the pace) while the window was still full from one overshoot:
refusals of requests granted before the time a 429 gave are no longer news.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import math
import time
from collections import Counter, deque
from typing import Any

import pytest

import pipeline
from pipeline.limiter._control import RateController

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ROWS = 800  # learning a limit costs a roughly fixed number of 429s: 5% of 800 is 40
RATE = 100  # requests in any one-second span
TOKENS = 2_500  # tokens in any one-second span (about 25 a request here: ~100 requests/s)


class StrictServer:
    """A chat-completions server with a sliding-window-log limit (see the module docstring).

    ``log`` holds ``(arrival, status, body_sha256)`` for every request it answered.
    """

    def __init__(self, requests_per_s: int | None, tokens_per_s: int | None,
                 latency: float = 0.01) -> None:
        self.requests_per_s = requests_per_s
        self.tokens_per_s = tokens_per_s
        self.latency = latency
        self.log: list[tuple[float, int, str]] = []
        self._admitted: deque[tuple[float, int]] = deque()  # (arrival, tokens) in the window
        self._tokens_in_window = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def __aenter__(self) -> StrictServer:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):  # idle keep-alive connections end at EOF
            writer.close()
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _admit(self, now: float, cost: int) -> float:
        """0 when admitted (and counted), else the seconds until it would fit."""
        window = self._admitted
        while window and window[0][0] <= now - 1.0:
            self._tokens_in_window -= window.popleft()[1]
        waits = [0.0]
        if self.requests_per_s is not None and len(window) >= self.requests_per_s:
            waits.append(window[len(window) - self.requests_per_s][0] + 1.0 - now)
        if self.tokens_per_s is not None and self._tokens_in_window + cost > self.tokens_per_s:
            freed, need = 0, self._tokens_in_window + cost - self.tokens_per_s
            for arrival, tokens in window:
                freed += tokens
                if freed >= need:
                    waits.append(arrival + 1.0 - now)
                    break
        wait = max(waits)
        if wait > 0:
            return wait
        window.append((now, cost))
        self._tokens_in_window += cost
        return 0.0

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, payload, extra = await self._answer(lines[0], body)
                data = json.dumps(payload).encode()
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Too Many Requests'}\r\n"
                    f"content-type: application/json\r\ncontent-length: {len(data)}\r\n"
                    f"{extra}\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client hung up, or the loop is ending with this connection idle
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, request_line: str, body: bytes) -> tuple[int, Any, str]:
        now = time.monotonic()
        digest = hashlib.sha256(body).hexdigest()
        assert request_line.startswith("POST /v1/chat/completions "), request_line
        request = json.loads(body)
        text = " ".join(str(m.get("content", "")) for m in request["messages"])
        cost = math.ceil(len(text) / 4) + int(request.get("max_tokens") or 16)
        wait = self._admit(now, cost)
        if wait > 0:
            self.log.append((now, 429, digest))
            # An HTTP date: whole seconds, rounded up so it is never too early.
            when = email.utils.formatdate(math.ceil(time.time() + wait), usegmt=True)
            return 429, {"detail": "Too Many Requests"}, f"retry-after: {when}\r\n"
        await asyncio.sleep(self.latency)
        self.log.append((now, 200, digest))
        prompt = math.ceil(len(text) / 4)
        return 200, {
            "id": "chatcmpl-strict", "object": "chat.completion", "created": int(time.time()),
            "model": request["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"Echo: {text[:40]}"}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": 4,
                      "total_tokens": prompt + 4},
        }, ""


async def _run(server: StrictServer, limits: dict[str, float]) -> tuple[Any, float]:
    async with pipeline.OpenAIService(base_url=server.base_url, api_key="sk-strict",
                                      **limits) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=16)
        rows = [{"text": f"Echo row {i}: hello"} for i in range(ROWS)]
        start = time.perf_counter()
        results = await pipeline.run(rows, job, concurrency=64, progress=False)
        return results, time.perf_counter() - start


@pytest.fixture
def cuts(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The limiter's rate cuts in this test, as they happen (one entry per cut made)."""
    made: list[float] = []
    cut = RateController._cut

    def counted(self: RateController, dim: Any, granted_at: float, now: float) -> bool:
        done = cut(self, dim, granted_at, now)
        if done:
            made.append(now)
        return done

    monkeypatch.setattr(RateController, "_cut", counted)
    return made


def _check(server: StrictServer, results: Any, wall: float, pace: float, told: bool,
           cuts: list[float]) -> None:
    answered = Counter(digest for _, status, digest in server.log if status == 200)
    refused = sum(1 for _, status, _ in server.log if status == 429)
    report = (f"answered {len(answered)}/{ROWS}, refused {refused}, cuts {len(cuts)}, "
              f"wall {wall:.2f} s, pace {pace:.2f} s ({wall / pace:.2f}x); "
              f"{results.status.rate_text()}")
    print(report)  # shown with -s: the figures of each cell
    assert all(r.ok for r in results), report + f"; failed: {results.failed[:3]}"
    assert len(answered) == ROWS and set(answered.values()) == {1}, report
    # Told right too: a sliding window refuses any bunching, and the first requests bunch
    # (they wait for their connections, then arrive together): 9-10 of 800 seen when told,
    # 19-23 not told with tokens binding (a window stays full for a second after the first
    # overshoot, and a Retry-After rounded up to the second does not say how long of it).
    assert refused <= 0.05 * ROWS, report
    # 2-4 cuts seen in every cell: finding the rate, then one more as the window turns over.
    # Reading a window still full from one overshoot as a lower rate cut again and again
    # (three cuts in 0.15 s took 70 requests/s to 9; the run took 2.7x its pace).
    assert len(cuts) <= 8, report
    # The wall time (printed above) is looser than the simulator's matrix: told its token
    # limit, the client still counts tokens its own way (36 a request where this server counts
    # 21): 1.38x. Not told, the first cut of an unknown limit aims at 0.49x of what got
    # through in the last second, which fits a one-second bucket (what got through includes
    # its saved-up second) but halves a window's rate: 1.20-1.31x seen. Known, open.


@pytest.mark.parametrize("told", [True, False], ids=["told", "not-told"])
async def test_a_sliding_window_on_requests(told: bool, cuts: list[float]) -> None:
    async with StrictServer(requests_per_s=RATE, tokens_per_s=None) as server:
        results, wall = await _run(server, {"rpm": RATE * 60} if told else {})
        _check(server, results, wall, ROWS / RATE, told, cuts)


@pytest.mark.parametrize("told", [True, False], ids=["told", "not-told"])
async def test_a_sliding_window_on_tokens_counted_the_servers_way(told: bool,
                                                                  cuts: list[float]) -> None:
    async with StrictServer(requests_per_s=None, tokens_per_s=TOKENS) as server:
        results, wall = await _run(server, {"tpm": TOKENS * 60} if told else {})
        charged = sum(math.ceil(len(f"Echo row {i}: hello") / 4) + 16 for i in range(ROWS))
        _check(server, results, wall, charged / TOKENS, told, cuts)
