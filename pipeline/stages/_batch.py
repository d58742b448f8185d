"""The batch stage: many rows' embeddings requests sent as one request, answers split back.

``batched(send)`` sits where ``send`` (``retry(acquire | call)``) would, in the same chain::

    build(job) | lookup(cache) | batched(retry(acquire(limiter) | call(service, endpoint)))
               | store(cache) | track(status)

Records that hit the cache or already failed skip it, like any stage. Every other record joins
the open batch of its kind (:class:`~pipeline.payloads.embedding_batches.Packer`: alike bodies,
under the inputs/tokens/rows limits) and waits. The record that *opened* a batch sends it, as
ONE request through ``send``: one limiter lease charging 1 request and the batch's tokens (the
provider's count settles it), one retry budget, one ``Retry-After``. A batch goes when the next
row would overflow it, or ``linger`` seconds after the last row joined it (the end of the
input; a source that paused). On success every member gets a response shaped like the answer
to its own request (its vectors re-indexed, its share of ``usage``), so ``record.embedding``,
the per-row cache and resumed runs do not know it was batched; on failure every member gets
the error. A 400 (one row's input too long, an empty string) would fail every row of the batch
for one row's fault: the batch is then split in halves and each half sent again, down to the
row at fault, which alone fails.

Why a per-record stage and not an aiostream operator between two chains: each batch is sent
by a member's own coroutine (no task of its own to leak or cancel: a cancelled run cancels
it like any request), the chain's ``begin``/``finish`` hooks, ordering by ``record.index`` and
``flow | stage`` extension stay as they are. The price: the chain must hold many rows in
flight (the default flow sizes it: ``concurrency`` batches of rows, at most
:data:`MAX_ROWS_IN_FLIGHT`), and the end of the input is noticed after ``linger``, not at once.

>>> from pipeline import OpenAIService
>>> from pipeline.stages import acquire, call, retry
>>> service = OpenAIService(api_key="sk-test", rpm=3_000, tpm=1_000_000)
>>> endpoint = service.endpoint("embeddings")
>>> send = retry(acquire(endpoint) | call(service, endpoint))
>>> batched(send, batch_size=100)
batched(max_inputs=2048, max_tokens=300000, batch_size=100, linger=0.05)
"""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.core.protocols import LimiterLike
from pipeline.core.record import Record
from pipeline.core.request import APIRequest, Response
from pipeline.errors import (
    APIStatusError,
    BadRequestError,
    ConfigError,
    MalformedResponseError,
    PayloadError,
    PipelineError,
    RequestTooLarge,
)
from pipeline.payloads.embedding_batches import (
    MAX_INPUTS,
    MAX_TOKENS,
    Batch,
    EmbeddingRow,
    Packer,
    pack,
    split,
)
from pipeline.stages._core import Chain, Stage
from pipeline.stages._retry import retry
from pipeline.stages._send import acquire

__all__ = ["MAX_ROWS_IN_FLIGHT", "batched", "rows_in_flight"]

#: The most rows a batched chain holds in flight by default (4 full batches of 2,048 inputs):
#: enough to keep a few batches going at once, about 10 MB of coroutines and records.
MAX_ROWS_IN_FLIGHT = 4 * MAX_INPUTS


def rows_in_flight(concurrency: int, batch_size: int | None) -> int:
    """Rows a chain with ``batched`` must hold in flight so ``concurrency`` batches of
    ``batch_size`` rows (``None``: up to 2,048) can be filled and sent at once, capped at
    :data:`MAX_ROWS_IN_FLIGHT` (never fewer than ``concurrency``).

    >>> rows_in_flight(64, None), rows_in_flight(64, 10), rows_in_flight(4, 1)
    (8192, 640, 4)
    """
    per_batch = batch_size if batch_size is not None else MAX_INPUTS
    return max(concurrency, min(concurrency * per_batch, MAX_ROWS_IN_FLIGHT))


