"""The default policy: a token bucket refilled continuously on both dimensions."""

from __future__ import annotations

from pipeline.limiter._base import RateLimiter
from pipeline.limiter._values import _SLACK, DEFAULT_BURST_SECONDS, _check_rate

__all__ = ["TokenBucketLimiter"]


class TokenBucketLimiter(RateLimiter):
    """Continuous refill on both dimensions (a token bucket; equivalently GCRA).

    Args:
        max_requests: requests per ``interval`` (``None``: not limited).
        max_tokens: tokens per ``interval`` (``None``: not limited).
        interval: seconds; 60 makes the limits "per minute", like OpenAI's RPM and TPM.
        burst_requests: bucket size in requests: the most granted at once after idling.
            Defaults to half a second of the rate (``DEFAULT_BURST_SECONDS``): providers
            enforce per-minute limits over windows as short as a second, so a bucket holding
            a full minute would burst straight into 429s.
        burst_tokens: bucket size in tokens, by default half a second of the rate too.

    In every window of length ``W`` it grants at most ``rate * W + burst`` on each dimension.
    The bucket starts full. A request larger than the bucket (a long prompt on a modest
    tokens-per-minute limit) is granted once the bucket is full, and the bucket then owes the
    difference, so the long-run rate holds; only a request above the whole ``max_tokens`` per
    ``interval`` can never be granted (:class:`~pipeline.errors.RequestTooLarge`).

    >>> limiter = TokenBucketLimiter(max_requests=5_000, max_tokens=2_000_000)
    >>> limiter
    <TokenBucketLimiter requests=42/5,000 per min tokens=16,667/2,000,000 per min waiters=0>
    >>> limiter.try_acquire(tokens=50_000)   # larger than the bucket: granted when it is full
    True
    >>> limiter.try_acquire(tokens=1)        # ... and then the bucket owes the difference
    False
    """

    __slots__ = ("_burst_r", "_burst_t", "_level_r", "_level_t", "_rate_r", "_rate_t",
                 "_stamp", "_user_burst_r", "_user_burst_t")

    def __init__(self, max_requests: float | None = None, max_tokens: float | None = None, *,
                 interval: float = 60.0, burst_requests: float | None = None,
                 burst_tokens: float | None = None) -> None:
        super().__init__(max_requests, max_tokens, interval)
        self._user_burst_r = _check_rate("burst_requests", burst_requests)
        self._user_burst_t = _check_rate("burst_tokens", burst_tokens)
        self._stamp: float | None = None  # set at first use, in the clock of that loop
        self._level_r = self._level_t = 0.0
        self._rate_r = self._rate_t = 0.0
        self._burst_r: float | None = None
        self._burst_t: float | None = None
        self._configure()
        self._level_r = self._burst_r or 0.0
        self._level_t = self._burst_t or 0.0

    def _fast_take(self, requests: float, tokens: float, now: float) -> bool:
        # _delay + _take fused, with the refill inlined: this is every uncontended acquire.
        stamp = self._stamp
        burst_r = self._burst_r
        burst_t = self._burst_t
        level_r = self._level_r
        level_t = self._level_t
        if stamp is None or now < stamp:
            self._stamp = now  # first use, or a loop whose clock is behind: nothing to credit
        elif now > stamp:
            elapsed = now - stamp
            if burst_r is not None:
                level_r += elapsed * self._rate_r
                if level_r > burst_r:
                    level_r = burst_r
            if burst_t is not None:
                level_t += elapsed * self._rate_t
                if level_t > burst_t:
                    level_t = burst_t
            self._stamp = now
        fits = True
        if requests and burst_r is not None:
            need = burst_r if requests > burst_r else requests  # oversized: a full bucket
            if need - level_r > _SLACK * need:
                fits = False
        if fits and tokens and burst_t is not None:
            need = burst_t if tokens > burst_t else tokens
            if need - level_t > _SLACK * need:
                fits = False
        if fits:
            level_r -= requests
            level_t -= tokens
        self._level_r = level_r
        self._level_t = level_t
        return fits

    def _scale_burst(self, requests_factor: float, tokens_factor: float) -> None:
        # A burst chosen for the old limit is too large for the new one: keep its proportion.
        if self._user_burst_r is not None:
            self._user_burst_r *= requests_factor
        if self._user_burst_t is not None:
            self._user_burst_t *= tokens_factor

    def _configure(self) -> None:
        if self._max_requests is None:
            self._burst_r = None
        else:
            self._rate_r = self._max_requests / self._interval
            self._burst_r = self._user_burst_r or self._rate_r * DEFAULT_BURST_SECONDS
        if self._max_tokens is None:
            self._burst_t = None
        else:
            self._rate_t = self._max_tokens / self._interval
            self._burst_t = self._user_burst_t or self._rate_t * DEFAULT_BURST_SECONDS
        self._limits_changed()

    def _refill(self, now: float) -> None:
        if self._stamp is None or now < self._stamp:
            # First use, or a different loop whose clock is behind: no refill to credit.
            self._stamp = now
            return
        elapsed = now - self._stamp
        if elapsed > 0:
            # Capped with a comparison, not min(): on CPython 3.11 a two-argument min() call
            # costs more than the rest of this refill put together.
            burst = self._burst_r
            if burst is not None:
                level = self._level_r + elapsed * self._rate_r
                self._level_r = burst if level > burst else level
            burst = self._burst_t
            if burst is not None:
                level = self._level_t + elapsed * self._rate_t
                self._level_t = burst if level > burst else level
            self._stamp = now

    def _delay(self, requests: float, tokens: float, now: float) -> float:
        self._refill(now)
        delay = 0.0
        # Shortfalls within rounding error count as fitting: a timer armed for
        # ``now + 1e-17`` would fire at ``now`` again, and again, forever.
        # A dimension the request does not use (0 requests, 0 tokens) never holds it up,
        # not even when a debt has driven that bucket below zero.
        # A request larger than the bucket waits for a full bucket (then owes the rest).
        burst = self._burst_r
        if requests and burst is not None:
            need = burst if requests > burst else requests
            if need - self._level_r > _SLACK * need:
                delay = (need - self._level_r) / self._rate_r
        burst = self._burst_t
        if tokens and burst is not None:
            need = burst if tokens > burst else tokens
            if need - self._level_t > _SLACK * need:
                delay = max(delay, (need - self._level_t) / self._rate_t)
        return delay

    def _take(self, requests: float, tokens: float, now: float) -> None:
        self._refill(now)
        self._level_r -= requests
        self._level_t -= tokens

    def _give(self, requests: float, tokens: float, now: float) -> None:
        self._refill(now)
        if self._burst_r is not None:
            self._level_r = min(self._burst_r, self._level_r + requests)
        if self._burst_t is not None:
            self._level_t = min(self._burst_t, self._level_t + tokens)

    def _available(self, now: float) -> tuple[float | None, float | None]:
        self._refill(now)
        return (None if self._burst_r is None else self._level_r,
                None if self._burst_t is None else self._level_t)

    def _capacity(self) -> tuple[float | None, float | None]:
        # The most one grant may take: a full interval's limit (or the bucket, if larger).
        cap_r = None if self._burst_r is None or self._max_requests is None else \
            max(self._burst_r, self._max_requests)
        cap_t = None if self._burst_t is None or self._max_tokens is None else \
            max(self._burst_t, self._max_tokens)
        return cap_r, cap_t

    def _rates_changed(self, now: float) -> None:
        self._refill(now)
        was_r, was_t = self._burst_r, self._burst_t
        self._configure()
        # A dimension that just became limited starts full; existing levels are capped.
        if self._burst_r is not None:
            self._level_r = self._burst_r if was_r is None else min(self._level_r, self._burst_r)
        if self._burst_t is not None:
            self._level_t = self._burst_t if was_t is None else min(self._level_t, self._burst_t)


