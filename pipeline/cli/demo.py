"""Run the main job on a bundled dataset, against a local simulated API: nothing to configure.

Starts the OpenAI-compatible simulator on 127.0.0.1 with provider-like limits (rpm and tpm),
latency and a few injected server errors, then classifies the sentiment of 300 bundled product
reviews through the default pipeline (rate limiter, retries, cache, progress bar), prints the
status table and writes the results file (pipeline-demo-results.csv in a folder of the
system's temporary directory unless you say -o, so a checkout or a project folder gets no stray
file; the first line printed says where). No API key, no network, about ten seconds.

Some reviews in the sample repeat an earlier one word for word: those are answered from the
response cache without another request (the "cached" count), as in a real run.

Example:

    pipeline demo                      # writes <tmp>/pipeline-demo/pipeline-demo-results.csv
    pipeline demo -o demo.parquet --rpm 3000

Then try the same on your own data: pipeline run --help
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sys
import tempfile
from collections import Counter
from importlib import resources
from typing import Any

__all__ = ["DATASET", "configure", "default_output_dir", "main", "sample_path"]

#: The bundled sample: 300 short product reviews (id, product, stars, review).
DATASET = "reviews.csv"
_TEMPLATE = ("Classify the sentiment of this product review as positive, negative or neutral. "
             "Answer with one word.\n\nReview: {review}")
_POSITIVE = ("great", "love", "perfect", "exceeded", "happy", "solid", "just works", "gift",
             "sturdy", "value")
_NEGATIVE = ("broken", "disappoint", "cheap", "return", "never", "wrong", "overpriced",
             "unbearable", "stopped", "not match")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``pipeline demo`` options to ``parser``."""
    add = parser.add_argument
    add("-o", "--output", default=None,
        help="results file (.csv, .parquet or .jsonl; default: pipeline-demo-results.csv in "
             f"{default_output_dir()})")
    add("--rpm", type=float, default=6000, help="the simulated key's requests per minute")
    add("--tpm", type=float, default=1_000_000, help="the simulated key's tokens per minute")
    add("--latency", type=float, default=0.25, help="median seconds per answer (default 0.25)")
    add("--error-rate", type=float, default=0.03,
        help="fraction of requests the server fails with a 500 (default 0.03; retried)")
    add("--concurrency", type=int, default=32, help="requests in flight at most (default 32)")
    add("--no-progress", action="store_true", help="no progress bar")


def default_output_dir() -> str:
    """Where ``pipeline demo`` writes its results unless told: a folder of the system's
    temporary directory (the working directory may be a checkout or a project).

    >>> os.path.basename(default_output_dir())
    'pipeline-demo'
    """
    return os.path.join(tempfile.gettempdir(), "pipeline-demo")


def sample_path() -> str:
    """The path of the bundled sample dataset."""
    return str(resources.files("pipeline").joinpath("data", DATASET))


def _repeats() -> int:
    """How many rows of the sample repeat an earlier row's review word for word."""
    with open(sample_path(), newline="", encoding="utf-8") as f:
        counts = Counter(row["review"] for row in csv.DictReader(f))
    return sum(n - 1 for n in counts.values())


def _classify(endpoint: str, body: dict[str, Any]) -> str:
    """The simulated model: a keyword vote, so the answers look like a classifier's."""
    text = str(body.get("messages", body.get("prompt", ""))).lower()
    review = text.rsplit("review:", 1)[-1]
    score = sum(w in review for w in _POSITIVE) - sum(w in review for w in _NEGATIVE)
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


async def _demo(args: argparse.Namespace) -> int:
    from pipeline import io
    from pipeline.http import OpenAIService
    from pipeline.io import resume
    from pipeline.simulator import Latency, Simulator

    out = sys.stderr
    io.check_output(args.output)  # an unwritable format (or no pyarrow for .parquet): now
    print(f"pipeline demo: the results will be written to {args.output}", file=out)
    latency = Latency.lognormal(args.latency, 0.4) if args.latency > 0 else 0.0
    simulator = Simulator(rpm=args.rpm, tpm=args.tpm, latency=latency,
                          faults={"500": args.error_rate}, seed=7, responder=_classify)
    with simulator as sim, tempfile.TemporaryDirectory(prefix="pipeline-demo-") as tmp:
        print(f"simulated API at {sim.base_url}: {args.rpm:,.0f} requests/min, "
              f"{args.tpm:,.0f} tokens/min, ~{args.latency:.2f}s latency, "
              f"{args.error_rate:.0%} server errors", file=out)
        print(f"classifying the 300 reviews of {sample_path()}", file=out)
        service = OpenAIService(api_key="sk-demo", base_url=sim.base_url, rpm=args.rpm,
                                tpm=args.tpm)
        async with service:
            job = service.chat(model="gpt-4o-mini", prompt=_TEMPLATE, max_tokens=3,
                               temperature=0)
            summary = await resume.run_file(
                sample_path(), args.output, job, cache=os.path.join(tmp, "cache"),
                journal=os.path.join(tmp, "journal"), concurrency=args.concurrency,
                progress=not args.no_progress, resume=False, overwrite=True)
        server = sim.stats()
    print(summary.status.summary(), file=out)
    print(f"the server saw {server.requests:,} requests ({server.faults} injected errors, "
          f"all retried; {server.rate_limited} over its rate limit)", file=out)
    repeats, cached = _repeats(), summary.status.cached
    if repeats:
        print(f"{repeats} of the {summary.rows:,} rows repeat an earlier review word for word: "
              f"{min(cached, repeats)} of them were answered from the response cache without a "
              f"request (the \"cached\" count)" + (
                  f", {repeats - cached} were sent too because the same review was still in "
                  "flight" if cached < repeats else ""), file=out)
    print(f"\nwrote {summary.rows:,} rows to {args.output}", file=out)
    print("next: pipeline run --help (the same job on your own file, resumable)", file=out)
    return 1 if summary.failed else 0


def main(args: argparse.Namespace) -> int:
    """Entry point of ``pipeline demo``."""
    from pipeline.errors import PipelineError

    if args.output is None:
        os.makedirs(default_output_dir(), exist_ok=True)
        args.output = os.path.join(default_output_dir(), "pipeline-demo-results.csv")
    args.output = os.path.abspath(args.output)
    try:
        return asyncio.run(_demo(args))
    except PipelineError as exc:  # e.g. -o x.parquet without pyarrow: one line, exit 2
        print(f"pipeline demo: error: {exc}", file=sys.stderr)
        return 2
