"""OpenAIService: any OpenAI-compatible server (OpenAI, Azure OpenAI, vLLM, Ollama, the
simulator), with job helpers for chat, completions, embeddings, fine-tuning and files."""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Unpack

from pipeline.errors import ConfigError, InsecureConnectionWarning
from pipeline.http.service import (
    DEFAULT_OPENAI_BASE_URL,
    BaseService,
    Job,
    PayloadBuilder,
    ServiceOptions,
)
from pipeline.http.transports import is_loopback

if TYPE_CHECKING:
    from pipeline.http.endpoint import Endpoint
from pipeline.core.redaction import Secret, redact_url
from pipeline.core.request import APIRequest

__all__ = ["OpenAIJobs", "OpenAIService"]


_AZURE_RESOURCE_PATHS = ("files", "fine_tuning", "batches", "models")


def _refuse_credentials_in(base_url: str | None) -> None:
    """A base URL with ``user:password@`` would send Basic auth instead of the key: refuse it,
    without repeating the password."""
    if not isinstance(base_url, str):
        return
    parts = urllib.parse.urlsplit(base_url.strip())
    if parts.username is None and parts.password is None:
        return
    secrets = (parts.password,) if parts.password else ()
    raise ConfigError(
        f"base_url must not carry a user name or password ({redact_url(base_url, secrets)!r}): "
        "httpx would send them as Basic auth in place of the API key. Give the key as "
        "api_key= (or OPENAI_API_KEY) and the URL without them; for a server that wants "
        "Basic auth use JSONService(base_url, auth=(user, password))"
    )


