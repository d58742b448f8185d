"""One request at a time, without a pipeline: retried, rate limited and cached the same way.

For the odd call a script makes beside a run (upload a training file, start a fine-tuning job,
fetch one answer): each function here runs the very stages a pipeline runs (``acquire``,
``call`` inside ``retry``) on a single record, so an error means the same thing, a 429 waits
the same way and the endpoint's limiter is shared with any run on the same service. Where a
pipeline puts errors on records, these raise them: the last
:class:`~pipeline.errors.APIError` when every attempt failed or the error is not retryable.

For example, inside a coroutine (or a notebook cell)::

    async with pipeline.OpenAIService() as service:
        uploaded = await upload_file_with_retry(service, "train.jsonl", "fine-tune")
        job = await call_with_retry(service, "fine_tuning/jobs", APIRequest(
            path="fine_tuning/jobs",
            body={"model": "gpt-4o-mini", "training_file": uploaded.body["id"]}))
"""

from __future__ import annotations

import mimetypes
import os
import pathlib
from typing import TypedDict, Unpack

from pipeline.core.record import Record
from pipeline.core.request import APIRequest, FilePart, Response
from pipeline.errors import InputError
from pipeline.http import BaseService, Endpoint
from pipeline.stages import DEFAULT_ATTEMPTS, DEFAULT_MAX_WAIT, Backoff, Stage, acquire, call, retry
from pipeline.state.cache import ResponseCache

__all__ = ["cached_call", "call_with_retry", "upload_file_with_retry"]


class _RetryOptions(TypedDict, total=False):
    """The keyword arguments of :func:`call_with_retry` that :func:`cached_call` passes on."""

    attempts: int
    backoff: Backoff | None
    max_wait: float
    timeout: float | None


def _endpoint(service: BaseService, endpoint: Endpoint | str) -> Endpoint:
    return endpoint if isinstance(endpoint, Endpoint) else service.endpoint(endpoint)


async def _run_one(service: BaseService, endpoint: Endpoint, request: APIRequest | None,
                   first: tuple[Stage, ...] = (), *, attempts: int,
                   backoff: Backoff | None, max_wait: float,
                   timeout: float | None) -> Response:
    inner = acquire(endpoint) | call(service, endpoint, timeout=timeout)
    for stage in reversed(first):
        inner = stage | inner
    stage = retry(inner, attempts=attempts, backoff=backoff, max_wait=max_wait)
    record = Record(index=0, row=request, request=request)
    if request is not None:
        record.path = request.path
        record.token_estimate = request.token_estimate
    record = await stage.process(record)
    if record.error is not None:
        raise record.error
    assert record.response is not None  # the call stage sets one or the other
    return record.response


async def call_with_retry(service: BaseService, endpoint: Endpoint | str,
                          request: APIRequest, *, attempts: int = DEFAULT_ATTEMPTS,
                          backoff: Backoff | None = None,
                          max_wait: float = DEFAULT_MAX_WAIT,
                          timeout: float | None = None) -> Response:
    """Send ``request`` to ``endpoint`` of ``service``: rate limited by the endpoint's limiter,
    retried like a pipeline retries (``attempts`` for errors; 429s cost time, up to
    ``max_wait`` seconds), and return the :class:`~pipeline.core.request.Response`.

    Raises the last :class:`~pipeline.errors.APIError` (or a
    :class:`~pipeline.errors.ThrottledError` past ``max_wait``).
    """
    return await _run_one(service, _endpoint(service, endpoint), request, attempts=attempts,
                          backoff=backoff, max_wait=max_wait, timeout=timeout)


async def cached_call(service: BaseService, endpoint: Endpoint | str, request: APIRequest,
                      cache: ResponseCache | str | os.PathLike[str],
                      **options: Unpack[_RetryOptions]) -> Response:
    """:func:`call_with_retry`, answered from ``cache`` when the same request was answered
    before (the key a pipeline's cache stages use: a pipeline run and this share answers).

    ``options`` are :func:`call_with_retry`'s. A cache given as a directory is opened and
    closed here.
    """
    owned = not isinstance(cache, ResponseCache)
    store = ResponseCache(cache) if not isinstance(cache, ResponseCache) else cache
    try:
        key = store.key(request, base_url=service.base_url, secrets=service.secrets())
        found = store.get(key)
        if found is not None:
            return found
        response = await call_with_retry(service, endpoint, request, **options)
        store.put(key, response)
        store.flush()
        return response
    finally:
        if owned:
            store.close()


class _read_file(Stage):
    """Read the file into the record's request on every attempt (never a spent stream)."""

    on_answered = False  # a request stage: an answered record needs none

    def __init__(self, path: pathlib.Path, purpose: str, endpoint: str) -> None:
        self.path, self.purpose, self.endpoint = path, purpose, endpoint
        self.content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".jsonl":
            self.content_type = "application/jsonl"

    async def process(self, record: Record) -> Record:
        try:
            content = self.path.read_bytes()
        except OSError as exc:
            record.error = InputError(f"cannot read {str(self.path)!r}: {exc.strerror or exc}")
            return record
        record.request = APIRequest(
            path=self.endpoint,
            files={"file": FilePart(self.path.name, content, self.content_type)},
            data={"purpose": self.purpose})
        return record


async def upload_file_with_retry(service: BaseService, path: str | os.PathLike[str],
                                 purpose: str = "fine-tune", *, attempts: int = 5,
                                 backoff: Backoff | None = None, endpoint: str = "files",
                                 max_wait: float = DEFAULT_MAX_WAIT,
                                 timeout: float | None = None) -> Response:
    """Upload a file (multipart ``file`` + ``purpose``) with the pipeline's retry policy.

    The file is read again on every attempt. Raises :class:`~pipeline.errors.InputError`
    when it cannot be read, and the last :class:`~pipeline.errors.APIError` when every
    attempt failed or the error is not retryable.
    """
    target = _endpoint(service, endpoint)
    reader = _read_file(pathlib.Path(path), purpose, target.path)
    return await _run_one(service, target, None, (reader,), attempts=attempts,
                          backoff=backoff, max_wait=max_wait, timeout=timeout)
