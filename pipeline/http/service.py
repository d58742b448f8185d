"""Services: one API host, its auth, one shared HTTP client, and its endpoints.

:class:`BaseService` sends one :class:`~pipeline.core.request.APIRequest` and returns a
:class:`~pipeline.core.request.Response` or raises a classified :class:`~pipeline.errors.APIError`.
It neither retries nor rate limits (the pipeline's stages do both). :class:`OpenAIService`
talks to any OpenAI-compatible server (OpenAI, Azure OpenAI, vLLM, Ollama...);
:class:`JSONService` to any other JSON API.

>>> service = JSONService("http://127.0.0.1:8000/api", auth="t0ken-0123456789abcdef", rpm=500)
>>> service
JSONService(base_url='http://127.0.0.1:8000/api', auth='...cdef', transport='httpx')
>>> service.endpoint("items").rpm
500.0

Inside a coroutine, ``response = await service.call("items", APIRequest(path="items",
body={...}))`` sends one request; ``async with service:`` closes the client at the end.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar, Protocol, Self, TypedDict, Unpack, runtime_checkable

import httpx
import msgspec

from pipeline.core.redaction import SECRET_HEADERS, Secret, redact_url
from pipeline.core.request import APIRequest, Response
from pipeline.errors import APIError, ConfigError, MalformedResponseError, PayloadError
from pipeline.http import signals
from pipeline.http._settings import _check_base_url, _endpoint_kwargs
from pipeline.http.classify import (
    ANSWER_SHAPES,
    AnswerShape,
    check_answer,
    classify_error,
    classify_exception,
    decode_body,
)
from pipeline.http.endpoint import Endpoint
from pipeline.http.limits import EndpointLimits
from pipeline.http.transports import (
    TransportChoice,
    check_transport,
    make_limits,
    make_timeout,
    make_transport,
)
from pipeline.http.transports import transport_name as _transport_name

__all__ = ["BaseService", "JSONService", "Job", "PayloadBuilder", "ServiceOptions"]

logger = logging.getLogger("pipeline.http")

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
_JSON_HEADERS = {"content-type": "application/json"}
_URL_CACHE_SIZE = 1024
# 2xx bodies passed through as bytes (e.g. GET files/{id}/content), not decoded as JSON.
_RAW_CONTENT_TYPES = ("application/octet-stream", "application/jsonl", "application/x-ndjson")
# What a response's stream becomes once send() has read it whole (see call()).
_READ = httpx.ByteStream(b"")


def _is_send_error(exc: Exception) -> bool:
    """Whether ``client.send`` raising ``exc`` means "no usable response" (else it is a bug)."""
    if isinstance(exc, httpx.HTTPError | OSError):  # OSError covers TimeoutError
        return True
    # aiohttp errors can escape httpx-aiohttp's mapping; aiohttp is imported only if in use.
    aiohttp = sys.modules.get("aiohttp")
    return aiohttp is not None and isinstance(exc, aiohttp.ClientError)


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing: API calls need no cookies."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _Prepared:
    """Headers (auth included) and extensions for requests built by hand; repr hides them."""

    __slots__ = ("extensions", "headers", "json_headers")

    def __init__(self, headers: dict[str, str], timeout: httpx.Timeout) -> None:
        self.headers = headers
        self.json_headers = {**headers, **_JSON_HEADERS}
        self.extensions: dict[str, Any] = {"timeout": timeout.as_dict()}

    def __repr__(self) -> str:
        return f"<prepared headers: {', '.join(self.json_headers)}>"


@runtime_checkable
class PayloadBuilder(Protocol):
    """Anything that turns an input row into a request for one endpoint path."""

    @property
    def path(self) -> str: ...

    def build(self, row: Any) -> APIRequest: ...


@dataclass(frozen=True, slots=True)
class Job:
    """What to send and where: a service, one of its endpoints, and a payload builder.

    Made by :meth:`OpenAIService.chat` and friends, or :meth:`BaseService.job`; the pipeline's
    build stage calls :meth:`build` per row and its call stage ``service.call(endpoint, ...)``.

    For example, inside a coroutine (or a notebook cell)::

        job = service.chat(model="gpt-4o-mini", prompt="Summarize: {text}")
        request = job.build({"text": "..."}); response = await job.call({"text": "..."})
    """

    service: BaseService
    endpoint: Endpoint
    builder: PayloadBuilder
    #: Embeddings: rows per request at most (``None``: as many as the endpoint's limits
    #: allow; 1: one row per request). See :meth:`OpenAIService.embeddings`.
    batch_size: int | None = None

    @property
    def path(self) -> str:
        """The endpoint path the builder's requests go to."""
        return self.builder.path

    @property
    def schema(self) -> Any:
        """The structured answer's :class:`~pipeline.schema.OutputSchema`
        (``service.chat(..., schema=...)``), or ``None``: a run decodes each answer with it."""
        return getattr(self.builder, "schema", None)

    def build(self, row: Any) -> APIRequest:
        """The request for one input row (raises :class:`~pipeline.errors.PayloadError`)."""
        return self.builder.build(row)

    async def call(self, row: Any) -> Response:
        """Build the request for ``row`` and send it once (no retry, no rate limit)."""
        return await self.service.call(self.endpoint, self.builder.build(row))

    def __repr__(self) -> str:
        return f"Job({self.endpoint.path!r}, service={self.service!r}, builder={self.builder!r})"


