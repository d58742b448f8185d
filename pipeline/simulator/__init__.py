"""A local OpenAI-compatible API for tests, notebooks, demos and benchmarks.

It serves chat completions, completions, embeddings, files and fine-tuning jobs on 127.0.0.1
with provider-like rate limits (rpm and tpm per key, and per model with ``model_limits``;
``x-ratelimit-*`` headers, 429 with ``retry-after``), seeded latency and faults, and a request
log tests can read. Limits are enforced the way OpenAI documents by default (a bucket of one
second of the limit: ``policy="second"``); ``policy="minute"`` and ``policy="window"``,
``max_in_flight``, ``headers``, ``retry_after`` and ``error_format`` imitate other providers
and gateways, so a client is not tested only against the simulator's own assumptions.

>>> from pipeline.simulator import Simulator
>>> with Simulator(rpm=60, tpm=10_000, latency=0.05, faults={"500": 0.1}, seed=1) as sim:
...     sim.base_url.startswith("http://127.0.0.1:")
True

- Thread mode (the default; ``with`` or ``async with``): the server runs on its own event loop
  in a background thread, so it works inside notebooks and async tests.
- Process mode (``Simulator(..., process=True)``): a subprocess, for benchmarks; ``log()``,
  ``stats()``, ``reset()`` and ``set_limits()`` then go over ``/_sim/...`` admin endpoints.
- From the shell: ``pipeline serve --rpm 500 --tpm 200000 --latency 0.2``.
- ``sim.log()`` lists a :class:`LogEntry` per request (arrival, path, token cost, status,
  outcome, body_hash...); ``sim.stats()`` gives :class:`Stats` (``rate_limited`` counts how
  often the simulator's own limits were exceeded); ``sim.reset()`` clears both.
- :class:`Latency` and :class:`Faults` configure delays and injected failures (seeded).

Token counting: ``ceil(len(text) / 4)`` per text, 4 tokens per chat message plus 3 per
prompt; a request costs ``prompt + max_tokens * n`` against the tpm limit. Details in
:mod:`pipeline.simulator._tokens` and :mod:`pipeline.simulator._model`.
"""

from __future__ import annotations

from pipeline.simulator._config import (
    ERROR_FORMATS,
    RETRY_AFTER,
    ErrorFormat,
    Faults,
    Latency,
    RetryAfter,
    SimulatorConfig,
    parse_model_limit,
)
from pipeline.simulator._log import LogEntry, Stats
from pipeline.simulator._model import Responder
from pipeline.simulator._ratelimit import HEADER_STYLES, POLICIES, HeaderStyle, Policy
from pipeline.simulator._serve import serve_forever
from pipeline.simulator._simulator import Simulator
from pipeline.simulator._tokens import count_chat_tokens, count_input_tokens, count_text_tokens

__all__ = [
    "ERROR_FORMATS",
    "HEADER_STYLES",
    "POLICIES",
    "RETRY_AFTER",
    "ErrorFormat",
    "Faults",
    "HeaderStyle",
    "Latency",
    "LogEntry",
    "Policy",
    "Responder",
    "RetryAfter",
    "Simulator",
    "SimulatorConfig",
    "Stats",
    "count_chat_tokens",
    "count_input_tokens",
    "count_text_tokens",
    "parse_model_limit",
    "serve_forever",
]
