"""The Batch API path at size: N rows through the simulator's /v1/batches with run_batch.

Prints rows answered, whether they are in input order, the batches made, the lines the
simulator billed (a row paid twice would show here), the wall time, and the cost at the batch
price beside the online estimate for the same rows.

    python benchmarks/batch_api.py [--rows 10000] [--batch-seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

import pipeline
from pipeline.batch_api import run_batch
from pipeline.simulator import Simulator


async def main(rows_n: int, batch_seconds: float, max_requests: int) -> None:
    rows = [{"text": f"review {i}"} for i in range(rows_n)]
    with Simulator(latency=0.0, batch_seconds=batch_seconds) as sim:
        async with pipeline.OpenAIService(base_url=sim.base_url, api_key="sk") as service:
            job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=5)
            start = time.perf_counter()
            results = await run_batch(rows, job, cache=tempfile.mkdtemp(), poll=0.2,
                                      max_requests=max_requests)
            wall = time.perf_counter() - start
            plan = pipeline.estimate(rows, job)
        answered = sum(r.ok for r in results)
        in_order = all(r.index == i for i, r in enumerate(results))
        print(f"rows {rows_n:,}  answered {answered:,}  in order {in_order}  "
              f"batches {len(sim.batches())}  lines billed {sim.batch_lines_answered():,}  "
              f"wall {wall:.1f} s (batches take {batch_seconds:g} s each here)")
        print(f"paid at the batch price: ${results.cost:.4f}; estimate for these rows: online "
              f"${plan.cost_low:.4f}-{plan.cost_high:.4f}, batch "
              f"${plan.batch_low:.4f}-{plan.batch_high:.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch-seconds", type=float, default=2.0)
    parser.add_argument("--max-requests", type=int, default=50_000)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.batch_seconds, args.max_requests))
