"""How many chat completions per second the simulator serves to a fast client.

The simulator runs in its own process (``Simulator(process=True)``, on uvloop when installed),
with no limits, latency or faults; an aiohttp client in this process keeps ``--concurrency``
requests in flight until ``--requests`` have been answered or ``--seconds`` have passed. For
scale, the same client then drives a minimal aiohttp.web server (also in its own process, same
event loop) that returns the same JSON body.
Loopback only; it stops by itself.

    python benchmarks/simulator_throughput.py                  # 20,000 requests, 64 in flight
    python benchmarks/simulator_throughput.py --requests 5000 --no-peer
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

from pipeline.simulator import Simulator

BODY = json.dumps({"model": "gpt-4o-mini", "max_tokens": 32, "messages": [
    {"role": "user", "content": "Classify: the cat sat on the mat"}]}).encode()
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(url: str, requests: int, concurrency: int, seconds: float,
                server_pid: int) -> dict[str, float]:
    """Keep ``concurrency`` POSTs in flight; return throughput, latency and server CPU."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal sent, errors
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                t0 = time.perf_counter()
                async with session.post(url, data=BODY, headers=HEADERS) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        async def warm_up() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()

        # open every connection and warm the code paths, then measure
        await asyncio.gather(*(warm_up() for _ in range(concurrency)))
        cpu = cpu_seconds(server_pid)
        client_cpu = time.process_time()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(server_pid) - cpu
        client_cpu = time.process_time() - client_cpu
    latencies.sort()
    return {"requests": len(latencies), "seconds": elapsed, "rps": len(latencies) / elapsed,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000, "errors": errors,
            "server_us": cpu / len(latencies) * 1e6, "client_us": client_cpu / len(latencies) * 1e6}


def serve_peer(body: str) -> None:
    """The peer: a minimal aiohttp.web app returning a fixed chat completion body."""
    from aiohttp import web

    payload = body.encode()

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=payload, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"http://127.0.0.1:{port}/v1", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
        await runner.cleanup()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:  # the same event loop the simulator's process mode uses
        uvloop.run(main())


@contextmanager
def peer_process(body: str) -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve-peer"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(body + "\n")
    proc.stdin.flush()
    try:
        yield proc.stdout.readline().strip(), proc.pid
    finally:
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0, help="stop after this long")
    parser.add_argument("--no-peer", action="store_true", help="skip the aiohttp.web peer")
    parser.add_argument("--serve-peer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_peer:
        serve_peer(sys.stdin.readline().rstrip("\n"))
        return 0

    try:
        import uvloop

        loop, run = "uvloop", uvloop.run
    except ImportError:
        loop, run = "asyncio", asyncio.run
    rows = []
    with Simulator(process=True, seed=1) as sim:
        url = f"{sim.base_url}/chat/completions"
        assert sim.pid is not None
        result = run(drive(url, args.requests, args.concurrency, args.seconds, sim.pid))
        rows.append((f"pipeline simulator ({loop})", result))
        stats = sim.stats()
        body = asyncio.run(_one_body(url))
    if not args.no_peer:
        with peer_process(body) as (peer_url, peer_pid):
            result = run(drive(f"{peer_url}/chat/completions", args.requests,
                               args.concurrency, args.seconds, peer_pid))
            rows.append((f"aiohttp.web, fixed body ({loop})", result))

    print(f"\n{args.concurrency} concurrent aiohttp requests ({loop}), loopback, each server in "
          "its own process")
    print(f"{'server':34} {'requests':>8} {'seconds':>7} {'req/s':>6} {'p50 ms':>6} "
          f"{'p99 ms':>6} {'errors':>6} {'server CPU/req':>14} {'client CPU/req':>14}")
    for name, r in rows:
        print(f"{name:34} {r['requests']:>8.0f} {r['seconds']:>7.2f} {r['rps']:>6.0f} "
              f"{r['p50']:>6.1f} {r['p99']:>6.1f} {r['errors']:>6.0f} "
              f"{r['server_us']:>11.0f} us {r['client_us']:>11.0f} us")
    print(f"\nsimulator saw {stats.requests} requests ({stats.ok} ok). A server using X us of "
          "CPU per request can serve at most 1e6/X req/s on one core; when the client's CPU per "
          "request is the larger, the client is the bottleneck.")
    return 0


async def _one_body(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.post(url, data=BODY,
                                                                 headers=HEADERS) as response:
        return await response.text()


if __name__ == "__main__":
    sys.exit(main())
