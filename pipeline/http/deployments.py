"""One job over several deployments and keys: :class:`Deployment` and :class:`RoutedService`.

A :class:`RoutedService` is an OpenAI-compatible service over several deployments (Azure
regions, a second organisation's key, a second provider serving the same model). Each
deployment is its own :class:`OpenAIService` with its own limiter per endpoint (adaptive by
default: a limit not told is discovered per deployment; ``shared_limit`` puts it in Redis,
one key per deployment and path). The service's endpoints hold one :class:`RoutingLimiter`
over those limiters, and the pipeline's stages use it like any limiter:

* **Spreading.** ``lease()`` asks each deployment's limiter how long a request would wait
  there (its pause, its bucket with the requests queued before it, its in-flight cap at the
  latency seen so far) and takes the lease from the one that grants soonest, weights breaking
  ties. The returned :class:`~pipeline.limiter.Lease` is that deployment's, and the call
  stage sends to the deployment that granted it (:meth:`RoutedService.route_of`). A row goes
  where there is room, so the deployments fill together, at the sum of their quotas.
* **Failover.** A deployment that refuses the key (401, 403), has no such model or
  deployment (404), is out of quota (``insufficient_quota``), or stops answering (three
  refused or reset connections or timeouts in a row, or five 5xx in a row) is *taken out*,
  with one warning on the ``pipeline.http`` logger; nothing more is sent there. After a
  back-off (1 s, doubling to 30 s) one request *probes* it (half-open): an answer brings it
  back (another warning), a failure takes it out again for longer. The row that met the
  failure gets a retryable error (:class:`DeploymentUnavailableError` for a refused key), so
  the retry stage sends it again, to another deployment; no answer is lost or paid twice.
  While another deployment is up, these failures are not shown to the run's
  :class:`~pipeline.state.guard.RunGuard`; when every deployment is out they are, and the run
  stops as a run on one server does.
* **Caching and resume** see one service: the cache key and the journal use the logical model
  name of the request (a deployment's name for it is put in only when sending) and the
  service's :attr:`~RoutedService.base_url`, which is the first deployment's base URL (or
  ``cache_namespace=``), whichever deployment answered.

>>> service = RoutedService([
...     Deployment(base_url="http://127.0.0.1:9/v1", api_key="sk-east-0123456789", rpm=3_000,
...                name="east"),
...     Deployment(base_url="http://127.0.0.1:8/v1", api_key="sk-west-0123456789", weight=2,
...                models={"gpt-4o-mini": "mini-west"}, name="west")])
>>> service.deployments[0]
Deployment(base_url='http://127.0.0.1:9/v1', api_key='sk-...6789', rpm=3000, name='east')
>>> [d.name for d in service.deployments]
['east', 'west']
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Unpack

import httpx
import msgspec

from pipeline.core.redaction import Secret, mask_secret, redact_url
from pipeline.core.request import APIRequest, Response
from pipeline.errors import (
    APIError,
    AuthenticationError,
    ConfigError,
    NotFoundError,
    PermissionDeniedError,
    PipelineError,
    QuotaExceededError,
    ServerError,
    TransportError,
)
from pipeline.http._routing import Route, RoutingLimiter
from pipeline.http.endpoint import Endpoint
from pipeline.http.openai_service import OpenAIJobs, OpenAIService
from pipeline.http.service import BaseService, ServiceOptions

__all__ = ["Deployment", "DeploymentUnavailableError", "RoutedService", "RoutingLimiter",
           "load_deployments"]

logger = logging.getLogger("pipeline.http")

#: Failures in a row with no answer (refused, reset, timed out) that take a deployment out.
DOWN_AFTER = 3
#: 5xx answers in a row (no success between) that take a deployment out.
STORM_AFTER = 5
_SETTINGS = ("base_url", "api_key", "api_key_env", "models", "rpm", "tpm", "weight",
             "shared_limit", "provider", "name", "azure_api_version")


class DeploymentUnavailableError(APIError):
    """A deployment refused a request for a reason of its own (its key, its quota, its model
    name), while other deployments are up: retryable, so the row goes to another one."""

    retryable = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """One place that serves the model: a base URL, its key, its limits.

    Args:
        base_url: the API root, e.g. ``"https://east.openai.azure.com"``.
        api_key: the key itself (kept as a :class:`~pipeline.core.redaction.Secret`: never
            printed). Or ``api_key_env``: the name of the environment variable holding it
            (read when the service is made; a missing one is a
            :class:`~pipeline.errors.ConfigError` naming the variable, never a key). With
            neither, ``OPENAI_API_KEY`` as for :class:`OpenAIService`.
        models: the logical model name -> this deployment's name for it
            (``{"gpt-4o-mini": "my-azure-deployment"}``); others are sent as they are.
        rpm, tpm: ceilings this deployment allows (``None``: discovered).
        weight: its share when several could take a row at once (default 1).
        shared_limit: ``"redis://HOST:PORT/DB"``: its quota is shared with every process using
            that Redis (the key ``pipeline:<name>:<path>``, or ``?key=NAME`` + ``:<path>``).
        provider: its row of the provider table (default: chosen by the host).
        name: what status lines and warnings call it (default ``host:port``).
        azure_api_version: send to Azure OpenAI deployment URLs (the mapped model name is
            the Azure deployment).

    >>> Deployment(base_url="https://east.example.com/v1", api_key="sk-0123456789abcdef")
    Deployment(base_url='https://east.example.com/v1', api_key='sk-...cdef')
    """

    base_url: str
    api_key: Secret | str | None = None
    api_key_env: str | None = None
    models: Mapping[str, str] = field(default_factory=dict)
    rpm: float | None = None
    tpm: float | None = None
    weight: float = 1.0
    shared_limit: str | None = None
    provider: str | None = None
    name: str | None = None
    azure_api_version: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.strip():
            raise ConfigError(f"a deployment needs a base_url, got {self.base_url!r}")
        if isinstance(self.api_key, str):
            object.__setattr__(self, "api_key", Secret(self.api_key))
        if self.api_key is not None and self.api_key_env is not None:
            raise ConfigError(f"deployment {self.label}: give api_key or api_key_env, not both")
        if self.api_key_env is not None and not (isinstance(self.api_key_env, str) and
                                                 self.api_key_env.strip()):
            raise ConfigError(f"deployment {self.label}: api_key_env must name an environment "
                              f"variable, got {self.api_key_env!r}")
        if not isinstance(self.models, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in self.models.items()):
            raise ConfigError(f"deployment {self.label}: models maps model names to this "
                              "deployment's names, both strings")
        object.__setattr__(self, "models", dict(self.models))
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or
                                      not isinstance(value, int | float) or not value > 0 or
                                      not math.isfinite(value)):
                raise ConfigError(f"deployment {self.label}: {name} must be a positive number, "
                                  f"got {value!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float) or \
                not self.weight > 0 or not math.isfinite(self.weight):
            raise ConfigError(f"deployment {self.label}: weight must be a positive number, "
                              f"got {self.weight!r}")

    @property
    def label(self) -> str:
        """Its name, else ``host:port`` of its base URL (never a password or key)."""
        if self.name:
            return self.name
        parts = httpx.URL(self.base_url.strip()) if "://" in self.base_url else None
        if parts is None or not parts.host:
            return redact_url(self.base_url)
        return parts.host if parts.port is None else f"{parts.host}:{parts.port}"

    def key(self) -> str | None:
        """The key to send (from ``api_key`` or ``api_key_env``; ``None``: the default)."""
        if isinstance(self.api_key, Secret):
            return self.api_key.reveal()
        if self.api_key_env is not None:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(f"deployment {self.label}: the environment variable "
                                  f"{self.api_key_env} (its api_key_env) is not set")
            return value
        return None

    def __repr__(self) -> str:
        fields = [f"base_url={redact_url(self.base_url)!r}"]
        for name in _SETTINGS[1:]:
            value = getattr(self, name)
            if name == "api_key" and value is not None:
                fields.append(f"api_key={mask_secret(value.reveal())!r}")
            elif value != (1.0 if name == "weight" else None) and value != {}:
                fields.append(f"{name}={value!r}")
        return f"Deployment({', '.join(fields)})"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "") -> Deployment:
        """A deployment from a table of a deployments file (unknown keys are an error)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}a deployment is a table of settings, got {data!r}")
        unknown = sorted(set(data) - set(_SETTINGS))
        if unknown:
            raise ConfigError(f"{where}unknown deployment setting(s) {unknown}; expected some "
                              f"of {list(_SETTINGS)}")
        return cls(**data)


