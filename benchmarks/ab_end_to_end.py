"""Does a change move the end-to-end ratio? An A/B of two source trees over loopback HTTP.

    git worktree add --detach /tmp/before HEAD      # the code before the change
    python benchmarks/ab_end_to_end.py /tmp/before . --rounds 20

Each round runs, for each tree in turn, a fresh child process (``PYTHONPATH`` set to the
tree) that starts the simulator in a process of its own, pins it and itself to a core each,
and times ``pipeline.run`` and a bare gather loop over the same service twice each,
interleaved; the round's figure is the ratio of their bests. The trees alternate round by
round, so drift in the machine's load hits both alike, and the table gives each tree's
median ratio: on a shared 2-core machine one run's ratio moves by 10-20%, a median of 20
rounds by a few percent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

_CHILD = r'''
import asyncio, os, sys, time
import pipeline
from pipeline.simulator import Simulator
n, transport = int(sys.argv[1]), sys.argv[2]
print("tree", os.path.dirname(os.path.dirname(os.path.abspath(pipeline.__file__))))
rows = [{"text": f"row {i}"} for i in range(n)]
with Simulator(process=True, seed=1) as sim:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        os.sched_setaffinity(sim.pid, {cores[1]}); os.sched_setaffinity(0, {cores[0]})
    def job(service):
        return service.chat(model="m", prompt="Classify: {text}", max_tokens=5)
    async def ours():
        async with pipeline.OpenAIService(api_key="sk-bench", base_url=sim.base_url,
                                          transport=transport, adaptive=False) as service:
            await pipeline.run(rows, job(service), concurrency=64)
    async def bare():
        async with pipeline.OpenAIService(api_key="sk-bench", base_url=sim.base_url,
                                          transport=transport) as service:
            j, semaphore = job(service), asyncio.Semaphore(64)
            async def one(row):
                async with semaphore:
                    return await service.call(j.endpoint, j.build(row))
            await asyncio.gather(*(one(r) for r in rows))
    rates = {"ours": [], "bare": []}
    for make in (ours, bare, ours, bare):
        start = time.perf_counter()
        asyncio.run(make())
        rates[make.__name__].append(n / (time.perf_counter() - start))
    print(max(rates["ours"]) / max(rates["bare"]))
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="the first source tree (the one holding pipeline/)")
    parser.add_argument("b", help="the second source tree")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    args = parser.parse_args(argv)
    trees = {"A": os.path.abspath(args.a), "B": os.path.abspath(args.b)}
    ratios: dict[str, list[float]] = {"A": [], "B": []}
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            # Run in the tree: `python -c` puts the working directory first on sys.path,
            # ahead of PYTHONPATH, so a child started here would import this directory's
            # pipeline whichever tree it was given (and every A/B compare a tree with itself).
            env = {**os.environ, "PYTHONPATH": tree}
            out = subprocess.run([sys.executable, "-c", _CHILD, str(args.rows), args.transport],
                                 capture_output=True, text=True, env=env, check=True, cwd=tree)
            lines = out.stdout.split("\n")
            used = next(line.split(" ", 1)[1] for line in lines if line.startswith("tree "))
            if os.path.realpath(used) != os.path.realpath(tree):
                raise SystemExit(f"tree {name} ran the pipeline in {used}, not {tree}")
            ratios[name].append(float(out.stdout.split()[-1]))
        print(f"round {round_ + 1}: A {ratios['A'][-1]:.3f}x  B {ratios['B'][-1]:.3f}x",
              flush=True)
    print(f"\npipeline.run / bare loop, {args.rows:,} requests over loopback, "
          f"{args.transport} transport, {args.rounds} rounds")
    print(f"   {'tree':4} {'median':>7} {'min':>6} {'max':>6}  path")
    for name, values in ratios.items():
        print(f"   {name:4} {statistics.median(values):6.3f}x {min(values):5.3f}x "
              f"{max(values):5.3f}x  {trees[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
