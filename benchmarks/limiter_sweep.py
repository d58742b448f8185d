"""Which client limiter settings get the most out of a provider's quota with the fewest 429s?

Runs :func:`pipeline.bench.sweep` on a default grid against a simulated provider with
600 requests and 100,000 tokens a minute, enforced over 6-second buckets (``burst=0.1``, as
providers that enforce "per minute" limits over shorter windows do), lognormal latency with a
0.2 s median and 1% of 500 errors:

- token bucket limiter at 0.8, 1.0 and 1.2 x the provider's limits, with its default bucket
  (a full minute) and with a bucket matching the provider's (6 s), at concurrency 16 and 64;
- interval ("N per minute" window) limiter at 1.0 x, concurrency 16 and 64.

That is 14 settings of 300 requests, each against a fresh simulator (same seed) in a
subprocess, time compressed about 7x: about 75 s in all. Writes the table (printed, and as
CSV) and the plot to ``benchmarks/results/`` (ignored by git) unless ``--out-dir`` says
otherwise::

    python benchmarks/limiter_sweep.py                 # about 75 s
    python benchmarks/limiter_sweep.py --quick         # 3 settings, 100 requests: ~10 s
    python benchmarks/limiter_sweep.py --out-dir /tmp/sweep

Numbers are noisy on a shared machine; the 429 counts and utilisation are the robust part.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from pipeline import bench

HERE = pathlib.Path(__file__).resolve().parent

PROVIDER = bench.Provider(rpm=600, tpm=100_000, burst=0.1, latency="lognormal:0.2,0.4",
                          faults={"500": 0.01}, seed=7)


def default_settings() -> list[bench.Setting]:
    """The default grid: 12 token-bucket settings and 2 interval-limiter ones."""
    return [
        *bench.grid(limiters=["token_bucket"], fractions=[0.8, 1.0, 1.2], bursts=[None, 6.0],
                    concurrency=[16, 64]),
        *bench.grid(limiters=["interval"], fractions=[1.0], concurrency=[16, 64]),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=pathlib.Path, default=HERE / "results",
                        help="where to write limiter_sweep.csv and limiter_sweep.png "
                             "(default: benchmarks/results/)")
    parser.add_argument("--quick", action="store_true", help="3 settings of 100 requests")
    parser.add_argument("--requests", type=int, default=300, help="requests per setting")
    parser.add_argument("--target-seconds", type=float, default=3.5,
                        help="wall seconds per setting (sets the time compression)")
    args = parser.parse_args(argv)

    settings = default_settings()
    requests = args.requests
    if args.quick:
        settings = bench.grid(fractions=[0.8, 1.0, 1.2], concurrency=[16])
        requests = 100
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{len(settings)} settings x {requests} requests against {PROVIDER.describe()}",
          file=sys.stderr)
    start = time.perf_counter()
    df = bench.sweep(PROVIDER, settings, requests=requests,
                     target_seconds=args.target_seconds, verbose=True)
    elapsed = time.perf_counter() - start
    print(bench.format_table(df))
    csv_path = args.out_dir / "limiter_sweep.csv"
    png_path = args.out_dir / "limiter_sweep.png"
    df.to_csv(csv_path, index=False)
    bench.plot(df, png_path)
    print(f"\n{len(settings)} settings in {elapsed:.0f} s; table: {csv_path}; plot: {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