def load_deployments(path: str) -> list[Deployment]:
    """The deployments in a TOML (``.toml``) or JSON file: ``[[deployments]]`` tables (or a
    JSON list, or ``{"deployments": [...]}``), each with :class:`Deployment`'s settings.

    Keys may be given by environment variable name (``api_key_env``), so the file holds none::

        [[deployments]]
        name = "east"
        base_url = "https://east.openai.azure.com"
        api_key_env = "AZURE_EAST_KEY"
        azure_api_version = "2024-10-21"
        models = { "gpt-4o-mini" = "mini-east" }
        rpm = 3000

        [[deployments]]
        name = "openai"
        base_url = "https://api.openai.com/v1"
        api_key_env = "OPENAI_API_KEY"
        weight = 2
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"--deployments {path}: cannot read it ({exc.strerror})") from None
    try:
        if path.lower().endswith(".toml"):
            import tomllib

            data: Any = tomllib.loads(raw.decode("utf-8"))
        else:
            data = msgspec.json.decode(raw)
    except (ValueError, msgspec.DecodeError) as exc:
        kind = "TOML" if path.lower().endswith(".toml") else "JSON"
        raise ConfigError(f"--deployments {path}: not {kind} ({exc})") from None
    items = data.get("deployments") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ConfigError(f"--deployments {path}: expected a list of deployments "
                          "([[deployments]] tables in TOML)")
    return [Deployment.from_dict(item, where=f"--deployments {path}, deployment {i + 1}: ")
            for i, item in enumerate(items)]


class RoutedService(OpenAIJobs, BaseService):
    """An OpenAI-compatible service over several :class:`Deployment`\\ s (see the module).

    Args:
        deployments: where to send (at least one); names must differ.
        cache_namespace: what the cache and the journal know the service by (default: the
            first deployment's base URL): the same request hits the cache whichever
            deployment answered it.
        probe_after, max_probe_after: seconds before a deployment taken out is probed,
            doubling after each failed probe up to the maximum.
        **options: :class:`~pipeline.http.service.BaseService`'s (``rpm``/``tpm`` for a
            deployment that names none, ``adaptive``, ``burst``, ``timeout``, ``transport``,
            ``max_connections``, ``provider``; ``limiter``: a Redis URL for the deployments
            without their own ``shared_limit``).

    Jobs are made as on :class:`OpenAIService`: ``service.chat(model=..., prompt=...)``.
    """

    def __init__(self, deployments: Iterable[Deployment], *,
                 cache_namespace: str | None = None, probe_after: float = 1.0,
                 max_probe_after: float = 30.0, headers: Mapping[str, str] | None = None,
                 **options: Unpack[ServiceOptions]) -> None:
        chosen = list(deployments)
        if not chosen or not all(isinstance(d, Deployment) for d in chosen):
            raise ConfigError("RoutedService needs one or more Deployment(...)")
        for name, value in (("probe_after", probe_after), ("max_probe_after", max_probe_after)):
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not value >= 0 or not math.isfinite(value):
                raise ConfigError(f"{name} must be seconds >= 0, got {value!r}")
        super().__init__(chosen[0].base_url, headers=headers, **options)
        self._namespace = cache_namespace or self._base_url
        self.probe_after = float(probe_after)
        self.max_probe_after = max(float(max_probe_after), self.probe_after)
        names = [d.label for d in chosen]
        seen: dict[str, int] = {}
        for i, name in enumerate(names):  # the same host twice: name them apart
            if names.count(name) > 1 and not chosen[i].name:
                seen[name] = seen.get(name, 0) + 1
                names[i] = f"{name}#{seen[name]}"
        if len(set(names)) != len(names):
            raise ConfigError(f"deployment names must differ, got {names}")
        shared = options.get("limiter") or os.environ.get("PIPELINE_LIMITER_URL")
        self._by_limiter: dict[int, Route] = {}
        self._routes = [
            Route(d, self._make_service(d, name, options, headers, shared), name)
            for d, name in zip(chosen, names, strict=True)]

    @staticmethod
    def _make_service(deployment: Deployment, name: str, options: Mapping[str, Any],
                      headers: Mapping[str, str] | None, shared: str | None) -> OpenAIService:
        own: dict[str, Any] = {k: v for k, v in options.items() if k != "limiter"}
        if deployment.rpm is not None:
            own["rpm"] = deployment.rpm
        if deployment.tpm is not None:
            own["tpm"] = deployment.tpm
        if deployment.provider is not None:
            own["provider"] = deployment.provider
        url = deployment.shared_limit or shared
        if url:  # one Redis key per deployment and path: many processes, many quotas
            own["limits"] = {path: {"limiter": _keyed(url, name, path)}
                             for path in OpenAIService.default_endpoints}
        return OpenAIService(api_key=deployment.key(), base_url=deployment.base_url,
                             azure_api_version=deployment.azure_api_version, headers=headers,
                             **own)

    # -- what the rest of the library sees -----------------------------------------------

    @property
    def base_url(self) -> str:
        """What the cache and the journal know this service by (see ``cache_namespace``)."""
        return self._namespace

    @property
    def deployments(self) -> list[Deployment]:
        """The deployments, in the order given."""
        return [route.deployment for route in self._routes]

    @property
    def server_name(self) -> str:
        """The deployments' names, for the run guard's messages."""
        return ", ".join(route.name for route in self._routes)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per deployment: answers, failures, whether it is up and why not.

        >>> RoutedService([Deployment(base_url="http://127.0.0.1:9/v1", name="a")]).status()
        {'a': {'answered': 0, 'failures': 0, 'up': True, 'reason': ''}}
        """
        return {r.name: {"answered": r.answered, "failures": r.failures, "up": r.up,
                         "reason": r.reason} for r in self._routes}

    def auth_headers(self) -> dict[str, str]:
        return {}  # each deployment's service sends its own key

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for route in self._routes for s in route.service.secrets())

    def endpoint(self, path: str, *, method: str | None = None) -> Endpoint:
        """The endpoint for ``path``, its limiter a :class:`RoutingLimiter` over the
        deployments' limiters for that path."""
        key = path.strip("/ ") if isinstance(path, str) else path
        found = self._endpoints.get(key)
        if found is not None:
            return found
        for route in self._routes:  # each deployment's endpoint, with its own limits
            route.service.endpoint(key, method=method)
        routing = RoutingLimiter(self._routes, key)
        self._by_limiter.update(routing._by_limiter)
        ours = Endpoint(key, method or self.default_endpoints.get(key, "POST"),
                        limiter=routing)  # type: ignore[arg-type]
        self._endpoints[ours.path] = ours
        return ours

    def route_of(self, lease: Any) -> Route | None:
        """The deployment that granted ``lease`` (``None``: not one of ours)."""
        return self._by_limiter.get(id(getattr(lease, "limiter", None)))

    async def call(self, endpoint: Endpoint | str, request: APIRequest) -> Response:
        """Send once, to the deployment that would grant soonest (no lease is taken: the
        pipeline's stages lease and then :meth:`send` to the deployment that granted)."""
        path = endpoint.path if isinstance(endpoint, Endpoint) else str(endpoint)
        ours = self.endpoint(path or request.path)
        routing = ours.limiter
        assert isinstance(routing, RoutingLimiter)
        return await self.send_to(routing.choose(), endpoint, request)

    async def send_to(self, route: Route, endpoint: Endpoint | str,
                   request: APIRequest) -> Response:
        """Send ``request`` once to one deployment, with its name for the model."""
        return await route.service.call(endpoint, route.map_model(request))

    # -- health ----------------------------------------------------------------------------

    def refusal(self, route: Route, lease: Any) -> APIError | None:
        """The error for a request granted by a deployment taken out since (it is not sent:
        the row goes to another), or ``None`` to send it."""
        if route.up or route.probe is lease or not self._others_up(route):
            return None
        return DeploymentUnavailableError(
            f"deployment {route.name} is out ({route.reason}): sent to another")

    def answered(self, route: Route, lease: Any, latency: float) -> None:
        """A deployment answered: count it; a probe's answer brings it back."""
        route.answered += 1
        route.silent = route.storm = 0
        route.latency += 0.1 * (latency - route.latency)
        self._heard(route, lease)

    def failed(self, route: Route, lease: Any, error: APIError) -> tuple[APIError, bool]:
        """A deployment's request failed: maybe take it out. Returns the error for the row
        and whether the run's guard should see it (only when no other deployment is up)."""
        route.failures += 1
        why = _conclusive(error)
        reason = None if why is None else f"{why}: {_short(error)}"
        if why is None and isinstance(error, TransportError):
            route.silent += 1
            if route.silent >= DOWN_AFTER or route.probe is lease:
                why, reason = "no answer", f"no answer: {_short(error)}"
        elif why is None and isinstance(error, ServerError):
            route.storm += 1
            if route.storm >= STORM_AFTER or route.probe is lease:
                why = "server errors"
                reason = f"server errors, {route.storm} in a row: {_short(error)}"
        elif why is None:  # it answered (a 429, a bad request): it is up
            route.silent = route.storm = 0
            self._heard(route, lease)
            return error, True
        if why is None or reason is None:
            return error, not self._others_up(route)
        if route.probe is lease or route.up:
            self._take_out(route, why, reason)
        if not self._others_up(route):
            return error, True
        if error.retryable:
            return error, False
        return DeploymentUnavailableError(
            f"deployment {route.name} is out ({route.reason}): sent to another",
            status=error.status, code=error.code), False

    def released(self, route: Route, lease: Any) -> None:
        """A request ended without telling anything (cancelled, not sent)."""
        if route.probe is lease:
            route.probe = None

    def _others_up(self, route: Route) -> bool:
        return any(other.up for other in self._routes if other is not route)

    def _heard(self, route: Route, lease: Any) -> None:
        probe = route.probe is lease
        if probe:
            route.probe = None
        # Only an answer to a request sent while it was out (its probe, or any request when
        # no other deployment is up) brings it back: a request sent before it went out and
        # answered just as it died says nothing of whether it is up now.
        if not route.up and (probe or not self._others_up(route)):
            route.out_until = None
            route.out_for = 0.0
            logger.warning("deployment %s is back (it answered a probe)", route.name)
            route.reason = route.why = ""

    def _take_out(self, route: Route, why: str, reason: str) -> None:
        first = route.up
        route.probe = None
        route.out_for = self.probe_after if first else min(
            self.max_probe_after, max(route.out_for * 2, 0.01))
        route.out_until = time.monotonic() + route.out_for
        route.reason, route.why = reason, why
        if first:
            others = [r.name for r in self._routes if r.up]
            where = f"its rows go to {', '.join(others)}" if others else \
                "no deployment is left: the run goes on only if one comes back"
            logger.warning("deployment %s is out: %s; %s (probed again in %.3g s)",
                           route.name, reason, where, route.out_for)

    def _repr_fields(self) -> list[str]:
        return [f"deployments={[route.name for route in self._routes]!r}"]

    async def aclose(self) -> None:
        for route in self._routes:
            await route.service.aclose()
        await super().aclose()


def _conclusive(error: APIError) -> str | None:
    """Why one failure is enough to take a deployment out (its key, quota, model name)."""
    if isinstance(error, QuotaExceededError):
        return "out of quota"
    if isinstance(error, AuthenticationError | PermissionDeniedError):
        return "refused the key"
    if isinstance(error, NotFoundError):
        return "not found"
    return None


def _short(error: PipelineError) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _keyed(url: str, name: str, path: str) -> str:
    """The Redis URL with the key of one deployment's path (``?key=`` + ``:path`` if given)."""
    head, _, query = url.partition("?")
    pairs = [p for p in query.split("&") if p]
    given = [p[4:] for p in pairs if p.startswith("key=")]
    key = f"{given[-1]}:{path}" if given else f"pipeline:{name}:{path}"
    rest = [p for p in pairs if not p.startswith("key=")]
    return f"{head}?{'&'.join([*rest, f'key={key}'])}"

