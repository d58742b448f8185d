"""The settings sweep: one fresh simulator per client setting, measured from its own log.

See :mod:`pipeline.bench` for what the figures mean and how time is compressed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import math
import random
import string
import sys
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

import msgspec

from pipeline.core.checks import percentile
from pipeline.errors import ConfigError
from pipeline.http import OpenAIService
from pipeline.limiter import (
    DEFAULT_BURST_SECONDS,
    AdaptiveLimiter,
    IntervalLimiter,
    RateLimiter,
    TokenBucketLimiter,
)
from pipeline.runner import run
from pipeline.simulator import (
    ErrorFormat,
    Faults,
    Latency,
    LogEntry,
    Policy,
    RetryAfter,
    Simulator,
    SimulatorConfig,
)
from pipeline.stages import DEFAULT_ATTEMPTS, DEFAULT_CONCURRENCY, Backoff

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

    from pipeline.core.record import Record

__all__ = [
    "Provider",
    "Setting",
    "grid",
    "run_setting",
    "sweep",
    "sweep_async",
]

LimiterKind = Literal["adaptive", "token_bucket", "interval"]
LIMITER_KINDS: tuple[str, ...] = ("adaptive", "token_bucket", "interval")

#: Columns that describe the client setting of a row (the rest are measurements).
SETTING_COLUMNS = ("limiter", "fraction", "burst_s", "concurrency", "attempts", "backoff_s")
#: Outcomes logged for requests that got past the provider's rate limit (charged to it).
_ADMITTED = frozenset({"ok", "fault:500", "fault:502", "fault:503", "fault:context_length",
                       "hang", "reset", "truncated", "malformed"})
_MODEL = "bench-model"
#: The adaptive limiter's time constants, read from its signature so the bench scales the
#: real defaults (rates per second x k, durations / k).
_ADAPTIVE_DEFAULTS: dict[str, float] = {
    name: inspect.signature(AdaptiveLimiter).parameters[name].default
    for name in ("start_rate", "recovery", "min_rate")}


# ------------------------------------------------------------------------------ settings
@dataclasses.dataclass(frozen=True, slots=True)
class Provider:
    """The provider to imitate: its limits, bucket, latency and faults.

    Args:
        rpm, tpm: requests and tokens per minute allowed (``tpm=None``: no token limit).
        burst: the share of a minute's limit the provider's bucket holds (``None``: the
            policy's own, one second for ``"second"``, a full minute for ``"minute"``;
            providers often enforce over short windows, so ``0.1`` = 6 s worth is a fair
            guess). Not for ``policy="window"``.
        policy, window, model_limits, max_in_flight, overload_status, headers, retry_after,
            error_format: the simulator's provider modes, as for
            :class:`~pipeline.simulator.Simulator` (``window`` and the limits are scaled with
            time like everything else; the bench's requests ask for model ``"bench-model"``,
            so that is the name ``model_limits`` must use to apply).
        latency: seconds (``0.2``), ``"uniform:0.1,0.3"``, ``"lognormal:0.2,0.5"`` or a
            :class:`~pipeline.simulator.Latency`.
        faults: injected fault rates, e.g. ``{"500": 0.01, "503": 0.01}``.
        seed: the seed of every simulator started (same seed: same draws for each setting).

    >>> Provider(rpm=600, tpm=100_000, latency=0.2).bucket_requests  # one second's worth
    10.0
    >>> Provider(rpm=600, policy="window", window=6).bucket_requests  # one 6 s window
    60.0
    """

    rpm: float
    tpm: float | None = None
    burst: float | None = None
    latency: Latency | float | str = 0.2
    faults: Faults | Mapping[str, float] | None = None
    seed: int = 0
    policy: Policy = "second"
    window: float = 60.0
    model_limits: Mapping[str, Mapping[str, float | None]] | None = None
    max_in_flight: int | None = None
    overload_status: int = 429
    headers: bool = True
    retry_after: RetryAfter = "both"
    error_format: ErrorFormat = "openai"

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is None and name == "tpm":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not (math.isfinite(value) and value > 0):
                raise ConfigError(f"Provider {name} must be a positive number, got {value!r}")
        if self.burst is not None and not 0 < self.burst <= 1:
            raise ConfigError(f"Provider burst is a share of a minute in (0, 1], got "
                              f"{self.burst!r}")
        if self.burst is not None and self.policy == "window":
            raise ConfigError("Provider burst sizes a bucket: it does not apply to "
                              "policy='window'")
        # Fail here, not in the middle of a sweep.
        Latency.parse(self.latency)
        Faults.parse(self.faults)
        self.simulator_options(1.0)

    @property
    def share(self) -> float:
        """The share of a minute's limit admitted at once after idling (a bucket or a window)."""
        if self.policy == "window":
            return self.window / 60.0
        if self.burst is not None:
            return self.burst
        return 1 / 60 if self.policy == "second" else 1.0

    @property
    def bucket_requests(self) -> float:
        """Requests the provider admits at once after idling."""
        return max(1.0, self.rpm * self.share)

    @property
    def bucket_tokens(self) -> float | None:
        """Tokens the provider admits at once after idling (``None``: not limited)."""
        return None if self.tpm is None else max(1.0, self.tpm * self.share)

    def simulator_options(self, k: float) -> dict[str, Any]:
        """The provider's limits and modes as :class:`~pipeline.simulator.Simulator` keyword
        arguments, time compressed ``k`` times (rates x k, durations / k; checked)."""
        if self.policy == "window":
            burst, window = None, self.window / k
        else:  # the bucket holds as many requests as the real one: rates x k, share / k
            burst, window = min(1.0, self.share / k), 60.0
        options: dict[str, Any] = dict(
            rpm=self.rpm * k, tpm=None if self.tpm is None else self.tpm * k, burst=burst,
            policy=self.policy, window=window,
            model_limits={model: {name: None if value is None else value * k
                                  for name, value in limits.items()}
                          for model, limits in (self.model_limits or {}).items()},
            max_in_flight=self.max_in_flight, overload_status=self.overload_status,
            headers=self.headers, retry_after=self.retry_after, error_format=self.error_format)
        try:
            SimulatorConfig(**options)
        except ConfigError as exc:
            raise ConfigError(f"Provider: {exc}") from None
        return options

    def describe(self) -> str:
        """One line for titles and logs."""
        tpm = "no tpm" if self.tpm is None else f"{self.tpm:,.0f} tpm"
        if self.policy == "window":
            shape = f"window {self.window:g} s"
        else:
            shape = "bucket 1 min" if self.share == 1 else f"bucket {self.share * 60:g} s"
        extras = [f"{model} {limits}" for model, limits in (self.model_limits or {}).items()]
        if self.max_in_flight is not None:
            extras.append(f"max {self.max_in_flight} in flight ({self.overload_status})")
        if not self.headers:
            extras.append("no x-ratelimit headers")
        if self.retry_after != "both":
            extras.append(f"retry-after {self.retry_after}")
        if self.error_format != "openai":
            extras.append(f"{self.error_format} 429s")
        faults = Faults.parse(self.faults)
        return (f"{self.rpm:,.0f} rpm, {tpm}, {shape}, {Latency.parse(self.latency)!r}"
                + (f", {faults!r}" if faults.any else "")
                + "".join(f", {extra}" for extra in extras))


