"""What the pipeline's centre needs of the things it is handed, as structural types.

A stage, the cost estimate or the Batch API runner reads a job, a service, an endpoint and a
limiter through a handful of attributes each; these protocols name exactly those. The
package's own classes fit them (:class:`~pipeline.http.Job`, :class:`~pipeline.http.BaseService`,
:class:`~pipeline.http.Endpoint`, :class:`~pipeline.limiter.RateLimiter` and its
:class:`~pipeline.limiter.Lease`), and so does anything of yours with the same attributes: a
type checker says where one is missing. They live here, at the bottom, so that a layer below
``http`` and ``limiter`` can name what it carries without importing them. Nothing checks them
at run time (no ``isinstance``): they cost nothing.

    >>> from pipeline.testing import InstantService
    >>> def describe(job: JobLike) -> str:
    ...     return f"{job.path} at {job.service.base_url}"
    >>> describe(InstantService().chat(model="m", prompt="{text}"))
    'chat/completions at http://127.0.0.1:9/v1'
"""

from __future__ import annotations

from typing import Any, Protocol

from pipeline.core.request import APIRequest, Response

__all__ = [
    "BuilderLike",
    "EndpointLike",
    "Grant",
    "JobLike",
    "LeasingLimiter",
    "LimiterLike",
    "ServiceLike",
    "Settler",
]


class Settler(Protocol):
    """What granted a :class:`Grant`, and is told how its request ended.

    ``lease`` is the grant it made and ``outcome`` a :class:`~pipeline.limiter.Outcome`: both
    are the limiter's own types, which this layer cannot name (hence ``Any``: a limiter's
    ``settle`` may take its own lease class and nothing wider).
    """

    def settle(self, lease: Any, outcome: Any) -> None: ...


class Grant(Protocol):
    """What a record carries of a rate limiter's grant (:class:`pipeline.limiter.Lease` is
    one): the acquire stage puts it on ``record.lease`` and the call stage settles it with
    ``grant.limiter.settle(grant, outcome)``."""

    requests: float
    tokens: float
    settled: bool
    #: The longest pause a 429 for it may put on everyone (seconds).
    max_pause: float

    @property
    def limiter(self) -> Settler: ...


class LimiterLike(Protocol):
    """A rate limiter as the acquire stage uses it: wait for ``(requests, tokens)``.

    A limiter with only this learns nothing from answers; one that also has ``lease``
    (:class:`LeasingLimiter`) is told each outcome.
    """

    async def acquire(self, requests: float = 1, tokens: float = 0) -> None: ...


class LeasingLimiter(LimiterLike, Protocol):
    """A limiter whose grants are settled with the outcome (every limiter of the package)."""

    async def lease(self, requests: float = 1, tokens: float = 0) -> Grant: ...


class EndpointLike(Protocol):
    """One API path and the limiter its requests wait on (:class:`~pipeline.http.Endpoint`)."""

    @property
    def path(self) -> str: ...

    @property
    def limiter(self) -> LimiterLike: ...


class BuilderLike(Protocol):
    """Turns one input row into a request for one endpoint path (raises
    :class:`~pipeline.errors.PayloadError` for a row it cannot build). A row is whatever the
    user gave (a dict, a pandas row, a string): its type is theirs."""

    @property
    def path(self) -> str: ...

    def build(self, row: Any) -> APIRequest: ...


class ServiceLike(Protocol):
    """Sends one request once (:class:`~pipeline.http.BaseService`): no retry, no limiter.

    ``endpoint`` in :meth:`call` is the service's own endpoint object or its path; a service
    may take its own endpoint class and nothing wider, so it is not named here.
    """

    @property
    def base_url(self) -> str: ...

    def secrets(self) -> tuple[str, ...]:
        """The strings that must never appear in a cache key, a log or a file."""
        ...

    def endpoint(self, path: str) -> EndpointLike:
        """The service's endpoint for ``path`` (its limits, its limiter)."""
        ...

    async def call(self, endpoint: Any, request: APIRequest) -> Response: ...


class JobLike(Protocol):
    """What to send and where (:class:`~pipeline.http.Job`): a service, one of its endpoints
    and a payload builder, with the answer's schema and the rows a request may carry."""

    @property
    def service(self) -> ServiceLike: ...

    @property
    def endpoint(self) -> EndpointLike: ...

    @property
    def builder(self) -> BuilderLike: ...

    @property
    def path(self) -> str: ...

    @property
    def schema(self) -> object:
        """The answer's :class:`~pipeline.schema.OutputSchema`, or ``None``."""
        ...

    @property
    def batch_size(self) -> int | None: ...

    def build(self, row: Any) -> APIRequest: ...
