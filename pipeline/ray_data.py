"""Datasets larger than one machine: Ray Data's ``map_batches`` with a callable class.

:class:`AnswerBatches` is built on each Ray worker from a :class:`BatchJob`, a small
picklable description (where to send, which model, the prompt template, the limits and the
shared limiter's URL), never from a live service: clients, connections and limiters are made
on the worker, in its own event loop, and kept across the batches it runs. Each batch goes
through :func:`pipeline.run` and comes back with the ``answer``, ``status``, ``error``,
``tokens`` and ``latency`` columns lined up row for row (the batch formats ``"pandas"``,
``"pyarrow"`` and ``"numpy"``). A row that fails fails alone, with its error in ``error``;
nothing raises out of a batch (a batch that cannot run at all, say a missing template
column, comes back with every row failed and the reason).

With ``shared_limit="redis://HOST:PORT/DB"`` every worker on every machine spends one quota
(:class:`~pipeline.limiter.RedisLimiter`), so ``rpm``/``tpm`` are the key's limits, not a
worker's. :meth:`BatchJob.check`, on the driver before mapping, makes sure that Redis can be
used (reached, the password right, scripts allowed): a wrong URL is a
:class:`~pipeline.errors.ConfigError` there, before any worker starts or anything is sent.

>>> job = BatchJob(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=5,
...                rpm=5_000, tpm=2_000_000, shared_limit="redis://redis.internal:6379/0")
>>> job.api_key is None     # by default each worker reads OPENAI_API_KEY from its environment
True

Then, with ``import ray``::

    ds = ray.data.read_parquet("s3://bucket/reviews/")
    out = ds.map_batches(AnswerBatches, fn_constructor_args=(job.check(),),
                         compute=ray.data.ActorPoolStrategy(size=8),
                         batch_size=256, batch_format="pandas")

``benchmarks/ray_shared_quota.py`` runs 1, 2 and 4 actors on one quota against the simulator
beside a hand-written ``map_batches`` class, scored from the simulator's log.

(The module is ``pipeline.ray_data``, not ``pipeline.ray``: ``from pipeline import ray``
would hide the ``ray`` package itself in the user's namespace, and the name says which part
of Ray it serves.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import msgspec

from pipeline.errors import ConfigError
from pipeline.stages import DEFAULT_ATTEMPTS, DEFAULT_MAX_WAIT

__all__ = ["AnswerBatches", "BatchJob"]

Kind = Literal["chat", "completions", "embeddings"]


class BatchJob(msgspec.Struct, frozen=True, kw_only=True):
    """What a worker needs to build the job itself (picklable, no live objects).

    Attributes:
        model: the model.
        prompt: the template (``"Classify: {text}"``); the ``input`` for embeddings.
        kind: ``"chat"`` (default), ``"completions"`` or ``"embeddings"``.
        system: a system message template (chat).
        max_tokens, temperature: payload settings; ``config`` holds any other.
        base_url: the API root (default ``OPENAI_BASE_URL``, else OpenAI).
        api_key: by default each worker reads ``OPENAI_API_KEY`` (give it with Ray's
            ``runtime_env={"env_vars": ...}``), so the key is not pickled into the plan.
        rpm, tpm: the key's limits (ceilings for the adaptive limiter, the shared quota
            with ``shared_limit``).
        shared_limit: ``redis://HOST:PORT/DB`` shared by all workers (``?key=NAME`` names
            the quota; default ``pipeline:<path>``): one bucket and one rate controller for
            them all, so limits not given are discovered as by one client.
        adaptive: ``False``: fixed rates (``rpm``/``tpm`` as given), as everywhere.
        concurrency, attempts, max_wait, timeout, cache: as for :func:`pipeline.run` (per
            worker; ``cache`` is a directory on the worker).
    """

    model: str
    prompt: str
    kind: Kind = "chat"
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    base_url: str | None = None
    api_key: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    shared_limit: str | None = None
    adaptive: bool = True
    concurrency: int = 32
    attempts: int = DEFAULT_ATTEMPTS
    max_wait: float = DEFAULT_MAX_WAIT
    timeout: float | None = None
    cache: str | None = None

    def check(self, *, timeout: float = 2.0) -> BatchJob:
        """Raise :class:`~pipeline.errors.ConfigError` (one line: the URL with its password
        masked, what is wrong, what to do) when :attr:`shared_limit` names a Redis the workers
        could not use; return the job. Call it on the driver, before mapping: run from the
        workers, a wrong URL would cost every worker its start and fail every batch.

        A job without ``shared_limit`` has nothing to check:

        >>> job = BatchJob(model="gpt-4o-mini", prompt="{text}")
        >>> job.check() is job
        True
        """
        if self.shared_limit:
            from pipeline.limiter import check_redis

            _wait_for(check_redis(self.shared_limit, timeout=timeout))
        return self

    def __repr__(self) -> str:  # the key, if given, is not shown
        fields = [f"{name}={getattr(self, name)!r}" for name in self.__struct_fields__
                  if name != "api_key" and getattr(self, name) not in (None, {})]
        if self.api_key:
            fields.append("api_key='...'")
        return f"BatchJob({', '.join(fields)})"


class AnswerBatches:
    """A callable class for ``Dataset.map_batches``: one per Ray worker (actor).

    ``AnswerBatches(job)`` takes a :class:`BatchJob` (or a mapping of its fields). Called
    with a batch (pandas DataFrame, pyarrow Table or dict of numpy arrays), it returns the
    batch in the same format with the result columns added; see the module docstring.
    ``stages``: your own stages, as for :func:`pipeline.run` (Ray pickles them to each
    worker with cloudpickle); what they leave on ``record.data`` comes back as columns.
    Give both through ``map_batches(AnswerBatches, fn_constructor_args=(job, stages))``.
    """

    def __init__(self, job: BatchJob | Mapping[str, Any],
                 stages: Sequence[Any] | None = None) -> None:
        if isinstance(job, Mapping):
            job = msgspec.convert(dict(job), BatchJob)
        if not isinstance(job, BatchJob):
            raise ConfigError(f"AnswerBatches needs a BatchJob, got {type(job).__name__}")
        self.job = job
        self.stages = list(stages or ())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._service: Any = None
        self._job: Any = None

    def __call__(self, batch: Any) -> Any:
        frame, back = _to_pandas(batch)
        try:
            if self._loop is None or self._loop.is_closed():
                # One loop per worker, kept across batches: the client's connections and the
                # limiter's state (what it learned, the leases it holds) carry over.
                self._loop = asyncio.new_event_loop()
            out = self._loop.run_until_complete(self._run(frame))
        except Exception as exc:  # a batch that cannot run: every row failed, with the reason
            out = _all_failed(frame, exc,
                              "embedding" if self.job.kind == "embeddings" else "answer")
        return back(out)

    async def _run(self, frame: Any) -> Any:
        from pipeline import io
        from pipeline.runner import run

        job = self._build()
        source = io.read(frame)
        io.check_columns(source, job.builder)  # a misspelt {column} fails the batch, clearly
        results = await run(source, job, concurrency=self.job.concurrency,
                            attempts=self.job.attempts, max_wait=self.job.max_wait,
                            timeout=self.job.timeout, cache=self.job.cache,
                            stages=self.stages)
        return io.to_pandas(results, frame)

    def _build(self) -> Any:
        if self._job is None:
            from pipeline.http import OpenAIService

            spec = self.job
            self._service = OpenAIService(api_key=spec.api_key, base_url=spec.base_url,
                                          rpm=spec.rpm, tpm=spec.tpm,
                                          limiter=spec.shared_limit,
                                          adaptive=spec.adaptive)
            config: dict[str, Any] = {"model": spec.model, **spec.config}
            config["input" if spec.kind == "embeddings" else "prompt"] = spec.prompt
            for name in ("system", "max_tokens", "temperature"):
                if getattr(spec, name) is not None:
                    config[name] = getattr(spec, name)
            make = {"chat": self._service.chat, "completions": self._service.completions,
                    "embeddings": self._service.embeddings}[spec.kind]
            self._job = make(**config)
        return self._job

    def close(self) -> None:
        """Close the worker's client and loop (Ray does this by ending the process anyway)."""
        if self._loop is not None and not self._loop.is_closed():
            if self._service is not None:
                self._loop.run_until_complete(self._service.aclose())
                limiter = getattr(self._job.endpoint, "limiter", None) if self._job else None
                aclose = getattr(limiter, "aclose", None)
                if aclose is not None:
                    self._loop.run_until_complete(aclose())
            self._loop.close()
        self._service = self._job = None

    def __repr__(self) -> str:
        return f"AnswerBatches({self.job!r})"