@dataclasses.dataclass(frozen=True, slots=True)
class Setting:
    """One client configuration to try.

    Args:
        limiter: ``"adaptive"`` (:class:`~pipeline.limiter.AdaptiveLimiter`, what
            ``pipeline.run`` and ``pipeline run`` use by default: its rpm/tpm are ceilings),
            ``"token_bucket"`` (:class:`~pipeline.limiter.TokenBucketLimiter`, the static
            limiter of ``adaptive=False``) or ``"interval"``
            (:class:`~pipeline.limiter.IntervalLimiter`).
        fraction: the client limiter's rpm and tpm as a share of the provider's.
        burst_s: the bucket's size in seconds of its rate; for the interval limiter the
            window length. ``None``: each limiter's default, in the provider's time (token
            bucket: half a second of its rate; adaptive: half a second of its *effective*
            rate; interval: a one-minute window).
        concurrency: requests in flight at most.
        attempts: attempts per row (1: no retry).
        backoff_s: the first retry's wait cap, in seconds (it doubles per attempt, up to 30 s).

    >>> Setting(fraction=0.9, concurrency=16)
    Setting(limiter='token_bucket', fraction=0.9, burst_s=None, concurrency=16, attempts=6, backoff_s=0.5)
    """  # noqa: E501

    limiter: LimiterKind = "token_bucket"
    fraction: float = 1.0
    burst_s: float | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    attempts: int = DEFAULT_ATTEMPTS
    backoff_s: float = 0.5

    def __post_init__(self) -> None:
        if self.limiter not in LIMITER_KINDS:
            raise ConfigError(f"limiter must be one of {LIMITER_KINDS}, got {self.limiter!r}")
        if not (isinstance(self.fraction, int | float) and self.fraction > 0):
            raise ConfigError(f"fraction must be > 0, got {self.fraction!r}")
        if self.burst_s is not None and not self.burst_s > 0:
            raise ConfigError(f"burst_s must be > 0 seconds or None, got {self.burst_s!r}")
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or \
                self.concurrency < 1:
            raise ConfigError(f"concurrency must be a positive int, got {self.concurrency!r}")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or \
                self.attempts < 1:
            raise ConfigError(f"attempts must be an int >= 1, got {self.attempts!r}")
        if not self.backoff_s >= 0:
            raise ConfigError(f"backoff_s must be >= 0, got {self.backoff_s!r}")


