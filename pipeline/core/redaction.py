"""Keeping secrets out of everything this library prints, logs, raises or stores.

API keys travel in headers, URLs (``?key=...``) and, now and then, in a server's error message.
The functions here mask them wherever text leaves the library: reprs, log lines, exception
messages, error bodies kept on records, and cache keys (which never see a header at all).
:class:`Secret` holds a key so that it cannot be printed or pickled by accident.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

__all__ = [
    "SECRET_HEADERS",
    "Secret",
    "mask_secret",
    "redact_headers",
    "redact_json",
    "redact_text",
    "redact_url",
]

#: Header names whose values are secrets (compared lower-case).
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "cookie",
        "set-cookie",
        "x-goog-api-key",
    }
)
_MASK = "***"
_SECRET_QUERY = re.compile(
    r"(?i)([?&;](?:api[-_]?key|key|access[-_]?token|token|secret|sig|signature)=)[^&#\s'\"]*"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}")


def mask_secret(secret: str | None) -> str:
    """A printable stand-in for a secret: at most its last four characters survive.

    >>> mask_secret("sk-proj-0123456789abcdef"), mask_secret("short"), mask_secret(None)
    ('sk-...cdef', '***', 'None')
    """
    if secret is None:
        return "None"
    if len(secret) < 16:
        return _MASK
    prefix = "sk-" if secret.startswith("sk-") else ""
    return f"{prefix}...{secret[-4:]}"


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets, bearer tokens, ``sk-`` keys and ``key=`` values masked.

    >>> redact_text("GET https://h/v1?key=abc&x=1 Bearer sk-abcdefgh", secrets=["abc"])
    'GET https://h/v1?key=***&x=1 Bearer ***'
    """
    text = _SECRET_QUERY.sub(lambda m: m.group(1) + _MASK, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {_MASK}", text)
    text = _OPENAI_KEY.sub("sk-" + _MASK, text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return text


def redact_url(url: str | httpx.URL, secrets: Iterable[str] = ()) -> str:
    """The URL as text, with credentials and secret query parameters masked.

    >>> redact_url("https://user:pw@example.com/v1/x?api-version=1&key=s3cret")
    'https://***@example.com/v1/x?api-version=1&key=***'
    """
    text = str(url)
    parts = urllib.parse.urlsplit(text)
    if parts.username is not None or parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        text = urllib.parse.urlunsplit(parts._replace(netloc=f"{_MASK}@{host}"))
    return redact_text(text, secrets)


def redact_headers(headers: Mapping[str, str], secrets: Iterable[str] = ()) -> dict[str, str]:
    """A copy of ``headers`` (names lower-cased) with auth headers and known secrets masked.

    >>> redact_headers({"Authorization": "Bearer sk-x", "X-Request-Id": "req_1"})
    {'authorization': '***', 'x-request-id': 'req_1'}
    """
    secrets = tuple(secrets)
    return {
        name.lower(): _MASK if name.lower() in SECRET_HEADERS else redact_text(value, secrets)
        for name, value in headers.items()
    }


def redact_json(value: Any, secrets: tuple[str, ...]) -> Any:
    """A decoded JSON value with :func:`redact_text` applied to every string in it.

    >>> redact_json({"error": {"message": "bad key sk-abcdefgh"}}, ())
    {'error': {'message': 'bad key sk-***'}}
    """
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {k: redact_json(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v, secrets) for v in value]
    return value


class Secret:
    """A string that never prints: ``repr``/``str`` show a mask; :meth:`reveal` gives the value.

    It refuses to be pickled, so a key does not travel to worker processes by accident (build
    the service in each process instead).

    >>> key = Secret("sk-proj-0123456789abcdef")
    >>> key, str(key), key.reveal()[-4:]
    ('sk-...cdef', 'sk-...cdef', 'cdef')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that sends it."""
        return self._value

    def __repr__(self) -> str:
        return repr(mask_secret(self._value))

    def __str__(self) -> str:
        return mask_secret(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a service's API key is not picklable; build the service in each process")
