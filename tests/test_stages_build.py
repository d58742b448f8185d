"""pipeline.stages._build: rows, ready requests and functions become requests."""

from __future__ import annotations

from aiostream import stream

from pipeline import payloads
from pipeline.stages import (
    build,
    call,
)
from pipeline.testing import InstantService

ROWS = [{"text": f"row {i}"} for i in range(20)]


def _job(service: InstantService, **config):
    return service.chat(model="m", prompt="Classify: {text}", max_tokens=5, **config)



async def test_build_accepts_ready_requests_and_functions():
    request = payloads.chat(model="m", prompt="{text}").build({"text": "hi"})
    service = InstantService()
    job = _job(service)
    records = await stream.list(stream.iterate([request]) | (build(job) | call(service, job)))
    assert records[0].ok and records[0].request is request
    records = await stream.list(stream.iterate([1]) | build(lambda row: 1 / 0))
    assert isinstance(records[0].error, ZeroDivisionError)
