"""What a run costs: :class:`Prices` per model, and the cost of each answer.

Prices are USD per 1M tokens, input and output, per model. :data:`DEFAULT_PRICES` holds a
small table for common OpenAI models, **as published by OpenAI, 2025** (:data:`PRICES_AS_OF`).
Prices change: check https://openai.com/api/pricing and give your own with ``Prices({...})``
(merged over the defaults) or a JSON file ``{"model": {"input": 0.15, "output": 0.60}}``::

    >>> prices = Prices({"my-model": (1.0, 2.0)})
    >>> prices.cost("my-model", prompt_tokens=1_000_000, completion_tokens=500_000)
    2.0
    >>> prices.cost("gpt-4o-mini-2024-07-18", 1_000_000, 0)   # a dated snapshot: its family
    0.15

A model without a price costs ``None``, never a silent 0, and is named once in a warning
(:class:`UnknownPriceWarning`).

What a run *would* cost, before anything is sent, is :func:`pipeline.adapters.estimate`.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Final

from pipeline.core.record import Record
from pipeline.errors import ConfigError

__all__ = [
    "DEFAULT_PRICES",
    "PRICES_AS_OF",
    "ModelPrice",
    "Prices",
    "UnknownPriceWarning",
    "record_cached_tokens",
    "record_model",
    "usd",
]

#: When the default prices were taken.
PRICES_AS_OF: Final = "as published by OpenAI, 2025"

# USD per 1M tokens (input, output). Standard tier, no batch or cached-input discount.
_OPENAI_2025: Final[dict[str, tuple[float, float]]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-3.5-turbo-instruct": (1.50, 2.00),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "text-embedding-ada-002": (0.10, 0.0),
}

# A dated snapshot ("gpt-4o-mini-2024-07-18", "gpt-4-0613") is priced as its family.
_SNAPSHOT: Final = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")
_MILLION: Final = 1_000_000


class UnknownPriceWarning(UserWarning):
    """A model has no price in the table: its cost is ``None`` (said once per model)."""


class ModelPrice:
    """USD per 1M input and output tokens of one model (and, optionally, of cached input).

    Both ``input`` and ``output`` are required: a price with one of them missing would cost
    that side at a silent 0. An embedding model's output price is ``0``. ``cached_input``
    prices the prompt tokens the server says it read from its prompt cache
    (``usage.prompt_tokens_details.cached_tokens``); without it they cost ``input``.

    >>> ModelPrice(0.15, 0.60)
    ModelPrice(input=0.15, output=0.6)
    >>> ModelPrice(0.15, 0.60, cached_input=0.075).cost(1_000_000, 0, cached_tokens=500_000)
    0.1125
    """

    __slots__ = ("cached_input", "input", "output")

    def __init__(self, input: float, output: float, *,
                 cached_input: float | None = None) -> None:
        for name, value in (("input", input), ("output", output),
                            ("cached_input", 0.0 if cached_input is None else cached_input)):
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not value >= 0 or value == math.inf:
                raise ConfigError(f"a price must be a number >= 0 (USD per 1M tokens), "
                                  f"got {name}={value!r}")
        self.input = float(input)
        self.output = float(output)
        self.cached_input = None if cached_input is None else float(cached_input)

    @classmethod
    def of(cls, value: Any, model: str | None = None) -> ModelPrice:
        """From shorthand: ``(input, output)`` or ``{"input": ..., "output": ...}``
        (``"cached_input"`` optional). ``model`` names the model in the error.

        >>> ModelPrice.of({"input": 5}, "my-model")
        Traceback (most recent call last):
        ...
        pipeline.errors.ConfigError: the price of 'my-model' has no output price: ...
        """
        if isinstance(value, ModelPrice):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"input", "output", "cached_input"}
            if unknown:
                raise _refused(model, f"unknown keys {sorted(map(str, unknown))}", value)
            missing = [k for k in ("input", "output") if k not in value]
            if missing:
                raise _refused(model, f"no {' and no '.join(missing)} price", value)
            return cls(value["input"], value["output"], cached_input=value.get("cached_input"))
        if isinstance(value, list | tuple) and len(value) == 2:
            return cls(*value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise _refused(model, "no output price (a bare number would price output at 0)",
                           value)
        raise _refused(model, "the wrong shape", value)

    def cost(self, prompt_tokens: float, completion_tokens: float,
             cached_tokens: float = 0) -> float:
        """USD for these tokens (``cached_tokens``: how many of the prompt tokens were read
        from the server's prompt cache)."""
        prompt = prompt_tokens * self.input
        if self.cached_input is not None and cached_tokens:
            cached = min(cached_tokens, prompt_tokens)
            prompt += cached * (self.cached_input - self.input)
        return (prompt + completion_tokens * self.output) / _MILLION

    def as_dict(self) -> dict[str, float]:
        """``{"input": ..., "output": ...}`` (and ``"cached_input"`` when given)."""
        out = {"input": self.input, "output": self.output}
        if self.cached_input is not None:
            out["cached_input"] = self.cached_input
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelPrice) and (self.input, self.output, self.cached_input) \
            == (other.input, other.output, other.cached_input)

    def __hash__(self) -> int:
        return hash((self.input, self.output, self.cached_input))

    def __repr__(self) -> str:
        cached = "" if self.cached_input is None else f", cached_input={self.cached_input:g}"
        return f"ModelPrice(input={self.input:g}, output={self.output:g}{cached})"


