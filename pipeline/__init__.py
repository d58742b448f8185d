"""Async stream stages for calling rate-limited HTTP APIs at scale.

Every row answered, as fast as the quota allows, with the results lined up with the rows::

    async with pipeline.OpenAIService(rpm=500, tpm=200_000) as service:
        job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}")
        results = await pipeline.run(rows, job, cache=".cache", progress=True)

The package, layer by layer (each imports only from the layers above it in this list):

* values: :mod:`~pipeline.errors`, :mod:`~pipeline.request`, :mod:`~pipeline.redaction`
* :mod:`~pipeline.limiter`: rate limiters (requests and tokens; adaptive; shared via Redis)
* :mod:`~pipeline.record`, :mod:`~pipeline.payloads` (building requests), :mod:`~pipeline.cost`
* :mod:`~pipeline.http`: services, endpoints, transports, error classification
* :mod:`~pipeline.cache`, :mod:`~pipeline.guard`, :mod:`~pipeline.status`
* :mod:`~pipeline.stages`: ``build | lookup | retry(acquire | call) | store | track``
* :mod:`~pipeline.runner`: :func:`run` and :class:`Results`
* adapters: :mod:`~pipeline.io` (frames, files), :mod:`~pipeline.resume` (journaled runs),
  :mod:`~pipeline.estimate`, :mod:`~pipeline.standalone` (one call without a pipeline),
  :mod:`~pipeline.ray_data`
* tools: :mod:`~pipeline.simulator`, :mod:`~pipeline.bench`, :mod:`~pipeline.testing`,
  :mod:`~pipeline.cli`

>>> import pipeline
>>> request = pipeline.payloads.chat(model="gpt-4o-mini", prompt="Hi {name}").build({"name": "Ada"})
>>> request.body["messages"]
[{'role': 'user', 'content': 'Hi Ada'}]
"""

from __future__ import annotations

from pipeline import errors, io, payloads, stages
from pipeline.cache import ResponseCache
from pipeline.cost import Prices
from pipeline.errors import (
    APIError,
    ConfigError,
    InputError,
    PayloadError,
    PipelineError,
    RateLimitError,
    RunStoppedError,
    SchemaValidationError,
    ThrottledError,
)
from pipeline.estimate import Estimate, estimate
from pipeline.guard import RunGuard
from pipeline.http import BaseService, Endpoint, Job, JSONService, OpenAIService
from pipeline.limiter import (
    AdaptiveLimiter,
    IntervalLimiter,
    Lease,
    RateLimiter,
    TokenBucketLimiter,
)
from pipeline.payloads import PayloadPackage
from pipeline.payloads.structured import OutputSchema, output_schema
from pipeline.record import Record
from pipeline.request import APIRequest, Response
from pipeline.runner import Results, as_completed, default_flow, run, run_sync
from pipeline.stages import Backoff, Stage, map_unordered, retry
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
    "OutputSchema",
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
    "SchemaValidationError",
    "Stage",
    "StatusTracker",
    "ThrottledError",
    "TokenBucketLimiter",
    "as_completed",
    "default_flow",
    "errors",
    "estimate",
    "io",
    "map_unordered",
    "output_schema",
    "payloads",
    "retry",
    "run",
    "run_sync",
    "stages",
]

__version__ = "0.1.0"