class ServiceOptions(TypedDict, total=False):
    """The keyword arguments every service takes (see :class:`BaseService`), said once."""

    rpm: float | None
    tpm: float | None
    limits: Mapping[str, EndpointLimits | Mapping[str, Any]] | None
    timeout: float | httpx.Timeout | None
    transport: TransportChoice
    max_connections: int
    adaptive: bool
    burst: float | None
    limiter: str | None
    provider: str | None


class BaseService(abc.ABC):
    """An API host: base URL, auth headers, one lazily created ``httpx.AsyncClient``, endpoints.

    Args:
        base_url: the API root, e.g. ``"https://api.openai.com/v1"``.
        rpm, tpm: default requests and tokens per minute for every endpoint.
        limits: per-endpoint settings overriding those, each an
            :class:`~pipeline.http.limits.EndpointLimits` or a dict of its fields, e.g.
            ``{"embeddings": EndpointLimits(rpm=3000, tpm=1_000_000)}`` or
            ``{"embeddings": {"rpm": 3000, "tpm": 1_000_000}}``.
        timeout: seconds or an ``httpx.Timeout``; default connect 10 s, read 600 s.
        transport: ``"httpx"`` (default: httpx's own transport, as
            :class:`~pipeline.http.transports.ShardedTransport`), ``"aiohttp"`` (faster;
            ``pip install 'ratelimited-pipeline[fast]'``) or any ``httpx.AsyncBaseTransport``
            (``httpx.MockTransport``). Both named transports honour ``HTTP(S)_PROXY``,
            ``ALL_PROXY`` and ``NO_PROXY`` alike (:class:`~pipeline.http.transports.ProxyRules`).
        max_connections: connections kept open to the host; size it to the concurrency.
        headers: extra headers sent with every request.
        adaptive: endpoints' limiters adapt to the provider, ``rpm``/``tpm`` acting as
            ceilings (the default; see :class:`~pipeline.limiter.AdaptiveLimiter`); with no
            ``rpm``/``tpm`` the rate is discovered. ``False``: fixed rates at exactly
            ``rpm``/``tpm`` (and no limit without them).
        burst: seconds of the rate a limiter may grant at once after idling (default 0.5).
        limiter: ``"redis://HOST:PORT/DB"``: every endpoint's limits are shared, through that
            Redis, with every process using it (:class:`~pipeline.limiter.RedisLimiter`);
            by default the ``PIPELINE_LIMITER_URL`` environment variable, if set.
        provider: how the server states its limits, a row of
            :data:`~pipeline.http.signals.PROVIDERS` (``"openai"``, ``"azure"``,
            ``"anthropic"``, ``"groq"``, ``"together"``, ``"fireworks"``, ``"litellm"``,
            ``"none"``, ``"auto"``); by default chosen by the base URL's host. Name it when
            the host does not tell: a LiteLLM proxy on localhost, Azure behind a gateway.

    The client is created on the first call inside a running event loop (never at
    construction), and again if a later call runs in a different event loop. Use the service
    as an async context manager, or ``await service.aclose()``, to close it.
    """

    #: Endpoints this kind of service knows, with their HTTP method.
    default_endpoints: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def __init__(
        self,
        base_url: str,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        limits: Mapping[str, EndpointLimits | Mapping[str, Any]] | None = None,
        timeout: float | httpx.Timeout | None = None,
        transport: TransportChoice = "httpx",
        max_connections: int = 100,
        headers: Mapping[str, str] | None = None,
        adaptive: bool = True,
        burst: float | None = None,
        limiter: str | None = None,
        provider: str | None = None,
    ) -> None:
        self._base_url = _check_base_url(base_url)
        #: The provider table row named by the user (``None``: chosen by host).
        self.provider = None if provider is None else signals.provider_for(None, provider).name
        self._timeout = make_timeout(timeout)
        self._limits = make_limits(max_connections)
        check_transport(transport)  # a typo or a missing extra fails here, not at first call
        self._transport = transport
        self._extra_headers = dict(headers or {})
        self._default_limits = {"rpm": rpm, "tpm": tpm}
        self._default_policy: dict[str, Any] = {"adaptive": adaptive, "burst": burst}
        shared = limiter if limiter is not None else os.environ.get("PIPELINE_LIMITER_URL")
        if shared:  # a shared limiter for every endpoint (a limits= entry may override it)
            self._default_policy["limiter"] = shared
        self._endpoint_limits = {
            path.strip("/ "): EndpointLimits.of(spec, path).settings()
            for path, spec in (limits or {}).items()
        }
        for path in self._endpoint_limits:  # bad settings fail here, not at first use
            Endpoint(path, **self._endpoint_settings(path))
        self._endpoints: dict[str, Endpoint] = {}
        self._client: httpx.AsyncClient | None = None
        self._urls: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}
        self._prepared = _Prepared({}, self._timeout)
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # -- hooks for subclasses ------------------------------------------------------------------

    @abc.abstractmethod
    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a request (``{"Authorization": "Bearer ..."}``)."""

    def secrets(self) -> tuple[str, ...]:
        """Values to mask wherever this service formats a URL, header or error."""
        return tuple(v for k, v in self._extra_headers.items() if k.lower() in SECRET_HEADERS)

    def url_for(self, request: APIRequest) -> tuple[str, dict[str, str] | None]:
        """The URL and query parameters for a request (override for unusual URL schemes)."""
        return f"{self._base_url}/{request.path.strip('/')}", None

    def client_auth(self) -> httpx.Auth | None:
        """An ``httpx.Auth`` flow for the client, when headers are not enough."""
        return None

    def answer_shape(self, path: str) -> AnswerShape | None:
        """The shape a 2xx body of ``path`` must have to hold an answer (``"chat"``,
        ``"completion"``, ``"embedding"``; see :func:`~pipeline.http.classify.check_answer`),
        or ``None`` to accept any body.

        A service checks the OpenAI paths it declares in :attr:`default_endpoints`
        (:class:`OpenAIService`: chat, completions, embeddings); :class:`JSONService` and any
        other path accept whatever JSON comes. Override it for a service of another shape.

        >>> JSONService("http://127.0.0.1:9/api").answer_shape("chat/completions") is None
        True
        """
        return ANSWER_SHAPES.get(path) if path in self.default_endpoints else None

    # -- endpoints -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API root URL, without a trailing slash."""
        return self._base_url

    @property
    def endpoints(self) -> Mapping[str, Endpoint]:
        """Endpoints created so far (by :meth:`endpoint`, a job, or :meth:`add_endpoint`)."""
        return MappingProxyType(self._endpoints)

    def endpoint(self, path: str, *, method: str | None = None) -> Endpoint:
        """The service's endpoint for ``path``, created with its configured limits on first use.

        >>> svc = JSONService("http://127.0.0.1:9/api", limits={"items": {"rpm": 60}})
        >>> svc.endpoint("items")
        Endpoint('items', method='POST', max_requests=60/60s)
        """
        key = path.strip("/ ") if isinstance(path, str) else path
        found = self._endpoints.get(key)
        if found is not None:
            return found
        kwargs = self._endpoint_settings(key)
        kwargs.setdefault("method", method or self.default_endpoints.get(key, "POST"))
        created = Endpoint(key, **kwargs)
        self._endpoints[created.path] = created
        return created

    def _endpoint_settings(self, path: str) -> dict[str, Any]:
        # Service-wide rpm/tpm, unless the endpoint's own settings give that limit.
        spec = self._endpoint_limits.get(path, {})
        merged: dict[str, Any] = {
            name: value
            for name, value in self._default_limits.items()
            if not {name, "max_requests" if name == "rpm" else "max_tokens"} & spec.keys()
        }
        merged.update(self._default_policy)
        merged.update(spec)
        return _endpoint_kwargs(path, merged)

    def add_endpoint(self, endpoint: Endpoint) -> Endpoint:
        """Register (or replace) an endpoint built by hand, e.g. with a shared limiter."""
        self._endpoints[endpoint.path] = endpoint
        return endpoint

    def job(self, builder: PayloadBuilder, *, endpoint: Endpoint | None = None) -> Job:
        """A :class:`Job` sending what ``builder`` builds to its path on this service."""
        if not isinstance(builder, PayloadBuilder):
            raise ConfigError(f"builder needs .path and .build(row), got {builder!r}")
        return Job(self, endpoint or self.endpoint(builder.path), builder)

    # -- the client ----------------------------------------------------------------------------

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared client of the running event loop (created now if needed)."""
        loop = asyncio.get_running_loop()
        client = self._client
        if client is None or client.is_closed or self._client_loop is not loop:
            # A client from another (possibly closed) loop cannot be used or closed from
            # here: its connections belong to that loop. Drop it and start a fresh one.
            client = self._new_client()
            self._client, self._client_loop = client, loop
        return client

    def _new_client(self) -> httpx.AsyncClient:
        headers = {"user-agent": "pipeline/0.1", "accept": "application/json"}
        headers.update(self._extra_headers)
        headers.update(self.auth_headers())
        kwargs: dict[str, Any] = {
            "headers": headers,
            "timeout": self._timeout,
            "auth": self.client_auth(),
            "follow_redirects": False,
        }
        # Proxies from the environment are the transport's to apply (ProxyRules), the same
        # for httpx and aiohttp: an AsyncClient given a transport reads none itself.
        kwargs["transport"] = make_transport(self._transport, limits=self._limits)
        client = httpx.AsyncClient(**kwargs)
        # API calls need no cookies, and httpx parses every response into its cookie jar
        # (about 50 us each). There is no public switch, hence the private attribute.
        client._cookies = _NoCookies()
        # `call` builds JSON requests itself with these (build_request would merge the
        # client's headers, cookies and URL anew on every call: about half its cost).
        self._prepared = _Prepared(headers, self._timeout)
        return client

    def _target(self, url: str, params: Mapping[str, str] | None) -> httpx.URL:
        key = (url, tuple(sorted(params.items())) if params else ())
        found = self._urls.get(key)
        if found is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()  # paths with ids (files/file-abc) must not grow it forever
            found = self._urls[key] = httpx.URL(url, params=params)
        return found

    async def aclose(self) -> None:
        """Close the client (a later call opens a new one).

        Call it in the event loop that made the calls: a client of another loop can only be
        dropped, not closed, from here.
        """
        client, loop = self._client, self._client_loop
        self._client = self._client_loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- one call ------------------------------------------------------------------------------

    async def call(self, endpoint: Endpoint | str, request: APIRequest) -> Response:
        """Send ``request`` once and return the decoded 2xx :class:`Response`.

        The URL is the base URL plus ``request.path`` (``endpoint``'s path when that is
        empty); ``endpoint`` names what the request counts against. JSON bodies are encoded
        with msgspec; ``files``/``data`` go as multipart. Raises the classified
        :class:`~pipeline.errors.APIError` (``.retryable`` tells the retry stage what to do):
        an error status, a timeout or broken connection, a 2xx body that is not JSON, or
        one with no answer in it (:meth:`answer_shape`: an empty body, no choices, a null
        content, a content filter, an error object; see
        :func:`~pipeline.http.classify.check_answer`).
        Raises :class:`~pipeline.errors.PayloadError` for a body that cannot be encoded.
        Every error's message and body have the service's :meth:`secrets` masked.
        """
        if not request.path:
            path = endpoint.path if isinstance(endpoint, Endpoint) else str(endpoint)
            request = msgspec.structs.replace(request, path=path)
        method = request.method.upper()
        url, params = self.url_for(request)
        client = self.client
        target = self._target(url, params)
        if request.files or request.data:
            files = None
            if request.files:
                files = {
                    n: (p.filename, p.content, p.content_type) for n, p in request.files.items()
                }
            http_request = client.build_request(method, target, files=files, data=request.data)
        elif request.body is not None:
            try:
                content = msgspec.json.encode(request.body)
            except (TypeError, msgspec.EncodeError) as exc:
                raise PayloadError(
                    f"request body for {request.path!r} is not JSON: {exc}"
                ) from None
            http_request = httpx.Request(
                method,
                target,
                content=content,
                headers=self._prepared.json_headers,
                extensions=self._prepared.extensions,
            )
        else:
            http_request = httpx.Request(
                method,
                target,
                headers=self._prepared.headers,
                extensions=self._prepared.extensions,
            )

        error: APIError | None = None
        start = time.perf_counter()
        try:
            http_response = await client.send(http_request)
            # Read whole and closed by now. httpx's stream wrapper points back at the
            # response: a cycle holding the response, its request, headers and the
            # transport's objects (about 40 of them a request) until a garbage collection
            # finds it. Cut, they go at once, with no collection to walk them.
            http_response.stream = _READ
        except Exception as exc:
            if not _is_send_error(exc):
                raise
            # Built here, raised below outside the `except`, so the error does not keep the
            # transport exception (and through it the request with its auth header) alive.
            error = classify_exception(
                exc, method=method, url=redact_url(url, self.secrets()), secrets=self.secrets()
            )
        if error is not None:
            logger.debug("%s", error)
            raise error
        latency = time.perf_counter() - start
        status = http_response.status_code
        if not 200 <= status < 300:
            error = classify_error(
                status,
                http_response.headers,
                http_response.content,
                method=method,
                url=redact_url(url, self.secrets()),
                secrets=self.secrets(),
            )
            logger.debug("%s", error)
            raise error
        headers = dict(http_response.headers.items())
        headers.pop("set-cookie", None)  # results are cached and saved: keep session cookies out
        content_type = headers.get("content-type", "")
        if content_type.startswith(_RAW_CONTENT_TYPES):
            body: Any = http_response.content
        else:
            # Checked first without the URL and the secrets, which only an error's message
            # needs: masking them costs ~10 us, on every answer; an error is made again
            # with them.
            content = http_response.content
            try:
                body = decode_body(content, status=status, headers=headers)
            except MalformedResponseError:
                secrets = self.secrets()
                body = decode_body(content, status=status, headers=headers, method=method,
                                   url=redact_url(url, secrets), secrets=secrets)
            shape = self.answer_shape(request.path.strip("/"))
            if shape is not None and \
                    check_answer(shape, body, status=status) is not None:
                secrets = self.secrets()
                error = check_answer(shape, body, status=status, method=method,
                                     url=redact_url(url, secrets), secrets=secrets)
                if error is not None:  # never a success: not cached, not counted answered
                    logger.debug("%s", error)
                    raise error
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %d in %.3fs", method, redact_url(url, self.secrets()), status, latency
            )
        return Response(status=status, body=body, headers=headers, latency=latency)

    async def send(self, request: APIRequest) -> Response:
        """``call`` with the endpoint taken from ``request.path``."""
        return await self.call(request.path, request)

    def _repr_fields(self) -> list[str]:
        return [f"base_url={redact_url(self._base_url, self.secrets())!r}"]

    def __repr__(self) -> str:
        fields = self._repr_fields()
        fields.append(f"transport={_transport_name(self._transport)!r}")
        return f"{type(self).__name__}({', '.join(fields)})"


class JSONService(BaseService):
    """Any JSON-over-HTTP API with its own rate limits.

    ``auth`` is a bearer token (``str``), a ``(user, password)`` pair, or an ``httpx.Auth``;
    ``headers`` are sent with every request (``api-key``/``Authorization``-like ones are
    masked in reprs and errors).

    >>> JSONService("https://api.example.com/v2", auth="t0ken-0123456789abcdef", rpm=120)
    JSONService(base_url='https://api.example.com/v2', auth='...cdef', transport='httpx')
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: str | tuple[str, str] | httpx.Auth | None = None,
        **options: Unpack[ServiceOptions],
    ) -> None:
        super().__init__(base_url, headers=headers, **options)
        self._token = Secret(auth) if isinstance(auth, str) else None
        self._auth: httpx.Auth | None = None
        if isinstance(auth, tuple):
            self._auth = httpx.BasicAuth(*auth)
            self._basic = Secret(auth[1])
        elif isinstance(auth, httpx.Auth):
            self._auth = auth
        elif auth is not None and not isinstance(auth, str):
            raise ConfigError(
                f"auth must be a token, (user, password) or httpx.Auth, got {type(auth).__name__}"
            )

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._token.reveal()}"} if self._token else {}

    def client_auth(self) -> httpx.Auth | None:
        return self._auth

    def secrets(self) -> tuple[str, ...]:
        found = list(super().secrets())
        if self._token is not None:
            found.append(self._token.reveal())
        if isinstance(self._auth, httpx.BasicAuth):
            found.append(self._basic.reveal())
        return tuple(found)

    def _repr_fields(self) -> list[str]:
        fields = super()._repr_fields()
        if self._token is not None:
            fields.append(f"auth={self._token!r}")
        elif self._auth is not None:
            fields.append(f"auth={type(self._auth).__name__}")
        return fields