def grid(*, limiters: Sequence[LimiterKind] = ("token_bucket",),
         fractions: Sequence[float] = (1.0,), bursts: Sequence[float | None] = (None,),
         concurrency: Sequence[int] = (64,), attempts: Sequence[int] = (6,),
         backoffs: Sequence[float] = (0.5,)) -> list[Setting]:
    """Every combination of the given values, as :class:`Setting` objects.

    >>> len(grid(fractions=[0.8, 1.0, 1.2], concurrency=[16, 64]))
    6
    """
    return [Setting(limiter=k, fraction=f, burst_s=b, concurrency=c, attempts=a, backoff_s=w)
            for k, f, b, c, a, w in itertools.product(limiters, fractions, bursts, concurrency,
                                                      attempts, backoffs)]


# ------------------------------------------------------------------------------ the job
def _rows(requests: int, prompt_tokens: int, seed: int) -> list[dict[str, str]]:
    """Seeded rows whose prompts cost about ``prompt_tokens`` each (0.5x to 1.5x)."""
    rng = random.Random(seed)
    rows = []
    for i in range(requests):
        chars = 4 * max(1, round(prompt_tokens * rng.uniform(0.5, 1.5)))
        words = []
        length = 0
        while length < chars:
            word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9)))
            words.append(word)
            length += len(word) + 1
        # The index keeps every body distinct, so the log can tell retries from rows.
        rows.append({"text": f"{i} {' '.join(words)}"[:chars]})
    return rows


def _cost(row: Mapping[str, str], max_tokens: int) -> int:
    # The simulator's count: ceil(chars / 4) + 4 per message + 3, plus max_tokens.
    return math.ceil(len(row["text"]) / 4) + 7 + max_tokens


def _scaled_latency(latency: Latency, k: float) -> Latency:
    if latency.kind == "lognormal":  # a is the median, b the shape: only the median scales
        return msgspec.structs.replace(latency, a=latency.a / k,
                                       per_output_token=latency.per_output_token / k)
    return msgspec.structs.replace(latency, a=latency.a / k, b=latency.b / k,
                                   per_output_token=latency.per_output_token / k)


def _median_latency(latency: Latency) -> float:
    base = (latency.a + latency.b) / 2 if latency.kind == "uniform" else latency.a
    return base + latency.per_output_token * 28  # the simulator's answers: 8-48 tokens


def auto_time_scale(provider: Provider, requests: int, tokens: int, concurrency: int,
                    target_seconds: float = 4.0) -> float:
    """How much to compress time so ``requests`` need about ``target_seconds`` at the limit.

    The unscaled run time is the largest of: what the request bucket and refill allow, what
    the token bucket and refill allow, and ``requests x latency / concurrency``. Never
    below 1 (a run already shorter than the target is not slowed down).

    >>> auto_time_scale(Provider(rpm=600, burst=0.1, latency=0.2), 300, 30_000, 64)
    6.0
    """
    need = max(0.0, requests - provider.bucket_requests) / (provider.rpm / 60)
    if provider.tpm is not None and provider.bucket_tokens is not None:
        need = max(need, max(0.0, tokens - provider.bucket_tokens) / (provider.tpm / 60))
    need = max(need, requests * _median_latency(Latency.parse(provider.latency)) / concurrency)
    return max(1.0, need / target_seconds)


