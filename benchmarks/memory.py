"""How much memory does a run hold? Peak RSS of each way of running, a fresh process each.

    python benchmarks/memory.py            # 1,000,000 rows per case (a few minutes)
    python benchmarks/memory.py --quick    # 100,000 rows

Every case sends its rows through the default stage chain to an in-process instant service
(:class:`pipeline.testing.InstantService`: no HTTP, no limits), in a child process of its own,
and reads that process's high-water mark (``VmHWM``). Rows come from a generator, so what a
case holds is what the library keeps, not the caller's list; ``run_frame`` starts from a
pandas frame, which the child builds first (its size is printed as "input").

- ``as_completed``: records streamed and dropped, as a consumer writing them out would.
- ``run()``: every record kept in ``Results``, as a notebook user gets them (answers, usage,
  status and errors; no response bodies).
- ``run(keep_responses=True)``: the same, with every request and whole response body kept.
- ``run(keep_rows=False)``: without the input rows (a caller who holds them anyway).
- ``run(a list of rows)``: ``run()`` over a list of rows the child builds first, as a notebook
  user has them (its size is printed as "input"); records keep the caller's own row objects,
  so what the run adds is the peak less the input, and that is what its target is held to.
- ``run_frame``: a pandas frame in, the frame with its result columns out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

CASES: dict[str, tuple[str, float]] = {
    # name: (what the child runs, target MB for 1,000,000 rows: the peak, or for the cases
    # in ADDED, the peak less the caller's input)
    "as_completed": ("as_completed", 100.0),
    "run()": ("run", 500.0),
    "run(keep_responses=True)": ("run_keep", float("inf")),
    "run(keep_rows=False)": ("run_no_rows", float("inf")),
    "run(a list of rows)": ("run_list", 500.0),
    "run_frame (pandas)": ("run_frame", 1000.0),
}
#: Cases held to what the run adds to the caller's input, not to the peak.
ADDED = frozenset({"run(a list of rows)"})

_CHILD = """
import asyncio, sys
import pipeline
from pipeline.testing import InstantService

case, n = sys.argv[1], int(sys.argv[2])

def high_water_mb():
    # VmHWM belongs to this process image; ru_maxrss would carry over the parent's peak.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise SystemExit("no /proc/self/status: Linux only")

def rows():
    for i in range(n):
        yield {"text": f"row {i}"}

async def main():
    service = InstantService()
    job = service.chat(model="m", prompt="Classify: {text}", max_tokens=5)
    if case == "as_completed":
        done = 0
        async with pipeline.as_completed(rows(), job, concurrency=64).stream() as records:
            async for record in records:
                done += record.ok
        assert done == n, done
    elif case in ("run", "run_keep", "run_no_rows"):
        keep = {"keep_responses": True} if case == "run_keep" else \
            {"keep_rows": False} if case == "run_no_rows" else {}
        results = await pipeline.run(rows(), job, concurrency=64, **keep)
        assert len(results) == n and results[-1].text == "ok", results[-1]
    elif case == "run_list":
        results = await pipeline.run(given, job, concurrency=64)
        assert len(results) == n and results[-1].row is given[-1], results[-1]
    elif case == "run_frame":
        out = await pipeline.io.run_frame(frame, job, concurrency=64)
        assert len(out) == n and out["answer"].iloc[-1] == "ok"

if case == "run_frame":
    import pandas as pd  # an import, not input: counted with the interpreter's
base = high_water_mb()
frame = given = None
if case == "run_frame":
    frame = pd.DataFrame({"text": [f"row {i}" for i in range(n)]})
elif case == "run_list":
    given = list(rows())
input_mb = high_water_mb() - base
asyncio.run(main())
print(base, input_mb, high_water_mb())
"""


def measure(case: str, n: int) -> tuple[float, float, float, float]:
    """``(interpreter and imports MB, input MB, peak MB, seconds)`` of one case in a child."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, case, str(n)], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1]), float(out[2]), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 rows instead of 1,000,000")
    parser.add_argument("--rows", type=int, help="rows per case (default 1,000,000)")
    parser.add_argument("--case", action="append", choices=list(CASES),
                        help="run only this case (repeatable)")
    args = parser.parse_args(argv)
    n = args.rows or (100_000 if args.quick else 1_000_000)
    print(f"Peak RSS, {n:,} rows through the default chain to an in-process instant service, "
          "a fresh process per case")
    print("   (B/row: what the run holds a row, (peak - imports - input) / rows; the "
          "targets are for 1,000,000 rows)")
    print(f"   {'':28} {'peak MB':>9} {'imports':>8} {'input':>7} {'B/row':>7} "
          f"{'seconds':>8}  target")
    for name in args.case or list(CASES):
        child, target = CASES[name]
        base, input_mb, peak, seconds = measure(child, n)
        per_row = (peak - base - input_mb) * 1024 * 1024 / n
        held = peak - input_mb if name in ADDED else peak
        what = "added " if name in ADDED else ""
        verdict = "" if target == float("inf") else f"{what}< {target:,.0f} MB" + (
            f": {held:,.0f}, {'met' if held < target else 'NOT met'}" if n == 1_000_000
            else "")
        print(f"   {name:28} {peak:9,.0f} {base:8,.0f} {input_mb:7,.0f} {per_row:7,.0f} "
              f"{seconds:8.1f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
