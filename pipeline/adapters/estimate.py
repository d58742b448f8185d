"""Plan a run before anything is sent: :func:`estimate`.

Rows, estimated prompt tokens, output tokens at most (``max_tokens``: an upper bound), rows
the cache already answers, the time the rate limits allow and the cost range::

    print(pipeline.estimate(rows, job, cache=".cache"))
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pipeline.core.display import html_table
from pipeline.core.protocols import BuilderLike, JobLike
from pipeline.core.record import Record
from pipeline.core.request import APIRequest
from pipeline.errors import ConfigError
from pipeline.payloads.templates import invalid_text
from pipeline.payloads.tokens import (
    SCHEMA_OVERHEAD_TOKENS,
    output_tokens_bound,
    resolve_tokenizer,
    response_format_tokens,
)
from pipeline.pricing.cost import Prices, usd
from pipeline.runner import rows_of
from pipeline.state.cache import ResponseCache

__all__ = ["Estimate", "estimate", "quota_minutes"]


class Estimate:
    """A run planned before anything is sent: rows, tokens, time and cost.

    Attributes:
        rows: input rows.
        invalid: rows that cannot be built (they would fail; nothing is sent for them).
        cached: rows the response cache already answers (free).
        resumed: rows a resume journal already answers (a rerun of ``pipeline run`` or
            :func:`pipeline.io.resume.run_file` sends nothing for them).
        to_send: rows that would be sent.
        prompt_tokens: estimated prompt tokens of the rows to send (the builder's estimate).
        schema_tokens: the part of ``prompt_tokens`` that is the answer schema
            (``response_format``), counted as OpenAI is reported to count it: the schema as
            compact JSON without ``required``/``additionalProperties``, plus a few tokens.
        output_tokens: the most output tokens they may use (``max_tokens`` x ``n``): an
            upper bound, not a forecast.
        rpm, tpm: the limits the time is computed from (``None``: not known).
        minutes: ``max(to_send / rpm, tokens / tpm)`` where tokens are prompt plus output
            (how an OpenAI-style limit counts a request); ``None`` without limits.
        cost_low, cost_high: USD for the prompts alone, and for the prompts plus every answer
            at its ``max_tokens``; ``None`` when a model has no price.
        batch_low, batch_high: the same through the provider's Batch API
            (:attr:`Prices.batch_share <pipeline.pricing.cost.Prices.batch_share>` of it).
        models: the models of the rows to send; ``unpriced``: those without a price.
    """

    __slots__ = ("batch_high", "batch_low", "cached", "cost_high", "cost_low", "invalid",
                 "minutes", "models", "output_tokens", "prices", "prompt_tokens", "resumed",
                 "rows", "rpm", "schema_tokens", "to_send", "tpm", "unpriced")

    def __init__(self, *, rows: int, invalid: int, cached: int, prompt_tokens: int,
                 output_tokens: int, rpm: float | None, tpm: float | None,
                 models: dict[str, tuple[int, int]], prices: Prices,
                 resumed: int = 0, schema_tokens: int = 0) -> None:
        self.rows = rows
        self.invalid = invalid
        self.cached = cached
        self.resumed = resumed
        self.to_send = rows - invalid - cached - resumed
        self.prompt_tokens = prompt_tokens
        self.schema_tokens = schema_tokens
        self.output_tokens = output_tokens
        self.rpm = rpm
        self.tpm = tpm
        self.prices = prices
        self.models = sorted(models)
        self.unpriced = sorted(m for m in models if prices.price(m) is None)
        for model in self.unpriced:
            prices._say_unknown(model)
        self.minutes = quota_minutes(self.to_send, prompt_tokens + output_tokens, rpm, tpm)
        if self.unpriced:
            self.cost_low: float | None = None
            self.cost_high: float | None = None
        else:
            low = high = 0.0
            for model, (prompt, output) in models.items():
                price = prices[model]
                low += price.cost(prompt, 0)
                high += price.cost(prompt, output)
            self.cost_low, self.cost_high = low, high
        share = prices.batch_share
        self.batch_low = None if self.cost_low is None else self.cost_low * share
        self.batch_high = None if self.cost_high is None else self.cost_high * share

    def as_dict(self) -> dict[str, Any]:
        """The figures as a plain dict."""
        return {name: getattr(self, name) for name in self.__slots__ if name != "prices"}

    def _rows(self) -> list[tuple[str, str]]:
        parts = []
        if self.resumed:
            parts.append(f"{self.resumed:,} answered by the resume journal")
        if self.cached:
            parts.append(f"{self.cached:,} answered by the cache")
        if self.invalid:
            parts.append(f"{self.invalid:,} cannot be built (would fail, not sent)")
        rows_text = f"{self.rows:,}" + (f" ({', '.join(parts)})" if parts else "")
        limits = ", ".join(f"{value:,.0f} {unit}" for value, unit in
                           ((self.rpm, "rpm"), (self.tpm, "tpm")) if value is not None)
        if self.minutes is None:
            time_text = "unknown (no rpm/tpm limits given)"
        else:
            time_text = f"{_duration(self.minutes)} at {limits} (the quota's floor: " \
                        "latency and 429s add to it)"
        if self.cost_low is None or self.cost_high is None:
            cost_text = "unknown: no price for " + ", ".join(repr(m) for m in self.unpriced)
        else:
            cost_text = f"{usd(self.cost_low)} to {usd(self.cost_high)} " \
                        "(prompts only to every answer at max_tokens)"
        return [
            ("rows", rows_text),
            ("to send", f"{self.to_send:,} requests"),
            ("prompt tokens (estimated)", f"{self.prompt_tokens:,}"),
            *([("  of which answer schemas",
                f"{self.schema_tokens:,} (assumed: compact JSON of each schema, no "
                f"required/additionalProperties, + {SCHEMA_OVERHEAD_TOKENS} tokens; OpenAI "
                "does not document it)")] if self.schema_tokens else []),
            ("output tokens (upper bound)", f"{self.output_tokens:,} (max_tokens per answer)"),
            ("time the quota allows", time_text),
            ("cost (USD)", cost_text),
            *([("  through the Batch API", f"{usd(self.batch_low)} to {usd(self.batch_high)} "
                f"({self.prices.batch_share:g} of the online price; answers within 24 h)")]
              if self.batch_low is not None and self.batch_high is not None else []),
            ("models", ", ".join(self.models) or "(none)"),
            ("prices", self.prices.source),
        ]

    def __str__(self) -> str:
        rows = self._rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(["Estimate (nothing sent):",
                          *(f"  {k:<{width}}  {v}" for k, v in rows)])

    def __repr__(self) -> str:
        cost = "?" if self.cost_high is None else usd(self.cost_high)
        minutes = "?" if self.minutes is None else f"{self.minutes:.3g}"
        return (f"<Estimate rows={self.rows} to_send={self.to_send} cached={self.cached} "
                f"prompt_tokens={self.prompt_tokens} output_tokens<={self.output_tokens} "
                f"minutes={minutes} cost<={cost}>")

    def _repr_html_(self) -> str:
        return html_table("Estimate (nothing sent)", self._rows())



def quota_minutes(requests: int, tokens: int, rpm: float | None,
                  tpm: float | None) -> float | None:
    """The minutes the limits allow for this work: ``max(requests / rpm, tokens / tpm)``.

    >>> quota_minutes(600, 90_000, rpm=300, tpm=30_000)
    3.0
    >>> quota_minutes(10, 10, None, None) is None
    True
    """
    if rpm is None and tpm is None:
        return None
    return max(requests / rpm if rpm else 0.0, tokens / tpm if tpm else 0.0)


def _duration(minutes: float) -> str:
    if minutes < 1:
        return f"{minutes * 60:.1f} s"
    if minutes < 120:
        return f"{minutes:.1f} min"
    return f"{minutes / 60:.1f} h"


def _output_bound(request: APIRequest, builder: BuilderLike) -> int:
    config = getattr(builder, "config", None)
    default = config.get("default_max_tokens") if isinstance(config, dict) else None
    return output_tokens_bound(request.body, request.path, default)


def estimate(rows: Any, job: JobLike, *, rpm: float | None = None, tpm: float | None = None,
             cache: str | os.PathLike[str] | ResponseCache | None = None,
             prices: Prices | Mapping[str, Any] | str | os.PathLike[str] | None = None,
             answered: Collection[int] = ()) -> Estimate:
    """Plan a run of ``rows`` through ``job`` without sending anything.

    Each row is built as the run would build it; the cache (a directory or a
    :class:`~pipeline.state.cache.ResponseCache`) is asked the way the run's lookup asks it.
    ``rpm``/``tpm`` default to the job's endpoint limits. A cache directory that does not
    exist yet answers nothing and is not created. ``answered``: input positions a resume
    journal already answers (:func:`pipeline.io.resume.answered` reads them), left out.

    For example, inside a coroutine (or a notebook cell)::

        print(pipeline.estimate(rows, job, cache=".cache"))   # a table; or .as_dict()
    """
    table = Prices.of(prices)
    endpoint = job.endpoint
    rpm = rpm if rpm is not None else getattr(endpoint, "rpm", None)
    tpm = tpm if tpm is not None else getattr(endpoint, "tpm", None)
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and not value > 0:
            raise ConfigError(f"{name} must be a positive number, got {value!r}")
    items = rows_of(rows)
    if not isinstance(items, Iterable):
        raise ConfigError("estimate() needs rows it can read without running: a list, a "
                          "frame or a file, not an async iterable")
    builder = job.builder
    namespace = job.service.base_url
    opened: ResponseCache | None = None
    owned = False
    if isinstance(cache, ResponseCache):
        opened = cache
    elif isinstance(cache, str | os.PathLike):
        if os.path.isdir(cache):
            opened, owned = ResponseCache(cache), True
    elif cache is not None:
        raise ConfigError(f"cache must be a directory path or a ResponseCache, got {cache!r}")
    count = invalid = cached = resumed = prompt_total = output_total = schema_total = 0
    config = getattr(builder, "config", None)
    tokenizer = resolve_tokenizer(config.get("tokenizer") if isinstance(config, dict) else None)
    models: dict[str, tuple[int, int]] = {}
    try:
        for item in items:
            count += 1
            if (item.index if isinstance(item, Record) else count - 1) in answered:
                resumed += 1
                continue
            if isinstance(item, Record):
                if item.error is not None:
                    invalid += 1
                    continue
                item = item.row
            try:
                request = item if isinstance(item, APIRequest) else builder.build(item)
            except Exception:
                invalid += 1
                continue
            if not isinstance(request, APIRequest) or invalid_text(request.body):
                invalid += 1  # a lone surrogate fails its row in a run: nothing sent
                continue
            if opened is not None and opened.get(opened.key(
                    request, base_url=namespace, secrets=job.service.secrets())) is not None:
                cached += 1
                continue
            output = _output_bound(request, builder)
            prompt = max(0, request.token_estimate - output)
            prompt_total += prompt
            output_total += output
            body = request.body or {}
            if body.get("response_format") is not None:
                schema_total += response_format_tokens(body["response_format"], tokenizer)
            model = body.get("model") if isinstance(body.get("model"), str) else None
            key = model or "(no model)"
            seen = models.get(key, (0, 0))
            models[key] = (seen[0] + prompt, seen[1] + output)
    finally:
        if owned and opened is not None:
            opened.close()
    return Estimate(rows=count, invalid=invalid, cached=cached, resumed=resumed,
                    prompt_tokens=prompt_total, schema_tokens=schema_total,
                    output_tokens=output_total, rpm=rpm, tpm=tpm, models=models,
                    prices=table)
