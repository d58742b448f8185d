"""Where the machinery's time goes: cProfile over ``pipeline.run`` of 100,000 rows.

    python benchmarks/profile_run.py              # the 25 costliest functions by own time
    python benchmarks/profile_run.py --rows 20000 --sort cumulative --top 40

Rows go through the default chain to an in-process instant service (no HTTP, no limits), as
in part 1 of ``benchmarks/pipeline_throughput.py``; one warm-up run comes first. Times under
the profiler are about twice the real ones: read them as shares, not as microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys

import pipeline
from pipeline.testing import InstantService


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--sort", default="tottime", help="a pstats sort key (tottime)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    rows = [{"text": f"row {i}"} for i in range(args.rows)]

    async def once() -> None:
        service = InstantService()
        job = service.chat(model="m", prompt="Classify: {text}", max_tokens=5)
        results = await pipeline.run(rows, job, concurrency=64)
        assert len(results) == args.rows and results[-1].ok

    asyncio.run(once())  # warm-up: imports, caches
    profile = cProfile.Profile()
    profile.enable()
    asyncio.run(once())
    profile.disable()
    pstats.Stats(profile, stream=sys.stdout).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
