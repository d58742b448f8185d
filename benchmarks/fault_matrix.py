"""Fault matrix: kinds of fault x rate, each cell a full ``pipeline.run`` against the simulator.

For every kind of fault the simulator can inject (5xx, a reset or hung connection, a cut or
non-JSON body, and the 200s without an answer: empty, null, ``{}``, ``[]``, no choices, a null
content, an error object, a content filter, a page echoing the request's headers) and every
rate, ``--rows`` rows go through the default pipeline (cache off, ``--attempts`` attempts).
Each cell prints:

* correct: rows whose answer is the one the simulator gives that row's request (its answers
  are deterministic: a fault-free run gives each row's own answer first);
* wrong: rows reported as answered whose answer is not that one (must be 0);
* failed: rows that ended with an error (a content filter is not retried, so it fails);
* paid twice: request bodies the simulator answered ``ok`` (billed) more than once, from its
  log (must be 0: nothing answered is asked again);
* 429s: rate-limit refusals in the simulator's log;
* time: wall time against the fault-free run.

    python benchmarks/fault_matrix.py            # 400 rows, rates 0.05 and 0.2
    python benchmarks/fault_matrix.py --quick    # 100 rows, rate 0.2 (well under 2 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from typing import Any

import pipeline
from pipeline.simulator import Simulator
from pipeline.simulator._config import FAULT_KINDS
from pipeline.testing import set_testing

KINDS = tuple(FAULT_KINDS)
TEMPLATE = "Classify the sentiment of this review: {text}"


async def one_cell(rows: list[dict[str, str]], faults: dict[str, float], *, rpm: float,
                   attempts: int, timeout: float, seed: int) -> dict[str, Any]:
    """Run ``rows`` against a simulator with ``faults``; the records and the server's log."""
    with Simulator(rpm=rpm, latency="uniform:0.005,0.02", faults=faults, seed=seed,
                   process=True) as sim:
        async with pipeline.OpenAIService(api_key="sk-bench-0123456789abcdef",
                                          base_url=sim.base_url, rpm=rpm) as service:
            job = service.chat(model="gpt-4o-mini", prompt=TEMPLATE, max_tokens=16)
            start = time.perf_counter()
            results = await pipeline.run(rows, job, attempts=attempts, timeout=timeout,
                                         concurrency=32)
            elapsed = time.perf_counter() - start
        log = sim.log()
    return {"results": results, "log": log, "elapsed": elapsed}


def score(cell: dict[str, Any], expected: list[str | None]) -> dict[str, Any]:
    results, log = cell["results"], cell["log"]
    correct = sum(1 for r, want in zip(results, expected, strict=True)
                  if r.ok and r.text == want)
    wrong = sum(1 for r, want in zip(results, expected, strict=True)
                if r.ok and r.text != want)
    failed = sum(1 for r in results if not r.ok)
    billed = collections.Counter(e.body_hash for e in log if e.outcome == "ok")
    errors = collections.Counter(r.error_type for r in results if r.error is not None)
    return {"correct": correct, "wrong": wrong, "failed": failed,
            "paid_twice": sum(1 for n in billed.values() if n > 1),
            "429s": sum(1 for e in log if e.status == 429), "requests": len(log),
            "elapsed": cell["elapsed"], "errors": errors}


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.2])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--attempts", type=int, default=6)
    parser.add_argument("--rpm", type=float, default=60_000)
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="seconds one attempt may take (a hung request is retried after)")
    parser.add_argument("--quick", action="store_true",
                        help="100 rows, rate 0.2 only (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.rates = 100, [0.2]
    set_testing(True)  # no backoff sleeps: the waits measured are the faults' own
    rows = [{"text": f"review number {i}: it was fine, I guess"} for i in range(args.rows)]
    options = {"rpm": args.rpm, "attempts": args.attempts, "timeout": args.timeout}

    await one_cell(rows[:50], {}, seed=0, **options)  # warm up: imports, first connections
    base = await one_cell(rows, {}, seed=0, **options)
    expected = [r.text for r in base["results"]]
    if not all(r.ok for r in base["results"]):
        print("the fault-free run failed rows: nothing to compare against", file=sys.stderr)
        return 1
    baseline = score(base, expected)
    print(f"fault matrix: {args.rows} rows per cell, attempts={args.attempts}, "
          f"attempt timeout {args.timeout:g} s, simulator rpm {args.rpm:g} "
          f"(latency 5-20 ms), backoff waits off")
    header = (f"{'fault':<15} {'rate':>5} {'correct':>8} {'wrong':>6} {'failed':>7} "
              f"{'paid 2x':>8} {'429s':>5} {'requests':>9} {'time s':>7} {'x base':>7}  errors")
    print(header)
    print("-" * len(header))

    def line(kind: str, rate: float, s: dict[str, Any]) -> None:
        errors = ", ".join(f"{name} {n}" for name, n in s["errors"].most_common())
        print(f"{kind:<15} {rate:>5.2f} {s['correct']:>8} {s['wrong']:>6} {s['failed']:>7} "
              f"{s['paid_twice']:>8} {s['429s']:>5} {s['requests']:>9} {s['elapsed']:>7.2f} "
              f"{s['elapsed'] / baseline['elapsed']:>7.2f}  {errors}")

    line("none", 0.0, baseline)
    bad = 0
    for kind in args.kinds:
        for rate in args.rates:
            s = score(await one_cell(rows, {kind: rate}, seed=1, **options), expected)
            line(kind, rate, s)
            bad += s["wrong"] + s["paid_twice"]
    print(f"\nwrong answers or answers paid twice in all cells: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
