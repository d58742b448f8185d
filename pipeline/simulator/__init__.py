"""A local OpenAI-compatible API for tests, notebooks, demos and benchmarks.

It serves chat completions, completions, embeddings, files and fine-tuning jobs on 127.0.0.1
with provider-like rate limits (rpm and tpm token buckets per key, ``x-ratelimit-*`` headers,
429 with ``retry-after``), seeded latency and faults, and a request log tests can read.

>>> from pipeline.simulator import Simulator
>>> with Simulator(rpm=60, tpm=10_000, latency=0.05, faults={"500": 0.1}, seed=1) as sim:
...     sim.base_url.startswith("http://127.0.0.1:")
True

Token counting: see :mod:`pipeline.simulator._tokens` (``ceil(len(text) / 4)`` per text).
"""

from __future__ import annotations

from pipeline.simulator._config import Faults, Latency, SimulatorConfig
from pipeline.simulator._log import LogEntry, Stats
from pipeline.simulator._model import Responder
from pipeline.simulator._simulator import Simulator
from pipeline.simulator._tokens import count_chat_tokens, count_input_tokens, count_text_tokens

__all__ = [
    "Faults",
    "Latency",
    "LogEntry",
    "Responder",
    "Simulator",
    "SimulatorConfig",
    "Stats",
    "count_chat_tokens",
    "count_input_tokens",
    "count_text_tokens",
]
