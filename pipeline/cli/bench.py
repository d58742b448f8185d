"""Benchmark client limiter settings against a simulator configured like your provider.

Each setting in the grid (every combination of the comma-separated values) sends the same
REQUESTS chat requests through the default pipeline against a fresh simulator with the same
seed. The 429s and throughput come from the simulator's own request log. Time is compressed
so that one setting takes a few seconds; rates and times are reported in the provider's time.
The table goes to stdout, and a plot to ./pipeline-bench.png (or --out) when matplotlib is
installed (pip install "ratelimited-pipeline[plot]").

example:
  pipeline bench --rpm 600 --tpm 100000 --burst 6 --latency lognormal:0.2,0.4 \\
      --fault 500=0.01 --requests 300 --fractions 0.8,1.0,1.2 --concurrency 16,64 \\
      --limiters adaptive,token_bucket --bursts default,6 --csv bench.csv --out bench.png

--burst is the provider's bucket and --bursts the client's, both in seconds of the rate, as
pipeline run --burst is ("default": each limiter's own, half a second of its rate; for the
interval limiter they are its window length, default a minute). --limiters: adaptive (what
pipeline run uses), token_bucket (pipeline run --no-adaptive), interval. The provider's limit
shape (--policy), window, concurrency cap and 429 format are the simulator's, as for
pipeline serve; the bench's requests ask for model bench-model (the name a --model-limit
needs, e.g. bench-model=300,50000).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from pipeline.cli.serve import (
    add_burst,
    add_faults,
    add_provider_modes,
    burst_share,
    provider_modes,
)
from pipeline.errors import PipelineError
from pipeline.limiter import DEFAULT_BURST_SECONDS

T = TypeVar("T")


def _list(convert: Callable[[str], T]) -> Callable[[str], list[T]]:
    def parse(text: str) -> list[T]:
        try:
            return [convert(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"bad list {text!r}: {exc}") from None

    return parse


def _burst(text: str) -> float | None:
    return None if text.lower() in ("default", "none", "-") else float(text)


def _limiter(text: str) -> str:
    aliases = {"adaptive": "adaptive", "token_bucket": "token_bucket", "bucket": "token_bucket",
               "tb": "token_bucket", "static": "token_bucket", "interval": "interval",
               "window": "interval"}
    if text not in aliases:
        raise ValueError(f"unknown limiter {text!r} (adaptive, token_bucket or interval)")
    return aliases[text]


#: Where the plot goes when --out is not given (in the current directory).
DEFAULT_PLOT = "pipeline-bench.png"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``pipeline bench`` arguments."""
    provider = parser.add_argument_group("the provider to imitate")
    provider.add_argument("--rpm", type=float, default=600, help="requests per minute (600)")
    provider.add_argument("--tpm", type=float, default=100_000,
                          help="tokens per minute (100000; 0: no token limit)")
    add_burst(provider, policy=True,
              default="default 6, as providers often enforce; 'policy': the --policy's own "
                      "bucket (not for --policy window)")
    provider.add_argument("--latency", default="0.2",
                          help="seconds, uniform:LOW,HIGH or lognormal:MEDIAN,SIGMA (0.2)")
    add_faults(provider)
    provider.add_argument("--seed", type=int, default=0, help="simulator seed (0)")
    add_provider_modes(provider)
    grid = parser.add_argument_group("the client settings to try (comma-separated lists)")
    grid.add_argument("--limiters", type=_list(_limiter), default=["adaptive"],
                      help="adaptive (the default: what pipeline run uses, rpm/tpm as "
                           "ceilings), token_bucket (pipeline run --no-adaptive), interval")
    grid.add_argument("--fractions", type=_list(float), default=[0.8, 1.0, 1.2],
                      help="client rpm/tpm as a share of the provider's (0.8,1.0,1.2)")
    grid.add_argument("--bursts", type=_list(_burst), default=[None],
                      help="client bucket in seconds of its rate, as pipeline run --burst; "
                           "'default' (the default): each limiter's own, "
                           f"{DEFAULT_BURST_SECONDS:g} s of its rate (interval: a 60 s "
                           "window)")
    grid.add_argument("--concurrency", type=_list(int), default=[16, 64],
                      help="requests in flight (16,64)")
    grid.add_argument("--attempts", type=_list(int), default=[6], help="attempts per row (6)")
    grid.add_argument("--backoff", type=_list(float), default=[0.5],
                      help="first retry wait cap in seconds (0.5)")
    job = parser.add_argument_group("the job and the run")
    job.add_argument("--requests", type=int, default=300, help="requests per setting (300)")
    job.add_argument("--prompt-tokens", type=int, default=100, help="prompt size (100)")
    job.add_argument("--max-tokens", type=int, default=50, help="max_tokens per request (50)")
    job.add_argument("--time-scale", type=float, default=None,
                     help="compress time this many times (default: auto, ~4 s a setting)")
    job.add_argument("--target-seconds", type=float, default=4.0,
                     help="wall seconds a setting should take with auto time scale (4)")
    job.add_argument("--thread", action="store_true",
                     help="run the simulator in a thread, not a subprocess")
    job.add_argument("--csv", default=None, help="write the table as CSV here")
    job.add_argument("--out", default=None, metavar="PNG",
                     help=f"save the plot here (default ./{DEFAULT_PLOT} when matplotlib is "
                          "installed)")
    job.add_argument("--no-plot", action="store_true", help="no plot")
    job.add_argument("--quiet", action="store_true", help="no line per setting on stderr")
    job.add_argument("--shared-limit", default=None, metavar="redis://HOST:PORT/DB",
                     help="run token-bucket and adaptive settings on the Redis-shared limiter "
                          "at this URL (a fresh key per setting), as pipeline run "
                          "--shared-limit would; "
                          "checked first: one that cannot be used is exit 2")


