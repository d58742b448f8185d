"""Async stream stages for calling rate-limited HTTP APIs at scale.

>>> import pipeline
>>> # async with pipeline.OpenAIService(rpm=500, tpm=200_000) as service:
>>> #     results = await pipeline.run(rows, service.chat(model="gpt-4o-mini",
>>> #                                                     prompt="Classify: {text}"),
>>> #                                  cache=".cache", progress=True)

See README.md for the tour; :mod:`pipeline.stages` for composing your own pipeline.
"""

from __future__ import annotations

from pipeline import errors, payloads, stages
from pipeline.cache import ResponseCache
from pipeline.cost import Estimate, Prices, estimate
from pipeline.endpoint import Endpoint
from pipeline.errors import (
    APIError,
    ConfigError,
    InputError,
    PayloadError,
    PipelineError,
    RateLimitError,
    RunStoppedError,
    ThrottledError,
)
from pipeline.guard import RunGuard
from pipeline.limiter import (
    AdaptiveLimiter,
    IntervalLimiter,
    Lease,
    RateLimiter,
    TokenBucketLimiter,
)
from pipeline.operators import map_unordered
from pipeline.payloads import PayloadPackage
from pipeline.record import Record
from pipeline.request import APIRequest, Response
from pipeline.retry import Backoff
from pipeline.runner import Results, default_flow, run, run_sync, stream
from pipeline.service import BaseService, Job, JSONService, OpenAIService
from pipeline.stages import Stage
from pipeline.status import StatusTracker

__all__ = [
    "APIError",
    "APIRequest",
    "AdaptiveLimiter",
    "Backoff",
    "BaseService",
    "ConfigError",
    "Endpoint",
    "Estimate",
    "InputError",
    "IntervalLimiter",
    "JSONService",
    "Job",
    "Lease",
    "OpenAIService",
    "PayloadError",
    "PayloadPackage",
    "PipelineError",
    "Prices",
    "RateLimitError",
    "RateLimiter",
    "Record",
    "Response",
    "ResponseCache",
    "Results",
    "RunGuard",
    "RunStoppedError",
    "Stage",
    "StatusTracker",
    "ThrottledError",
    "TokenBucketLimiter",
    "default_flow",
    "errors",
    "estimate",
    "map_unordered",
    "payloads",
    "run",
    "run_sync",
    "stages",
    "stream",
]

__version__ = "0.1.0"
