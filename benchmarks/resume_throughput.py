"""Rows/s of resumable runs: resuming a fully answered job, and ``pipeline run`` end to end.

Three measurements, each bounded by ``--max-seconds``:

* resume, journaled: ``io.run_file`` on a ``--rows`` CSV (default 100,000) whose journal already
  holds every answer: read the input and the journal, send nothing, write the output.
* resume, cache only: the same job with its journal gone (``resume=False``) and every answer in
  the response cache: each row is built, found in the cache, journaled and written; nothing is
  sent (the service points at a closed port, so a miss would fail loudly).
* ``pipeline run``: the command line, in a subprocess, on a ``--cli-rows`` CSV (default 10,000)
  against the simulator in its own process with no limits and no latency (wall time,
  interpreter start-up included, and the run's own rows/s from its status table).

    python benchmarks/resume_throughput.py
    python benchmarks/resume_throughput.py --rows 20000 --cli-rows 2000
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import subprocess
import sys
import tempfile
import time

from pipeline import OpenAIService, io
from pipeline.core.request import Response
from pipeline.simulator import Simulator
from pipeline.state.cache import ResponseCache, cache_key

TEMPLATE = "Classify the sentiment of this review: {text}"
DEAD_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing answers there


def write_csv(path: str, rows: int) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows((f"r{i}", f"review number {i}: it was fine") for i in range(rows))


def fill_cache(directory: str, source: io.Source, job: object) -> None:
    """Every row's answer in the cache, as the store stage would have put it."""
    answer = Response(status=200, body={
        "id": "x", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "positive"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}})
    namespace = job.service.base_url  # type: ignore[attr-defined]
    with ResponseCache(directory, flush_every=10_000) as cache:
        for record in source.records():
            request = job.build(record.row)  # type: ignore[attr-defined]
            cache.put(cache_key(request, base_url=namespace), answer)


async def resume_runs(workdir: str, rows: int) -> list[tuple[str, int, float]]:
    data = os.path.join(workdir, "in.csv")
    output = os.path.join(workdir, "out.csv")
    cache = os.path.join(workdir, "cache")
    write_csv(data, rows)
    results = []
    async with OpenAIService(api_key="sk-bench", base_url=DEAD_URL) as service:
        job = service.chat(model="gpt-4o-mini", prompt=TEMPLATE, max_tokens=2)
        fill_cache(cache, io.read(data), job)
        # Cache only: no journal, every answer from the cache.
        start = time.perf_counter()
        summary = await io.run_file(data, output, job, cache=cache, resume=False,
                                    concurrency=64, attempts=1)
        elapsed = time.perf_counter() - start
        assert summary.succeeded == rows and summary.status.cached == rows, summary
        results.append(("resume, cache only (build + lookup + journal)", rows, elapsed))
        # Journaled: the journal of that run holds every answer.
        start = time.perf_counter()
        summary = await io.run_file(data, output, job, cache=cache, concurrency=64, attempts=1)
        elapsed = time.perf_counter() - start
        assert summary.resumed == rows and summary.status.started == 0, summary
        results.append(("resume, journaled (nothing to run)", rows, elapsed))
    return results


def cli_run(workdir: str, rows: int, max_seconds: float) -> tuple[float, float]:
    data = os.path.join(workdir, "cli.csv")
    write_csv(data, rows)
    with Simulator(process=True) as sim:
        env = dict(os.environ, OPENAI_API_KEY="sk-bench")
        command = [sys.executable, "-m", "pipeline", "run", data, "-o",
                   os.path.join(workdir, "cli-out.csv"), "--template", TEMPLATE,
                   "--max-tokens", "2", "--base-url", sim.base_url, "--no-progress",
                   "--concurrency", "64", "--cache", os.path.join(workdir, "cli-cache")]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=max_seconds)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"pipeline run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    found = re.search(r"elapsed\s+[\d.]+ s \(([\d,.]+) rows/s\)", done.stderr)
    inner = float(found.group(1).replace(",", "")) if found else float("nan")
    return wall, inner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--cli-rows", type=int, default=10_000)
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="bound on each measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="resume-bench-") as workdir:
        results = asyncio.run(asyncio.wait_for(resume_runs(workdir, args.rows),
                                               args.max_seconds * 3))
        wall, inner = cli_run(workdir, args.cli_rows, args.max_seconds)
    width = 48
    print(f"{'measurement':<{width}} {'rows':>9} {'seconds':>8} {'rows/s':>9}")
    for name, rows, seconds in results:
        print(f"{name:<{width}} {rows:>9,} {seconds:>8.2f} {rows / seconds:>9,.0f}")
    name = "pipeline run vs simulator (wall, with start-up)"
    print(f"{name:<{width}} {args.cli_rows:>9,} {wall:>8.2f} {args.cli_rows / wall:>9,.0f}")
    name = "pipeline run vs simulator (its status table)"
    print(f"{name:<{width}} {args.cli_rows:>9,} {'':>8} {inner:>9,.0f}")


if __name__ == "__main__":
    main()