def main(args: argparse.Namespace) -> int:
    """Run the sweep, print the table, save the CSV and the plot."""
    import importlib.util

    from pipeline import bench

    seconds: float | str | None = args.burst
    if seconds is None:  # the bench's default bucket: 6 s, as providers often enforce
        seconds = None if args.policy == "window" else 6.0
    burst = None if seconds is None or seconds == "policy" else burst_share(float(seconds))
    plot_path = None if args.no_plot else args.out
    try:
        # What the results need, checked before anything runs (one line, exit code 2).
        from pipeline.core.extras import require

        require("pandas", feature="pipeline bench (its results table)", extra="pandas")
        if plot_path:
            require("matplotlib", feature="pipeline bench --out (the plot)", extra="plot")
        elif not args.no_plot and importlib.util.find_spec("matplotlib") is not None:
            plot_path = DEFAULT_PLOT
        if args.shared_limit is not None:  # a Redis that cannot be used: now, not mid-sweep
            from pipeline.limiter import check_redis

            asyncio.run(check_redis(args.shared_limit))
        provider = bench.Provider(rpm=args.rpm, tpm=args.tpm or None, burst=burst,
                                  latency=args.latency, faults=_faults(args.fault),
                                  seed=args.seed, **provider_modes(args))
        settings = bench.grid(limiters=args.limiters, fractions=args.fractions,
                              bursts=args.bursts, concurrency=args.concurrency,
                              attempts=args.attempts, backoffs=args.backoff)
        print(f"{len(settings)} settings x {args.requests} requests against {provider.describe()}",
              file=sys.stderr)
        df: Any = bench.sweep(provider, settings, requests=args.requests,
                              prompt_tokens=args.prompt_tokens, max_tokens=args.max_tokens,
                              time_scale=args.time_scale, target_seconds=args.target_seconds,
                              process=not args.thread, verbose=not args.quiet,
                              shared_limit=args.shared_limit)
    except PipelineError as exc:
        print(f"pipeline bench: error: {exc}", file=sys.stderr)
        return 2
    print(bench.format_table(df))
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"table: {args.csv}", file=sys.stderr)
    if plot_path:
        bench.plot(df, plot_path)
        print(f"plot: {os.path.abspath(plot_path)}", file=sys.stderr)
    elif not args.no_plot:
        print('no plot: matplotlib is not installed (pip install "ratelimited-pipeline[plot]", '
              "then --out FILE.png or the default ./" + DEFAULT_PLOT + ")", file=sys.stderr)
    return 0


def _faults(items: list[str]) -> dict[str, float]:
    from pipeline.simulator import Faults

    faults = Faults.parse(list(items))
    return {name: getattr(faults, name) for name in faults.__struct_fields__
            if getattr(faults, name)}
