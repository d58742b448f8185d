"""The provider's Batch API from the same pipeline: half the price, answers within a day.

:func:`run_batch` takes the rows and the job :func:`pipeline.run` takes and returns the same
:class:`~pipeline.runner.Results`, but instead of calling the endpoint once per row it:

1. builds every row's request and answers what it can from the response cache;
2. writes the rest as OpenAI Batch input lines into files of at most ``max_requests`` lines
   and ``max_bytes`` bytes (OpenAI: 50,000 and 200 MB), uploads each (``POST /files``,
   purpose ``batch``) and submits it (``POST /batches``);
3. polls each batch (``GET /batches/{id}``) with a progress bar fed by ``request_counts``,
   downloads its output and error files, and lines every answer up with its rows;
4. stores every answer in the cache, as an online run does: a later run, online or batch,
   pays for none of them again.

**Resumable.** What was uploaded and submitted is written to a ledger (``batches.jsonl`` in the
cache directory) before and after each step, and every batch carries its chunk's id in its
``metadata``: killed at any moment, the same call picks up the same batches, and a batch whose
creation was cut short is found by its metadata instead of being created twice. Identical
requests go once (their ``custom_id`` is the request's cache key) and answer every row that
asked them.

**What goes wrong.** A line in the error file becomes that row's classified error (the same
classes as online); lines of an ``expired`` or ``cancelled`` batch fail with a retryable
:class:`~pipeline.errors.BatchError`; a batch that fails validation fails its rows with the
provider's reasons. Run again and only the rows without an answer are sent, in a new batch.
A batch refused for the model's enqueued-token limit is submitted again once an earlier one
of the run has finished.

Inside a coroutine (or a notebook cell)::

    async with OpenAIService() as service:
        job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}")
        results = await run_batch(rows, job, cache=".cache", progress=True)
        results.cost            # at the batch price
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pipeline.adapters.standalone import call_with_retry
from pipeline.core.record import Record
from pipeline.core.request import APIRequest, FilePart, Response
from pipeline.errors import APIError, BatchError, BatchExpiredError, ConfigError
from pipeline.http import BaseService, Job
from pipeline.http.classify import classify_error
from pipeline.pricing.cost import DEFAULT_PRICES, Prices
from pipeline.runner import Results, check_rows, rows_of
from pipeline.stages import build, decode, lookup
from pipeline.state.cache import ResponseCache
from pipeline.state.status import StatusTracker

__all__ = ["BATCH_ENDPOINTS", "BatchLedger", "cancel_batches", "run_batch", "send_records"]

#: Endpoint paths a batch can be sent to (relative to the base URL).
BATCH_ENDPOINTS = ("chat/completions", "completions", "embeddings")
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
_TERMINAL = ("completed", "failed", "expired", "cancelled")
_LEDGER_NAME = "batches.jsonl"
_encode = msgspec.json.Encoder(order="deterministic").encode
_decode = msgspec.json.decode


@dataclass
class Chunk:
    """One batch's worth of requests and how far it got (rebuilt from the ledger)."""

    id: str
    path: str
    keys: list[str]
    file_id: str | None = None
    batch_id: str | None = None
    collected: bool = False
    #: Known from the ledger of an earlier run: a batch for it may exist unrecorded.
    resumed: bool = False
    batch: dict[str, Any] = field(default_factory=dict)  # the last Batch object seen


