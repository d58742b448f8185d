"""A response cache on disk (diskcache), so a rerun pays only for what is new.

Keys come from :func:`cache_key` (method, path, body and base URL; never a header or a
secret). Only successful responses are stored, with only the headers a later reader needs
(:data:`KEPT_HEADERS`: never auth, cookie or api-key headers a proxy may echo). Writes are
buffered and flushed in one SQLite transaction every ``flush_every`` responses or
``flush_interval`` seconds, and on :meth:`~ResponseCache.close`: a crash loses at most that
much, which a rerun simply sends again.

The cache never fails a row. A write that fails (a full disk, a damaged file) is said once on
the ``pipeline.state.cache`` logger, counted in ``failed_writes``, and the run goes on without
caching; a read that fails is a miss. Only opening a damaged cache raises
(:class:`~pipeline.errors.CacheError`, saying how to remove it), before anything is sent.

Sharing a directory between API keys: by default the key is not part of the cache key, so
one key's answers are served to another. A directory opened with ``scope="key"`` (recorded
in it, so every later run honours it) mixes a fingerprint of the key (HMAC-SHA256, never the
key) into every cache key: each key is served only the answers it paid for.

>>> import tempfile
>>> from pipeline.core.request import Response
>>> with ResponseCache(tempfile.mkdtemp()) as cache:
...     cache.put("k", Response(status=200, body={"ok": True}))
...     cache.get("k").body
{'ok': True}
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import re
import shlex
import shutil
import sqlite3
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal

import diskcache
import msgspec

from pipeline.core.redaction import redact_text, redact_url
from pipeline.core.request import APIRequest, Response
from pipeline.errors import CacheError, ConfigError

__all__ = ["KEPT_HEADERS", "SCOPES", "CacheDamagedError", "CacheScope", "ResponseCache",
           "cache_key", "is_response_cache", "key_fingerprint", "remove_cache_files",
           "set_scope"]

logger = logging.getLogger("pipeline.state.cache")

#: Whose answers a cache serves: ``"shared"`` (anyone's, the default) or ``"key"`` (only
#: the API key that paid for them).
CacheScope = Literal["shared", "key"]
SCOPES: tuple[CacheScope, ...] = ("shared", "key")

#: Response headers kept with a cached answer (names lower-case): what the output and a
#: reader of a cached response use. Everything else (auth, cookies, an echoed ``x-api-key``,
#: stale ``x-ratelimit-*``) is dropped before the answer is written.
KEPT_HEADERS = frozenset({"content-type", "x-request-id", "request-id", "apim-request-id",
                          "openai-model", "openai-processing-ms", "openai-version"})

_DB_FILE = "cache.db"  # diskcache's database file name
_SCOPE_FILE = "pipeline-cache-scope"  # "key" when the directory is scoped by API key
_SCOPE_LABEL = b"pipeline response cache scope v1"
_VALUE_DIR = re.compile(r"[0-9a-f]{2}")  # diskcache keeps large values in 2-hex-digit dirs
_DAMAGED = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
_MAYBE_SECRET = re.compile(r"(?i)sk-|bearer|basic|=")  # what redact_text masks

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Response)


class CacheDamagedError(CacheError):
    """The cache's database is damaged (not SQLite, or a malformed page); the message says
    how to remove it. Its answers were all paid for already: removing it costs a rerun."""


class ResponseCache:
    """Successful responses by request key, in a directory.

    Args:
        directory: where the cache lives (created if missing).
        scope: ``"key"`` to serve each API key only the answers it paid for (recorded in the
            directory, so later runs keep it); ``"shared"`` for the default (anyone's answers;
            refused for a directory recorded as ``"key"``); ``None`` (default): as recorded.
        flush_every: buffered writes that trigger a flush.
        flush_interval: seconds after which buffered writes are flushed anyway.
        size_limit: bytes the cache may use before diskcache evicts old entries (default 8 GiB).

    Raises:
        CacheDamagedError: the directory holds a damaged cache (the message says how to
            remove it).
        CacheError: the cache cannot be opened (permissions...).
        ConfigError: an unknown ``scope``, or ``"shared"`` for a directory scoped by key.

    After a write fails, ``write_error`` says why and ``failed_writes`` counts the answers
    not kept; ``failed_reads`` counts reads that failed (served as misses).
    """

    def __init__(self, directory: str | os.PathLike[str], *, scope: CacheScope | None = None,
                 flush_every: int = 128, flush_interval: float = 0.5,
                 size_limit: int = 8 * 2**30) -> None:
        self.directory = os.fspath(directory)
        if scope is not None and scope not in SCOPES:
            raise ConfigError(f"cache scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        recorded = _recorded_scope(self.directory)
        if scope == "shared" and recorded == "key":
            raise ConfigError(
                f"the response cache at {self.directory} is scoped by API key: it serves each "
                "key only the answers it paid for. To share them between keys, run "
                f"`pipeline cache scope {shlex.quote(self.directory)} shared`")
        try:
            self._cache = diskcache.Cache(self.directory, size_limit=size_limit,
                                          eviction_policy="least-recently-stored")
        except Exception as exc:  # sqlite errors, permissions...
            if _is_damage(exc):
                raise CacheDamagedError(_damaged_message(self.directory, exc)) from exc
            raise CacheError(f"cannot open the cache in {self.directory!r}: "
                             f"{_reason(exc)}") from exc
        if scope == "key" and recorded != "key":
            set_scope(self.directory, "key")
        self.scope: CacheScope = scope or recorded
        self._pending: dict[str, bytes] = {}
        self._flush_every = flush_every
        self._flush_interval = flush_interval
        self._last_flush = time.monotonic()
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.failed_writes = 0
        self.failed_reads = 0
        self.write_error: str | None = None

    def scope_for(self, secrets: Iterable[str]) -> str | None:
        """What :func:`cache_key` mixes in for a service with these ``secrets`` (its API
        key): ``None`` for a shared cache, else :func:`key_fingerprint` of them."""
        return key_fingerprint(secrets) if self.scope == "key" else None

    def key(self, request: APIRequest, *, base_url: str | None = None,
            secrets: Iterable[str] = ()) -> str:
        """The cache key of ``request`` sent to ``base_url`` with ``secrets`` (the service's
        ``secrets()``: used only when the cache is scoped by key, and only as a fingerprint)."""
        return cache_key(request, base_url=base_url, scope=self.scope_for(secrets))

    def get(self, key: str) -> Response | None:
        """The stored response for ``key``, or ``None``. A corrupt entry, or a read that
        fails, counts as a miss (said once on the log)."""
        raw = self._pending.get(key)
        if raw is None:
            try:
                raw = self._cache.get(key)
            except Exception as exc:
                self._read_failed(exc)
                raw = None
        if raw is None:
            self.misses += 1
            return None
        try:
            response = _decoder.decode(raw)
        except (msgspec.DecodeError, TypeError):
            self.misses += 1
            return None
        self.hits += 1
        # Entries written before headers were filtered may hold any: keep the allowed ones.
        response.headers = {k: v for k, v in response.headers.items() if k in KEPT_HEADERS}
        return response

    def __contains__(self, key: str) -> bool:
        if key in self._pending:
            return True
        try:
            return key in self._cache
        except Exception as exc:
            self._read_failed(exc)
            return False

    def put(self, key: str, response: Response) -> None:
        """Store a successful response (buffered; see :meth:`flush`). Never raises: once a
        write has failed, answers are counted in ``failed_writes`` and not kept."""
        if self.write_error is not None:
            self.failed_writes += 1
            return
        kept = Response(status=response.status, body=response.body,
                        headers=_kept(response.headers), latency=response.latency)
        self._pending[key] = _encoder.encode(kept)
        if len(self._pending) >= self._flush_every or \
                time.monotonic() - self._last_flush >= self._flush_interval:
            self.flush()

    def flush(self) -> None:
        """Write buffered responses in one transaction. Never raises: a failed write stops
        caching for the rest of this cache's life (see the class docstring)."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            with self._cache.transact():
                for key, raw in pending.items():
                    # FanoutCache.set returns False on a timeout instead of raising.
                    if self._cache.set(key, raw) is False:
                        raise TimeoutError("the cache database stayed locked")
        except Exception as exc:  # a full disk, a damaged file, a lock held too long
            self._write_failed(exc, len(pending))
            return
        self.writes += len(pending)

    def _write_failed(self, exc: BaseException, lost: int) -> None:
        self.failed_writes += lost
        if self.write_error is not None:
            return
        self.write_error = _reason(exc)
        advice = ""
        if _is_damage(exc):
            advice = (f"; it is damaged: remove it with `pipeline cache clear "
                      f"{shlex.quote(self.directory)}`")
        logger.warning("the response cache at %s cannot be written (%s); going on without "
                       "caching: a rerun will pay again for the answers from now on%s",
                       self.directory, self.write_error, advice)

    def _read_failed(self, exc: BaseException) -> None:
        self.failed_reads += 1
        if self.failed_reads == 1:
            logger.warning("the response cache at %s cannot be read (%s); the rows it cannot "
                           "answer are sent", self.directory, _reason(exc))

    def __len__(self) -> int:
        return len(self._cache) + sum(1 for k in self._pending if k not in self._cache)

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        self._pending.clear()
        return int(self._cache.clear())

    def stats(self) -> dict[str, Any]:
        """Entries, bytes on disk, the scope and this session's hits, misses and writes."""
        return {"directory": self.directory, "entries": len(self),
                "bytes": int(self._cache.volume()), "scope": self.scope, "hits": self.hits,
                "misses": self.misses, "writes": self.writes,
                "failed_writes": self.failed_writes, "failed_reads": self.failed_reads}

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
        failed = f" failed_writes={self.failed_writes}" if self.write_error is not None else ""
        scope = " scope='key'" if self.scope == "key" else ""
        return (f"<ResponseCache {self.directory!r}{scope} hits={self.hits} "
                f"misses={self.misses} pending={len(self._pending)}{failed}>")


