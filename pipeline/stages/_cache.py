"""The cache stages: answer from the response cache (``lookup``), keep new answers (``store``).

Neither fails a row because of the cache: a read that fails is a miss, a write that fails is
said once and the answer goes on as a success (see :class:`~pipeline.state.cache.ResponseCache`).
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.core.record import Record
from pipeline.errors import ConfigError
from pipeline.stages._core import Stage
from pipeline.state.cache import ResponseCache, cache_key

__all__ = ["lookup", "store"]


class lookup(Stage):
    """Answer from the response cache when the request was answered before.

    ``namespace`` (e.g. the service's base URL) keeps answers of different servers apart;
    ``secrets`` (the service's ``secrets()``) keep different API keys' answers apart when the
    cache is scoped by key (only their fingerprint is kept, here and in the key; leaving them
    out for such a cache is a :class:`~pipeline.errors.ConfigError`)::

        lookup(cache, namespace=service.base_url, secrets=service.secrets())
    """

    on_answered = False  # a request stage: an answered record needs none

    def __init__(self, cache: ResponseCache, *, namespace: str | None = None,
                 secrets: Iterable[str] | None = None) -> None:
        self.cache = cache
        self.namespace = namespace
        self.scope = _scope(cache, secrets)

    async def process(self, record: Record) -> Record:
        if record.request is None:
            return record
        key = record.cache_key
        if key is None:
            key = record.cache_key = cache_key(record.request, base_url=self.namespace,
                                                 scope=self.scope)
        response = self.cache.get(key)
        if response is not None:
            record.response = response
            record.cached = True
        return record

    def __repr__(self) -> str:
        return f"lookup({self.cache!r})"


class store(Stage):
    """Keep successful, fresh responses in the cache (buffered; flushed at the end).

    ``namespace`` and ``secrets`` as for :class:`lookup` (give both stages the same). A write
    that fails never fails the row: the cache says so once and stops caching.
    """

    on_failed = True  # sees every record; stores only fresh answers

    def __init__(self, cache: ResponseCache, *, namespace: str | None = None,
                 secrets: Iterable[str] | None = None) -> None:
        self.cache = cache
        self.namespace = namespace
        self.scope = _scope(cache, secrets)

    async def process(self, record: Record) -> Record:
        if record.response is None or record.error is not None or record.cached or \
                record.request is None:
            return record
        key = record.cache_key
        if key is None:
            key = record.cache_key = cache_key(record.request, base_url=self.namespace,
                                                 scope=self.scope)
        self.cache.put(key, record.response)  # never raises
        return record

    def finish(self) -> None:
        self.cache.flush()

    def __repr__(self) -> str:
        return f"store({self.cache!r})"



def _scope(cache: ResponseCache, secrets: Iterable[str] | None) -> str | None:
    if secrets is None:
        if cache.scope == "key":
            # Without them every key would share one scope: the very leak the scope closes.
            raise ConfigError(f"the response cache at {cache.directory} is scoped by API key: "
                              "give the stage the service's secrets "
                              "(secrets=service.secrets())")
        return None
    return cache.scope_for(secrets)