def _refused(model: str | None, what: str, value: Any) -> ConfigError:
    whose = f"the price of {model!r}" if model else "a price"
    return ConfigError(f"{whose} has {what}: give {{'input': USD, 'output': USD}} per 1M "
                       f"tokens (0 for an embedding model's output; 'cached_input' optional), "
                       f"got {value!r}")


class Prices:
    """USD per 1M tokens per model: the dated defaults, with your prices over them.

    Args:
        table: ``{model: price}``, a price being ``(input, output)`` or
            ``{"input": ..., "output": ...}`` (``"cached_input"`` optional). Both input and
            output are required (``0`` for an embedding model's output): a bare number is a
            :class:`~pipeline.errors.ConfigError` naming the model, never an output at 0.
        defaults: start from :data:`DEFAULT_PRICES` (``False``: only ``table``).
        source: where the prices come from, for the tables that show them.
        batch_share: what an answer of the provider's Batch API costs, as a share of the
            online price (OpenAI and Anthropic: half, ``0.5``); a record answered in a batch
            (``record.batch_id``) is costed at it.

    >>> Prices({"gpt-4o-mini": (0.1, 0.4)})["gpt-4o-mini"]
    ModelPrice(input=0.1, output=0.4)
    >>> Prices({"local": (0, 0)}, defaults=False).price("gpt-4o") is None
    True
    >>> Prices().cost("gpt-4o-mini", 1_000_000, batch=True)
    0.075
    """

    __slots__ = ("_misses", "_said", "_table", "batch_share", "source")

    def __init__(self, table: Mapping[str, Any] | None = None, *, defaults: bool = True,
                 source: str | None = None, batch_share: float = 0.5) -> None:
        if isinstance(batch_share, bool) or not isinstance(batch_share, int | float) or \
                not 0 <= batch_share <= 1:
            raise ConfigError(f"batch_share is a share of the online price in [0, 1], got "
                              f"{batch_share!r}")
        self.batch_share = float(batch_share)
        if table is not None and not isinstance(table, Mapping):
            raise ConfigError(f"prices must be a mapping of model to price, got {table!r}")
        base: dict[str, ModelPrice] = {}
        if defaults:
            base = {m: ModelPrice(*p) for m, p in _OPENAI_2025.items()}
        for model, price in (table or {}).items():
            if not isinstance(model, str) or not model:
                raise ConfigError(f"a model name must be a non-empty string, got {model!r}")
            base[model] = ModelPrice.of(price, model)
        self._table = base
        # Names not in the table, with their family's price (None: unpriced): the snapshot
        # suffix is cut once a name, not once a row.
        self._misses: dict[str, ModelPrice | None] = {}
        self._said: set[str] = set()
        if source is None:
            source = PRICES_AS_OF if defaults and not table else \
                "yours" + (f", over the defaults {PRICES_AS_OF}" if defaults else "")
        self.source = source

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, defaults: bool = True) -> Prices:
        """Prices from a JSON file ``{"model": {"input": USD, "output": USD}, ...}``
        (USD per 1M tokens; ``"cached_input"`` optional; ``[input, output]`` works too)."""
        try:
            with open(path, encoding="utf-8") as f:
                table = json.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read the prices file {os.fspath(path)!r}: "
                              f"{exc.strerror or exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"the prices file {os.fspath(path)!r} is not valid JSON: "
                              f"{exc}") from exc
        if not isinstance(table, dict):
            raise ConfigError(f"the prices file {os.fspath(path)!r} must hold a JSON object "
                              "of model to price")
        return cls(table, defaults=defaults, source=f"from {os.fspath(path)}"
                   + (f", over the defaults {PRICES_AS_OF}" if defaults else ""))

    @classmethod
    def of(cls, prices: Prices | Mapping[str, Any] | str | os.PathLike[str] | None) -> Prices:
        """A :class:`Prices` from shorthand: ``None`` (the defaults), a dict, a JSON path."""
        if prices is None:
            return DEFAULT_PRICES
        if isinstance(prices, Prices):
            return prices
        if isinstance(prices, str | os.PathLike):
            return cls.from_file(prices)
        return cls(prices)

    def price(self, model: str | None) -> ModelPrice | None:
        """The model's price (a dated snapshot's family price), or ``None``."""
        if not model:
            return None
        found = self._table.get(model)
        if found is None:
            misses = self._misses
            if model in misses:
                return misses[model]
            found = self._table.get(_SNAPSHOT.sub("", model))
            if len(misses) < 10_000:
                misses[model] = found
        return found

    def __getitem__(self, model: str) -> ModelPrice:
        found = self.price(model)
        if found is None:
            raise KeyError(model)
        return found

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price(model) is not None

    def __len__(self) -> int:
        return len(self._table)

    def cost(self, model: str | None, prompt_tokens: float,
             completion_tokens: float = 0, *, cached_tokens: float = 0,
             say: bool = True, batch: bool = False) -> float | None:
        """USD for these tokens of ``model``; ``None`` if unpriced (with ``say``, a warning
        once per model). ``cached_tokens`` of the prompt cost the model's ``cached_input``
        price when it has one; ``batch``: answered by the Batch API (:attr:`batch_share`)."""
        found = self.price(model)
        if found is None:
            if say:
                self._say_unknown(model)
            return None
        usd = found.cost(prompt_tokens, completion_tokens, cached_tokens)
        return usd * self.batch_share if batch else usd

    def record_cost(self, record: Record, *, say: bool = True) -> float | None:
        """What this run paid for one record, in USD.

        Usage x price for every answer billed: the one kept, answers thrown away because
        they did not fit the schema, and a last answer that did not fit either. 0 for a
        cached answer or an error without an answer (nothing billed); ``None`` for a billed
        answer without ``usage`` or a model without a price (with ``say``, a warning once
        per model).
        """
        paid = record.paid_tokens()
        if paid is None:
            return None
        if paid == (0, 0):
            return 0.0
        return self.cost(record_model(record), paid[0], paid[1],
                         cached_tokens=record_cached_tokens(record), say=say,
                         batch=getattr(record, "batch_id", None) is not None)

    def total(self, records: Iterable[Record]) -> float | None:
        """The sum of :meth:`record_cost`; ``None`` if any record's cost is unknown."""
        total = 0.0
        unknown = False
        for record in records:
            cost = self.record_cost(record)
            if cost is None:
                unknown = True  # keep going: every unpriced model is said once
            else:
                total += cost
        return None if unknown else total

    def _say_unknown(self, model: str | None) -> None:
        name = model or "(none)"
        if name in self._said:
            return
        self._said.add(name)
        warnings.warn(f"no price for model {name!r}: its cost is unknown (None). Give one with "
                      f"pipeline.Prices({{{name!r}: (input, output)}}) in USD per 1M tokens, "
                      "or a prices JSON file", UnknownPriceWarning, stacklevel=3)

    def as_dict(self) -> dict[str, dict[str, float]]:
        """The table as plain JSON-able values (what :meth:`from_file` reads)."""
        return {m: p.as_dict() for m, p in self._table.items()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prices) and self._table == other._table and \
            self.batch_share == other.batch_share

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Prices {len(self._table)} models, {self.source}>"


