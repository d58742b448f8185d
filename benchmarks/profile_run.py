"""Where the machinery's time goes: cProfile over ``pipeline.run`` of 100,000 rows.

    python benchmarks/profile_run.py              # the 25 costliest functions by own time
    python benchmarks/profile_run.py --rows 20000 --sort cumulative --top 40
    python benchmarks/profile_run.py --http aiohttp --rows 5000   # over loopback HTTP

Rows go through the default chain to an in-process instant service (no HTTP, no limits), as
in part 1 of ``benchmarks/pipeline_throughput.py``; one warm-up run comes first. Times under
the profiler are about twice the real ones: read them as shares, not as microseconds.
With ``--http httpx|aiohttp`` the rows go over loopback HTTP to the simulator in a process of
its own, as in part 4 of that benchmark (no limits; the client's side is profiled).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import sys
from typing import Any

import pipeline
from pipeline.simulator import Simulator
from pipeline.testing import InstantService


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--sort", default="tottime", help="a pstats sort key (tottime)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--http", choices=["httpx", "aiohttp"],
                        help="over loopback HTTP to the simulator, with this transport")
    args = parser.parse_args(argv)
    rows = [{"text": f"row {i}"} for i in range(args.rows)]

    async def go(service: Any) -> None:
        job = service.chat(model="m", prompt="Classify: {text}", max_tokens=5)
        results = await pipeline.run(rows, job, concurrency=64)
        assert len(results) == args.rows and results[-1].ok

    async def once(base_url: str | None = None) -> None:
        if base_url is None:
            await go(InstantService())
            return
        async with pipeline.OpenAIService(api_key="sk-bench", base_url=base_url,
                                          transport=args.http, adaptive=False) as service:
            await go(service)

    with contextlib.ExitStack() as stack:
        base_url = None
        if args.http:
            base_url = stack.enter_context(Simulator(process=True, seed=1)).base_url
        asyncio.run(once(base_url))  # warm-up: imports, caches
        profile = cProfile.Profile()
        profile.enable()
        asyncio.run(once(base_url))
        profile.disable()
    pstats.Stats(profile, stream=sys.stdout).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
