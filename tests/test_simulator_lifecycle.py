"""Starting and stopping the simulator: thread mode, async form, process mode, the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import httpx
import openai
import pytest

from pipeline.errors import ConfigError
from pipeline.simulator import Faults, Latency, Simulator

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def simulator_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pipeline-simulator"]


def port_is_free(port: int) -> bool:
    """Nothing listens on the port (TIME_WAIT leftovers of closed connections are fine)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_start_stop_leaves_no_thread_or_socket_behind():
    with Simulator() as warmup:  # first use imports and allocates lazily; measure after
        httpx.get(f"{warmup.url}/_sim/health")
    fds, threads = open_fds(), threading.active_count()
    for _ in range(5):
        sim = Simulator(rpm=10)
        with sim:
            assert sim.base_url.startswith("http://127.0.0.1:") and sim.base_url.endswith("/v1")
            assert len(simulator_threads()) == 1
            with socket.create_connection(("127.0.0.1", sim.port)) as conn:
                conn.sendall(b"GET /_sim/health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert conn.recv(100).startswith(b"HTTP/1.1 200")
        assert port_is_free(sim.port)
    # "<=": another test's leftovers may be collected meanwhile, never ours added
    assert simulator_threads() == []
    assert threading.active_count() <= threads
    assert open_fds() <= fds
    assert "stopped" in repr(sim)


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP connect sends nothing; it picks a route
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_binds_loopback_only():
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with Simulator() as sim, pytest.raises(OSError):
        socket.create_connection((address, sim.port), timeout=1).close()


def test_stop_is_idempotent_and_restart_works():
    sim = Simulator()
    sim.stop()
    with sim:
        port = sim.port
        assert httpx.post(f"{sim.base_url}/chat/completions", json=CHAT).status_code == 200
    sim.stop()
    assert port_is_free(port)


def test_port_in_use_raises():
    with Simulator() as sim, pytest.raises(OSError), Simulator(port=sim.port):
        pass
    assert simulator_threads() == []


async def test_async_form_works_inside_a_running_loop():
    async with Simulator(latency=0.01) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        responses = [await http.post("/chat/completions", json=CHAT) for _ in range(3)]
        assert [r.status_code for r in responses] == [200] * 3
    assert simulator_threads() == []


async def test_answers_while_the_callers_loop_is_blocked():
    # A synchronous SDK call inside a coroutine blocks the caller's loop (as in a notebook
    # cell); the simulator runs on its own loop in its own thread, so it still answers.
    async with Simulator() as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
        assert client.chat.completions.create(**CHAT).choices


def test_repr_shows_url_limits_and_count_but_never_the_key():
    with Simulator(rpm=500, tpm=200_000, latency=0.2, faults={"500": 0.05},
                   api_key="sk-secret-value") as sim:
        httpx.post(f"{sim.base_url}/chat/completions", json=CHAT,
                   headers={"Authorization": "Bearer sk-secret-value"})
        text = repr(sim)
    assert sim.base_url in text and "rpm=500" in text and "tpm=200000" in text
    assert "served=1" in text and "Latency(fixed 0.2s)" in text and "server_error=0.05" in text
    assert "secret" not in text


def test_config_shorthands_and_errors():
    assert Simulator(latency=0.5).config.latency == Latency.fixed(0.5)
    assert Simulator(latency="lognormal:0.2,0.4").config.latency == Latency.lognormal(0.2, 0.4)
    assert Simulator(faults={"503": 0.2}).config.faults == Faults(unavailable=0.2)
    with pytest.raises(ConfigError):
        Simulator(rpm=0)
    with pytest.raises(ConfigError):
        Simulator(faults={"500": 0.7, "hang": 0.7})
    with pytest.raises(ConfigError):
        Simulator(faults={"teapot": 0.1})
    with pytest.raises(ConfigError):
        Simulator(process=True, responder=lambda endpoint, body: "x")


def test_process_mode_serves_and_reports_over_admin_endpoints():
    fds = open_fds()
    with Simulator(process=True, rpm=3, api_key="sk-proc", policy="minute") as sim:
        assert "process pid=" in repr(sim)
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-proc", max_retries=0)
        for _ in range(3):
            client.chat.completions.create(**CHAT)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(**CHAT)
        stats = sim.stats()
        assert (stats.ok, stats.rate_limited) == (3, 1)
        assert [e.outcome for e in sim.log()] == ["ok"] * 3 + ["rate_limited"]
        sim.reset(limits=True)
        assert sim.log() == []
        assert client.chat.completions.create(**CHAT).choices
        child = sim._child
        client.close()
    assert child is not None and child.returncode == 0  # exited cleanly and was reaped
    assert sim.pid is None and port_is_free(sim.port)
    assert open_fds() <= fds  # pipes closed


def test_cli_serve_prints_its_url_and_answers():
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--port", "0", "--rpm", "500",
         "--tpm", "200000", "--latency", "0", "--seed", "1", "--api-key", "sk-cli",
         "--fault", "500=0.0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.poll() else "")
        base_url = line.split()[-1]
        client = openai.OpenAI(base_url=base_url, api_key="sk-cli", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(**CHAT)
        assert raw.headers["x-ratelimit-limit-requests"] == "500"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_cli_help_has_an_example():
    out = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--help"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "pipeline serve --rpm" in out.stdout
