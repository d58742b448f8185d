"""The cache stages: answer from the response cache (``lookup``), keep new answers (``store``)."""

from __future__ import annotations

from pipeline.cache import ResponseCache, cache_key
from pipeline.errors import PipelineError
from pipeline.record import Record
from pipeline.stages._core import Stage

__all__ = ["lookup", "store"]


class lookup(Stage):
    """Answer from the response cache when the request was answered before.

    ``namespace`` (e.g. the service's base URL) keeps answers of different servers apart.
    """

    def __init__(self, cache: ResponseCache, *, namespace: str | None = None) -> None:
        self.cache = cache
        self.namespace = namespace

    async def process(self, record: Record) -> Record:
        if record.request is None:
            return record
        key = record.cache_key
        if key is None:
            key = record.cache_key = cache_key(record.request, base_url=self.namespace)
        response = self.cache.get(key)
        if response is not None:
            record.response = response
            record.cached = True
        return record

    def __repr__(self) -> str:
        return f"lookup({self.cache!r})"


class store(Stage):
    """Keep successful, fresh responses in the cache (buffered; flushed at the end)."""

    after_done = True

    def __init__(self, cache: ResponseCache, *, namespace: str | None = None) -> None:
        self.cache = cache
        self.namespace = namespace

    async def process(self, record: Record) -> Record:
        if record.response is None or record.error is not None or record.cached or \
                record.request is None:
            return record
        key = record.cache_key
        if key is None:
            key = record.cache_key = cache_key(record.request, base_url=self.namespace)
        try:
            self.cache.put(key, record.response)
        except PipelineError as exc:  # the answer is still good; say the cache failed
            record.error = exc
        return record

    def finish(self) -> None:
        self.cache.flush()

    def __repr__(self) -> str:
        return f"store({self.cache!r})"
