"""Async stream stages for calling rate-limited HTTP APIs at scale.

Every row answered, as fast as the quota allows, with the results lined up with the rows::

    async with pipeline.OpenAIService(rpm=500, tpm=200_000) as service:
        job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}")
        results = await pipeline.run(rows, job, cache=".cache", progress=True)

The package, layer by layer (each imports only from the layers above it in this list):

* values: :mod:`~pipeline.errors`, :mod:`~pipeline.core.request`, :mod:`~pipeline.core.redaction`
* :mod:`~pipeline.limiter`: rate limiters (requests and tokens; adaptive; shared via Redis)
* :mod:`~pipeline.core.record`, :mod:`~pipeline.payloads` (building requests),
  :mod:`~pipeline.pricing.cost`
* :mod:`~pipeline.http`: services, endpoints, transports, error classification
* :mod:`~pipeline.state.cache`, :mod:`~pipeline.state.guard`, :mod:`~pipeline.state.status`
* :mod:`~pipeline.stages`: ``build | lookup | retry(acquire | call) | store | track``
* :mod:`~pipeline.runner`: :func:`run` and :class:`Results`
* adapters: :mod:`~pipeline.io` (frames, files), :mod:`~pipeline.io.resume` (journaled runs),
  :mod:`~pipeline.adapters.estimate`, :mod:`~pipeline.adapters.standalone` (one call without a
  pipeline),
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
from pipeline.adapters.estimate import Estimate, estimate
from pipeline.core.record import Record
from pipeline.core.request import APIRequest, Response
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
from pipeline.http import BaseService, Endpoint, EndpointLimits, Job, JSONService, OpenAIService
from pipeline.http.deployments import Deployment, RoutedService
from pipeline.limiter import (
    AdaptiveLimiter,
    IntervalLimiter,
    Lease,
    RateLimiter,
    TokenBucketLimiter,
)
from pipeline.options import RunOptions
from pipeline.payloads import PayloadPackage
from pipeline.pricing.cost import Prices
from pipeline.runner import Results, as_completed, default_flow, run, run_sync
from pipeline.schema import OutputSchema, output_schema
from pipeline.stages import Backoff, Stage, map_unordered, retry
from pipeline.state.cache import ResponseCache
from pipeline.state.guard import RunGuard
from pipeline.state.status import StatusTracker

__all__ = [
    "APIError",
    "APIRequest",
    "AdaptiveLimiter",
    "Backoff",
    "BaseService",
    "ConfigError",
    "Deployment",
    "Endpoint",
    "EndpointLimits",
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
    "RoutedService",
    "RunGuard",
    "RunOptions",
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
