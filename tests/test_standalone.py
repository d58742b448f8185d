"""pipeline.adapters.standalone: one request without a pipeline, on the pipeline's own retry
policy."""

from __future__ import annotations

import httpx
import pytest

from pipeline import errors
from pipeline.adapters.standalone import cached_call, call_with_retry, upload_file_with_retry
from pipeline.core.request import APIRequest
from pipeline.http import JSONService, OpenAIService
from pipeline.simulator import Simulator
from pipeline.state.cache import ResponseCache
from pipeline.testing import instant_backoff

pytestmark = pytest.mark.timeout(30)


def _service(statuses: list[int], seen: list[bytes], on_request=None) -> JSONService:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.read())
        if on_request is not None:
            on_request()
        status = statuses.pop(0)
        if status == 200:
            return httpx.Response(200, json={"id": "file-1", "object": "file"})
        headers = {"retry-after": "7"} if status == 429 else {}
        return httpx.Response(status, headers=headers, json={"error": {"message": "no"}})

    return JSONService("http://127.0.0.1:9/v1", transport=httpx.MockTransport(handler))


async def test_upload_rereads_the_file_on_every_attempt(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"n": 1}\n')
    seen: list[bytes] = []

    def grow() -> None:  # the file changes between attempts
        path.write_bytes(path.read_bytes() + b'{"n": 2}\n')

    service = _service([503, 429, 200], seen, grow)
    with instant_backoff():
        async with service:
            response = await upload_file_with_retry(service, path, "fine-tune", attempts=2)
    assert response.body["id"] == "file-1"
    # 3 sends with attempts=2: the 429 cost time, not an attempt (as in a pipeline run).
    assert [body.count(b'{"n"') for body in seen] == [1, 2, 3]
    assert b'name="purpose"' in seen[0] and b"fine-tune" in seen[0]
    assert b'filename="train.jsonl"' in seen[0]


async def test_upload_fails_at_once_on_non_retryable_and_after_its_attempts(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text("{}\n")
    seen: list[bytes] = []
    with instant_backoff():
        with pytest.raises(errors.BadRequestError):
            await upload_file_with_retry(_service([400, 200], seen), path)
        assert len(seen) == 1
        seen.clear()
        with pytest.raises(errors.ServerError):
            await upload_file_with_retry(_service([500, 500, 500, 200], seen), path, attempts=3)
        assert len(seen) == 3


async def test_upload_of_a_missing_file_is_an_input_error_and_sends_nothing(tmp_path):
    seen: list[bytes] = []
    with pytest.raises(errors.InputError, match="cannot read"):
        await upload_file_with_retry(_service([200], seen), tmp_path / "missing.jsonl")
    assert seen == []
    with pytest.raises(errors.ConfigError):
        await upload_file_with_retry(_service([200], seen), tmp_path / "x", attempts=0)


async def test_call_with_retry_and_cached_call_against_the_simulator(tmp_path):
    request = APIRequest(path="embeddings",
                         body={"model": "text-embedding-3-small", "input": "hi", "dimensions": 4})
    with Simulator() as sim:
        async with OpenAIService("sk-local-0123456789abcdef", sim.base_url) as service:
            first = await call_with_retry(service, "embeddings", request)
            cached = await cached_call(service, "embeddings", request, tmp_path / "cache")
            again = await cached_call(service, "embeddings", request, tmp_path / "cache")
        sent = len(sim.log())
    assert len(first.body["data"][0]["embedding"]) == 4
    assert again.body == cached.body
    assert sent == 2  # the second cached_call was answered from the cache
    with ResponseCache(tmp_path / "cache") as cache:
        assert len(cache) == 1
