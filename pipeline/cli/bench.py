"""Benchmark client limiter settings against a simulator configured like your provider.

Each setting in the grid (every combination of the comma-separated values) sends the same
REQUESTS chat requests through the default pipeline against a fresh simulator with the same
seed. The 429s and throughput come from the simulator's own request log. Time is compressed
so that one setting takes a few seconds; rates and times are reported in the provider's time.

example:
  pipeline bench --rpm 600 --tpm 100000 --burst 0.1 --latency lognormal:0.2,0.4 \\
      --faults 500=0.01 --requests 300 --fractions 0.8,1.0,1.2 --concurrency 16,64 \\
      --bursts default,6 --csv bench.csv --out bench.png

Burst values are seconds of the client limiter's rate ("default": a full minute); for the
interval limiter they are its window length. The provider's limit shape (--policy), window,
concurrency cap and 429 format are the simulator's, as for pipeline serve; the bench's requests
ask for model bench-model (the name a --model-limit needs, e.g. bench-model=300,50000).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from pipeline.cli.serve import add_provider_modes, provider_modes
from pipeline.errors import PipelineError

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


def _provider_burst(text: str) -> float | str:
    return "policy" if text.lower() == "policy" else float(text)


def _limiter(text: str) -> str:
    aliases = {"token_bucket": "token_bucket", "bucket": "token_bucket", "tb": "token_bucket",
               "interval": "interval", "window": "interval"}
    if text not in aliases:
        raise ValueError(f"unknown limiter {text!r} (token_bucket or interval)")
    return aliases[text]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``pipeline bench`` arguments."""
    provider = parser.add_argument_group("the provider to imitate")
    provider.add_argument("--rpm", type=float, default=600, help="requests per minute (600)")
    provider.add_argument("--tpm", type=float, default=100_000,
                          help="tokens per minute (100000; 0: no token limit)")
    provider.add_argument("--burst", type=_provider_burst, default=None,
                          help="share of a minute's limit its bucket holds, in (0, 1]: "
                               "0.1 (default) enforces over 6 s windows, as providers often "
                               "do; 1 lets a full minute's quota through at once; 'policy': "
                               "the --policy's own bucket (not for --policy window)")
    provider.add_argument("--latency", default="0.2",
                          help="seconds, uniform:LOW,HIGH or lognormal:MEDIAN,SIGMA (0.2)")
    provider.add_argument("--faults", nargs="*", default=[], metavar="NAME=P",
                          help="fault rates, e.g. 500=0.01 503=0.01 hang=0.001")
    provider.add_argument("--seed", type=int, default=0, help="simulator seed (0)")
    add_provider_modes(provider)
    grid = parser.add_argument_group("the client settings to try (comma-separated lists)")
    grid.add_argument("--limiters", type=_list(_limiter), default=["token_bucket"],
                      help="token_bucket,interval (token_bucket)")
    grid.add_argument("--fractions", type=_list(float), default=[0.8, 1.0, 1.2],
                      help="client rpm/tpm as a share of the provider's (0.8,1.0,1.2)")
    grid.add_argument("--bursts", type=_list(_burst), default=[None],
                      help="client bucket in seconds of its rate, or 'default' (default)")
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
    job.add_argument("--out", default=None, help="save the plot (PNG) here")
    job.add_argument("--quiet", action="store_true", help="no line per setting on stderr")
    job.add_argument("--shared-limit", default=None, metavar="redis://HOST:PORT/DB",
                     help="run token-bucket settings on the Redis-shared limiter at this URL "
                          "(a fresh key per setting), as pipeline run --shared-limit would")


def main(args: argparse.Namespace) -> int:
    """Run the sweep, print the table, save the CSV and the plot."""
    from pipeline import bench

    burst = args.burst
    if burst is None:  # the bench's default bucket: 6 s, as providers often enforce
        burst = None if args.policy == "window" else 0.1
    elif burst == "policy":
        burst = None
    try:
        # What the results need, checked before anything runs (one line, exit code 2).
        from pipeline._extras import require

        require("pandas", feature="pipeline bench (its results table)", extra="pandas")
        if args.out:
            require("matplotlib", feature="pipeline bench --out (the plot)", extra="plot")
        provider = bench.Provider(rpm=args.rpm, tpm=args.tpm or None, burst=burst,
                                  latency=args.latency, faults=_faults(args.faults),
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
        print(f"pipeline bench: {exc}", file=sys.stderr)
        return 2
    print(bench.format_table(df))
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"table: {args.csv}", file=sys.stderr)
    if args.out:
        bench.plot(df, args.out)
        print(f"plot: {args.out}", file=sys.stderr)
    return 0


def _faults(items: list[str]) -> dict[str, float]:
    from pipeline.simulator import Faults

    faults = Faults.parse(list(items))
    return {name: getattr(faults, name) for name in faults.__struct_fields__
            if getattr(faults, name)}
