"""The peer clients of ``quota_control.py``: what a user would write without this library.

Each is ``async def run_X(base_url, rows, *, rpm, tpm, max_tokens, concurrency) -> ClientResult``
and sends every prompt in ``rows`` as one chat completion
(``{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "max_tokens": N}``)
to ``base_url + "/chat/completions"`` with ``Authorization: Bearer sk-bench``. ``rpm``/``tpm``
are what the user told the client (``None``: not told).

- :func:`run_aiolimiter`: the ~30-line script a competent user writes: ``aiolimiter`` buckets
  holding one second of the limits, a semaphore, ``httpx``, retries on 429/5xx that honour
  ``retry-after-ms``/``retry-after``.
- :func:`run_cookbook`: the logic of the OpenAI cookbook's ``api_request_parallel_processor.py``,
  re-written here from a description of it (no code copied): a 1 ms polling loop, capacity
  counters that start full, a 15 s pause for everyone after a rate-limit error it recognises by
  its message, 5 attempts per row.

Both count what they saw themselves; the harness checks them against the simulator's own log.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from aiolimiter import AsyncLimiter

__all__ = ["ClientResult", "chat_body", "run_aiolimiter", "run_cookbook"]

MODEL = "gpt-4o-mini"
HEADERS = {"Authorization": "Bearer sk-bench"}


@dataclass
class ClientResult:
    """What one client says it did.

    Attributes:
        answered: rows it got a 200 answer for.
        failed: rows it gave up on.
        rate_limited: 429 answers it received (every attempt counted).
        wall: seconds from its first request to its last answer.
        notes: anything worth a line in the table (fallbacks, pauses taken...).
    """

    answered: int
    failed: int
    rate_limited: int
    wall: float
    notes: list[str] = field(default_factory=list)


def chat_body(text: str, max_tokens: int) -> dict[str, Any]:
    """The request body every client sends for one row."""
    return {"model": MODEL, "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens}


# -- aiolimiter + httpx ------------------------------------------------------------------------

AIOLIMITER_ATTEMPTS = 10
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms`` first (finer), then
    ``retry-after`` in seconds; ``None`` when neither is there or readable."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:  # an HTTP date: rare from LLM APIs; back off instead
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


async def run_aiolimiter(base_url: str, rows: list[str], *, rpm: float | None,
                         tpm: float | None, max_tokens: int, concurrency: int) -> ClientResult:
    """aiolimiter for rpm (and tpm when told), a semaphore for concurrency, httpx, retries."""
    url = base_url.rstrip("/") + "/chat/completions"
    # One-second buckets: aiolimiter's bucket holds max_rate, so (rpm/60, 1) never bursts more
    # than a second's worth, which is what a provider enforcing per second accepts.
    requests = AsyncLimiter(rpm / 60, 1) if rpm is not None else None
    tokens = AsyncLimiter(tpm / 60, 1) if tpm is not None else None
    gate = asyncio.Semaphore(concurrency)
    seen_429 = 0

    async def one(client: httpx.AsyncClient, text: str) -> bool:
        nonlocal seen_429
        body = chat_body(text, max_tokens)
        estimate = len(text) / 4 + max_tokens
        for attempt in range(AIOLIMITER_ATTEMPTS):
            response: httpx.Response | None = None
            async with gate:
                if requests is not None:
                    await requests.acquire(min(1.0, requests.max_rate))
                if tokens is not None:
                    # aiolimiter raises ValueError for more than its capacity: cap the amount.
                    await tokens.acquire(min(estimate, tokens.max_rate))
                try:
                    response = await client.post(url, json=body, headers=HEADERS)
                except httpx.TransportError:
                    pass  # a broken connection or a timeout: retry like a 5xx
            if response is not None:
                if response.status_code == 200:
                    return True
                if response.status_code == 429:
                    seen_429 += 1
                elif response.status_code < 500:
                    return False  # 400, 401, 404...: retrying will not help
            wait = _retry_after(response) if response is not None else None
            if wait is None:  # exponential backoff with jitter, capped
                wait = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt) * random.uniform(0.5, 1.5)
            await asyncio.sleep(wait)
        return False

    start = time.perf_counter()
    timeout = httpx.Timeout(60.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        outcomes = await asyncio.gather(*(one(client, text) for text in rows))
    answered = sum(outcomes)
    return ClientResult(answered=answered, failed=len(rows) - answered, rate_limited=seen_429,
                        wall=time.perf_counter() - start)


# -- the OpenAI cookbook's parallel processor, re-implemented -------------------------------------

# Its CLI defaults when the user gives no limits: max_requests_per_minute = 3_000 * 0.5 and
# max_tokens_per_minute = 250_000 * 0.5 (half of a tier's limits, "to be safe").
COOKBOOK_DEFAULT_RPM = 1_500
COOKBOOK_DEFAULT_TPM = 125_000
COOKBOOK_ATTEMPTS = 5  # attempts in all, the first one included
COOKBOOK_PAUSE = 15.0  # seconds_to_pause_after_rate_limit_error
COOKBOOK_POLL = 0.001  # the main loop sleeps 1 ms between iterations


def cookbook_token_estimate(text: str, max_tokens: int) -> int:
    """Its chat token count with chars/4 standing in for tiktoken: 4 per message, the tokens
    of every value in it (the role too), 2 to prime the reply, plus max_tokens."""
    prompt = 4 + math.ceil(len("user") / 4) + math.ceil(len(text) / 4) + 2
    return prompt + max_tokens


@dataclass
class _Queued:
    body: dict[str, Any]
    tokens: int
    attempts_left: int


async def run_cookbook(base_url: str, rows: list[str], *, rpm: float | None, tpm: float | None,
                       max_tokens: int, concurrency: int) -> ClientResult:
    """The cookbook's logic. It has no cap on requests in flight, so ``concurrency`` is unused
    (aiohttp's default connector still holds at most 100 connections, as in the cookbook)."""
    del concurrency
    url = base_url.rstrip("/") + "/chat/completions"
    max_rpm = float(rpm if rpm is not None else COOKBOOK_DEFAULT_RPM)
    max_tpm = float(tpm if tpm is not None else COOKBOOK_DEFAULT_TPM)
    source = iter(rows)
    retry_queue: deque[_Queued] = deque()
    # The counters start full: a whole minute's worth may go out at once.
    available_requests, available_tokens = max_rpm, max_tpm
    last_update = time.monotonic()
    last_rate_limit_error = -math.inf
    in_progress = succeeded = failed = seen_429 = recognised = pauses = 0
    tasks: set[asyncio.Task[None]] = set()

    async def call(session: aiohttp.ClientSession, item: _Queued) -> None:
        nonlocal in_progress, succeeded, failed, seen_429, recognised, last_rate_limit_error
        error = False
        try:
            async with session.post(url, json=item.body, headers=HEADERS) as response:
                if response.status == 429:
                    seen_429 += 1
                # Like the cookbook, the status is not looked at: the JSON body decides.
                # A non-JSON body raises here and counts as an "other" error.
                payload = await response.json()
            if "error" in payload:
                error = True
                if "Rate limit" in payload["error"].get("message", ""):
                    last_rate_limit_error = time.monotonic()
                    recognised += 1
        except Exception:  # the cookbook catches everything and retries
            error = True
        if not error:
            succeeded += 1
            in_progress -= 1
        elif item.attempts_left:
            retry_queue.append(item)
        else:
            failed += 1
            in_progress -= 1

    start = time.perf_counter()
    next_item: _Queued | None = None
    exhausted = False
    async with aiohttp.ClientSession() as session:
        try:
            while True:
                if next_item is None:
                    if retry_queue:
                        next_item = retry_queue.popleft()
                    elif not exhausted:
                        text = next(source, None)
                        if text is None:
                            exhausted = True
                        else:
                            next_item = _Queued(chat_body(text, max_tokens),
                                                cookbook_token_estimate(text, max_tokens),
                                                COOKBOOK_ATTEMPTS)
                            in_progress += 1
                now = time.monotonic()
                elapsed, last_update = now - last_update, now
                available_requests = min(max_rpm, available_requests + max_rpm * elapsed / 60)
                available_tokens = min(max_tpm, available_tokens + max_tpm * elapsed / 60)
                if (next_item is not None and available_requests >= 1
                        and available_tokens >= next_item.tokens):
                    available_requests -= 1
                    available_tokens -= next_item.tokens
                    next_item.attempts_left -= 1
                    task = asyncio.create_task(call(session, next_item))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    next_item = None
                if in_progress == 0 and exhausted:
                    break
                await asyncio.sleep(COOKBOOK_POLL)
                # After a recognised rate-limit error, nothing is sent for 15 s.
                since = time.monotonic() - last_rate_limit_error
                if since < COOKBOOK_PAUSE:
                    pauses += 1
                    await asyncio.sleep(COOKBOOK_PAUSE - since)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    notes = [f"{pauses} pauses of 15 s"] if pauses else []
    if seen_429 and recognised < seen_429:
        notes.append(f"{seen_429 - recognised} 429s not recognised as rate limits")
    return ClientResult(answered=succeeded, failed=failed, rate_limited=seen_429,
                        wall=time.perf_counter() - start, notes=notes)
