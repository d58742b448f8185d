"""Benchmark client limiter settings against a simulated provider before paying a real one.

:func:`sweep` sends the same job of ``requests`` chat requests through :func:`pipeline.run`
once per client :class:`Setting`, each time against a FRESH :class:`~pipeline.simulator.
Simulator` with the same seed, configured like your provider (:class:`Provider`: rpm, tpm,
bucket size, latency distribution, fault rates). It returns one row per setting:

>>> from pipeline import bench
>>> provider = bench.Provider(rpm=600, tpm=100_000, burst=0.1, latency="lognormal:0.2,0.4")
>>> settings = bench.grid(fractions=[0.9, 1.0, 1.2], concurrency=[16, 64])

Then, inside a coroutine::

    df = bench.sweep(provider, settings, requests=300)   # in a notebook: await sweep_async
    print(bench.format_table(df)); bench.plot(df, "bench.png")

Honest numbers:

- The 429s, the requests sent (hence the retries) and the requests and tokens the provider
  admitted come from the simulator's own request log, not from the client's counters.
  Throughput is what the log shows answered ``ok``, divided by the run's wall time.
- Utilisation is the share of what the provider would have admitted in that time: its bucket
  plus its refill over the run (``bucket + rate x wall``), so 1.0 means nothing was left on the
  table and a client cannot score above 1 by spending the initial bucket.
- Client CPU seconds are the CPU time of the thread running the client's event loop; the
  simulator runs in a subprocess by default, so it is not counted (nor does it compete for the
  GIL).

Time compression: a provider allowing 600 requests a minute needs 30 s for 300 requests, so by
default a run is compressed ``time_scale`` times (chosen so that one setting takes about
``target_seconds``): the provider's and the client's rates are multiplied by it and every
duration (latencies, backoff, timeouts, bucket refill) divided by it, which keeps the number
of requests in flight (Little's law), the bucket sizes in requests, and so the shape of the
results. The table reports times and rates in the provider's time (``run_s`` is what the run
would take against the real provider; ``wall_s`` what it took here). What does not scale is
the client's own cost per request (about a millisecond): keep ``time_scale`` where a run
stays well under the client's few hundred requests/s, as the default does.
"""

from __future__ import annotations

from pipeline.bench._report import format_table, plot
from pipeline.bench._sweep import Provider, Setting, grid, run_setting, sweep, sweep_async

__all__ = [
    "Provider",
    "Setting",
    "format_table",
    "grid",
    "plot",
    "run_setting",
    "sweep",
    "sweep_async",
]
