"""pipeline.core.redaction: secrets masked in text, URLs, headers and JSON; Secret never prints."""

from __future__ import annotations

import pickle

import pytest

from pipeline.core.redaction import Secret, mask_secret, redact_headers, redact_text, redact_url

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


# -- a Redis password (issue 19, item 7) -------------------------------------------------------
PASSWORD = "hunter2-redis-password"


@pytest.mark.parametrize("url", [
    f"redis://:{PASSWORD}@127.0.0.1:1/0",
    f"redis://user:{PASSWORD}@127.0.0.1:1/0",
    f"redis://127.0.0.1:1/0?password={PASSWORD}",
    f"redis://127.0.0.1:1/0?db=0&password={PASSWORD}&key=q",
    f"unix:///tmp/no-such-redis.sock?password={PASSWORD}",
])
async def test_a_redis_password_is_in_no_repr_url_or_warning(url, caplog):
    pytest.importorskip("redis")
    from pipeline.errors import ConfigError
    from pipeline.limiter import RedisLimiter

    limiter = RedisLimiter(url, max_requests=600, redis_timeout=0.2)
    try:
        with caplog.at_level("WARNING", logger="pipeline.limiter"), \
                pytest.raises(ConfigError) as caught:
            # Nothing listens there, and never did: a clear error, said on the console too.
            await limiter.acquire(1)
        assert "***" in limiter.url and "***" in repr(limiter)
        warned = "\n".join(r.getMessage() for r in caplog.records)
        assert warned
        for shown in (limiter.url, repr(limiter), warned, repr(limiter.snapshot()),
                      str(caught.value)):
            assert PASSWORD not in shown, shown
    finally:
        await limiter.aclose()


def test_a_bad_shared_limiter_url_error_masks_its_password():
    pytest.importorskip("redis")
    from pipeline.errors import ConfigError
    from pipeline.limiter import check_redis_url

    with pytest.raises(ConfigError) as caught:
        check_redis_url(f"http://:{PASSWORD}@127.0.0.1:6379/0?password={PASSWORD}")
    assert PASSWORD not in str(caught.value)


def test_the_cli_never_prints_the_shared_limiters_password(tmp_path):
    pytest.importorskip("redis")
    import os
    import subprocess
    import sys

    from pipeline.simulator import Simulator

    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a"}\n{"text": "b"}\n')
    output = tmp_path / "out.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-0123456789abcdef"}
    with Simulator() as sim:  # nothing listens on port 1: the run stops before sending
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", str(source), "-o", str(output),
             "--no-cache", "--no-progress", "--base-url", sim.base_url, "--model",
             "gpt-4o-mini", "--template", "{text}", "--rpm", "600", "--shared-limit",
             f"redis://:{PASSWORD}@127.0.0.1:1/0?password={PASSWORD}"],
            env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "connection refused" in done.stderr and "redis://:***@127.0.0.1:1/0" in done.stderr
    assert not output.exists()
    for shown in (done.stdout, done.stderr):
        assert PASSWORD not in shown
