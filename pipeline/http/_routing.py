"""Choosing a deployment for each lease: each deployment's run-time health (:class:`Route`)
and :class:`RoutingLimiter`, the limiter over their limiters that a
:class:`~pipeline.http.deployments.RoutedService`'s endpoints hold."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from pipeline.core.request import APIRequest
from pipeline.errors import RequestTooLarge
from pipeline.http import signals

if TYPE_CHECKING:
    from pipeline.http.deployments import Deployment
    from pipeline.http.openai_service import OpenAIService

__all__ = ["Route", "RoutingLimiter"]

#: A probe's lease while it is being granted.
_PENDING = object()


class Route:
    """One deployment at run time: its service, its health, its share of the answers."""

    __slots__ = ("answered", "deployment", "failures", "latency", "limiters", "name",
                 "out_for", "out_until", "probe", "provider", "reason", "service",
                 "silent", "storm", "weight", "why")

    def __init__(self, deployment: Deployment, service: OpenAIService, name: str) -> None:
        self.deployment = deployment
        self.service = service
        self.name = name
        self.weight = float(deployment.weight)
        self.provider = signals.provider_for(service.base_url, service.provider)
        self.limiters: dict[str, Any] = {}
        self.answered = 0
        self.failures = 0
        self.latency = 0.5  # seconds; the answers' moving average once some arrive
        self.silent = 0  # failures in a row with no answer
        self.storm = 0  # 5xx in a row
        self.out_until: float | None = None  # taken out until then (None: up)
        self.out_for = 0.0
        self.probe: object | None = None  # the lease probing it while out
        self.reason = ""  # why it is out, in full (the warning's words)
        self.why = ""  # ... in two or three words, for the progress bar

    @property
    def up(self) -> bool:
        return self.out_until is None

    def map_model(self, request: APIRequest) -> APIRequest:
        models = self.deployment.models
        body = request.body
        if models and isinstance(body, dict):
            mapped = models.get(body.get("model"))  # type: ignore[arg-type]
            if mapped is not None:
                return msgspec.structs.replace(request, body={**body, "model": mapped})
        return request

    def __repr__(self) -> str:
        state = "up" if self.up else f"out ({self.reason})"
        return f"<deployment {self.name} {state}, {self.answered:,} answered>"


class RoutingLimiter:
    """A limiter over one limiter per deployment: each lease comes from the deployment that
    would grant it soonest (weights break ties), skipping those taken out but one probe.

    It is what a :class:`RoutedService`'s endpoints hold; the stages use it as any
    :class:`~pipeline.limiter.RateLimiter` (``lease``, ``acquire``, ``settle``,
    ``snapshot``). The lease it returns is the chosen deployment's own, so its
    ``lease.limiter`` is that deployment's limiter.
    """

    __slots__ = ("_by_limiter", "_granted", "_routes", "path")

    def __init__(self, routes: Sequence[Route], path: str) -> None:
        self._routes = tuple(routes)
        self.path = path
        self._by_limiter: dict[int, Route] = {}
        self._granted = {id(route): 0 for route in routes}
        for route in routes:
            limiter = route.service.endpoint(path).limiter
            route.limiters[path] = limiter
            self._by_limiter[id(limiter)] = route

    @property
    def limiters(self) -> list[Any]:
        """The deployments' limiters, in the deployments' order."""
        return [route.limiters[self.path] for route in self._routes]

    def route_of(self, lease: Any) -> Route | None:
        return self._by_limiter.get(id(getattr(lease, "limiter", None)))

    def _candidates(self, now: float) -> list[Route]:
        routes = [r for r in self._routes if r.out_until is None or
                  (r.probe is None and now >= r.out_until)]
        # Every deployment is out: send as to one server, and let the run's guard judge.
        return routes or list(self._routes)

    def _eta(self, route: Route, tokens: float) -> float:
        """Seconds until a request of ``tokens`` would be granted there (an estimate)."""
        limiter = route.limiters[self.path]
        estimate = getattr(limiter, "wait_estimate", None)
        if estimate is None:  # a duck-typed limiter: from its snapshot
            snap = limiter.snapshot()
            wait = float(snap.paused_for)
            queue = snap.waiters + 1
            if snap.max_requests:
                avail = snap.requests_available or 0.0
                wait = max(wait, (queue - avail) * snap.interval / snap.max_requests)
            if snap.max_tokens and tokens:
                avail = snap.tokens_available or 0.0
                wait = max(wait, (queue * tokens - avail) * snap.interval / snap.max_tokens)
            in_flight = snap.in_flight
            cap = getattr(limiter, "max_in_flight", None) or snap.max_in_flight
        else:  # pause, bucket and queue, without building a snapshot
            wait = estimate(1, tokens)
            queue = limiter.queued + 1
            in_flight = limiter.in_flight
            cap = getattr(limiter, "max_in_flight", None)
        if cap and math.isfinite(cap):
            over = in_flight + queue - cap
            if over > 0:  # waits for that many answers, `cap` arriving per latency
                wait = max(wait, over * route.latency / cap)
        return wait

    def choose(self, tokens: float = 0.0) -> Route:
        """The deployment a request of ``tokens`` would be granted soonest by."""
        now = time.monotonic()
        best: Route | None = None
        best_key = (math.inf, math.inf)
        for route in self._candidates(now):
            # Within a millisecond, the least used for its weight.
            key = (round(self._eta(route, tokens), 3),
                   self._granted[id(route)] / route.weight)
            if key < best_key:
                best, best_key = route, key
        assert best is not None
        return best

    async def lease(self, requests: float = 1, tokens: float = 0) -> Any:
        """Wait for capacity on the deployment that grants soonest; its lease."""
        route = self.choose(tokens)
        probing = route.out_until is not None and route.probe is None
        if probing:  # half-open: this request alone finds out whether it is back
            route.probe = _PENDING
        try:
            lease = await route.limiters[self.path].lease(requests, tokens)
        except RequestTooLarge:
            # Too large for this deployment's bucket: another's may hold it.
            if probing:
                route.probe = None
            route, lease = await self._elsewhere(route, requests, tokens)
            probing = False
        except BaseException:
            if probing:
                route.probe = None
            raise
        self._granted[id(route)] += 1
        if probing:
            route.probe = lease
        return lease

    async def _elsewhere(self, refused: Route, requests: float,
                         tokens: float) -> tuple[Route, Any]:
        for other in self._candidates(time.monotonic()):
            if other is not refused and other.up:
                try:
                    return other, await other.limiters[self.path].lease(requests, tokens)
                except RequestTooLarge:
                    continue
        raise RequestTooLarge(f"{requests:g} request(s) of {tokens:,.0f} tokens fit no "
                              "deployment's limits")

    async def acquire(self, requests: float = 1, tokens: float = 0) -> None:
        """Wait for capacity (nothing to settle: the deployment's limiter is not told how
        the request ended)."""
        await self.choose(tokens).limiters[self.path].acquire(requests, tokens)

    def settle(self, lease: Any, outcome: Any) -> None:
        """Settle a lease on the deployment limiter that granted it."""
        lease.limiter.settle(lease, outcome)

    def snapshot(self) -> Any:
        """The deployments' limits added up (those up), for a one-line view."""
        from pipeline.limiter import LimiterSnapshot

        snaps = [r.limiters[self.path].snapshot() for r in self._routes if r.up] or \
            [r.limiters[self.path].snapshot() for r in self._routes]

        def both(name: str) -> float | None:
            values: list[float | None] = [getattr(s, name) for s in snaps]
            if any(v is None for v in values):
                return None
            return float(sum((v or 0.0) * 60.0 / s.interval
                             for v, s in zip(values, snaps, strict=True)))

        modes = {s.mode for s in snaps}
        return LimiterSnapshot(
            requests_available=sum(s.requests_available or 0.0 for s in snaps),
            tokens_available=sum(s.tokens_available or 0.0 for s in snaps),
            max_requests=both("max_requests"), max_tokens=both("max_tokens"), interval=60.0,
            waiters=sum(s.waiters for s in snaps), paused_for=min(s.paused_for for s in snaps),
            next_wake_in=None, in_flight=sum(s.in_flight for s in snaps),
            ceiling_requests=both("ceiling_requests"), ceiling_tokens=both("ceiling_tokens"),
            mode=modes.pop() if len(modes) == 1 else "mixed")

    def rate_text(self) -> str:
        """Each deployment's answers and rate (or why it is out), for the status table.

        >>> from pipeline.http.deployments import Deployment, RoutedService
        >>> svc = RoutedService([Deployment(base_url="http://127.0.0.1:9/v1", rpm=600,
        ...                                 name="a")])
        >>> svc.endpoint("chat/completions").limiter.rate_text()
        'a: 0 ok, 600/600 req/min (at ceiling)'
        """
        parts = []
        for route in self._routes:
            if not route.up:
                parts.append(f"{route.name}: {route.answered:,} ok, out ({route.why})")
                continue
            snap = route.limiters[self.path].snapshot()
            per = 60.0 / snap.interval
            adaptive = snap.mode != "static"
            rate = ""
            if snap.max_requests is not None:
                rate = f"{snap.max_requests * per:,.0f}"
                if adaptive:
                    rate += "/?" if snap.ceiling_requests is None else \
                        f"/{snap.ceiling_requests * per:,.0f}"
                rate = f", {rate} req/min" + (f" ({snap.mode})" if adaptive else "")
            parts.append(f"{route.name}: {route.answered:,} ok{rate}")
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"<RoutingLimiter {self.path!r}: {self.rate_text()}>"
