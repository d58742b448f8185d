"""pipeline.state.cache: the response cache key (stable, secret-free) and the cache itself."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.request import APIRequest, FilePart, Response
from pipeline.errors import CacheError, ConfigError
from pipeline.state.cache import (
    CacheDamagedError,
    ResponseCache,
    cache_key,
    key_fingerprint,
    remove_cache_files,
    set_scope,
)

SECRET = "sk-proj-SECRETSECRET0123456789"

BASE = APIRequest(
    path="chat/completions",
    body={
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 0,
        "temperature": 0.0,
    },
)


def test_cache_key_is_pinned():
    # Changing this invalidates every cache: bump the key's "v" on purpose, never by accident.
    assert cache_key(BASE) == cache_key(
        APIRequest(path="/chat/completions/", body=dict(reversed(list(BASE.body.items()))))
    )
    assert len(cache_key(BASE)) == 64
    # The key is the SHA-256 of this exact, sorted, compact JSON document.
    document = (
        b'{"body":{"input":"a","model":"m"},"data":null,"files":null,"method":"POST",'
        b'"path":"embeddings","v":1}'
    )
    assert cache_key(APIRequest(path="embeddings", body={"model": "m", "input": "a"})) == (
        hashlib.sha256(document).hexdigest()
    )


def test_cache_key_is_the_same_in_another_process():
    code = (
        "from pipeline.state.cache import cache_key; from pipeline.core.request import APIRequest; "
        f"print(cache_key(APIRequest(path='chat/completions', body={BASE.body!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        cwd=str(_root()),
    )
    assert out.stdout.strip() == cache_key(BASE)


def _root():
    import pathlib

    return pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "changed",
    [
        APIRequest(path="chat/completions", body={**BASE.body, "seed": 1}),
        APIRequest(path="chat/completions", body={**BASE.body, "temperature": 0.1}),
        APIRequest(path="chat/completions", body={**BASE.body, "extra": None}),
        APIRequest(
            path="chat/completions",
            body={**BASE.body, "messages": [{"role": "user", "content": "hi "}]},
        ),
        APIRequest(path="completions", body=BASE.body),
        APIRequest(path="chat/completions", method="PUT", body=BASE.body),
        APIRequest(path="chat/completions"),
    ],
)
def test_cache_key_changes_with_any_request_change(changed):
    assert cache_key(changed) != cache_key(BASE)


@given(
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4),
    st.text(min_size=1, max_size=5),
    st.integers(),
)
def test_cache_key_changes_when_a_field_is_added_or_changed(body, key, value):
    request = APIRequest(path="x", body=body)
    changed = APIRequest(path="x", body={**body, key: [value]})
    assert cache_key(request) != cache_key(changed)
    assert cache_key(request) == cache_key(APIRequest(path="x", body=dict(body)))


def test_cache_key_ignores_token_estimate_and_hashes_file_content():
    assert cache_key(msgspec.structs.replace(BASE, token_estimate=999)) == cache_key(BASE)

    def upload(content: bytes) -> APIRequest:
        return APIRequest(
            path="files", files={"file": FilePart("a.jsonl", content)}, data={"purpose": "batch"}
        )

    assert cache_key(upload(b"1")) == cache_key(upload(b"1"))
    assert cache_key(upload(b"1")) != cache_key(upload(b"2"))


def test_cache_key_with_base_url_never_contains_its_secret():
    key_a = cache_key(BASE, base_url=f"https://h/v1?key={SECRET}")
    key_b = cache_key(BASE, base_url="https://h/v1?key=other-secret-value")
    assert key_a == key_b  # the secret is not part of the key
    assert key_a != cache_key(BASE, base_url="https://elsewhere/v1")
    assert cache_key(BASE, base_url="https://h/v1/") == cache_key(BASE, base_url="https://h/v1")


# -- the cache itself: faults never fail a row, damage is named with what to do -------------

def _response(**headers):
    return Response(status=200, body={"ok": True}, headers=headers)


def test_a_write_that_fails_is_counted_said_once_and_never_raises(tmp_path, caplog):
    cache = ResponseCache(tmp_path, flush_every=1)
    cache._cache.set = lambda *a, **k: False  # FanoutCache.set's way of saying "timed out"
    with caplog.at_level(logging.WARNING, logger="pipeline.state.cache"):
        for i in range(3):
            cache.put(f"k{i}", _response())
        cache.close()
    assert cache.failed_writes == 3 and cache.writes == 0
    assert len(caplog.records) == 1 and "going on without caching" in caplog.text
    assert "failed_writes=3" in repr(cache)


def test_a_read_that_fails_is_a_miss(tmp_path, caplog):
    import sqlite3

    with ResponseCache(tmp_path) as cache:
        def broken(*a, **k):
            raise sqlite3.DatabaseError("database disk image is malformed")

        cache._cache.get = broken
        with caplog.at_level(logging.WARNING, logger="pipeline.state.cache"):
            assert cache.get("a") is None and cache.get("b") is None
        assert cache.misses == 2 and cache.failed_reads == 2
        assert len(caplog.records) == 1 and "cannot be read" in caplog.text


def test_only_the_headers_a_reader_needs_are_stored(tmp_path):
    with ResponseCache(tmp_path) as cache:
        cache.put("k", _response(**{"x-request-id": "req_1", "x-api-key": SECRET,
                                    "set-cookie": f"s={SECRET}", "authorization": SECRET,
                                    "openai-processing-ms": "12", "content-type": "x"}))
    with ResponseCache(tmp_path) as cache:
        assert cache.get("k").headers == {"x-request-id": "req_1", "openai-processing-ms": "12",
                                          "content-type": "x"}
    assert not any(SECRET.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_a_damaged_cache_says_how_to_remove_it(tmp_path):
    (tmp_path / "cache.db").write_bytes(b"not sqlite at all " * 200)
    with pytest.raises(CacheDamagedError) as caught:
        ResponseCache(tmp_path)
    assert isinstance(caught.value, CacheError)
    assert str(caught.value) == (
        f"the response cache at {tmp_path} is damaged (file is not a database): remove it "
        f"with `pipeline cache clear {tmp_path}` (it holds only answers already paid for; "
        "they will be asked again)")
    remove_cache_files(tmp_path)
    with ResponseCache(tmp_path) as cache:  # a fresh, empty cache
        assert len(cache) == 0


def test_the_key_scope_is_recorded_and_not_silently_dropped(tmp_path):
    with ResponseCache(tmp_path) as cache:
        assert cache.scope == "shared" and cache.scope_for([SECRET]) is None
    with ResponseCache(tmp_path, scope="key") as cache:
        assert cache.scope == "key"
        assert cache.key(BASE, secrets=[SECRET]) != cache.key(BASE, secrets=["sk-other-key"])
        assert cache.key(BASE, secrets=[SECRET]) != cache_key(BASE)
    assert ResponseCache(tmp_path).scope == "key"  # later opens keep it
    with pytest.raises(ConfigError, match="scoped by API key"):
        ResponseCache(tmp_path, scope="shared")
    with pytest.raises(ConfigError, match="cache scope must be one of"):
        ResponseCache(tmp_path, scope="team")  # type: ignore[arg-type]
    set_scope(tmp_path, "shared")
    assert ResponseCache(tmp_path).scope == "shared"
    assert not any(SECRET.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_key_fingerprint_is_a_keyed_hash_not_the_key():
    fingerprint = key_fingerprint([SECRET])
    assert SECRET not in fingerprint and len(fingerprint) == 32
    assert fingerprint != hashlib.sha256(SECRET.encode()).hexdigest()[:32]  # not a plain hash
    assert fingerprint == key_fingerprint([SECRET])  # stable: the same key hits again
    assert cache_key(BASE, scope=fingerprint) != cache_key(BASE)