class OpenAIJobs:
    """The job helpers of an OpenAI-compatible service (chat, completions, embeddings,
    fine-tuning, files), for :class:`OpenAIService` and
    :class:`~pipeline.http.deployments.RoutedService` alike: each makes a
    :class:`~pipeline.http.service.Job` on the service's endpoint for its path."""

    default_endpoints: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "chat/completions": "POST",
            "completions": "POST",
            "embeddings": "POST",
            "files": "POST",
            "fine_tuning/jobs": "POST",
        }
    )

    if TYPE_CHECKING:  # what the service it is mixed into provides (BaseService's)
        def endpoint(self, path: str, *, method: str | None = None) -> Endpoint: ...

        def job(self, builder: PayloadBuilder, *, endpoint: Endpoint | None = None) -> Job: ...

    def chat(self, **config: Any) -> Job:
        """A chat-completions :class:`Job`: ``service.chat(model=..., prompt="Q: {q}")``.

        ``schema=`` (a msgspec Struct, a JSON Schema dict or a pydantic model) asks for a
        structured answer: each is decoded into that type and its fields become typed columns
        (see :class:`~pipeline.payloads.ChatBuilder`).
        """
        return self._payload_job("chat/completions", "chat", config)

    def completion(self, **config: Any) -> Job:
        """A legacy completions :class:`Job`: ``service.completion(model=..., prompt=...)``,
        the same name as its builder, :func:`pipeline.payloads.completion`.

        >>> OpenAIService(api_key="sk-test").completion(model="m", prompt="{q}").path
        'completions'
        """
        return self._payload_job("completions", "completion", config)

    def completions(self, **config: Any) -> Job:
        """The same as :meth:`completion` (the name earlier versions had)."""
        return self.completion(**config)

    def embeddings(self, *, batch_size: int | None = None, **config: Any) -> Job:
        """An embeddings :class:`Job`: ``service.embeddings(model=..., input="{text}")``.

        A run sends rows in batches, many rows per request: up to 2,048 inputs and 300,000
        tokens (OpenAI's limits per request), never more tokens than the endpoint's limiter
        grants at once, and at most ``batch_size`` rows when given; ``batch_size=1`` sends
        one row per request. Each row still gets its own vector, cache entry and share of
        the tokens.

        >>> service = OpenAIService(api_key="sk-test")
        >>> service.embeddings(model="text-embedding-3-small", batch_size=100).batch_size
        100
        """
        if batch_size is not None and (isinstance(batch_size, bool) or
                                       not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError(f"batch_size must be an int >= 1 (rows per request), got "
                              f"{batch_size!r}")
        job = self._payload_job("embeddings", "embeddings", config)
        return dataclasses.replace(job, batch_size=batch_size)

    def fine_tuning_job(self, **config: Any) -> Job:
        """A fine-tuning :class:`Job`: ``service.fine_tuning_job(model=..., training_file=...)``."""
        return self._payload_job("fine_tuning/jobs", "fine_tuning_job", config)

    def file_upload(self, **config: Any) -> Job:
        """A file-upload :class:`Job`: ``service.file_upload(purpose="batch")``."""
        return self._payload_job("files", "file_upload", config)

    def _payload_job(self, path: str, kind: str, config: dict[str, Any]) -> Job:
        from pipeline import payloads  # written alongside; imported when a job is made

        endpoint = self.endpoint(path)
        factory = getattr(payloads, kind)
        builder: PayloadBuilder = factory(**endpoint.merged_config(config))
        return self.job(builder, endpoint=endpoint)


class OpenAIService(OpenAIJobs, BaseService):
    """Any OpenAI-compatible API: OpenAI, Azure OpenAI, vLLM, Ollama, the simulator...

    ``api_key`` and ``base_url`` default to ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` (then
    ``https://api.openai.com/v1``). Azure is used when ``azure_api_version`` or
    ``azure_deployment`` is given (or ``base_url`` contains ``/openai/deployments/``): the key
    goes in an ``api-key`` header (default ``AZURE_OPENAI_API_KEY``), ``base_url`` is the
    resource (default ``AZURE_OPENAI_ENDPOINT``), requests go to
    ``{resource}/openai/deployments/{deployment}/{path}?api-version=...`` where the
    deployment defaults to the request's ``model``, and files and fine-tuning go to
    ``{resource}/openai/{path}``. Other arguments are :class:`BaseService`'s.

    The key travels only as that header. A ``base_url`` carrying ``user:password@`` is a
    :class:`~pipeline.errors.ConfigError` (httpx would send those as Basic auth in place of
    the key); a server that wants Basic auth is a
    :class:`~pipeline.http.service.JSONService` with ``auth=(user, password)``. A key sent
    over ``http://`` to a host other than this machine gives one
    :class:`~pipeline.errors.InsecureConnectionWarning` per service, naming the host.

    >>> OpenAIService(api_key="k" * 20, base_url="https://r.openai.azure.com",
    ...               azure_deployment="gpt4o", azure_api_version="2024-10-21")
    OpenAIService(base_url='https://r.openai.azure.com', api_key='...kkkk', azure_deployment='gpt4o', azure_api_version='2024-10-21', transport='httpx')
    """  # noqa: E501

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        organization: str | None = None,
        project: str | None = None,
        azure_api_version: str | None = None,
        azure_deployment: str | None = None,
        headers: Mapping[str, str] | None = None,
        **options: Unpack[ServiceOptions],
    ) -> None:
        base = base_url if base_url is not None else os.environ.get("OPENAI_BASE_URL") or None
        azure = (
            azure_api_version is not None
            or azure_deployment is not None
            or (base is not None and "/openai/deployments/" in base)
        )
        if azure:
            base = base_url or os.environ.get("AZURE_OPENAI_ENDPOINT")
            if not base:
                raise ConfigError(
                    "Azure OpenAI needs base_url= (or AZURE_OPENAI_ENDPOINT), "
                    "e.g. 'https://my-resource.openai.azure.com'"
                )
            api_key = api_key or os.environ.get("AZURE_OPENAI_API_KEY")
            azure_api_version = azure_api_version or os.environ.get("OPENAI_API_VERSION")
            if not azure_api_version:
                raise ConfigError(
                    "Azure OpenAI needs azure_api_version= (or "
                    "OPENAI_API_VERSION), e.g. '2024-10-21'"
                )
        else:
            api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        _refuse_credentials_in(base)
        super().__init__(base if base is not None else DEFAULT_OPENAI_BASE_URL,
                         headers=headers, **options)
        if not api_key and urllib.parse.urlsplit(self.base_url).hostname == "api.openai.com":
            raise ConfigError("no OpenAI API key: set the OPENAI_API_KEY environment variable "
                              "(or pass api_key= in Python)")
        self._api_key = Secret(api_key) if api_key else None
        parts = urllib.parse.urlsplit(self.base_url)
        if self._api_key is not None and parts.scheme == "http" and not is_loopback(
            parts.hostname
        ):
            warnings.warn(
                f"the API key goes unencrypted over http:// to {parts.hostname}: anyone on "
                "the network path can read it. Use an https:// base URL (http:// is safe "
                "only to this machine)",
                InsecureConnectionWarning,
                stacklevel=2,
            )
        self._organization = organization
        self._project = project
        self._azure_api_version = azure_api_version if azure else None
        self._azure_root = self._azure_deployment = None
        if azure:
            root, sep, rest = self.base_url.partition("/openai/deployments/")
            if sep:
                azure_deployment = azure_deployment or rest.split("/")[0] or None
            else:
                root = root.removesuffix("/openai")
            self._azure_root, self._azure_deployment = root, azure_deployment

    @property
    def is_azure(self) -> bool:
        """Whether requests go to Azure OpenAI deployment URLs."""
        return self._azure_api_version is not None

    def auth_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self._api_key is not None:
            if self.is_azure:
                headers["api-key"] = self._api_key.reveal()
            else:
                headers["authorization"] = f"Bearer {self._api_key.reveal()}"
        if self._organization:
            headers["openai-organization"] = self._organization
        if self._project:
            headers["openai-project"] = self._project
        return headers

    def secrets(self) -> tuple[str, ...]:
        found = super().secrets()
        return (*found, self._api_key.reveal()) if self._api_key is not None else found

    def url_for(self, request: APIRequest) -> tuple[str, dict[str, str] | None]:
        if self._azure_api_version is None:
            return super().url_for(request)
        path = request.path.strip("/")
        params = {"api-version": self._azure_api_version}
        if path.split("/")[0] in _AZURE_RESOURCE_PATHS:
            return f"{self._azure_root}/openai/{path}", params
        deployment = self._azure_deployment
        if deployment is None and isinstance(request.body, dict):
            deployment = request.body.get("model")
        if not isinstance(deployment, str) or not deployment:
            raise ConfigError(f"Azure request to {path!r} needs azure_deployment= or a model")
        quoted = urllib.parse.quote(deployment, safe="")
        return f"{self._azure_root}/openai/deployments/{quoted}/{path}", params

    def _repr_fields(self) -> list[str]:
        fields = super()._repr_fields()
        fields.append(f"api_key={self._api_key!r}")
        if self._organization:
            fields.append(f"organization={self._organization!r}")
        if self._project:
            fields.append(f"project={self._project!r}")
        if self._azure_deployment:
            fields.append(f"azure_deployment={self._azure_deployment!r}")
        if self._azure_api_version:
            fields.append(f"azure_api_version={self._azure_api_version!r}")
        return fields