class BatchLedger:
    """An append-only JSON Lines file of what a batch run did: chunks made, files uploaded,
    batches created, answers collected. Each line is written and flushed to the OS before
    the next step starts, so a killed run leaves a ledger that says where it was.

    >>> import tempfile, os
    >>> ledger = BatchLedger(os.path.join(tempfile.mkdtemp(), "batches.jsonl"))
    >>> ledger.append({"event": "chunk", "chunk": "c1", "path": "embeddings", "keys": ["k"]})
    >>> ledger.append({"event": "batch", "chunk": "c1", "batch_id": "batch_1"})
    >>> ledger.chunks()["c1"].batch_id
    'batch_1'
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def append(self, event: dict[str, Any]) -> None:
        """Write one event as one line (one ``write`` to the OS, then ``fsync``)."""
        with open(self.path, "ab") as f:
            f.write(_encode(event) + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def chunks(self) -> dict[str, Chunk]:
        """Every chunk the ledger knows, by id, as far as its events go."""
        chunks: dict[str, Chunk] = {}
        try:
            with open(self.path, "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            return chunks
        for line in lines:
            try:
                event = _decode(line) if line.strip() else None
            except msgspec.DecodeError:
                continue  # a line cut short by a kill
            if not isinstance(event, dict) or not isinstance(event.get("chunk"), str):
                continue
            kind, cid = event.get("event"), event["chunk"]
            if kind == "chunk":
                chunks[cid] = Chunk(cid, str(event.get("path", "")), list(event.get("keys", [])),
                                    resumed=True)
            elif cid not in chunks:
                continue
            elif kind == "file":
                chunks[cid].file_id = event.get("file_id")
            elif kind == "batch":
                chunks[cid].batch_id = event.get("batch_id")
            elif kind == "resubmit":  # the batch was refused as a whole: submit it again
                chunks[cid].batch_id = None
            elif kind == "collected":
                chunks[cid].collected = True
        return chunks

    def __repr__(self) -> str:
        return f"<BatchLedger {self.path!r}>"


def _open_cache(cache: str | os.PathLike[str] | ResponseCache | None
                ) -> tuple[ResponseCache, bool]:
    if isinstance(cache, ResponseCache):
        return cache, False
    if isinstance(cache, str | os.PathLike):
        return ResponseCache(cache), True
    raise ConfigError("run_batch() needs cache= (a directory): the batches' answers and ids "
                      "are kept there, so a rerun picks up what was already submitted or paid")


def _chunk_id(path: str, keys: list[str]) -> str:
    digest = hashlib.sha256(path.encode())
    for key in sorted(keys):
        digest.update(key.encode())
    return "pl-" + digest.hexdigest()[:24]


def _line(key: str, request: APIRequest) -> bytes:
    return _encode({"custom_id": key, "method": "POST", "url": "/v1/" + request.path.strip("/"),
                    "body": request.body}) + b"\n"


def _split(keys: list[str], requests: dict[str, APIRequest], max_requests: int,
           max_bytes: int) -> list[list[str]]:
    """Keys in chunks of at most ``max_requests`` lines and ``max_bytes`` bytes."""
    chunks: list[list[str]] = [[]]
    size = 0
    for key in keys:
        n = len(_line(key, requests[key]))
        if chunks[-1] and (len(chunks[-1]) >= max_requests or size + n > max_bytes):
            chunks.append([])
            size = 0
        chunks[-1].append(key)
        size += n
    return [c for c in chunks if c]


class _Run:
    """One call of :func:`run_batch`: the state its steps share."""

    def __init__(self, job: Job, cache: ResponseCache, ledger: BatchLedger, *,
                 poll: float, max_poll: float, progress: bool, status: StatusTracker) -> None:
        self.job = job
        self.service = job.service
        self.cache = cache
        self.ledger = ledger
        self.poll = poll
        self.max_poll = max_poll
        self.status = status
        self.progress = progress
        self.bar: Any = None

    async def send(self, request: APIRequest) -> Response:
        # The endpoint (what the call counts against) is the path's first part: "batches",
        # "files"; the path itself may carry an id and a query.
        endpoint = request.path.split("?", 1)[0].split("/", 1)[0]
        return await call_with_retry(self.service, endpoint, request)

    # -- submitting ------------------------------------------------------------------------------
    async def find_batch(self, chunk: Chunk) -> str | None:
        """A batch created for ``chunk`` that the ledger did not hear of (a kill between
        creating it and writing its id down), found by its metadata."""
        after: str | None = None
        for _ in range(50):  # pages of 100: the newest 5,000 batches
            path = "batches?limit=100" + (f"&after={after}" if after else "")
            page = (await self.send(APIRequest(path=path, method="GET"))).body
            data = page.get("data", []) if isinstance(page, dict) else []
            for batch in data:
                if (batch.get("metadata") or {}).get("pipeline_chunk") == chunk.id and \
                        batch.get("status") not in ("failed",):
                    return str(batch["id"])
            if not (isinstance(page, dict) and page.get("has_more") and data):
                return None
            after = data[-1].get("id")
        return None

    async def submit(self, chunk: Chunk, requests: dict[str, APIRequest]) -> None:
        """Upload ``chunk``'s file and create its batch (each step written down first)."""
        if chunk.file_id is None:
            content = b"".join(_line(k, requests[k]) for k in chunk.keys if k in requests)
            response = await self.send(APIRequest(
                path="files", files={"file": FilePart(f"{chunk.id}.jsonl", content,
                                                      "application/jsonl")},
                data={"purpose": "batch"}))
            chunk.file_id = str(response.body["id"])
            self.ledger.append({"event": "file", "chunk": chunk.id, "file_id": chunk.file_id})
        # Only a chunk of an earlier run can have a batch the ledger did not hear of (or one
        # refused as a whole, which find_batch skips): a new chunk needs no listing.
        found = await self.find_batch(chunk) if chunk.resumed else None
        if found is None:
            response = await self.send(APIRequest(path="batches", body={
                "input_file_id": chunk.file_id, "endpoint": "/v1/" + chunk.path,
                "completion_window": "24h", "metadata": {"pipeline_chunk": chunk.id}}))
            found = str(response.body["id"])
        chunk.batch_id = found
        self.ledger.append({"event": "batch", "chunk": chunk.id, "batch_id": found})

    # -- waiting ---------------------------------------------------------------------------------
    async def refresh(self, chunk: Chunk) -> dict[str, Any]:
        response = await self.send(APIRequest(path=f"batches/{chunk.batch_id}", method="GET"))
        chunk.batch = response.body if isinstance(response.body, dict) else {}
        return chunk.batch

    def show(self, chunks: list[Chunk], total: int) -> None:
        if not self.progress:
            return
        if self.bar is None:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc="batch", unit="row")
        done = sum((c.batch.get("request_counts") or {}).get("completed", 0) +
                   (c.batch.get("request_counts") or {}).get("failed", 0) for c in chunks)
        states: dict[str, int] = {}
        for c in chunks:
            state = c.batch.get("status", "submitting")
            states[state] = states.get(state, 0) + 1
        self.bar.n = min(done, total)
        self.bar.set_postfix_str(", ".join(f"{n} {s}" for s, n in sorted(states.items())),
                                 refresh=False)
        self.bar.refresh()

    # -- collecting ------------------------------------------------------------------------------
    async def download(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        body = (await self.send(APIRequest(path=f"files/{file_id}/content", method="GET"))).body
        raw = body if isinstance(body, bytes) else _encode(body)
        lines = []
        for line in raw.splitlines():
            try:
                item = _decode(line) if line.strip() else None
            except msgspec.DecodeError:
                continue
            if isinstance(item, dict) and isinstance(item.get("custom_id"), str):
                lines.append(item)
        return lines

    async def collect(self, chunk: Chunk, waiting: dict[str, list[Record]]) -> None:
        """Line the batch's answers up with their rows; keep each answer in the cache."""
        batch = chunk.batch
        state = batch.get("status")
        results: dict[str, dict[str, Any]] = {}
        for line in await self.download(batch.get("error_file_id")) + \
                await self.download(batch.get("output_file_id")):
            results[line["custom_id"]] = line
        where = f"batch {chunk.batch_id}"
        for key in chunk.keys:
            records = waiting.get(key)
            if not records:
                continue
            item = results.get(key)
            response, error = _outcome(item, state, batch, where)
            if response is not None:
                self.cache.put(key, response)
            for record in records:
                record.response, record.error = response, error
                record.attempts = 1
                record.batch_id = chunk.batch_id
        self.cache.flush()  # in the cache before the ledger says so
        chunk.collected = True
        self.ledger.append({"event": "collected", "chunk": chunk.id})


def _outcome(item: dict[str, Any] | None, state: object, batch: dict[str, Any],
             where: str) -> tuple[Response | None, BaseException | None]:
    """The answer or error of one request of a finished batch."""
    if item is None:
        if state == "failed":
            reasons = "; ".join(str(e.get("message")) for e in
                                ((batch.get("errors") or {}).get("data") or [])[:3])
            return None, BatchError(f"{where} failed: {reasons or 'no reason given'}")
        return None, BatchExpiredError(f"{where} ended {state} before answering this request; "
                                       "run again to send it in a new batch")
    error = item.get("error")
    answer = item.get("response")
    if isinstance(answer, dict) and answer.get("status_code") == 200:
        return Response(status=200, body=answer.get("body"),
                        headers={"x-request-id": str(answer.get("request_id", ""))}), None
    if isinstance(answer, dict) and isinstance(answer.get("status_code"), int):
        exc: APIError = classify_error(answer["status_code"], {}, _encode(answer.get("body")),
                                       method="POST", url=where)
        return None, exc
    message = error.get("message") if isinstance(error, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    text = f"{where}: {message or 'the request was not answered'}{f' ({code})' if code else ''}"
    if code in ("batch_expired", "batch_cancelled", None):
        return None, BatchExpiredError(text, code=code)
    return None, BatchError(text, code=code)


async def run_batch(rows: Iterable[Any] | AsyncIterable[Any], job: Job, *,
                    cache: str | os.PathLike[str] | ResponseCache,
                    ledger: str | os.PathLike[str] | None = None, progress: bool = False,
                    status: StatusTracker | None = None,
                    prices: Prices | Mapping[str, Any] | str | os.PathLike[str] | None = None,
                    max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES,
                    poll: float = 5.0, max_poll: float = 60.0) -> Results:
    """Send the rows through the provider's Batch API; return :class:`Results` as
    :func:`pipeline.run` does (input order, status, cost at the batch price).

    Args:
        rows, job: as for :func:`pipeline.run` (a chat, completion or embeddings job).
        cache: the response cache directory (required: it keeps the answers and, in
            ``batches.jsonl``, the ledger of files and batches a rerun picks up).
        ledger: another place for the ledger.
        progress: a progress bar of rows answered across the batches.
        status, prices: as for :func:`pipeline.run`.
        max_requests, max_bytes: most lines and bytes per batch input file.
        poll, max_poll: seconds between looks at a batch, growing from ``poll`` to
            ``max_poll`` while nothing changes.

    Cancelling (Ctrl-C) leaves the batches running at the provider: call again to pick them
    up, or :func:`cancel_batches` to cancel them.
    """
    rows = rows_of(rows)
    check_rows(rows, job)  # a template column the rows lack: raised before anything is sent
    if isinstance(rows, AsyncIterable):
        rows = [row async for row in rows]
    store, owned = _open_cache(cache)
    status = status if status is not None else StatusTracker()
    status.prices = Prices.of(prices) if prices is not None else (status.prices or
                                                                  DEFAULT_PRICES)
    try:
        # A frame or file comes as records already (pipeline.io's view of it).
        records = [row if isinstance(row, Record) else Record(index=index, row=row)
                   for index, row in enumerate(rows)]
        await send_records(records, job, cache=store, ledger=ledger, progress=progress,
                           status=status, max_requests=max_requests, max_bytes=max_bytes,
                           poll=poll, max_poll=max_poll)
        return Results(records, status, None, schema=job.schema)
    finally:
        if owned:
            store.close()


async def send_records(records: list[Record], job: Job, *, cache: ResponseCache,
                       ledger: str | os.PathLike[str] | None = None, progress: bool = False,
                       status: StatusTracker | None = None, max_requests: int = MAX_REQUESTS,
                       max_bytes: int = MAX_BYTES, poll: float = 5.0,
                       max_poll: float = 60.0) -> None:
    """:func:`run_batch` on records made already (``Record(index=..., row=...)``; one that
    already has an error is left as it is): each ends answered or with its error, and is
    counted on ``status``. What :func:`pipeline.io.resume.run_file` calls with ``batch_api=True``.
    """
    status = status if status is not None else StatusTracker()
    ledger_path = ledger if ledger is not None else os.path.join(cache.directory, _LEDGER_NAME)
    builder = build(job.builder)
    finder = lookup(cache, namespace=job.service.base_url, secrets=job.service.secrets())
    waiting: dict[str, list[Record]] = {}
    requests: dict[str, APIRequest] = {}
    for record in records:
        record.started = time.perf_counter()
        status.record_started(record)
        if record.error is not None:
            continue
        await builder.process(record)
        if record.error is not None:
            continue
        request = record.request
        assert request is not None
        if request.path.strip("/") not in BATCH_ENDPOINTS or request.body is None:
            record.error = ConfigError(f"{request.path!r} cannot go in a batch (only "
                                       f"{', '.join(BATCH_ENDPOINTS)})")
            continue
        await finder.process(record)
        if record.response is None and record.cache_key is not None:
            waiting.setdefault(record.cache_key, []).append(record)
            requests.setdefault(record.cache_key, request)
    state = _Run(job, cache, BatchLedger(ledger_path), poll=poll, max_poll=max_poll,
                 progress=progress, status=status)
    try:
        if waiting:
            await _send_all(state, waiting, requests, max_requests, max_bytes)
    finally:
        if state.bar is not None:
            state.bar.close()
    schema = job.schema
    decoder = decode(schema) if schema is not None else None
    for record in records:
        if decoder is not None:
            await decoder.process(record)
        record.finished = time.perf_counter()
        status.record_finished(record)


async def _send_all(state: _Run, waiting: dict[str, list[Record]],
                    requests: dict[str, APIRequest], max_requests: int, max_bytes: int) -> None:
    ledger = state.ledger
    known = ledger.chunks()
    mine: list[Chunk] = []
    placed: set[str] = set()
    # Chunks of earlier runs that still hold some of these requests: pick them up.
    for chunk in known.values():
        keys = [k for k in chunk.keys if k in waiting and k not in placed]
        if not keys or (chunk.collected and chunk.batch_id is not None):
            continue  # collected chunks answered what they could; the rest goes again
        mine.append(chunk)
        placed.update(keys)
    by_path: dict[str, list[str]] = {}
    for key in waiting:
        if key not in placed:
            by_path.setdefault(requests[key].path.strip("/"), []).append(key)
    for path, keys in by_path.items():
        for part in _split(keys, requests, max_requests, max_bytes):
            chunk = Chunk(_chunk_id(path, part), path, part)
            if chunk.id in known and known[chunk.id].collected:
                # The same requests were sent before and not answered: a new batch.
                chunk = Chunk(_chunk_id(path, [*part, str(time.time_ns())]), path, part)
            ledger.append({"event": "chunk", "chunk": chunk.id, "path": path,
                           "keys": chunk.keys})
            mine.append(chunk)
    total = sum(len(waiting[k]) for c in mine for k in c.keys if k in waiting)
    delay = state.poll
    freed = False  # a batch of ours finished since the last round
    while True:
        in_flight = [c for c in mine if c.batch_id is not None and not c.collected]
        unsent = [c for c in mine if c.batch_id is None and not c.collected]
        # After a refusal for the model's enqueued-token limit, submit again only once one
        # of our batches has finished (or none is left running).
        if not (in_flight and not freed and any(c.batch.get("_refused") for c in unsent)):
            for chunk in unsent:
                await state.submit(chunk, requests)
        freed = False
        changed = False
        for chunk in [c for c in mine if c.batch_id is not None and not c.collected]:
            before = (chunk.batch.get("status"), chunk.batch.get("request_counts"))
            batch = await state.refresh(chunk)
            if (batch.get("status"), batch.get("request_counts")) != before:
                changed = True
            if batch.get("status") == "failed" and _refused_for_queue(batch) and \
                    any(c is not chunk and c.batch_id is not None and not c.collected
                        for c in mine):
                ledger.append({"event": "resubmit", "chunk": chunk.id})
                chunk.batch_id, chunk.batch = None, {"_refused": True}
                continue
            if batch.get("status") in _TERMINAL:
                await state.collect(chunk, waiting)
                changed = freed = True
        state.show(mine, total)
        if all(c.collected for c in mine):
            return
        delay = state.poll if changed else min(state.max_poll, delay * 1.5)
        await asyncio.sleep(delay)


def _refused_for_queue(batch: dict[str, Any]) -> bool:
    errors = (batch.get("errors") or {}).get("data") or []
    return any(e.get("code") == "token_limit_exceeded" for e in errors)


async def cancel_batches(service: BaseService, cache: str | os.PathLike[str] | ResponseCache, *,
                         ledger: str | os.PathLike[str] | None = None) -> list[str]:
    """Cancel every batch the ledger knows that has not been collected yet; return their ids.

    The answers a cancelled batch already has are collected by the next :func:`run_batch`
    of the same rows; the rest are sent again then.
    """
    store, owned = _open_cache(cache)
    try:
        path = ledger if ledger is not None else os.path.join(store.directory, _LEDGER_NAME)
        cancelled = []
        for chunk in BatchLedger(path).chunks().values():
            if chunk.batch_id is None or chunk.collected:
                continue
            try:
                await call_with_retry(service, "batches", APIRequest(
                    path=f"batches/{chunk.batch_id}/cancel"))
            except APIError as exc:
                if exc.status != 409:  # already finished: nothing to cancel
                    raise
                continue
            cancelled.append(chunk.batch_id)
        return cancelled
    finally:
        if owned:
            store.close()
