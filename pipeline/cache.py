"""A response cache on disk (diskcache), so a rerun pays only for what is new.

Keys come from :func:`cache_key` (method, path, body; never a header or a secret).
Only successful responses are stored. Writes are buffered and flushed in one SQLite
transaction (about 50 µs a write inside one, 130 µs alone), every ``flush_every`` responses
or ``flush_interval`` seconds, and on :meth:`close`: a crash loses at most that much, which a
rerun simply sends again.

>>> import tempfile
>>> from pipeline.request import Response
>>> with ResponseCache(tempfile.mkdtemp()) as cache:
...     cache.put("k", Response(status=200, body={"ok": True}))
...     cache.get("k").body
{'ok': True}
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from types import TracebackType
from typing import Any

import diskcache
import msgspec

from pipeline.errors import CacheError
from pipeline.redaction import redact_url
from pipeline.request import APIRequest, Response

__all__ = ["ResponseCache", "cache_key"]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Response)


class ResponseCache:
    """Successful responses by request key, in a directory.

    Args:
        directory: where the cache lives (created if missing).
        flush_every: buffered writes that trigger a flush.
        flush_interval: seconds after which buffered writes are flushed anyway.
        size_limit: bytes the cache may use before diskcache evicts old entries (default 8 GiB).
    """

    def __init__(self, directory: str | os.PathLike[str], *, flush_every: int = 128,
                 flush_interval: float = 0.5, size_limit: int = 8 * 2**30) -> None:
        self.directory = os.fspath(directory)
        try:
            self._cache = diskcache.Cache(self.directory, size_limit=size_limit,
                                          eviction_policy="least-recently-stored")
        except Exception as exc:  # sqlite errors, permissions...
            raise CacheError(f"cannot open the cache in {self.directory!r}: {exc}") from exc
        self._pending: dict[str, bytes] = {}
        self._flush_every = flush_every
        self._flush_interval = flush_interval
        self._last_flush = time.monotonic()
        self.hits = 0
        self.misses = 0
        self.writes = 0

    def get(self, key: str) -> Response | None:
        """The stored response for ``key``, or ``None``. A corrupt entry counts as a miss."""
        raw = self._pending.get(key)
        if raw is None:
            try:
                raw = self._cache.get(key)
            except Exception as exc:
                raise CacheError(f"cannot read the cache in {self.directory!r}: {exc}") from exc
        if raw is None:
            self.misses += 1
            return None
        try:
            response = _decoder.decode(raw)
        except (msgspec.DecodeError, TypeError):
            self.misses += 1
            return None
        self.hits += 1
        return response

    def __contains__(self, key: str) -> bool:
        return key in self._pending or key in self._cache

    def put(self, key: str, response: Response) -> None:
        """Store a successful response (buffered; see :meth:`flush`)."""
        self._pending[key] = _encoder.encode(response)
        if len(self._pending) >= self._flush_every or \
                time.monotonic() - self._last_flush >= self._flush_interval:
            self.flush()

    def flush(self) -> None:
        """Write buffered responses in one transaction."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            with self._cache.transact():
                for key, raw in pending.items():
                    self._cache.set(key, raw)
        except Exception as exc:
            raise CacheError(f"cannot write the cache in {self.directory!r}: {exc}") from exc
        self.writes += len(pending)

    def __len__(self) -> int:
        return len(self._cache) + sum(1 for k in self._pending if k not in self._cache)

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        self._pending.clear()
        return int(self._cache.clear())

    def stats(self) -> dict[str, Any]:
        """Entries, bytes on disk and this session's hits, misses and writes."""
        return {"directory": self.directory, "entries": len(self),
                "bytes": int(self._cache.volume()), "hits": self.hits,
                "misses": self.misses, "writes": self.writes}

    def close(self) -> None:
        """Flush and close (safe to call twice)."""
        try:
            self.flush()
        finally:
            self._cache.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<ResponseCache {self.directory!r} hits={self.hits} misses={self.misses} "
                f"pending={len(self._pending)}>")


@functools.lru_cache(maxsize=64)
def _key_namespace(base_url: str) -> str:
    # The same few base URLs come with every row: redact each once.
    return redact_url(base_url.strip().rstrip("/"))


def cache_key(request: APIRequest, *, base_url: str | None = None) -> str:
    """A stable SHA-256 hex key for a request: same request, same key, in any process.

    Covers the method, path, JSON body, form fields and (by content hash) files, plus the
    ``base_url`` when given (with secrets masked), never headers or auth, and not the
    token estimate (it does not change the answer).

    >>> a = APIRequest(path="embeddings", body={"model": "m", "input": "hi"})
    >>> b = APIRequest(path="/embeddings", body={"input": "hi", "model": "m"})
    >>> cache_key(a) == cache_key(b), cache_key(a) == cache_key(APIRequest(path="embeddings"))
    (True, False)
    """
    files = None
    if request.files:
        files = {
            name: [part.filename, part.content_type, hashlib.sha256(part.content).hexdigest()]
            for name, part in request.files.items()
        }
    document: dict[str, Any] = {
        "v": 1,
        "method": request.method.upper(),
        "path": request.path.strip("/"),
        "body": request.body,
        "data": request.data,
        "files": files,
    }
    if base_url is not None:
        document["base_url"] = _key_namespace(base_url)
    encoded = msgspec.json.encode(document, order="deterministic")
    return hashlib.sha256(encoded).hexdigest()
