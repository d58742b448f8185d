"""How a run treats each row: :class:`RunOptions`, one value object with each default written
once, shared by :func:`pipeline.run`, :func:`~pipeline.runner.as_completed`,
:func:`~pipeline.runner.default_flow`, :func:`pipeline.io.run_file`,
:func:`pipeline.io.run_frame`, :class:`pipeline.ray_data.BatchJob` and ``pipeline run``.

Where a run's results go (``cache=``, ``status=``, ``keep_responses=``...) is not here: those
are the caller's, not the rows'.

>>> options = RunOptions(attempts=3)
>>> options.concurrency, options.attempts, options.max_wait
(64, 3, 600.0)
>>> options.replace(concurrency=8).concurrency
8
>>> RunOptions(atempts=3)
Traceback (most recent call last):
...
TypeError: RunOptions.__init__() got an unexpected keyword argument 'atempts'
>>> DEFAULTS.replace(atempts=3)
Traceback (most recent call last):
...
pipeline.errors.ConfigError: unknown run option 'atempts' (did you mean 'attempts'?)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipeline.core.checks import positive_int
from pipeline.errors import ConfigError
from pipeline.payloads.templates import did_you_mean
from pipeline.pricing.cost import Prices
from pipeline.stages import (
    DEFAULT_ATTEMPTS,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_WAIT,
    DEFAULT_REASKS,
    Backoff,
    Stage,
    each,
    guarded,
    user_stages,
)

__all__ = ["DEFAULTS", "OPTION_NAMES", "RunOptions", "split_options"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How each row is sent: the options :func:`pipeline.run` and its relatives share.

    Attributes:
        concurrency: requests in flight at most (rows in flight for batched embeddings).
        attempts: attempts per row for retryable errors; 429 rate limits do not count
            (throttling costs time, not attempts).
        backoff: the retry wait policy (:class:`~pipeline.stages.Backoff`; ``None``: the
            default).
        max_wait: seconds a row may be throttled by 429s before it fails.
        timeout: seconds one attempt may take; ``None`` sizes it from the latencies seen.
        reasks: for a job with a schema, times an answer that does not fit is asked again.
        progress: show a progress bar.
        prices: a :class:`~pipeline.pricing.cost.Prices` (or a dict of prices, or a JSON
            file) for the cost figures; ``None``: the dated defaults.
        stages: your own stages, run on every answer before it is counted (see
            :func:`pipeline.run`); functions of one record are made stages.
    """

    concurrency: int = DEFAULT_CONCURRENCY
    attempts: int = DEFAULT_ATTEMPTS
    backoff: Backoff | None = None
    max_wait: float = DEFAULT_MAX_WAIT
    timeout: float | None = None
    reasks: int = DEFAULT_REASKS
    progress: bool = False
    prices: Prices | None = None
    stages: tuple[Stage, ...] = ()

    def __post_init__(self) -> None:
        positive_int("concurrency", self.concurrency)
        positive_int("attempts", self.attempts)
        if isinstance(self.max_wait, bool) or not isinstance(self.max_wait, int | float) \
                or not self.max_wait >= 0:
            raise ConfigError(f"max_wait must be >= 0 seconds, got {self.max_wait!r}")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(
                self.timeout, int | float) or not self.timeout > 0):
            raise ConfigError(f"timeout must be > 0 seconds or None, got {self.timeout!r}")
        if isinstance(self.reasks, bool) or not isinstance(self.reasks, int) or self.reasks < 0:
            raise ConfigError(f"reasks must be an int >= 0, got {self.reasks!r}")
        if self.backoff is not None and not isinstance(self.backoff, Backoff):
            raise ConfigError(f"backoff must be a pipeline.stages.Backoff, got {self.backoff!r}")
        object.__setattr__(self, "max_wait", float(self.max_wait))
        object.__setattr__(self, "progress", bool(self.progress))
        if self.prices is not None and not isinstance(self.prices, Prices):
            object.__setattr__(self, "prices", Prices.of(self.prices))
        if not (isinstance(self.stages, tuple) and all(
                isinstance(s, each | guarded) for s in self.stages)):
            object.__setattr__(self, "stages", user_stages(self.stages))

    def replace(self, **changes: Any) -> RunOptions:
        """These options with ``changes`` (checked: an unknown name is a ConfigError)."""
        for name in changes:
            if name not in _FIELDS:
                raise ConfigError(f"unknown run option {name!r}"
                                  f"{did_you_mean(name, sorted(_FIELDS))}")
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def of(cls, options: RunOptions | Mapping[str, Any] | None = None,
           **changes: Any) -> RunOptions:
        """``options`` (a RunOptions, a mapping of its fields, or ``None`` for the defaults)
        with ``changes`` on top.

        >>> RunOptions.of({"attempts": 2}, concurrency=4)
        RunOptions(concurrency=4, attempts=2)
        """
        if options is None:
            base = DEFAULTS
        elif isinstance(options, RunOptions):
            base = options
        elif isinstance(options, Mapping):
            base = DEFAULTS.replace(**options)
        else:
            raise ConfigError(f"options must be a RunOptions, got {options!r}")
        return base.replace(**changes)

    def __repr__(self) -> str:
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                   if getattr(self, f.name) != getattr(DEFAULTS, f.name, f.default)]
        return f"RunOptions({', '.join(changed)})"


_FIELDS = frozenset(f.name for f in dataclasses.fields(RunOptions))

#: The defaults, written once: ``DEFAULTS.attempts`` is what every entry point means by
#: "the default number of attempts" (the CLI's ``--attempts`` included).
DEFAULTS = RunOptions()

#: What a caller that takes the options as keywords passes on (run_file, BatchJob...).
OPTION_NAMES: frozenset[str] = _FIELDS


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` as (run options, the rest): for a function that takes both as keywords.

    >>> split_options({"attempts": 2, "cache": ".cache"})
    ({'attempts': 2}, {'cache': '.cache'})
    """
    ours = {k: v for k, v in options.items() if k in _FIELDS}
    return ours, {k: v for k, v in options.items() if k not in _FIELDS}