def _limiter(setting: Setting, provider: Provider, k: float,
             shared_limit: str | None = None) -> RateLimiter:
    """The client limiter of ``setting``, in compressed time (interval 60 / k).

    Rates are per compressed minute and bucket sizes in requests and tokens, the same number
    as in the provider's time: a default bucket is sized here, from the provider-time
    default, because the limiter's own default (half a second of its rate) would hold k
    times too much in compressed time. The adaptive limiter's time constants (``start_rate``,
    ``recovery``, ``min_rate``) are scaled the same way, and so are its controller's own
    timings (``time_scale=k``: slow-start steps, its meters, the cut gap); its default bucket
    stays its own (half a second of the *effective* rate, empty at the start).

    With ``shared_limit`` (a ``redis://`` URL) a token-bucket or adaptive setting is a
    :class:`~pipeline.limiter.RedisLimiter` of the same rates, burst and controller (fixed
    for a token bucket), on a key of its own (a fresh bucket per setting: settings must not
    spend each other's quota).
    """
    rpm = provider.rpm * setting.fraction
    tpm = None if provider.tpm is None else provider.tpm * setting.fraction
    if setting.limiter == "interval":
        window = 60.0 if setting.burst_s is None else setting.burst_s
        share = window / 60.0
        return IntervalLimiter(rpm * share, None if tpm is None else tpm * share,
                               interval=window / k)
    if setting.limiter == "adaptive":
        burst_r = burst_t = None
        if setting.burst_s is not None:
            burst_r = max(1.0, rpm / 60 * setting.burst_s)
            burst_t = None if tpm is None else tpm / 60 * setting.burst_s
        defaults = _ADAPTIVE_DEFAULTS
        start_rate, min_rate = defaults["start_rate"] * k, defaults["min_rate"] * k
        recovery = defaults["recovery"] / k
        if shared_limit is not None:
            from pipeline.limiter import RedisLimiter

            return RedisLimiter(shared_limit, key=f"pipeline:bench:{uuid.uuid4().hex}",
                                max_requests=rpm, max_tokens=tpm, interval=60.0 / k,
                                burst_requests=burst_r, burst_tokens=burst_t,
                                start_rate=start_rate, recovery=recovery, min_rate=min_rate,
                                time_scale=k)
        return AdaptiveLimiter(rpm, tpm, interval=60.0 / k, burst_requests=burst_r,
                               burst_tokens=burst_t, start_rate=start_rate, recovery=recovery,
                               min_rate=min_rate, time_scale=k)
    seconds = DEFAULT_BURST_SECONDS if setting.burst_s is None else setting.burst_s
    burst_r = max(1.0, rpm / 60 * seconds)
    burst_t = None if tpm is None else tpm / 60 * seconds
    if shared_limit is not None:
        from pipeline.limiter import RedisLimiter

        return RedisLimiter(shared_limit, key=f"pipeline:bench:{uuid.uuid4().hex}",
                            max_requests=rpm, max_tokens=tpm, interval=60.0 / k,
                            adaptive=False, burst_requests=burst_r, burst_tokens=burst_t)
    return TokenBucketLimiter(rpm, tpm, interval=60.0 / k, burst_requests=burst_r,
                              burst_tokens=burst_t)


def _measure(log: list[LogEntry], records: list[Record], setting: Setting, provider: Provider,
             k: float, wall: float, cpu: float) -> dict[str, Any]:
    """One table row: the setting, then figures from the simulator's log (and the client's
    records for failures and per-row latency), in the provider's time."""
    api = [e for e in log if not e.path.startswith("/_sim")]
    ok = sum(1 for e in api if e.outcome == "ok")
    admitted_requests = sum(1 for e in api if e.outcome in _ADMITTED)
    admitted_tokens = sum(e.tokens for e in api if e.outcome in _ADMITTED)
    ok_tokens = sum(e.prompt_tokens + e.completion_tokens for e in api if e.outcome == "ok")
    run_s = wall * k  # what the run would take against the real provider
    allowed_r = provider.bucket_requests + provider.rpm / 60 * run_s
    util_tok = math.nan
    if provider.tpm is not None and provider.bucket_tokens is not None:
        util_tok = admitted_tokens / (provider.bucket_tokens + provider.tpm / 60 * run_s)
    row_latency = sorted((r.finished - r.started) * k for r in records
                         if r.finished and r.started)
    return {
        "limiter": setting.limiter,
        "fraction": setting.fraction,
        "burst_s": setting.burst_s if setting.burst_s is not None else math.nan,
        "concurrency": setting.concurrency,
        "attempts": setting.attempts,
        "backoff_s": setting.backoff_s,
        "run_s": run_s,
        "wall_s": wall,
        "req_per_s": ok / run_s if run_s else math.nan,
        "tok_per_s": ok_tokens / run_s if run_s else math.nan,
        "util_req": admitted_requests / allowed_r,
        "util_tok": util_tok,
        "n_429": sum(1 for e in api if e.outcome == "rate_limited"),
        "sent": len(api),
        "retries": len(api) - len({e.body_hash for e in api}),
        "failed": sum(1 for r in records if r.error is not None),
        "p50_s": percentile(row_latency, 0.50) if row_latency else math.nan,
        "p95_s": percentile(row_latency, 0.95) if row_latency else math.nan,
        "p99_s": percentile(row_latency, 0.99) if row_latency else math.nan,
        "cpu_s": cpu,
    }


