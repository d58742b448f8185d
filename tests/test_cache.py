"""pipeline.cache: the response cache key (stable, secret-free) and the cache itself."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.cache import cache_key
from pipeline.request import APIRequest, FilePart

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
        "from pipeline.cache import cache_key; from pipeline.request import APIRequest; "
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
