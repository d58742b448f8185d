"""A real ``redis-server`` on 127.0.0.1 for tests: started on a free port, stopped (killed,
restarted on the same port) at will. Tests skip with the reason when the binary is absent
(``.ci/run`` installs it, so CI never skips)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

REDIS_SERVER = shutil.which("redis-server")
SKIP_REASON = ("redis-server is not installed (apt-get install -y redis-server); "
               ".ci/run installs it")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process without persistence (a restart starts empty)."""

    def __init__(self, port: int | None = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError(SKIP_REASON)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _ping(self.port):  # bounded polling for the server to answer
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Terminate the server (what a crash looks like to its clients)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def redis_server_fixture() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def shared_quota_worker(url: str, key: str, base_url: str, rpm: float, tpm: float | None,
                        texts: list[str], local_share: float, queue: object) -> None:
    """A worker process: answer ``texts`` through one :class:`RedisLimiter` on ``key``, then
    put ``{"ok", "failed", "stats"}`` on ``queue`` (a ``multiprocessing`` queue)."""
    import asyncio

    import pipeline
    from pipeline.limiter import RedisLimiter

    async def main() -> dict[str, object]:
        limiter = RedisLimiter(url, key=key, max_requests=rpm, max_tokens=tpm,
                               local_share=local_share)
        async with pipeline.OpenAIService(
                base_url=base_url, api_key="sk-local",
                limits={"chat/completions": {"limiter": limiter}}) as service:
            job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=4,
                               temperature=0)
            results = await pipeline.run([{"text": t} for t in texts], job, concurrency=64)
        await limiter.aclose()
        return {"ok": sum(1 for r in results if r.ok),
                "failed": [str(r.error) for r in results if not r.ok][:3],
                "stats": dict(limiter.stats())}

    queue.put(asyncio.run(main()))  # type: ignore[attr-defined]


def acquire_loop_worker(url: str, key: str, rate: float, tasks: int, seconds: float,
                        ready: object, start: object, queue: object) -> None:
    """A worker process that only acquires: ``tasks`` tasks loop ``acquire`` on one
    :class:`RedisLimiter` for ``seconds`` after ``start`` (a ``multiprocessing`` event) is
    set, then put the wall-clock grant times on ``queue``. ``ready`` is put first, once the
    imports and the limiter are done, so every process starts together."""
    import asyncio

    from pipeline.limiter import RedisLimiter

    async def main() -> list[float]:
        limiter = RedisLimiter(url, key=key, max_requests=rate * 60)
        ready.put(1)  # type: ignore[attr-defined]
        await asyncio.to_thread(start.wait, 60)  # type: ignore[attr-defined]
        times: list[float] = []
        end_at = time.time() + seconds

        async def loop() -> None:
            while time.time() < end_at:
                await limiter.acquire()
                times.append(time.time())

        await asyncio.gather(*(loop() for _ in range(tasks)))
        await limiter.aclose()
        return times

    queue.put(asyncio.run(main()))  # type: ignore[attr-defined]
