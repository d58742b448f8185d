"""pipeline.redaction: secrets masked in text, URLs, headers and JSON; Secret never prints."""

from __future__ import annotations

import pickle

import pytest

from pipeline.redaction import Secret, mask_secret, redact_headers, redact_text, redact_url

SECRET = "sk-proj-SECRETSECRET0123456789"


def test_redaction_helpers():
    assert mask_secret(SECRET) == "sk-...6789" and SECRET not in mask_secret(SECRET)
    text = f"Authorization: Bearer {SECRET} url=https://h/x?api-key={SECRET}&q=1 raw {SECRET}"
    redacted = redact_text(text)
    assert SECRET not in redacted and "q=1" in redacted
    assert redact_url("https://u:p@h/x?key=k1&token=t") == "https://***@h/x?key=***&token=***"
    headers = redact_headers(
        {"api-key": "abc", "Authorization": "Bearer x", "X-Other": SECRET}, secrets=[SECRET]
    )
    assert headers["api-key"] == headers["authorization"] == "***"
    assert SECRET not in headers["x-other"]


def test_a_secret_neither_prints_nor_pickles():
    key = Secret(SECRET)
    assert SECRET not in repr(key) and SECRET not in str(key) and SECRET not in f"{key}"
    assert key.reveal() == SECRET
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(key)
