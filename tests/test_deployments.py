"""One job over several deployments (pipeline.http.deployments): spreading, failover, caching.

Two or three simulators of different sizes over loopback; each one's responder answers with
its own name, so every row's answer says who delivered it, and each one's log says what it
saw. No test sleeps: the simulators keep their own time and the runs finish in seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections import Counter
from typing import Any

import pytest

import pipeline
from pipeline.errors import ConfigError, RunStoppedError
from pipeline.http.deployments import (
    Deployment,
    DeploymentUnavailableError,
    RoutedService,
    load_deployments,
)
from pipeline.simulator import Simulator

pytestmark = pytest.mark.timeout(90)

KEY = "sk-deployments-0123456789"


class Tagged:
    """A simulator's responder: answers with the simulator's name, and notes each row it
    answered (the row's text), in the order answered."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, endpoint: str, body: dict[str, Any]) -> str:
        with self._lock:
            self.rows.append(body["messages"][-1]["content"])
        return self.name


def _sims(rpms: list[float | None], **options: Any) -> tuple[list[Simulator], list[Tagged]]:
    tags = [Tagged(f"sim{i}") for i in range(len(rpms))]
    sims = [Simulator(rpm=rpm, latency=0.02, seed=i, responder=tag, **options).start()
            for i, (rpm, tag) in enumerate(zip(rpms, tags, strict=True))]
    return sims, tags


def _deployments(sims: list[Simulator], rpms: list[float], told: bool) -> list[Deployment]:
    return [Deployment(base_url=sim.base_url, api_key=KEY, rpm=rpm if told else None,
                       name=f"d{i}") for i, (sim, rpm) in enumerate(zip(sims, rpms, strict=True))]


def _rows(n: int) -> list[dict[str, str]]:
    return [{"text": f"row {i}"} for i in range(n)]


async def _run(deployments: list[Deployment], rows: list[dict[str, str]],
               **options: Any) -> tuple[Any, RoutedService]:
    async with RoutedService(deployments) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=16)
        results = await pipeline.run(rows, job, concurrency=64, **options)
        return results, service


def _ok(sim: Simulator) -> int:
    return sum(1 for e in sim.log() if e.outcome == "ok")


def _answered_once(results: Any, tags: list[Tagged], n: int, killed: int | None = None) -> None:
    """Every row succeeded, each delivered by exactly one simulator that logged it once; a
    killed simulator may also have answered (and logged) rows in flight when it died, which
    the client never got and sent elsewhere."""
    assert all(r.ok for r in results), results.failed[:3]
    by = Counter(r.text for r in results)
    assert sum(by.values()) == n
    seen = Counter(row for i, tag in enumerate(tags) if i != killed for row in tag.rows)
    assert set(seen.values()) <= {1}, "a row was answered twice by live deployments"
    delivered = {f"row {i}": r.text for i, r in enumerate(results)}
    for i, tag in enumerate(tags):
        mine = {row for row, who in delivered.items() if who == tag.name}
        assert mine <= set(tag.rows)
        if i != killed:
            assert mine == set(tag.rows)


@pytest.mark.parametrize("told", [True, False], ids=["told-right", "not-told"])
def test_two_deployments_share_the_rows_by_their_quotas(told):
    rpms = [3_000, 9_000]  # 50 and 150 requests a second
    sims, tags = _sims(rpms)
    try:
        deployments = _deployments(sims, rpms, told)
        results, service = asyncio.run(_run(deployments, _rows(600)))
        _answered_once(results, tags, 600)
        counts = [_ok(s) for s in sims]
        assert sum(counts) == 600
        # The larger one answers most: rows go where there is room.
        assert counts[1] > 1.5 * counts[0] > 0, counts
        limited = sum(s.stats().rate_limited for s in sims)
        assert limited <= (6 if told else 30), limited
        assert [v["answered"] for v in service.status().values()] == counts
    finally:
        for sim in sims:
            sim.stop()