def _wait_for(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to its end from synchronous code, also where a loop already runs in this
    thread (a notebook): then in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


def _to_pandas(batch: Any) -> tuple[Any, Any]:
    """The batch as a pandas frame, and how to turn the result back into its format."""
    from pipeline.core.extras import require

    pd = require("pandas", feature="Ray Data batches", extra="ray")
    if isinstance(batch, pd.DataFrame):
        return batch.reset_index(drop=True), lambda out: out
    if type(batch).__module__.startswith("pyarrow"):
        pa = require("pyarrow", feature="Ray Data batches", extra="ray")
        return batch.to_pandas(), lambda out: pa.Table.from_pandas(out, preserve_index=False)
    if isinstance(batch, Mapping):  # Ray's "numpy" format: column name -> array
        frame = pd.DataFrame({name: list(values) for name, values in batch.items()})

        def to_numpy(out: Any) -> dict[str, Any]:
            return {str(name): out[name].to_numpy() for name in out.columns}

        return frame, to_numpy
    raise ConfigError(f"a batch must be a pandas DataFrame, a pyarrow Table or a dict of "
                      f"arrays, got {type(batch).__name__}")


def _all_failed(frame: Any, exc: BaseException, answer: str) -> Any:
    import pandas as pd

    from pipeline.io import ResultRow

    out = frame.copy()
    rows = len(out)
    names = ResultRow.column_names(map(str, out.columns), embeddings=answer == "embedding")
    out[names[answer]] = [None] * rows
    out[names["status"]] = ["failed"] * rows
    out[names["error"]] = [f"{type(exc).__name__}: {exc}"] * rows
    out[names["tokens"]] = pd.array([None] * rows, dtype="Int64")
    out[names["latency"]] = [None] * rows
    # The same columns as a batch that ran (Ray Data wants one schema for every batch).
    out[names["cost"]] = pd.array([None] * rows, dtype="Float64")
    return out
