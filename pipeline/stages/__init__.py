"""Pipeline stages: small objects with one method, composed with ``|``.

A stage takes a :class:`~pipeline.core.record.Record` and returns it, filled in a little more::

    build(job) | lookup(cache) | retry(acquire(limiter) | call(service, "chat/completions"))
               | store(cache) | track(status)

=================  ==================================================================
stage              what it does to a record
=================  ==================================================================
:class:`build`     row -> request and token estimate (or a ``PayloadError``)
:class:`lookup`    answers it from the response cache, if it was answered before
:class:`acquire`   waits for the rate limiter (1 request + the estimate): a lease
:class:`call`      sends the request once; the response or the classified error
:class:`decode`    a structured answer into its schema's type (``record.value``)
:class:`retry`     runs its inner stages again for retryable errors, with backoff
:class:`batched`   sends many rows' embeddings requests as one request, splits the answer
:class:`store`     keeps a fresh answer in the cache
:class:`track`     counts it in a :class:`~pipeline.state.status.StatusTracker`; progress bar
:class:`each`      a function of yours, once per record (a raise fails only its row)
=================  ==================================================================

Neighbouring stages fuse into one :class:`Chain` (one coroutine per record under one bounded,
unordered map). Applied to a stream, a chain is an aiostream operator, so any aiostream
operator can sit between chains::

    from aiostream import pipe, stream
    xs = stream.iterate(rows) | flow | pipe.filter(lambda r: r.ok)
    async with xs.stream() as records:
        async for record in records: ...

Your own stage is a function (``each(fn)``) or subclasses :class:`Stage`: read its contract
(errors go on the record, never raised; which records it sees). Give it to
``pipeline.run(rows, job, stages=[...])`` to keep everything ``run()`` does (input order, the
status, the cache opened from a path). Plain items entering a chain become records numbered
in arrival order. The request stages skip a record that already has an answer (a cache hit);
every stage but ``store`` and ``track`` skips a failed one. A plain function after ``|`` is
refused: wrap it in :func:`each`, or use an aiostream operator. A stream is lazy
and re-runs each time it is iterated: running a flow twice sends every request twice, unless
a cache makes the second run free.

>>> flow = build(str.upper) | track()
>>> flow.concurrency, [type(stage).__name__ for stage in flow.stages()]
(64, ['build', 'track'])
"""

from __future__ import annotations

from pipeline.stages._batch import batched, rows_in_flight
from pipeline.stages._build import build
from pipeline.stages._cache import lookup, store
from pipeline.stages._core import DEFAULT_CONCURRENCY, Chain, Flow, Stage
from pipeline.stages._decode import decode
from pipeline.stages._map import map_unordered
from pipeline.stages._retry import (
    DEFAULT_ATTEMPTS,
    DEFAULT_MAX_WAIT,
    DEFAULT_REASKS,
    Backoff,
    RetryHook,
    retry,
    set_testing,
)
from pipeline.stages._send import LatencyWindow, acquire, call
from pipeline.stages._track import track
from pipeline.stages._user import each, guarded, user_stages

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_WAIT",
    "DEFAULT_REASKS",
    "Backoff",
    "Chain",
    "Flow",
    "LatencyWindow",
    "RetryHook",
    "Stage",
    "acquire",
    "batched",
    "build",
    "call",
    "decode",
    "each",
    "guarded",
    "lookup",
    "map_unordered",
    "retry",
    "rows_in_flight",
    "set_testing",
    "store",
    "track",
    "user_stages",
]