@pytest.mark.parametrize("told", [True, False], ids=["told-right", "not-told"])
def test_a_deployment_killed_at_a_third_moves_its_rows_and_none_is_lost(told, caplog):
    rpms = [3_000, 6_000, 9_000]
    sims, tags = _sims(rpms)
    n = 900
    try:
        deployments = _deployments(sims, rpms, told)

        async def main() -> tuple[Any, RoutedService, int]:
            async with RoutedService(deployments) as service:
                job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=16)

                async def kill() -> int:
                    # The responders run in the simulators' threads: look every 10 ms.
                    while sum(len(t.rows) for t in tags) < n // 3:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                    sims[2].stop()  # the largest, from another task, mid-run
                    return len(tags[2].rows)

                killer = asyncio.ensure_future(kill())
                results = await pipeline.run(_rows(n), job, concurrency=64)
                return results, service, await killer

        with caplog.at_level(logging.WARNING, logger="pipeline.http"):
            results, service, at_kill = asyncio.run(main())
        _answered_once(results, tags, n, killed=2)
        assert results.status.failed == 0
        delivered = Counter(r.text for r in results)
        assert 0 < delivered["sim2"] <= at_kill < n // 2
        # Its rows went to the others: they answered everything it did not.
        assert delivered["sim0"] + delivered["sim1"] == n - delivered["sim2"]
        assert _ok(sims[0]) + _ok(sims[1]) == n - delivered["sim2"]
        out = [r for r in caplog.records if "is out" in r.getMessage()]
        assert len(out) == 1 and "deployment d2 is out" in out[0].getMessage()
        assert KEY not in caplog.text
        assert not service.status()["d2"]["up"]
    finally:
        for sim in sims:
            sim.stop()


def test_a_refused_key_or_an_empty_quota_takes_that_deployment_out_not_the_run(caplog):
    good, wrong, broke = (Simulator(latency=0.01, seed=i, responder=Tagged(f"sim{i}"), **opts)
                          for i, opts in enumerate(({}, {"api_key": "sk-other-key-000000"},
                                                    {"quota_tokens": 0})))
    with good, wrong, broke:
        deployments = [Deployment(base_url=good.base_url, api_key=KEY, name="good"),
                       Deployment(base_url=wrong.base_url, api_key=KEY, name="wrong-key"),
                       Deployment(base_url=broke.base_url, api_key=KEY, name="no-quota")]
        with caplog.at_level(logging.WARNING, logger="pipeline.http"):
            results, service = asyncio.run(_run(deployments, _rows(200)))
        assert all(r.ok for r in results) and results.stopped is None
        assert _ok(good) == 200
        status = service.status()
        assert not status["wrong-key"]["up"] and "refused the key" in status["wrong-key"]["reason"]
        assert not status["no-quota"]["up"] and "out of quota" in status["no-quota"]["reason"]
        lines = [r.getMessage() for r in caplog.records if "is out" in r.getMessage()]
        assert len(lines) == 2, lines
        # Each got its share of the first round (sent before the first refusal came back),
        # then only probes, one request at a time: of 200 rows, about a third of 64 each.
        assert wrong.stats().requests < 30 and broke.stats().requests < 30


def test_when_every_deployment_refuses_the_key_the_run_stops_as_on_one_server():
    with Simulator(latency=0.0, api_key="sk-a-000000000000") as a, \
            Simulator(latency=0.0, api_key="sk-b-000000000000") as b:
        deployments = [Deployment(base_url=a.base_url, api_key=KEY, name="a"),
                       Deployment(base_url=b.base_url, api_key=KEY, name="b")]
        results, _ = asyncio.run(_run(deployments, _rows(300)))
        assert isinstance(results.stopped, RunStoppedError)
        assert not any(r.ok for r in results)
        assert a.stats().requests + b.stats().requests < 40