def _kept(headers: Mapping[str, str]) -> dict[str, str]:
    # A kept header could still carry an echoed `sk-` key or bearer token: redact_text those
    # (three regex substitutions a value; one search first finds the rare value needing them).
    return {name: redact_text(value) if _MAYBE_SECRET.search(value) else value
            for name, value in headers.items() if name.lower() in KEPT_HEADERS}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _is_damage(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.OperationalError):
        return False
    name = getattr(exc, "sqlite_errorname", None)
    if name is not None:
        return name in _DAMAGED
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _damaged_message(directory: str, exc: BaseException) -> str:
    return (f"the response cache at {directory} is damaged ({_reason(exc)}): remove it with "
            f"`pipeline cache clear {shlex.quote(directory)}` (it holds only answers already "
            "paid for; they will be asked again)")


def is_response_cache(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds a response cache (its database file), damaged or not."""
    return os.path.isfile(os.path.join(os.fspath(directory), _DB_FILE))


def remove_cache_files(directory: str | os.PathLike[str]) -> None:
    """Remove the cache's own files from ``directory`` (a damaged cache too): the database,
    its journal files and the value files diskcache keeps in two-hex-digit folders. Nothing
    else in the directory is touched; its scope (see :func:`set_scope`) is kept."""
    directory = os.fspath(directory)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name in (_DB_FILE, f"{_DB_FILE}-wal", f"{_DB_FILE}-shm", f"{_DB_FILE}-journal"):
            os.remove(path)
        elif _VALUE_DIR.fullmatch(name) and os.path.isdir(path) and _only_values(path):
            shutil.rmtree(path)


def _only_values(folder: str) -> bool:
    for _, _, files in os.walk(folder):
        if any(not name.endswith(".val") for name in files):
            return False
    return True


def _recorded_scope(directory: str) -> CacheScope:
    try:
        with open(os.path.join(directory, _SCOPE_FILE), encoding="utf-8") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return "shared"
    except OSError as exc:
        raise CacheError(f"cannot read the scope of the cache in {directory!r}: "
                         f"{_reason(exc)}") from exc
    if text not in SCOPES:
        raise CacheError(f"the cache in {directory!r} has an unknown scope {text!r} "
                         f"(in {_SCOPE_FILE}): expected one of {', '.join(SCOPES)}")
    return "key" if text == "key" else "shared"


def set_scope(directory: str | os.PathLike[str], scope: CacheScope) -> None:
    """Record whose answers the cache in ``directory`` serves (see :class:`ResponseCache`).

    ``"key"`` applies to answers stored from now on; answers stored before stay in the
    cache but are no longer served (their keys lack a fingerprint).

    >>> import tempfile
    >>> d = tempfile.mkdtemp(); set_scope(d, "key"); ResponseCache(d).scope
    'key'
    """
    if scope not in SCOPES:
        raise ConfigError(f"cache scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    directory = os.fspath(directory)
    path = os.path.join(directory, _SCOPE_FILE)
    if scope == "shared":
        if os.path.exists(path):
            os.remove(path)
        return
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("key\n")


def key_fingerprint(secrets: Iterable[str]) -> str:
    """A short fingerprint of an API key (or a service's secrets), for cache keys.

    HMAC-SHA256 keyed with the secrets over a fixed label, truncated to 32 hex digits: the
    same key gives the same fingerprint in any process, and the key cannot be read back from
    it. It only ever enters :func:`cache_key`'s hash; it is not stored anywhere.

    >>> key_fingerprint(["sk-a"]) == key_fingerprint(["sk-a"]) != key_fingerprint(["sk-b"])
    True
    >>> len(key_fingerprint(["sk-a"]))
    32
    """
    material = "\0".join(sorted(s for s in secrets if s)).encode()
    return hmac.new(material, _SCOPE_LABEL, hashlib.sha256).hexdigest()[:32]


@functools.lru_cache(maxsize=64)
def _key_namespace(base_url: str) -> str:
    # The same few base URLs come with every row: redact each once.
    return redact_url(base_url.strip().rstrip("/"))


def cache_key(request: APIRequest, *, base_url: str | None = None,
              scope: str | None = None) -> str:
    """A stable SHA-256 hex key for a request: same request, same key, in any process.

    Covers the method, path, JSON body, form fields and (by content hash) files, plus the
    ``base_url`` when given (with secrets masked) and ``scope`` when given (a
    :func:`key_fingerprint`, for caches scoped by key), never headers or auth, and not the
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
    if scope is not None:
        document["scope"] = scope
    encoded = msgspec.json.encode(document, order="deterministic")
    return hashlib.sha256(encoded).hexdigest()