async def run_setting(provider: Provider, setting: Setting, *, requests: int = 300,
                      prompt_tokens: int = 100, max_tokens: int = 50, time_scale: float = 1.0,
                      timeout: float = 60.0, process: bool = True,
                      shared_limit: str | None = None) -> dict[str, Any]:
    """Run one setting against a fresh simulator; return its table row (see :func:`sweep`).

    For example, inside a coroutine (or a notebook cell)::

        row = await run_setting(Provider(rpm=6000, latency=0.05), Setting(), requests=50)
    """
    k = float(time_scale)
    if not (math.isfinite(k) and k > 0):
        raise ConfigError(f"time_scale must be a positive number, got {time_scale!r}")
    rows = _rows(requests, prompt_tokens, provider.seed)
    latency = _scaled_latency(Latency.parse(provider.latency), k)
    sim = Simulator(**provider.simulator_options(k), latency=latency,
                    faults=Faults.parse(provider.faults), seed=provider.seed,
                    answer_tokens=(min(8, max_tokens), max_tokens), process=process)
    await asyncio.to_thread(sim.start)
    limiter = _limiter(setting, provider, k, shared_limit)
    try:
        service = OpenAIService(api_key="sk-bench", base_url=sim.base_url,
                                timeout=timeout / k, max_connections=max(setting.concurrency, 8),
                                limits={"chat/completions": {"limiter": limiter}})
        job = service.chat(model=_MODEL, prompt="{text}", max_tokens=max_tokens)
        backoff = Backoff(initial=setting.backoff_s / k, maximum=30.0 / k,
                          rng=random.Random(provider.seed))
        async with service:
            cpu0, t0 = time.thread_time(), time.perf_counter()
            results = await run(rows, job, concurrency=setting.concurrency,
                                attempts=setting.attempts, backoff=backoff)
            wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
        log = await asyncio.to_thread(sim.log)
    finally:
        close = getattr(limiter, "aclose", None)
        if close is not None:  # a RedisLimiter: its connection and its key's leases
            await close()
        await asyncio.to_thread(sim.stop)
    return _measure(log, list(results.scan()), setting, provider, k, wall, cpu)