def test_the_cache_knows_the_logical_model_whichever_deployment_answered(tmp_path):
    sims, _ = _sims([6_000, 6_000])
    try:
        mapped = [Deployment(base_url=sims[0].base_url, api_key=KEY, name="a"),
                  Deployment(base_url=sims[1].base_url, api_key=KEY, name="b",
                             models={"gpt-4o-mini": "mini-on-b"})]
        first, _ = asyncio.run(_run(mapped, _rows(100), cache=tmp_path / "c"))
        assert all(r.ok for r in first)
        assert {e.outcome for e in sims[1].log()} == {"ok"} and _ok(sims[1]) > 0
        # Again, over the first deployment alone: every row from the cache, nothing sent.
        sent = _ok(sims[0]) + _ok(sims[1])
        again, _ = asyncio.run(_run(mapped[:1], _rows(100), cache=tmp_path / "c"))
        assert all(r.ok and r.cached for r in again)
        assert _ok(sims[0]) + _ok(sims[1]) == sent
    finally:
        for sim in sims:
            sim.stop()


def test_a_deployment_sends_its_own_name_for_the_model():
    seen: list[str] = []

    def model_of(endpoint: str, body: dict[str, Any]) -> str:
        seen.append(body["model"])
        return "ok"

    with Simulator(latency=0.0, responder=model_of) as sim:
        deployments = [Deployment(base_url=sim.base_url, api_key=KEY,
                                  models={"gpt-4o-mini": "my-azure-deployment"})]
        results, _ = asyncio.run(_run(deployments, _rows(5)))
    assert all(r.ok for r in results) and set(seen) == {"my-azure-deployment"}


def test_keys_are_masked_and_read_from_the_environment(monkeypatch):
    deployment = Deployment(base_url="http://127.0.0.1:9/v1", api_key="sk-secret-0123456789")
    assert "sk-secret-0123456789" not in repr(deployment)
    assert deployment.key() == "sk-secret-0123456789"
    by_env = Deployment(base_url="http://127.0.0.1:9/v1", api_key_env="EAST_KEY", name="east")
    monkeypatch.delenv("EAST_KEY", raising=False)
    with pytest.raises(ConfigError, match="EAST_KEY"):
        RoutedService([by_env])
    monkeypatch.setenv("EAST_KEY", "sk-from-env-0123456789")
    service = RoutedService([by_env])
    assert "sk-from-env-0123456789" in service.secrets()
    assert "sk-from-env" not in repr(service) and "sk-from-env" not in repr(service.deployments)
    with pytest.raises(ConfigError, match="weight"):
        Deployment(base_url="http://127.0.0.1:9/v1", weight=0)


def test_deployments_files_in_toml_and_json(tmp_path):
    toml = tmp_path / "d.toml"
    toml.write_text('[[deployments]]\nname = "east"\nbase_url = "http://127.0.0.1:9/v1"\n'
                    'api_key_env = "EAST_KEY"\nrpm = 3000\nmodels = { "gpt-4o-mini" = "m" }\n'
                    '\n[[deployments]]\nbase_url = "http://127.0.0.1:8/v1"\nweight = 2\n')
    east, second = load_deployments(str(toml))
    assert (east.name, east.api_key_env, east.rpm, east.models) == \
        ("east", "EAST_KEY", 3000, {"gpt-4o-mini": "m"})
    assert second.weight == 2 and second.label == "127.0.0.1:8"
    js = tmp_path / "d.json"
    js.write_text('[{"base_url": "http://127.0.0.1:9/v1", "tpm": 100000}]')
    assert load_deployments(str(js))[0].tpm == 100000
    js.write_text('[{"base_url": "http://127.0.0.1:9/v1", "rmp": 1}]')
    with pytest.raises(ConfigError, match="rmp"):
        load_deployments(str(js))


