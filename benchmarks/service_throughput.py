"""Requests/s of ``service.call`` at 64 concurrent calls against the local simulator.

Five clients, measured in the same run against the same simulator (in its own process, so
client and server do not share a core; no rate limits, no latency, loopback only):

* bare httpx: an ``httpx.AsyncClient`` (httpx's own transport) posting pre-encoded JSON;
* bare aiohttp: an ``aiohttp.ClientSession`` doing the same;
* bare httpx + AiohttpTransport: the first, through ``httpx_aiohttp``'s transport (what the
  service's ``transport="aiohttp"`` costs before the service adds anything);
* ``OpenAIService.call`` with ``transport="httpx"`` and with ``transport="aiohttp"``.

Each client runs ``--rounds`` times, interleaved with the others so drift hits them alike; the
table shows the median. Every round is bounded by ``--requests`` and ``--max-seconds``.

    python benchmarks/service_throughput.py                 # defaults: 2,000 requests x 3 rounds
    python benchmarks/service_throughput.py --requests 500 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
import msgspec

from pipeline.core.request import APIRequest
from pipeline.http import OpenAIService
from pipeline.simulator import Simulator

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hi."}],
    "max_tokens": 16,
}
REQUEST = APIRequest(path="chat/completions", body=BODY)
ENCODED = msgspec.json.encode(BODY)
HEADERS = {"authorization": "Bearer sk-bench", "content-type": "application/json"}

Call = Callable[[], Awaitable[object]]


async def drive(call: Call, requests: int, concurrency: int, max_seconds: float) -> float:
    """Run ``requests`` calls with ``concurrency`` workers; requests/s (stops at max_seconds)."""
    remaining = requests
    done = 0
    start = time.perf_counter()
    deadline = start + max_seconds

    async def worker() -> None:
        nonlocal remaining, done
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            await call()
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def bare_httpx(url: str, n: int, conc: int, limit: float) -> float:
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def call() -> object:
            response = await client.post(url, content=ENCODED, headers=HEADERS)
            response.raise_for_status()
            return msgspec.json.decode(response.content)

        await drive(call, conc, conc, limit)  # warm the connection pool
        return await drive(call, n, conc, limit)


async def bare_httpx_aiohttp(url: str, n: int, conc: int, limit: float) -> float:
    from httpx_aiohttp import AiohttpTransport

    transport = AiohttpTransport(limits=httpx.Limits(max_connections=conc))
    async with httpx.AsyncClient(transport=transport, timeout=60) as client:

        async def call() -> object:
            response = await client.post(url, content=ENCODED, headers=HEADERS)
            response.raise_for_status()
            return msgspec.json.decode(response.content)

        await drive(call, conc, conc, limit)
        return await drive(call, n, conc, limit)


async def bare_aiohttp(url: str, n: int, conc: int, limit: float) -> float:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> object:
            async with session.post(url, data=ENCODED, headers=HEADERS) as response:
                response.raise_for_status()
                return msgspec.json.decode(await response.read())

        await drive(call, conc, conc, limit)
        return await drive(call, n, conc, limit)


def service_runner(transport: str) -> Callable[[str, int, int, float], Awaitable[float]]:
    async def run(base_url: str, n: int, conc: int, limit: float) -> float:
        service = OpenAIService(
            "sk-bench",
            base_url,
            transport=transport,  # type: ignore[arg-type]
            max_connections=conc,
        )
        async with service:

            async def call() -> object:
                return await service.call("chat/completions", REQUEST)

            await drive(call, conc, conc, limit)
            return await drive(call, n, conc, limit)

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="cap per round")
    parser.add_argument(
        "--thread",
        action="store_true",
        help="run the simulator in a thread of this process (shares a core)",
    )
    args = parser.parse_args(argv)

    clients: dict[str, Callable[[str, int, int, float], Awaitable[float]]] = {
        "bare httpx": bare_httpx,
        "bare aiohttp": bare_aiohttp,
        "bare httpx + AiohttpTransport": bare_httpx_aiohttp,
        "service.call, transport='httpx'": service_runner("httpx"),
        "service.call, transport='aiohttp'": service_runner("aiohttp"),
    }
    results: dict[str, list[float]] = {name: [] for name in clients}
    with Simulator(process=not args.thread, log_limit=1000) as sim:
        for _ in range(args.rounds):
            for name, run in clients.items():
                base = sim.base_url
                target = f"{base}/chat/completions" if name.startswith("bare") else base
                rate = asyncio.run(run(target, args.requests, args.concurrency, args.max_seconds))
                results[name].append(rate)

    medians = {name: statistics.median(rates) for name, rates in results.items()}
    ref_httpx, ref_aiohttp = medians["bare httpx"], medians["bare aiohttp"]
    mode = "thread" if args.thread else "subprocess"
    print(
        f"python {sys.version.split()[0]}, httpx {httpx.__version__}, simulator in a {mode}, "
        f"{args.concurrency} concurrent, {args.requests} requests x {args.rounds} rounds "
        "(median)"
    )
    header = (
        f"{'client':<36} {'req/s':>8} {'(min-max)':>13} {'vs bare httpx':>14} "
        f"{'vs bare aiohttp':>16}"
    )
    print(header)
    print("-" * len(header))
    for name, rate in medians.items():
        spread = f"{min(results[name]):,.0f}-{max(results[name]):,.0f}"
        print(
            f"{name:<36} {rate:>8,.0f} {spread:>13} {rate / ref_httpx:>13.2f}x "
            f"{rate / ref_aiohttp:>15.2f}x"
        )


if __name__ == "__main__":
    main()