class _Carrier:
    """The row of the record that carries a batch through ``send``."""

    __slots__ = ("batch", "bodies")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.bodies: list[dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return repr(self.batch)


class _split_answer(Stage):
    """Inside the retry: split the batch's answer into the rows' bodies. A lying answer (too
    few vectors, an index repeated) is a retryable MalformedResponseError for the batch."""

    async def process(self, record: Record) -> Record:
        response = record.response
        carrier = record.row
        if response is None or record.error is not None or not isinstance(carrier, _Carrier):
            return record
        try:
            carrier.bodies = split(carrier.batch, response.body)
        except MalformedResponseError as exc:
            record.response = None  # so the next attempt sends again
            record.error = exc
        return record

    def __repr__(self) -> str:
        return "split()"


def _with_split(send: Stage) -> Stage:
    """``send`` with the split check as its last inner stage (inside its retry, so a lying
    answer is tried again on the same budget)."""
    if isinstance(send, retry):
        return retry(send.inner | _split_answer(), attempts=send.attempts, backoff=send.backoff,
                     max_elapsed=send.max_elapsed, max_wait=send.max_wait, hooks=send.hooks,
                     reasks=send.reasks)
    return Chain(*send.stages(), _split_answer())


def _limiter_of(send: Stage) -> LimiterLike | None:
    stages = send.inner.stages() if isinstance(send, retry) else send.stages()
    return next((s.limiter for s in stages if isinstance(s, acquire)), None)


def _a_row_may_be_at_fault(error: BaseException) -> bool:
    """Errors one row can cause for its whole batch: a 400/413/422, or more tokens than the
    limiter can ever grant at once."""
    return isinstance(error, BadRequestError | RequestTooLarge | PayloadError) or (
        isinstance(error, APIStatusError) and error.status == 413)


class batched(Stage):
    """Send embeddings requests in batches: rows of alike bodies share one request.

    Args:
        send: the stages that send one request, usually ``retry(acquire(limiter) |
            call(service, endpoint))``; a batch goes through it as one record.
        max_inputs: inputs per request (OpenAI: 2,048).
        max_tokens: estimated tokens per request (OpenAI: 300,000); also never more than
            the limiter (found in ``send``'s ``acquire``) can grant in one lease.
        batch_size: rows per request at most (``None``: only the limits above).
        linger: seconds a batch waits for another row before it goes (it goes at once when
            full; at most 20 x ``linger`` after it opened).
        concurrency: batches in flight at most (``None``: as many as the chain's rows fill).

    Requests that are not for ``embeddings`` go alone, through ``send`` unchanged.
    """

    on_answered = False  # a request stage: an answered record needs none

    def __init__(self, send: Stage, *, max_inputs: int = MAX_INPUTS,
                 max_tokens: int = MAX_TOKENS, batch_size: int | None = None,
                 linger: float = 0.05, concurrency: int | None = None) -> None:
        if not isinstance(send, Stage):
            raise ConfigError(f"batched() wraps the stages that send, got {send!r}")
        if isinstance(linger, bool) or not isinstance(linger, int | float) or not linger > 0:
            raise ConfigError(f"linger must be a positive number of seconds, got {linger!r}")
        if concurrency is not None and (isinstance(concurrency, bool) or
                                        not isinstance(concurrency, int) or concurrency < 1):
            raise ConfigError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.send = send
        self.linger = float(linger)
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self._packer = Packer(max_inputs=max_inputs, max_tokens=max_tokens,
                              batch_size=batch_size)
        self._send = _with_split(send)
        self._limiter = _limiter_of(send)
        self._slots = asyncio.Semaphore(concurrency) if concurrency is not None else None
        # Rows waiting for their batch's answer, by record index.
        self._members: dict[int, tuple[Record, asyncio.Future[None]]] = {}
        # The row that opened each open batch: the future it waits on, the time it opened.
        self._openers: dict[int, tuple[asyncio.Future[Batch | None], float]] = {}
        self._last_join = 0.0

    @property
    def batch_size(self) -> int | None:
        """Rows per request at most (``None``: only the inputs and tokens limits)."""
        return self._packer.batch_size

    def _token_limit(self) -> int:
        # The limiter's capacity can change while running (headers, a 429 that states a
        # limit), so it is read for every row: a method call, well under a microsecond.
        capacity = getattr(self._limiter, "capacity", None)
        tokens = capacity()[1] if callable(capacity) else None
        return self.max_tokens if tokens is None else max(1, min(self.max_tokens, int(tokens)))

    async def process(self, record: Record) -> Record:
        request = record.request
        if request is None or request.body is None or request.path.strip("/") != "embeddings":
            return await self.send.process(record)
        loop = asyncio.get_running_loop()
        packer = self._packer
        packer.max_tokens = self._token_limit()
        try:
            closed = packer.add(EmbeddingRow(record.index, request.body, record.token_estimate))
        except PayloadError as exc:
            record.error = exc
            return record
        done: asyncio.Future[None] = loop.create_future()
        self._members[record.index] = (record, done)
        self._last_join = loop.time()
        for batch in closed:  # this row did not fit: the batch before it goes now
            self._wake(batch.rows[0], batch)
        if not packer.is_open(record.index):
            await done  # a member: the row that opened the batch sends it
            return record
        opened: asyncio.Future[Batch | None] = loop.create_future()
        self._openers[record.index] = (opened, loop.time())
        timer = loop.call_later(self.linger, self._expire, record.index)
        try:
            mine = await opened
        except BaseException:
            timer.cancel()
            self._abandon(record.index)
            raise
        timer.cancel()
        if mine is not None:
            await self._send_batch(mine)
        return record

    # -- collecting -------------------------------------------------------------------------
    def _wake(self, head: int, batch: Batch | None) -> None:
        entry = self._openers.pop(head, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(batch)

    def _expire(self, head: int) -> None:
        """The linger timer of the batch opened by ``head``: send it, unless rows are still
        joining (then wait a little more, up to 20 x linger from its opening)."""
        entry = self._openers.get(head)
        if entry is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        quiet_at = self._last_join + self.linger
        if quiet_at > now + 1e-3 and now - entry[1] < 20 * self.linger:
            loop.call_at(min(quiet_at, entry[1] + 20 * self.linger), self._expire, head)
            return
        self._wake(head, self._packer.close(head))

    def _abandon(self, head: int) -> None:
        """The opener was cancelled before sending: its batch's rows fail rather than wait
        for ever (in a cancelled run they are being cancelled too)."""
        self._openers.pop(head, None)
        batch = self._packer.close(head)
        if batch is None:
            return
        error = PipelineError("not sent: the row that was to send this batch was cancelled")
        for key in batch.rows:
            record, done = self._members.pop(key, (None, None))
            if record is not None and done is not None and not done.done():
                record.error = error
                done.set_result(None)

    # -- sending ----------------------------------------------------------------------------
    async def _send_batch(self, batch: Batch) -> None:
        members = [self._members.pop(key) for key in batch.rows]
        try:
            if self._slots is None:
                await self._deliver(batch, [m[0] for m in members])
            else:
                async with self._slots:
                    await self._deliver(batch, [m[0] for m in members])
        finally:
            for record, done in members:
                if not done.done():
                    if record.response is None and record.error is None:
                        record.error = PipelineError("not sent: the batch was cancelled")
                    done.set_result(None)

    async def _deliver(self, batch: Batch, records: list[Record]) -> None:
        first = records[0].request
        assert first is not None  # only records with a request join a batch
        request = APIRequest(path=first.path, method=first.method, body=batch.body,
                             token_estimate=batch.token_estimate)
        carrier = Record(index=batch.rows[0], row=_Carrier(batch), request=request,
                         path=request.path, token_estimate=batch.token_estimate,
                         started=records[0].started)
        carrier = await self._send.process(carrier)
        response, bodies = carrier.response, carrier.row.bodies
        if carrier.error is None and response is not None and bodies is not None:
            for record, body in zip(records, bodies, strict=True):
                record.response = Response(status=response.status, body=body,
                                           headers=response.headers, latency=response.latency)
                record.error = None
                record.attempts += carrier.attempts
                record.latency = carrier.latency
                record.batched = len(records)
            return
        error = carrier.error if carrier.error is not None else \
            PipelineError("the batch came back without an answer")
        if len(records) > 1 and _a_row_may_be_at_fault(error):
            # One row's fault (too long, empty) would fail all: halve, and send each half.
            half = len(records) // 2
            for part in (records[:half], records[half:]):
                rows = [EmbeddingRow(r.index, r.request.body if r.request is not None and
                                     r.request.body is not None else {}, r.token_estimate)
                        for r in part]
                (sub,) = pack(rows, max_inputs=len(rows) * MAX_INPUTS,
                              max_tokens=max(1, sum(r.tokens for r in rows)))
                await self._deliver(sub, part)
            return
        for record in records:
            record.error = error
            record.attempts += carrier.attempts

    def finish(self) -> None:
        self.send.finish()

    def __repr__(self) -> str:
        return (f"batched(max_inputs={self._packer.max_inputs}, max_tokens={self.max_tokens}, "
                f"batch_size={self.batch_size}, linger={self.linger:g})")