def test_the_router_grants_from_the_deployment_that_would_grant_soonest():
    service = RoutedService([Deployment(base_url="http://127.0.0.1:9/v1", rpm=600, name="a"),
                             Deployment(base_url="http://127.0.0.1:8/v1", rpm=600, name="b")])
    routing = service.endpoint("chat/completions").limiter
    a, _ = routing.limiters

    async def main() -> list[str]:
        names = []
        a.pause(5.0)  # a 429 paused "a": "b" grants sooner
        for _ in range(3):
            lease = await routing.lease(1, 10)
            names.append(service.route_of(lease).name)
            lease.limiter.settle(lease, pipeline.limiter.Outcome(kind="ok"))
        return names

    assert asyncio.run(main()) == ["b", "b", "b"]
    assert "a: 0 ok" in routing.rate_text()


def test_a_refusal_moves_the_row_with_a_retryable_error():
    assert DeploymentUnavailableError("x").retryable


def test_an_answer_sent_before_a_deployment_went_out_does_not_bring_it_back(caplog):
    # A server dying mid-run drops some requests and has already answered others; the
    # client may read a drop first. That late answer is no probe: the deployment stays out
    # (CI once saw "out", "back", "out" here) until a request sent since answers.
    from pipeline.errors import TransportError

    service = RoutedService([Deployment(base_url="http://127.0.0.1:9/v1", name="a"),
                             Deployment(base_url="http://127.0.0.1:8/v1", name="b")])
    a = service._routes[0]
    stale, probe = object(), object()
    with caplog.at_level(logging.WARNING, logger="pipeline.http"):
        for _ in range(3):
            service.failed(a, object(), TransportError("Server disconnected"))
        assert not a.up
        service.answered(a, stale, 0.02)
        assert not a.up and a.probe is None
        a.probe = probe  # what the router does once probe_after has passed
        service.answered(a, probe, 0.02)
        assert a.up
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(":")[0] for m in messages] == ["deployment a is out",
                                                  "deployment a is back (it answered a probe)"]


def test_a_deployment_back_after_an_outage_answers_a_probe_and_takes_rows_again(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    late = Simulator(latency=0.02, port=port, responder=Tagged("late"))
    with Simulator(rpm=12_000, latency=0.02, responder=Tagged("early")) as early:
        deployments = [Deployment(base_url=early.base_url, api_key=KEY, name="early"),
                       Deployment(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY,
                                  name="late")]

        async def main() -> Any:
            async with RoutedService(deployments, probe_after=0.05,
                                     max_probe_after=0.2) as service:
                job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=16)

                async def start_late() -> None:
                    while _ok(early) < 150:  # noqa: ASYNC110 (the log is in its thread)
                        await asyncio.sleep(0.01)
                    await asyncio.to_thread(late.start)

                starter = asyncio.ensure_future(start_late())
                results = await pipeline.run(_rows(600), job, concurrency=64)
                await starter
                return results

        try:
            with caplog.at_level(logging.WARNING, logger="pipeline.http"):
                results = asyncio.run(main())
            assert all(r.ok for r in results)
            by = Counter(r.text for r in results)
            assert by["late"] > 0 and by["early"] + by["late"] == 600
            assert _ok(early) + _ok(late) == 600
            messages = [r.getMessage() for r in caplog.records]
            assert sum("deployment late is out" in m for m in messages) == 1
            assert sum("deployment late is back" in m for m in messages) == 1
        finally:
            late.stop()


def test_each_deployment_shares_its_own_quota_through_redis():
    service = RoutedService(
        [Deployment(base_url="http://127.0.0.1:9/v1", name="east",
                    shared_limit="redis://127.0.0.1:6379/0"),
         Deployment(base_url="http://127.0.0.1:8/v1", name="west",
                    shared_limit="redis://127.0.0.1:6379/0?key=org-2")])
    east, west = service.endpoint("chat/completions").limiter.limiters
    assert type(east).__name__ == "RedisLimiter"
    assert "key='pipeline:east:chat/completions'" in repr(east)
    assert "key='org-2:chat/completions'" in repr(west)
