"""Talking to an API over HTTP: services, their endpoints, transports, and what errors mean.

* :mod:`~pipeline.http.service`: :class:`BaseService` (base URL, auth, one shared
  ``httpx.AsyncClient``, endpoints, one ``call``), :class:`JSONService`, :class:`Job`.
* :mod:`~pipeline.http.openai_service`: :class:`OpenAIService` (OpenAI, Azure, vLLM, Ollama...).
* :mod:`~pipeline.http.endpoint`: :class:`Endpoint` (a path, its method, limits and limiter)
  and the way from a URL to a path (:func:`endpoint_from_url`).
* :mod:`~pipeline.http.limits`: :class:`EndpointLimits`, one endpoint's limits as a value.
* :mod:`~pipeline.http.transports`: the HTTP transport (httpx's own, sharded; or aiohttp).
* :mod:`~pipeline.http.classify`: an error answer or exception as a :mod:`pipeline.errors`
  value, and :func:`retry_after`.

Services neither retry nor rate limit: the stages do (:mod:`pipeline.stages`). The usual
names are also importable from :mod:`pipeline` itself (``pipeline.OpenAIService``).
"""

from __future__ import annotations

from pipeline.http.classify import classify_error, classify_exception, decode_body, retry_after
from pipeline.http.endpoint import HTTP_METHODS, Endpoint, api_method, endpoint_from_url
from pipeline.http.limits import EndpointLimits
from pipeline.http.openai_service import OpenAIService
from pipeline.http.service import BaseService, Job, JSONService, PayloadBuilder, ServiceOptions

__all__ = [
    "HTTP_METHODS",
    "BaseService",
    "Endpoint",
    "EndpointLimits",
    "JSONService",
    "Job",
    "OpenAIService",
    "PayloadBuilder",
    "ServiceOptions",
    "api_method",
    "classify_error",
    "classify_exception",
    "decode_body",
    "endpoint_from_url",
    "retry_after",
]
