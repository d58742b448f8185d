"""Where does ``pipeline.run`` spend its time end to end? The default chain built up a stage
at a time over loopback HTTP, each step's CPU cost a request beside the bare loops.

    python benchmarks/e2e_breakdown.py                 # aiohttp transport, 9 rounds
    python benchmarks/e2e_breakdown.py --transport httpx --rounds 5

The client is CPU-bound (the simulator, pinned to the other core, uses a fifth of its
own), so CPU time a request (``process_time``) is what each step adds; every variant runs
once a round, interleaved, and the table gives each one's median. Steps:

1. ``bare gather``: ``asyncio.gather`` + semaphore over ``service.call`` (the baseline of
   ``pipeline_throughput.py``).
2. ``bare pool``: 64 worker tasks pulling rows with ``next()`` (no task a row).
3. ``build | call``: the stage machinery (records, one worker a slot) with the two stages
   every request needs.
4. ``+ acquire``: the limiter's lease and its settling (headers read, tokens charged).
5. ``+ retry, track``: the default chain, counted in a ``StatusTracker``.
6. ``+ columns``: the records kept as ``run()`` keeps them (``RecordColumns``), added one at
   a time in the worker.
7. ``pipeline.run``: all of it (its records kept a loop pass at a time).

On the 2-core development machine (2026-12-05, aiohttp): the bare loops 200-230 us a
request, ``build | call`` +2-10 us, the limiter +5-14, retry and track +4-8, the columns
+9-14 one at a time (4-5 a loop pass at a time). Each of these costs two to four times what
it does in process (``pipeline_throughput.py``'s machinery part): between two of a
request's steps the HTTP client runs some 200 us of its own code, and ours then runs from
cold CPU caches. (Before ``service.call`` cut the cycle httpx leaves between a response
and its stream, the garbage collector's passes over those cycles cost a run 16-20 us a
request more.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pipeline
from pipeline.core.columns import RecordColumns
from pipeline.simulator import Simulator
from pipeline.stages import Chain, acquire, build, call, retry, track
from pipeline.state.status import StatusTracker

CONCURRENCY = 64
Variant = Callable[[], Coroutine[Any, Any, None]]


def _variants(base_url: str, transport: str, rows: list[dict[str, str]]
              ) -> list[tuple[str, Variant]]:
    def service() -> pipeline.OpenAIService:
        return pipeline.OpenAIService(api_key="sk-bench", base_url=base_url,
                                      transport=transport, adaptive=False)

    def job(s: pipeline.OpenAIService) -> Any:
        return s.chat(model="m", prompt="Classify: {text}", max_tokens=5)

    def drop(record: Any) -> None:
        pass

    async def bare_gather() -> None:
        async with service() as s:
            j, semaphore = job(s), asyncio.Semaphore(CONCURRENCY)

            async def one(row: Any) -> Any:
                async with semaphore:
                    return await s.call(j.endpoint, j.build(row))

            await asyncio.gather(*(one(r) for r in rows))

    async def bare_pool() -> None:
        async with service() as s:
            j, items = job(s), iter(rows)

            async def worker() -> None:
                for row in items:
                    await s.call(j.endpoint, j.build(row))

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    def chain(*, limiter: bool, counted: bool, kept: bool) -> Variant:
        async def variant() -> None:
            async with service() as s:
                j = job(s)
                send = (acquire(j.endpoint.limiter) | call(j.service, j.endpoint)) \
                    if limiter else call(j.service, j.endpoint)
                stages = [build(j.builder)]
                if counted:
                    stages += [retry(send), track(StatusTracker())]
                else:
                    stages.append(send)
                sink = RecordColumns().add if kept else drop
                await Chain(*stages, concurrency=CONCURRENCY).each(iter(rows), sink)
        return variant

    async def run() -> None:
        async with service() as s:
            await pipeline.run(rows, job(s), concurrency=CONCURRENCY)

    return [("bare gather", bare_gather), ("bare pool", bare_pool),
            ("build | call", chain(limiter=False, counted=False, kept=False)),
            ("+ acquire", chain(limiter=True, counted=False, kept=False)),
            ("+ retry, track", chain(limiter=True, counted=True, kept=False)),
            ("+ columns (one at a time)", chain(limiter=True, counted=True, kept=True)),
            ("pipeline.run", run)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    args = parser.parse_args(argv)
    rows = [{"text": f"row {i}"} for i in range(args.rows)]
    with Simulator(process=True, seed=1) as sim:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cores) >= 2 and sim.pid is not None:
            os.sched_setaffinity(sim.pid, {cores[1]})
            os.sched_setaffinity(0, {cores[0]})
        variants = _variants(sim.base_url, args.transport, rows)
        for _, variant in variants:  # warm up (imports, connections' code paths)
            asyncio.run(variant())
        cpu: dict[str, list[float]] = {name: [] for name, _ in variants}
        for _ in range(args.rounds):
            for name, variant in variants:
                start = time.process_time()
                asyncio.run(variant())
                cpu[name].append((time.process_time() - start) / args.rows * 1e6)
    medians = {name: statistics.median(values) for name, values in cpu.items()}
    base = medians["bare gather"]
    print(f"{args.rows:,} requests over loopback, {args.transport} transport, concurrency "
          f"{CONCURRENCY}, {args.rounds} interleaved rounds: client CPU a request (median)")
    print("   (step: beside the row above; pipeline.run's beside '+ retry, track')")
    print(f"   {'variant':28} {'us/request':>10} {'vs gather':>10} {'step':>7}  ratio")
    previous: float | None = None
    for name, value in medians.items():
        if name == "pipeline.run":
            previous = medians["+ retry, track"]
        step = "" if previous is None else f"{value - previous:+.1f}"
        print(f"   {name:28} {value:10.1f} {value - base:+10.1f} {step:>7}  "
              f"{base / value:.3f}x")
        previous = value
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
