"""The simulator's configuration: :class:`Latency`, :class:`Faults`, :class:`SimulatorConfig`.

All three are frozen msgspec Structs, so they compare by value, print readably, and cross a
process boundary as JSON (process mode sends the whole :class:`SimulatorConfig` to the child).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from pipeline.errors import ConfigError
from pipeline.simulator._ratelimit import HEADER_STYLES, POLICIES, HeaderStyle, Policy

__all__ = ["BAD_ANSWER_FAULTS", "ERROR_FORMATS", "FAULT_KINDS", "RETRY_AFTER", "Faults",
           "Latency", "SimulatorConfig", "parse_model_limit"]

LatencyKind = Literal["fixed", "uniform", "lognormal"]
RetryAfter = Literal["both", "seconds", "ms", "none"]
ErrorFormat = Literal["openai", "azure", "text"]
RETRY_AFTER: tuple[RetryAfter, ...] = ("both", "seconds", "ms", "none")
ERROR_FORMATS: tuple[ErrorFormat, ...] = ("openai", "azure", "text")
#: ``{"gpt-4o": {"rpm": 500, "tpm": 30_000}}``: limits per (key, model); ``None``: no limit.
ModelLimits = dict[str, dict[str, float | None]]


class Latency(msgspec.Struct, frozen=True, kw_only=True):
    """How long the simulator takes to answer a request that succeeds (or fails with a 5xx).

    ``delay = base + per_output_token * completion_tokens``, where ``base`` is drawn (seeded) from
    the distribution: ``fixed`` (always ``a``), ``uniform`` (between ``a`` and ``b``) or
    ``lognormal`` (median ``a``, shape ``b``, the sigma of the underlying normal). 4xx and 429
    answers are immediate, like a provider's front door.

    >>> Latency.fixed(0.2)
    Latency(fixed 0.2s)
    >>> Latency.parse("uniform:0.1,0.3") == Latency.uniform(0.1, 0.3)
    True
    >>> Latency.parse(0.05, per_output_token=0.001)
    Latency(fixed 0.05s + 0.001s/token)
    """

    kind: LatencyKind = "fixed"
    a: float = 0.0
    b: float = 0.0
    per_output_token: float = 0.0

    def __post_init__(self) -> None:
        for name in ("a", "b", "per_output_token"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"Latency.{name} must be a finite number >= 0, got {value!r}")
        if self.kind == "uniform" and self.b < self.a:
            raise ConfigError(f"uniform latency needs low <= high, got {self.a} > {self.b}")

    @classmethod
    def fixed(cls, seconds: float, *, per_output_token: float = 0.0) -> Latency:
        """Always ``seconds``."""
        return cls(kind="fixed", a=float(seconds), per_output_token=per_output_token)

    @classmethod
    def uniform(cls, low: float, high: float, *, per_output_token: float = 0.0) -> Latency:
        """Uniformly between ``low`` and ``high`` seconds."""
        return cls(kind="uniform", a=float(low), b=float(high), per_output_token=per_output_token)

    @classmethod
    def lognormal(cls, median: float, sigma: float = 0.5, *,
                  per_output_token: float = 0.0) -> Latency:
        """Lognormal with the given median (seconds) and shape ``sigma``: a long right tail."""
        return cls(kind="lognormal", a=float(median), b=float(sigma),
                   per_output_token=per_output_token)

    @classmethod
    def parse(cls, value: Latency | float | str | None, *,
              per_output_token: float | None = None) -> Latency:
        """Accept a Latency, seconds (``0.2``), or text: ``"0.2"``, ``"uniform:0.1,0.3"``,
        ``"lognormal:0.2,0.5"``, ``"fixed:0.2"``."""
        if value is None:
            latency = cls()
        elif isinstance(value, Latency):
            latency = value
        elif isinstance(value, int | float):
            latency = cls.fixed(float(value))
        elif isinstance(value, str):
            kind, _, args = value.partition(":")
            if not args:
                kind, args = "fixed", kind
            try:
                numbers = [float(x) for x in args.split(",")]
            except ValueError:
                raise ConfigError(f"bad latency {value!r}") from None
            if kind == "fixed" and len(numbers) == 1:
                latency = cls.fixed(*numbers)
            elif kind == "uniform" and len(numbers) == 2:
                latency = cls.uniform(*numbers)
            elif kind == "lognormal" and len(numbers) in (1, 2):
                latency = cls.lognormal(*numbers)
            else:
                raise ConfigError(
                    f"bad latency {value!r}: use SECONDS, uniform:LOW,HIGH or "
                    "lognormal:MEDIAN,SIGMA"
                )
        else:
            raise ConfigError(f"latency must be a Latency, a number or a string, got {value!r}")
        if per_output_token is not None:
            latency = msgspec.structs.replace(latency, per_output_token=float(per_output_token))
        return latency

    def sample(self, rng: random.Random, completion_tokens: int = 0) -> float:
        """One delay in seconds, drawn from ``rng``."""
        if self.kind == "fixed":
            base = self.a
        elif self.kind == "uniform":
            base = rng.uniform(self.a, self.b)
        else:
            base = self.a * math.exp(rng.gauss(0.0, self.b)) if self.a > 0 else 0.0
        return base + self.per_output_token * completion_tokens

    @property
    def is_zero(self) -> bool:
        """True when every request is answered at once."""
        return self.a == 0 and self.per_output_token == 0 and (
            self.kind != "uniform" or self.b == 0)

    def __repr__(self) -> str:
        if self.kind == "fixed":
            text = f"fixed {self.a:g}s"
        elif self.kind == "uniform":
            text = f"uniform {self.a:g}-{self.b:g}s"
        else:
            text = f"lognormal median {self.a:g}s sigma {self.b:g}"
        if self.per_output_token:
            text += f" + {self.per_output_token:g}s/token"
        return f"Latency({text})"


#: Fault names, in the order a random draw checks them, and the outcome each one is logged as.
FAULT_KINDS: dict[str, str] = {
    "server_error": "fault:500",
    "bad_gateway": "fault:502",
    "unavailable": "fault:503",
    "context_length": "fault:context_length",
    "hang": "hang",
    "reset": "reset",
    "truncated": "truncated",
    "malformed": "malformed",
    # 2xx answers without an answer in them (issue 19): appended, so that the draws of the
    # kinds above stay what they were for a given seed.
    "empty_body": "fault:empty_body",
    "null_body": "fault:null_body",
    "empty_object": "fault:empty_object",
    "list_body": "fault:list_body",
    "empty_choices": "fault:empty_choices",
    "null_content": "fault:null_content",
    "error_200": "fault:error_200",
    "content_filter": "fault:content_filter",
    "echo_headers": "fault:echo_headers",
}
#: The faults that answer 200 with a body that holds no answer (or is not JSON).
BAD_ANSWER_FAULTS = ("malformed", "empty_body", "null_body", "empty_object", "list_body",
                     "empty_choices", "null_content", "error_200", "content_filter",
                     "echo_headers")
_FAULT_ALIASES = {"500": "server_error", "502": "bad_gateway", "503": "unavailable",
                  "context_length_exceeded": "context_length", "timeout": "hang",
                  "not_json": "malformed", "error_in_200": "error_200"}


class Faults(msgspec.Struct, frozen=True, kw_only=True):
    """Probabilities (each in [0, 1], summing to at most 1) of injected failures per request.

    A request that passed authentication, validation and the rate limits draws one seeded random
    number; it decides at most one fault:

    - ``server_error`` / ``bad_gateway`` / ``unavailable``: a 500 / 502 / 503 with an error body;
    - ``context_length``: a 400 ``context_length_exceeded``;
    - ``hang``: no response ever (the connection stays open until the client gives up);
    - ``reset``: the connection is reset after part of the response was sent;
    - ``truncated``: a 200 whose JSON body is cut short (Content-Length matches the cut body);
    - ``malformed`` (alias ``not_json``): a 200 whose body is not JSON at all (an HTML page).

    Answers that came back 200 with no answer in them (each logged as ``fault:NAME``, charged
    to the limits like any admitted request):

    - ``empty_body``: an empty body; ``null_body``: ``null``; ``empty_object``: ``{}``;
      ``list_body``: ``[]``;
    - ``empty_choices``: the answer with ``choices: []`` (embeddings: ``data: []``);
    - ``null_content``: the chat message's ``content`` is null with no tool call and no
      refusal (completions: ``text`` null; embeddings: each ``embedding`` null);
    - ``error_200`` (alias ``error_in_200``): ``{"error": {...}}`` with status 200, as a
      gateway whose upstream failed may send;
    - ``content_filter``: ``finish_reason: "content_filter"`` with a null content (text ""
      for completions), its prompt tokens billed in ``usage``; an embeddings request
      gets its answer;
    - ``echo_headers``: a ``text/plain`` 200 page that echoes the request's headers, the
      ``Authorization`` one included, and the bare key after it (a misconfigured proxy).

    >>> Faults.parse({"500": 0.05, "hang": 0.01})
    Faults(server_error=0.05, hang=0.01)
    >>> Faults.parse(["503=0.1"]).unavailable
    0.1
    """

    server_error: float = 0.0
    bad_gateway: float = 0.0
    unavailable: float = 0.0
    context_length: float = 0.0
    hang: float = 0.0
    reset: float = 0.0
    truncated: float = 0.0
    malformed: float = 0.0
    empty_body: float = 0.0
    null_body: float = 0.0
    empty_object: float = 0.0
    list_body: float = 0.0
    empty_choices: float = 0.0
    null_content: float = 0.0
    error_200: float = 0.0
    content_filter: float = 0.0
    echo_headers: float = 0.0

    def __post_init__(self) -> None:
        total = 0.0
        for name in FAULT_KINDS:
            p = getattr(self, name)
            if not (0.0 <= p <= 1.0):
                raise ConfigError(f"fault probability {name}={p!r} is not in [0, 1]")
            total += p
        if total > 1.0 + 1e-9:
            raise ConfigError(f"fault probabilities sum to {total:g} > 1")

    @classmethod
    def parse(cls, value: Faults | Mapping[str, float] | list[str] | None) -> Faults:
        """Accept Faults, a mapping ``{"500": 0.05, "hang": 0.01}`` or CLI items ``["500=0.05"]``.

        Names: the field names, or the aliases ``"500"``, ``"502"``, ``"503"``,
        ``"context_length_exceeded"``, ``"timeout"`` (= hang), ``"not_json"`` (= malformed)
        and ``"error_in_200"`` (= error_200).
        """
        if value is None:
            return cls()
        if isinstance(value, Faults):
            return value
        if isinstance(value, list | tuple):
            items: dict[str, float] = {}
            for item in value:
                name, sep, prob = str(item).partition("=")
                try:
                    items[name.strip()] = float(prob)
                except ValueError:
                    raise ConfigError(f"bad fault {item!r}: use NAME=PROBABILITY") from None
                if not sep:
                    raise ConfigError(f"bad fault {item!r}: use NAME=PROBABILITY")
            value = items
        kwargs: dict[str, float] = {}
        for key, probability in value.items():
            field = _FAULT_ALIASES.get(str(key), str(key))
            if field not in FAULT_KINDS:
                known = ", ".join([*FAULT_KINDS, *_FAULT_ALIASES])
                raise ConfigError(f"unknown fault {key!r}; known: {known}")
            kwargs[field] = kwargs.get(field, 0.0) + float(probability)
        return cls(**kwargs)

    def draw(self, rng: random.Random) -> str | None:
        """The fault for one request (a field name), or ``None``; always consumes one draw."""
        x = rng.random()
        for name in FAULT_KINDS:
            p: float = getattr(self, name)
            if x < p:
                return name
            x -= p
        return None

    @property
    def any(self) -> bool:
        """True when some fault has a non-zero probability."""
        return any(getattr(self, name) for name in FAULT_KINDS)

    def __repr__(self) -> str:
        parts = [f"{n}={getattr(self, n):g}" for n in FAULT_KINDS if getattr(self, n)]
        return f"Faults({', '.join(parts)})"


class SimulatorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of a simulator (see :class:`~pipeline.simulator.Simulator` for each one)."""

    rpm: float | None = None
    tpm: float | None = None
    burst: float | None = None
    quota_tokens: int | None = None
    latency: Latency = msgspec.field(default_factory=Latency)
    faults: Faults = msgspec.field(default_factory=Faults)
    seed: int | None = 0
    api_keys: tuple[str, ...] = ()
    context_window: int = 128_000
    default_max_tokens: int = 1024
    answer_tokens: tuple[int, int] = (8, 48)
    embedding_dimensions: int = 1536
    fine_tune_seconds: float = 1.0
    log_limit: int | None = 1_000_000
    models: tuple[str, ...] = ()
    policy: Policy = "second"
    window: float = 60.0
    max_in_flight: int | None = None
    overload_status: int = 429
    headers: bool = True
    retry_after: RetryAfter = "both"
    error_format: ErrorFormat = "openai"
    #: Whose rate-limit headers and 429 bodies to imitate (see ``Simulator``).
    header_style: HeaderStyle = "openai"
    model_limits: ModelLimits = msgspec.field(default_factory=dict)
    invalid_json: float = 0.0
    #: The Batch API: seconds a batch takes, the fraction of its lines answered before it
    #: expires (``None``: it completes), the enqueued-token limit per model (``None``: none).
    batch_seconds: float = 2.0
    batch_expire_after: float | None = None
    batch_queue_tokens: int | None = None

    def __post_init__(self) -> None:
        # msgspec checks these types when decoding JSON, not when the Struct is built in code.
        if self.policy not in POLICIES:
            raise ConfigError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if not (math.isfinite(self.window) and self.window > 0):
            raise ConfigError(f"window must be a positive number of seconds, got {self.window!r}")
        if self.burst is not None and self.policy == "window":
            raise ConfigError("burst sizes a bucket: it does not apply to policy='window'")
        _check_limits("", self.rpm, self.tpm, self.policy, self.window)
        for model, limits in self.model_limits.items():
            unknown = set(limits) - {"rpm", "tpm"}
            if unknown:
                raise ConfigError(f"model_limits[{model!r}] takes rpm and tpm, got "
                                  f"{sorted(unknown)}")
            _check_limits(f"model_limits[{model!r}] ", limits.get("rpm"), limits.get("tpm"),
                          self.policy, self.window)
        if self.max_in_flight is not None and (
                isinstance(self.max_in_flight, bool) or self.max_in_flight < 1):
            raise ConfigError(f"max_in_flight must be an int >= 1 or None, got "
                              f"{self.max_in_flight!r}")
        if self.overload_status not in (429, 503):
            raise ConfigError(f"overload_status must be 429 or 503, got {self.overload_status!r}")
        if self.retry_after not in RETRY_AFTER:
            raise ConfigError(f"retry_after must be one of {RETRY_AFTER}, got "
                              f"{self.retry_after!r}")
        if self.error_format not in ERROR_FORMATS:
            raise ConfigError(f"error_format must be one of {ERROR_FORMATS}, got "
                              f"{self.error_format!r}")
        if self.header_style not in HEADER_STYLES:
            raise ConfigError(f"header_style must be one of {HEADER_STYLES}, got "
                              f"{self.header_style!r}")
        if self.burst is not None and not (0 < self.burst <= 1):
            raise ConfigError(
                f"burst is a fraction of the minute limit in (0, 1], got {self.burst}")
        if self.quota_tokens is not None and self.quota_tokens < 0:
            raise ConfigError(f"quota_tokens must be >= 0, got {self.quota_tokens}")
        low, high = self.answer_tokens
        if not (1 <= low <= high):
            raise ConfigError(f"answer_tokens must be (low, high) with 1 <= low <= high, "
                              f"got {self.answer_tokens}")
        if self.context_window < 1 or self.default_max_tokens < 1:
            raise ConfigError("context_window and default_max_tokens must be >= 1")
        if self.embedding_dimensions < 1:
            raise ConfigError("embedding_dimensions must be >= 1")
        if isinstance(self.invalid_json, bool) or not isinstance(
                self.invalid_json, int | float) or not 0.0 <= self.invalid_json <= 1.0:
            raise ConfigError(f"invalid_json is a probability in [0, 1], got "
                              f"{self.invalid_json!r}")

        if not (math.isfinite(self.batch_seconds) and self.batch_seconds >= 0):
            raise ConfigError(f"batch_seconds must be >= 0, got {self.batch_seconds!r}")
        if self.batch_expire_after is not None and not 0 <= self.batch_expire_after <= 1:
            raise ConfigError(f"batch_expire_after is a fraction in [0, 1], got "
                              f"{self.batch_expire_after!r}")

    def to_json(self) -> bytes:
        """The config as JSON (API keys included: only ever sent to a child process)."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> SimulatorConfig:
        """The inverse of :meth:`to_json`."""
        return msgspec.json.decode(data, type=cls)

    def describe(self) -> dict[str, Any]:
        """A readable summary without secrets, for reprs and the CLI banner (settings left at
        their defaults are ``None``)."""
        return {"rpm": self.rpm, "tpm": self.tpm, "policy": self.policy,
                "window": self.window if self.policy == "window" else None,
                "burst": self.burst, "model_limits": self.model_limits or None,
                "quota_tokens": self.quota_tokens, "latency": self.latency,
                "faults": self.faults, "auth": bool(self.api_keys),
                "max_in_flight": self.max_in_flight,
                "overload_status": (self.overload_status if self.max_in_flight is not None
                                    else None),
                "headers": None if self.headers else "off",
                "retry_after": None if self.retry_after == "both" else self.retry_after,
                "error_format": None if self.error_format == "openai" else self.error_format,
                "header_style": None if self.header_style == "openai" else self.header_style,
                "invalid_json": self.invalid_json or None}


def _check_limits(where: str, rpm: float | None, tpm: float | None, policy: str,
                  window: float) -> None:
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where}{name} must be a positive number or None, got {value!r}")
        if policy == "window" and value * window / 60 < 1:
            raise ConfigError(f"{where}{name}={value:g} allows {value * window / 60:.3g} per "
                              f"{window:g} s window: nothing could ever pass; use a longer "
                              "window")


def parse_model_limit(text: str) -> tuple[str, dict[str, float | None]]:
    """One ``--model-limit`` item: ``"gpt-4o=500,30000"`` (either number may be empty).

    >>> parse_model_limit("gpt-4o=500,30000"), parse_model_limit("gpt-4o-mini=,200000")
    (('gpt-4o', {'rpm': 500.0, 'tpm': 30000.0}), ('gpt-4o-mini', {'rpm': None, 'tpm': 200000.0}))
    """
    model, sep, numbers = text.rpartition("=")
    rpm, comma, tpm = numbers.partition(",")
    try:
        limits = {"rpm": float(rpm) if rpm.strip() else None,
                  "tpm": float(tpm) if tpm.strip() else None}
    except ValueError:
        limits = {}
    if not (sep and comma and model.strip() and limits):
        raise ConfigError(f"bad model limit {text!r}: use MODEL=RPM,TPM (either may be empty)")
    return model.strip(), limits