#: The default price table (USD per 1M tokens, :data:`PRICES_AS_OF`).
DEFAULT_PRICES: Final = Prices()


def record_model(record: Record) -> str | None:
    """The model a record's request asked for (else the one its response names)."""
    asked = getattr(record.response, "requested_model", None)  # a KeptResponse: no request
    if record.request is None and isinstance(asked, str) and asked:
        return asked
    for body in (record.request.body if record.request is not None else None,
                 record.response.body if record.response is not None else None):
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str) and model:
            return model
    return None


def record_cached_tokens(record: Record) -> int:
    # The kept answer's prompt tokens read from the server's prompt cache (OpenAI's
    # usage.prompt_tokens_details.cached_tokens); 0 when it does not say.
    response = record.response
    if response is None or record.cached:
        return 0
    kept = getattr(response, "cached_tokens", None)  # a KeptResponse: no body to read
    if isinstance(kept, int):
        return max(kept, 0)
    if not isinstance(response.body, dict):
        return 0
    usage = response.body.get("usage")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and not isinstance(cached, bool) and \
        cached > 0 else 0


def usd(amount: float) -> str:
    """Dollars, with the digits a small amount needs.

    >>> usd(1234.5), usd(0.0375), usd(0.0000165), usd(0)
    ('$1,234.50', '$0.0375', '$0.0000165', '$0')
    """
    if amount == 0:
        return "$0"
    if amount >= 1:
        return f"${amount:,.2f}"
    if amount >= 0.01:
        return f"${amount:.4f}"
    return f"${amount:.3g}" if amount < 1e-7 else f"${amount:.7f}".rstrip("0")
