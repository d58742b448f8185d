"""A shared limit's Redis is checked before anything is sent (pipeline.limiter._redis_check).

What is pinned: against real redis-servers on 127.0.0.1 (a plain one, one with a password,
one that refuses Lua scripts) and hand-written TCP servers that are not Redis, every way a
``--shared-limit`` URL can be wrong is one ConfigError line naming the URL (password masked),
what is wrong and what to do; the good URL passes. ``pipeline run`` with such a URL exits 2
with that line, sends the simulator nothing and creates no output, journal or cache;
``pipeline bench`` and ``BatchJob.check()`` (Ray, on the driver) refuse it the same way.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from _redis_server import REDIS_SERVER, SKIP_REASON, RedisServer, free_port, redis_server_fixture

from pipeline.errors import ConfigError
from pipeline.simulator import Simulator

pytest.importorskip("redis.asyncio",
                    reason='redis-py is not installed: pip install "ratelimited-pipeline[redis]"')

from pipeline.limiter._redis_check import check_redis, describe_redis_error

PASSWORD = "s3cret-preflight-0123"


class _Spawned:
    """A redis-server started with extra arguments (a password, a renamed command)."""

    def __init__(self, *extra: str) -> None:
        assert REDIS_SERVER is not None
        self.port = free_port()
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--loglevel", "warning", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers():  # bounded polling for the server to start
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server {extra} did not start")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16)[:1] in (b"+", b"-")  # PONG, or NOAUTH: it is up
        except OSError:
            return False

    def url(self, userinfo: str = "", path: str = "/0") -> str:
        return f"redis://{userinfo}127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


def _spawned(*extra: str) -> Iterator[_Spawned]:
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    server = _Spawned(*extra)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from redis_server_fixture()


@pytest.fixture(scope="module")
def locked() -> Iterator[_Spawned]:
    """A redis-server that wants PASSWORD."""
    yield from _spawned("--requirepass", PASSWORD)


@pytest.fixture(scope="module")
def no_scripts() -> Iterator[_Spawned]:
    """A redis-server with EVAL renamed away, as a proxy that refuses scripts looks."""
    yield from _spawned("--rename-command", "EVAL", "")


@pytest.fixture
async def not_redis() -> AsyncIterator[Callable[[bytes | None], int]]:
    """Start TCP servers on 127.0.0.1 that answer ``reply`` to anything (``None``: say
    nothing, keep the connection open); returns the port."""
    servers: list[asyncio.Server] = []

    async def start(reply: bytes | None) -> int:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                if reply is None:
                    await reader.read()  # until the client gives up
                else:
                    await reader.read(1)
                    writer.write(reply)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()
        await server.wait_closed()


async def _refused(url: str, timeout: float = 2.0) -> str:
    with pytest.raises(ConfigError) as caught:
        await check_redis(url, timeout=timeout)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("shared limit ")
    return message


# ------------------------------------------------------------------ check_redis, one case each
async def test_a_usable_redis_passes_and_the_probe_key_expires_at_once(
        redis_server: RedisServer, locked: _Spawned) -> None:
    await check_redis(redis_server.url)
    await check_redis(f"{redis_server.url}?key=team:quota")
    await check_redis(locked.url(f":{PASSWORD}@"))
    await check_redis(locked.url(path=f"/0?password={PASSWORD}"))
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:  # the probe wrote under the limiter's key, and only for a second
        assert 0 < client.pttl("team:quota:preflight") <= 1000
    finally:
        client.close()


async def test_a_port_nothing_listens_on_is_connection_refused() -> None:
    port = free_port()
    message = await _refused(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    assert message == (f"shared limit redis://:***@127.0.0.1:{port}/0: connection refused "
                       "(is redis-server running there, on that port?)")


async def test_a_host_that_does_not_resolve_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # The resolver here sends even a name under .invalid to its DNS server (strace: a UDP
    # query to the nameserver of /etc/resolv.conf), and tests use no network but 127.0.0.1:
    # this loop's resolver answers as a resolver does for an unknown name, and redis-py's own
    # connect path runs on it.
    asked: list[str] = []

    async def no_such_name(host: str, *args: object, **kwargs: object) -> list[object]:
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_such_name)
    message = await _refused("redis://redis.example.invalid:6379/0")
    assert asked == ["redis.example.invalid"]
    assert "the host name 'redis.example.invalid' does not resolve" in message


async def test_a_missing_password_says_how_to_give_it(locked: _Spawned) -> None:
    message = await _refused(locked.url())
    assert "the server wants a password and the URL gives none" in message
    assert "redis://:PASSWORD@HOST:PORT/DB" in message


@pytest.mark.parametrize("how", ["userinfo", "user", "query"])
async def test_a_wrong_password_is_named_and_never_shown(locked: _Spawned, how: str) -> None:
    wrong = "not-the-password-42"
    url = {"userinfo": locked.url(f":{wrong}@"), "user": locked.url(f"alice:{wrong}@"),
           "query": locked.url(path=f"/0?password={wrong}")}[how]
    message = await _refused(url)
    assert "the password is wrong, or the user is disabled" in message
    assert wrong not in message and "***" in message


async def test_a_database_past_the_servers_is_named(redis_server: RedisServer) -> None:
    message = await _refused(redis_server.url[:-2] + "/9999")
    assert "database 9999 does not exist on this server" in message


async def test_a_redis_that_refuses_scripts_is_misconfigured(no_scripts: _Spawned) -> None:
    message = await _refused(no_scripts.url())
    assert "refuses Lua scripts (EVAL/EVALSHA), which a shared limiter needs" in message


@pytest.mark.parametrize("reply", [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                                   b"SSH-2.0-OpenSSH_9.6\r\n", b""])
async def test_something_on_the_port_that_is_not_redis_is_named(
        not_redis: Callable[[bytes | None], object], reply: bytes) -> None:
    port = await not_redis(reply)  # type: ignore[misc]
    message = await _refused(f"redis://127.0.0.1:{port}/0")
    assert "does not speak the Redis protocol (is the port right?" in message


async def test_a_server_that_never_answers_is_a_timeout(
        not_redis: Callable[[bytes | None], object]) -> None:
    port = await not_redis(None)  # type: ignore[misc]
    message = await _refused(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    assert message.startswith(f"shared limit redis://127.0.0.1:{port}/0: no answer within 0.2 s")


async def test_a_url_that_is_not_redis_or_not_parsable_is_one_line() -> None:
    with pytest.raises(ConfigError, match="needs a redis://HOST:PORT/DB URL"):
        await check_redis(f"http://:{PASSWORD}@127.0.0.1:6379/0")
    message = await _refused(f"redis://:{PASSWORD}@127.0.0.1:port/0")
    assert "not a usable Redis URL" in message and PASSWORD not in message


def test_describe_redis_error_classifies_what_a_client_raised_first() -> None:
    import redis.exceptions as errors

    url = f"redis://:{PASSWORD}@10.1.2.3:6379/0"
    refused = errors.ConnectionError("Error 111 connecting to 10.1.2.3:6379.")
    refused.__cause__ = ConnectionRefusedError(111, "Connect call failed")
    assert describe_redis_error(refused, url).endswith(": connection refused (is redis-server "
                                                       "running there, on that port?)")
    readonly = errors.ReadOnlyError("You can't write against a read only replica.")
    assert "read-only replica: point the URL at the primary" in \
        describe_redis_error(readonly, url)
    odd = errors.ResponseError(f"ERR something new about {PASSWORD}")
    assert describe_redis_error(odd, url) == \
        "shared limit redis://:***@10.1.2.3:6379/0: ResponseError: ERR something new about ***"


# ------------------------------------------------------------------ the callers
KEY = "sk-test-preflight-0123456789"


def _cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OPENAI_API_KEY=KEY)
    env.pop("OPENAI_BASE_URL", None)
    env.pop("PIPELINE_LIMITER_URL", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(latency=0.0, api_key=KEY) as simulator:
        yield simulator


def _run_args(tmp_path: pathlib.Path, sim: Simulator) -> list[str]:
    rows = tmp_path / "in.csv"
    rows.write_text("text\n" + "".join(f"review {i}\n" for i in range(5)))
    return ["run", str(rows), "-o", str(tmp_path / "out.csv"), "--template", "{text}",
            "--max-tokens", "4", "--base-url", sim.base_url, "--rpm", "600", "--no-progress"]


@pytest.mark.parametrize("case", ["refused", "wrong password", "environment"])
def test_pipeline_run_with_an_unusable_shared_limit_exits_2_having_sent_nothing(
        tmp_path: pathlib.Path, sim: Simulator, locked: _Spawned, case: str) -> None:
    port = free_port()
    refused = f"redis://127.0.0.1:{port}/0"
    sim.reset()
    if case == "environment":  # PIPELINE_LIMITER_URL is the default --shared-limit
        done = _cli(*_run_args(tmp_path, sim), env_extra={"PIPELINE_LIMITER_URL": refused})
    else:
        url = refused if case == "refused" else locked.url(":wrong-horse@")
        done = _cli(*_run_args(tmp_path, sim), "--shared-limit", url)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    if case == "wrong password":
        assert lines == [f"pipeline run: error: shared limit {locked.url(':***@')}: the "
                         "password is wrong, or the user is disabled (give it as "
                         "redis://:PASSWORD@HOST:PORT/DB, or redis://USER:PASSWORD@... for "
                         "an ACL user)"]
        assert "wrong-horse" not in done.stderr + done.stdout
    else:
        assert lines == [f"pipeline run: error: shared limit {refused}: connection refused "
                         "(is redis-server running there, on that port?)"]
    assert "Traceback" not in done.stderr
    assert sim.log() == []  # nothing was sent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no output, journal, cache


def test_pipeline_run_with_a_usable_shared_limit_answers_every_row(
        tmp_path: pathlib.Path, sim: Simulator, locked: _Spawned) -> None:
    sim.reset()
    done = _cli(*_run_args(tmp_path, sim), "--no-cache", "--shared-limit",
                locked.url(f":{PASSWORD}@", "/0?key=preflight-cli"))
    assert done.returncode == 0, done.stderr
    assert sim.stats().ok == 5
    assert PASSWORD not in done.stderr + done.stdout


def test_pipeline_bench_refuses_an_unusable_shared_limit_before_the_sweep(
        capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main as cli_main

    port = free_port()
    code = cli_main(["bench", "--requests", "5", "--fractions", "1.0", "--concurrency", "2",
                     "--thread", "--quiet", "--no-plot",
                     "--shared-limit", f"redis://:{PASSWORD}@127.0.0.1:{port}/0"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"pipeline bench: error: shared limit redis://:***@127.0.0.1:{port}/0: connection " \
           "refused" in err
    assert "settings x" not in err and PASSWORD not in err  # no setting ran


def test_a_ray_job_is_checked_on_the_driver(redis_server: RedisServer, locked: _Spawned) -> None:
    from pipeline.ray_data import BatchJob

    good = BatchJob(model="gpt-4o-mini", prompt="{text}",
                    shared_limit=f"{redis_server.url}?key=ray-preflight")
    assert good.check() is good
    bad = BatchJob(model="gpt-4o-mini", prompt="{text}", shared_limit=locked.url())
    with pytest.raises(ConfigError, match="wants a password and the URL gives none"):
        bad.check()


async def test_a_ray_job_is_checked_from_a_running_loop_too(locked: _Spawned) -> None:
    from pipeline.ray_data import BatchJob

    bad = BatchJob(model="gpt-4o-mini", prompt="{text}", shared_limit=locked.url(":nope@"))
    with pytest.raises(ConfigError, match="the password is wrong"):
        bad.check()  # a notebook's loop is running: the check runs in a thread of its own
