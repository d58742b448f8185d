"""What one request's answer tells a limiter: a plain value, free of any provider's wording.

:mod:`pipeline.http.signals` reads a provider's answer (status, headers, body) once and
produces an :class:`Outcome`; the limiter only ever reads these values. Nothing in
:mod:`pipeline.limiter` knows a header name or a 429's wording.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["CANCELLED", "FAILED", "OK", "OVERLOADED", "THROTTLED", "UNAVAILABLE", "Dimension",
           "Outcome", "OutcomeKind"]

OutcomeKind = Literal["ok", "throttled", "overloaded", "unavailable", "failed", "cancelled"]
Dimension = Literal["requests", "tokens"]

#: An answer: the request was admitted and served.
OK: OutcomeKind = "ok"
#: A rate limit refused it (a 429 about requests or tokens per minute).
THROTTLED: OutcomeKind = "throttled"
#: The server said it has too many requests at once (a gateway's in-flight cap, "overloaded").
OVERLOADED: OutcomeKind = "overloaded"
#: A bare "service unavailable" (a 503 that gives no reason): one alone is a random server
#: error; many at once, as requests in flight rise, are an in-flight cap.
UNAVAILABLE: OutcomeKind = "unavailable"
#: Any other failure (a 500, a timeout, a refused connection, a bad request).
FAILED: OutcomeKind = "failed"
#: The request was abandoned before its answer: the limiter learns nothing from it.
CANCELLED: OutcomeKind = "cancelled"


class Outcome(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How one leased request ended, as the limiter needs to know it.

    Every field but ``kind`` is optional: ``None`` means the provider did not say.

    Attributes:
        kind: ``"ok"``, ``"throttled"``, ``"overloaded"``, ``"unavailable"``, ``"failed"`` or
            ``"cancelled"``.
        tokens: the tokens the provider counted for an answered request.
        exact: give unused tokens back too (providers that charge actual usage).
        limit_requests, limit_tokens: the limits the provider states, per minute.
        remaining_requests, remaining_tokens: what the provider has left now.
        reset_requests, reset_tokens: seconds until that dimension is full again.
        dimension: the limit a refusal names (``"requests"``/``"tokens"``; ``None``: unsaid).
        wait: the whole wait a refusal asks for, in seconds.
        sure_wait: the part of ``wait`` that is sure (a ``Retry-After`` in whole seconds is
            rounded up by the server): what everyone on the limiter pauses for.
        stated_limit: the per-minute limit a refusal's text states on ``dimension``
            ("Limit 30000, Used 29937"): a fact, like a header.
        source: where the wait came from, for messages (``"Retry-After"``, ...).

    >>> Outcome(kind="ok", tokens=120.0)
    Outcome(kind='ok', tokens=120.0)
    >>> Outcome(kind="throttled", dimension="tokens", wait=0.6, sure_wait=0.6).throttled
    True
    """

    kind: OutcomeKind
    tokens: float | None = None
    exact: bool = False
    limit_requests: float | None = None
    limit_tokens: float | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    reset_requests: float | None = None
    reset_tokens: float | None = None
    dimension: Dimension | None = None
    wait: float | None = None
    sure_wait: float | None = None
    stated_limit: float | None = None
    source: str = "no header"

    def __repr__(self) -> str:
        fields = [f"kind={self.kind!r}"]
        for name in self.__struct_fields__[1:]:
            value = getattr(self, name)
            if value is not None and value is not False and not (
                    name == "source" and value == "no header"):
                fields.append(f"{name}={value!r}")
        return f"Outcome({', '.join(fields)})"

    @property
    def throttled(self) -> bool:
        """Whether a rate limit refused the request."""
        return self.kind == THROTTLED

    @property
    def has_facts(self) -> bool:
        """Whether it states any limit, remaining capacity or reset time."""
        return (self.limit_requests is not None or self.limit_tokens is not None
                or self.remaining_requests is not None or self.remaining_tokens is not None
                or self.reset_requests is not None or self.reset_tokens is not None)