async def sweep_async(provider: Provider, settings: Iterable[Setting] | None = None, *,
                      requests: int = 300, prompt_tokens: int = 100, max_tokens: int = 50,
                      time_scale: float | None = None, target_seconds: float = 4.0,
                      timeout: float = 60.0, process: bool = True, verbose: bool = False,
                      polars: bool = False,
                      shared_limit: str | None = None) -> pd.DataFrame | pl.DataFrame:
    """Run every setting against a fresh simulator like ``provider``; one row per setting.

    Args:
        provider: the provider to imitate.
        settings: client settings to try (see :func:`grid`); default: one :class:`Setting`.
        requests: chat requests per setting, each a seeded prompt of about
            ``prompt_tokens`` (0.5x-1.5x) asking for at most ``max_tokens``.
        time_scale: compress time this many times (see the module docs); ``None``: so that
            the largest concurrency needs about ``target_seconds`` per setting.
        timeout: the client's read timeout, in provider seconds (matters with hang faults).
        process: run each simulator in a subprocess (honest CPU and timing); ``False``: a
            thread (faster to start, shares the GIL with the client).
        verbose: print a line per setting to stderr as it finishes.
        polars: return a Polars DataFrame instead of pandas.
        shared_limit: a ``redis://HOST:PORT/DB`` URL: token-bucket and adaptive settings run
            on a :class:`~pipeline.limiter.RedisLimiter` there (a fresh key each), to see what
            the shared limiter does to throughput and 429s before several processes share it.
            The controller's times are compressed; its lease and sync times are not: prefer
            ``time_scale`` near 1.

    Columns: the setting (``limiter fraction burst_s concurrency attempts backoff_s``), then
    ``run_s`` (run time in provider seconds), ``wall_s`` (real seconds here), ``req_per_s``
    and ``tok_per_s`` (requests answered ok and their ``usage`` tokens, per provider second),
    ``util_req``/``util_tok`` (requests and charged tokens the provider admitted / what it
    would have admitted in that time: its bucket plus its refill), ``n_429``, ``sent``,
    ``retries`` (sent - distinct request bodies), ``failed`` (rows that finally failed),
    ``p50_s p95_s p99_s`` (per-row time from start to done, limiter waits and retries
    included, provider seconds) and ``cpu_s`` (client CPU seconds, not scaled: the same work
    as the real run). ``df.attrs`` holds the provider, the time scale and ``requests``.

    Warns when the provider's bucket holds the whole job (no limit would ever bind).

    For example, inside a coroutine (or a notebook cell)::

        df = await sweep_async(Provider(rpm=600, tpm=100_000, burst=0.1),
                               grid(fractions=[0.8, 1.0, 1.2]), requests=300)
    """
    import pandas as pd

    chosen = list(settings) if settings is not None else [Setting()]
    if not chosen:
        raise ConfigError("sweep needs at least one setting")
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
        raise ConfigError(f"requests must be a positive int, got {requests!r}")
    tokens = sum(_cost(r, max_tokens) for r in _rows(requests, prompt_tokens, provider.seed))
    if requests <= provider.bucket_requests and (provider.bucket_tokens is None
                                                 or tokens <= provider.bucket_tokens):
        warnings.warn(f"the provider's bucket holds all {requests} requests ({tokens:,} tokens): "
                      "no rate limit will bind; send more requests or give a smaller burst",
                      stacklevel=2)
    if shared_limit is not None:
        from pipeline.limiter import check_redis_url

        check_redis_url(shared_limit)  # a typo or a missing redis-py: before any setting runs
    if time_scale is None:
        time_scale = auto_time_scale(provider, requests, tokens,
                                     max(s.concurrency for s in chosen), target_seconds)
    rows = []
    for number, setting in enumerate(chosen, 1):
        row = await run_setting(provider, setting, requests=requests,
                                prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                                time_scale=time_scale, timeout=timeout, process=process,
                                shared_limit=shared_limit if setting.limiter in
                                ("token_bucket", "adaptive") else None)
        rows.append(row)
        if verbose:
            print(f"[{number}/{len(chosen)}] {setting.limiter} x{setting.fraction:g} "
                  f"burst={setting.burst_s} c={setting.concurrency}: "
                  f"{row['req_per_s']:.2f} req/s, util {row['util_req']:.2f}, "
                  f"{row['n_429']} x 429, {row['wall_s']:.1f} s", file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    df.attrs["provider"] = provider.describe()
    df.attrs["time_scale"] = time_scale
    df.attrs["requests"] = requests
    if polars:
        import polars as pl

        return pl.from_pandas(df)
    return df


class _SweepOptions(TypedDict, total=False):
    """The keyword arguments of :func:`sweep_async`, which :func:`sweep` passes on."""

    requests: int
    prompt_tokens: int
    max_tokens: int
    time_scale: float | None
    target_seconds: float
    timeout: float
    process: bool
    verbose: bool
    polars: bool
    shared_limit: str | None


def sweep(provider: Provider, settings: Iterable[Setting] | None = None,
          **options: Unpack[_SweepOptions]) -> pd.DataFrame | pl.DataFrame:
    """:func:`sweep_async` from plain code (a script); in a notebook ``await sweep_async``.

    For example, inside a coroutine (or a notebook cell)::

        df = sweep(Provider(rpm=600, tpm=100_000, burst=0.1), grid(concurrency=[16, 64]))
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(sweep_async(provider, settings, **options))
    raise RuntimeError("sweep() cannot run inside a running event loop (as in Jupyter); "
                       "use `await sweep_async(...)` there")
