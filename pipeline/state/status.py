"""StatusTracker: what a run is doing, as counters, a progress bar and a table.

>>> tracker = StatusTracker()
>>> tracker.started += 1; tracker.succeeded += 1
>>> print(tracker.summary().splitlines()[0])
StatusTracker: 1 started, 0 in progress, 1 succeeded, 0 failed
"""

from __future__ import annotations

import time
import weakref
from array import array
from typing import TYPE_CHECKING, Any

from pipeline.core.checks import percentile
from pipeline.core.display import html_table
from pipeline.core.protocols import LimiterLike
from pipeline.core.record import Record
from pipeline.core.request import Response
from pipeline.errors import APIError, RateLimitError, SchemaValidationError, TransportError
from pipeline.pricing.cost import Prices, record_cached_tokens, record_model, usd

if TYPE_CHECKING:
    from pipeline.state.guard import RunGuard

__all__ = ["StatusTracker"]


class StatusTracker:
    """Counters for one or more runs.

    The seed's counters (``started``, ``in_progress``, ``succeeded``, ``failed``,
    ``rate_limit_errors``, ``api_errors``, ``other_errors``) plus ``cached``, ``retries``,
    ``prompt_tokens``, ``completion_tokens`` and latency percentiles. A rate-limit error or an
    API error is counted per *attempt* (as they happen, retried or not); ``failed`` counts
    records that finally failed. An answer that did not fit the job's schema is not an API
    error: ``reasks`` counts those asked again, ``schema_errors`` the last ones (their rows
    failed).

    Retries and re-asks are counted whether the tracker hears of them as they happen (a
    retry stage's ``hooks``) or only from the finished record (``record.earlier_errors``,
    which a track stage passes on); each one once.

    In a notebook the tracker renders as an HTML table; ``print(tracker)`` gives a text one.
    """

    def __init__(self) -> None:
        self.started = 0
        self.in_progress = 0
        self.succeeded = 0
        self.failed = 0
        self.rate_limit_errors = 0
        self.api_errors = 0
        #: Attempts that got no answer at all (timeouts, refused or broken connections): also
        #: counted in ``api_errors``, shown apart because the cure is different.
        self.connection_errors = 0
        self.other_errors = 0
        self.cached = 0
        #: Rows answered by a request they shared with other rows (embeddings in batches).
        self.batched_rows = 0
        self._requests = 0.0  # each answered row adds 1 / (rows that shared its request)
        self.retries = 0
        #: Structured answers asked again because they did not fit the schema.
        self.reasks = 0
        #: Answers that did not fit the schema and were not asked again: their rows failed
        #: with :class:`~pipeline.errors.SchemaValidationError` (not API errors).
        self.schema_errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.errors_by_type: dict[str, int] = {}
        #: The first message of each failure class (what to show on a console).
        self.first_errors: dict[str, str] = {}
        #: The limiter of the tracked endpoint, when known (its effective rate is shown).
        self.limiter: LimiterLike | None = None
        #: The run's :class:`~pipeline.state.guard.RunGuard`, when known (why a run stopped).
        self.guard: RunGuard | None = None
        #: The :class:`~pipeline.pricing.cost.Prices` to cost answers with (``default_flow``
        #: sets the defaults); ``None``: no cost row.
        self.prices: Prices | None = None
        #: USD paid for the answers counted so far, thrown-away ones included (cached: 0).
        self.cost = 0.0
        #: Models answered without a known price (or answers without usage): cost unknown.
        self.unpriced: set[str] = set()
        self._latencies = array("d")  # 8 bytes a request, even for a million rows
        self._t0: float | None = None
        self._t1: float | None = None
        # Errors heard through the retry hooks, by id, until their record finishes: the
        # record carries them too (earlier_errors), and each is counted once. Weak: a
        # record dropped before it finishes (a filter) leaves nothing behind.
        self._heard: weakref.WeakValueDictionary[int, BaseException] = \
            weakref.WeakValueDictionary()

    # ---------------------------------------------------------------- updates from stages
    def record_started(self, record: Record) -> None:
        """A record entered the tracked part of the pipeline."""
        if self._t0 is None:
            self._t0 = time.perf_counter()
        self.started += 1
        self.in_progress += 1

    def record_attempt_error(self, error: BaseException) -> None:
        """One attempt failed (it may still be retried)."""
        if isinstance(error, RateLimitError):
            self.rate_limit_errors += 1
        elif isinstance(error, SchemaValidationError):
            self.schema_errors += 1
        elif isinstance(error, APIError):
            self.api_errors += 1
            if isinstance(error, TransportError):
                self.connection_errors += 1
        else:
            self.other_errors += 1

    def on_retry(self, record: Record, error: BaseException, attempt: int,
                 delay: float) -> None:
        """Retry hook (see :class:`~pipeline.stages.retry`): count the error and the retry
        now (the progress bar shows it while the row waits)."""
        self.record_attempt_error(error)
        self.retries += 1
        self._hear(error)

    def on_reask(self, record: Record, error: BaseException) -> None:
        """Re-ask hook (see :class:`~pipeline.stages.retry`): an answer did not fit its
        schema and is asked again. Its tokens were billed: the record keeps them
        (``record.discarded_*_tokens``) and they are counted when the record finishes."""
        self.reasks += 1
        self._hear(error)

    def _hear(self, error: BaseException) -> None:
        try:
            self._heard[id(error)] = error
        except TypeError:  # an object without weak references: counted again at the end
            pass

    def _count_earlier_attempts(self, record: Record) -> None:
        # The retries and re-asks of this record that no hook told this tracker of.
        heard = self._heard
        for error in record.earlier_errors or ():
            if heard.get(id(error)) is error:
                del heard[id(error)]
            elif isinstance(error, SchemaValidationError):
                self.reasks += 1
            else:
                self.record_attempt_error(error)
                self.retries += 1

    def record_finished(self, record: Record) -> None:
        """A record reached the end: count its outcome, tokens, cost and latency, and the
        retries and re-asks it went through that no retry hook told of."""
        self.in_progress -= 1
        self._t1 = record.finished or time.perf_counter()
        if record.earlier_errors:
            self._count_earlier_attempts(record)
        self._count_paid(record)
        if record.error is not None:
            self.failed += 1
            name = type(record.error).__name__
            self.errors_by_type[name] = self.errors_by_type.get(name, 0) + 1
            if name not in self.first_errors:
                self.first_errors[name] = str(record.error)
            return
        self.succeeded += 1
        if record.cached:
            self.cached += 1
            return
        response = record.response
        if response is not None:
            if record.batched > 1:
                self.batched_rows += 1
                self._requests += 1.0 / record.batched
            else:
                self._requests += 1.0
            self._latencies.append(response.latency)

    def _count_paid(self, record: Record) -> None:
        # Every answer billed for this row: kept, thrown away by a re-ask, or the last one
        # that did not fit its schema (the same rule as Prices.record_cost).
        if self._count_plain(record):
            return
        paid = record.paid_tokens()
        if paid is not None:
            self.prompt_tokens += paid[0]
            self.completion_tokens += paid[1]
        prices = self.prices
        if prices is None or paid == (0, 0):
            return
        # No warning here: the table's cost row names unpriced models.
        model = record_model(record) if paid is not None else None  # looked up once a row
        if paid is not None and type(prices) is Prices:
            # Prices.record_cost with the paid tokens reckoned once (every row passes here).
            cost = prices.cost(model, paid[0], paid[1],
                               cached_tokens=record_cached_tokens(record), say=False,
                               batch=record.batch_id is not None)
        else:
            cost = prices.record_cost(record, say=False)
        if cost is None:
            self.unpriced.add(model or "(no model)" if paid is not None
                              else "(answers without usage)")
        else:
            self.cost += cost

    def _count_plain(self, record: Record) -> bool:
        # The usual row in one pass over its answer: one plain answer, sent (not cached),
        # no error, nothing thrown away, usage in plain ints, the default Prices. What
        # paid_tokens, record_model, record_cached_tokens and Prices.cost would count (each
        # reads the body again; this runs for every row). False: not such a row, count it
        # the long way.
        response = record.response
        if type(response) is not Response or record.error is not None or record.cached or \
                record.discarded_prompt_tokens or record.discarded_completion_tokens:
            return False
        body = response.body
        raw = body.get("usage") if type(body) is dict else None
        if type(raw) is not dict:
            return False
        prompt = raw.get("prompt_tokens", 0)
        completion = raw.get("completion_tokens", 0)
        if type(prompt) is not int or type(completion) is not int or \
                type(raw.get("total_tokens", 0)) is not int:
            return False
        prices = self.prices
        if prices is not None and type(prices) is not Prices:
            return False
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        if prices is None or (prompt == 0 and completion == 0):
            return True
        request = record.request
        asked = request.body.get("model") if request is not None and \
            isinstance(request.body, dict) else None
        model = asked if isinstance(asked, str) and asked else body.get("model")
        if not isinstance(model, str) or not model:
            model = None
        details = raw.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if type(details) is dict else None
        cost = prices.cost(model, prompt, completion,
                           cached_tokens=cached if type(cached) is int and cached > 0 else 0,
                           say=False, batch=record.batch_id is not None)
        if cost is None:
            self.unpriced.add(model or "(no model)")
        else:
            self.cost += cost
        return True

    # ---------------------------------------------------------------- reading
    @property
    def requests(self) -> int:
        """Requests that answered rows (not cached): fewer than the rows they answered when
        embeddings went in batches.

        >>> from pipeline.core.request import Response
        >>> tracker = StatusTracker()
        >>> for i in range(4):
        ...     tracker.record_started(Record(index=i))
        ...     tracker.record_finished(Record(index=i, response=Response(status=200, body={}),
        ...                                    batched=4))
        >>> tracker.requests, tracker.batched_rows
        (1, 4)
        """
        return round(self._requests)

    @property
    def finished(self) -> int:
        """Records that succeeded or failed."""
        return self.succeeded + self.failed

    @property
    def elapsed(self) -> float:
        """Seconds from the first record started to the last finished."""
        if self._t0 is None:
            return 0.0
        return (self._t1 or time.perf_counter()) - self._t0

    def latency_percentiles(self) -> dict[str, float]:
        """p50, p95 and p99 of the HTTP round trip of successful, uncached requests (s)."""
        values = sorted(self._latencies)
        return {f"p{int(q * 100)}": percentile(values, q) for q in (0.5, 0.95, 0.99)}

    @property
    def stopped(self) -> str | None:
        """Why the run stopped early (``None``: it did not)."""
        stopped = None if self.guard is None else self.guard.stopped
        return None if stopped is None else str(stopped)

    def rate_text(self) -> str:
        """The limiter's effective rate and ceiling, for a progress bar ("" if no limiter).

        >>> from pipeline.limiter import AdaptiveLimiter
        >>> tracker = StatusTracker(); tracker.limiter = AdaptiveLimiter(max_requests=6_000)
        >>> tracker.rate_text()
        'rate 6,000/6,000 req/min (at ceiling)'
        >>> tracker.limiter = AdaptiveLimiter(); tracker.rate_text()
        'rate 1,200/? req/min (slow start)'
        """
        own = getattr(self.limiter, "rate_text", None)
        if callable(own):  # several deployments: each one's answers and rate
            return f"rate {own()}"
        snapshot = getattr(self.limiter, "snapshot", None)
        if snapshot is None:
            return ""
        snap = snapshot()
        per = 60.0 / snap.interval
        adaptive = snap.mode != "static"
        parts = []
        for unit, rate, ceiling in (("req", snap.max_requests, snap.ceiling_requests),
                                    ("tok", snap.max_tokens, snap.ceiling_tokens)):
            if rate is None:
                continue
            text = f"{rate * per:,.0f}"
            if adaptive:
                text += "/?" if ceiling is None else f"/{ceiling * per:,.0f}"
            parts.append(f"{text} {unit}/min")
        if not parts:
            return ""
        text = "rate " + ", ".join(parts)
        if adaptive:
            text += f" ({snap.mode})"
        if snap.max_in_flight is not None:
            text += f", at most {snap.max_in_flight:.0f} in flight"
        return text

    def cost_text(self) -> str:
        """The cost so far, for the table.

        >>> from pipeline.pricing.cost import Prices
        >>> tracker = StatusTracker(); tracker.prices = Prices(); tracker.cost = 0.0375
        >>> tracker.cost_text()
        '$0.0375 (prices: as published by OpenAI, 2025)'
        """
        if self.unpriced:
            return (f"unknown: no price for {', '.join(sorted(self.unpriced))} "
                    f"({usd(self.cost)} for the rest)")
        source = "?" if self.prices is None else self.prices.source
        return f"{usd(self.cost)} (prices: {source})"

    def as_dict(self) -> dict[str, Any]:
        """All counters as a plain dict (for logs, JSON or a DataFrame)."""
        return {
            "started": self.started, "in_progress": self.in_progress,
            "succeeded": self.succeeded, "failed": self.failed,
            "rate_limit_errors": self.rate_limit_errors, "api_errors": self.api_errors,
            "connection_errors": self.connection_errors,
            "other_errors": self.other_errors, "cached": self.cached, "retries": self.retries,
            "requests": self.requests, "batched_rows": self.batched_rows,
            "reasks": self.reasks, "schema_errors": self.schema_errors,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "elapsed_s": round(self.elapsed, 3),
            "cost_usd": None if self.prices is None or self.unpriced else self.cost,
            **{f"latency_{k}_s": round(v, 4) for k, v in self.latency_percentiles().items()},
            "errors_by_type": dict(self.errors_by_type),
        }

    def _rows(self) -> list[tuple[str, str]]:
        lat = self.latency_percentiles()
        sent = len(self._latencies) > 0
        rows = [
            ("succeeded", f"{self.succeeded:,}" + (f" ({self.cached:,} cached)"
                                                  if self.cached else "")),
            ("failed", f"{self.failed:,}"),
            *([("requests (rows per request)",
                f"{self.requests:,} ({(self.succeeded - self.cached) / self.requests:,.1f} "
                "rows each)")] if self.batched_rows and self.requests else []),
            ("in progress", f"{self.in_progress:,}"),
            ("retries", f"{self.retries:,}"),
            # Only runs that asked for structured answers can re-ask: others need no row.
            *([("re-asks (answers not fitting the schema)", f"{self.reasks:,}"),
               ("answers not fitting the schema (failed)", f"{self.schema_errors:,}")]
              if self.reasks or self.schema_errors else []),
            ("rate-limit errors (429)", f"{self.rate_limit_errors:,}"),
            ("other API errors", f"{self.api_errors - self.connection_errors:,}"),
            ("no answer (timeouts, connections)", f"{self.connection_errors:,}"),
            ("other errors", f"{self.other_errors:,}"),
            ("tokens (prompt / completion)",
             f"{self.prompt_tokens:,} / {self.completion_tokens:,}"),
            ("latency p50 / p95 / p99",
             f"{lat['p50']:.3f} / {lat['p95']:.3f} / {lat['p99']:.3f} s" if sent
             else "(no answers from the server)"),
            ("elapsed", f"{self.elapsed:.2f} s" + (
                f" ({self.finished / self.elapsed:,.1f} rows/s)"
                if sent and self.elapsed > 0 else "")),
        ]
        if self.prices is not None:
            rows.append(("cost", self.cost_text()))
        limiter_rate = self.rate_text()
        if limiter_rate:
            rows.append(("limiter", limiter_rate.removeprefix("rate ")))
        if self.stopped:
            rows.append(("stopped", self.stopped))
        if self.errors_by_type:
            kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors_by_type.items()))
            rows.append(("failures by type", kinds))
            for name, message in sorted(self.first_errors.items()):
                if name == "RunStoppedError" and self.stopped:
                    continue  # said once, in "stopped"
                rows.append((f"first {name}", message))
        return rows

    def summary(self) -> str:
        """A plain-text table of the counters."""
        head = (f"StatusTracker: {self.started:,} started, {self.in_progress:,} in progress, "
                f"{self.succeeded:,} succeeded, {self.failed:,} failed")
        width = max(len(k) for k, _ in self._rows())
        return "\n".join([head, *(f"  {k:<{width}}  {v}" for k, v in self._rows())])

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (f"<StatusTracker started={self.started} in_progress={self.in_progress} "
                f"succeeded={self.succeeded} failed={self.failed} cached={self.cached} "
                f"retries={self.retries} rate_limit_errors={self.rate_limit_errors}>")

    def _repr_html_(self) -> str:
        return html_table("StatusTracker", self._rows())
