"""pipeline.stages._cache: lookup and store; a rerun sends nothing, only successes are kept."""

from __future__ import annotations

from pipeline.cache import ResponseCache
from pipeline.errors import (
    BadRequestError,
)
from pipeline.runner import run
from pipeline.testing import InstantService

ROWS = [{"text": f"row {i}"} for i in range(20)]


def _job(service: InstantService, **config):
    return service.chat(model="m", prompt="Classify: {text}", max_tokens=5, **config)



async def test_cache_makes_a_rerun_send_nothing(tmp_path):
    service = InstantService()
    job = _job(service)
    first = await run(ROWS, job, cache=tmp_path / "cache")
    assert service.calls == 20 and first.status.cached == 0
    second = await run(ROWS, job, cache=tmp_path / "cache")
    assert service.calls == 20  # nothing new sent
    assert second.status.cached == 20 and all(r.cached and r.text == "ok" for r in second)
    # A changed request is a different key.
    third = await run(ROWS[:2], _job(service, temperature=0), cache=tmp_path / "cache")
    assert service.calls == 22 and third.status.cached == 0


async def test_only_successes_are_cached(tmp_path):
    service = InstantService(fail=lambda r, n: BadRequestError("no", status=400))
    await run(ROWS[:3], _job(service), cache=tmp_path / "c")
    with ResponseCache(tmp_path / "c") as cache:
        assert len(cache) == 0
