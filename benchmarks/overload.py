"""An in-flight cap told apart from random server errors: ``pipeline run`` against the
simulator with random 503s, a gateway that caps requests in flight, and both.

Each case runs the real CLI (``python -m pipeline run``, 64 in flight, no limits told) on the
same rows against a fresh ``pipeline serve`` (50 ms latency), and reads the simulator's own
counters: rows answered, requests sent, faults and refusals, and the most requests in flight
it saw. A client that takes every 503 for a cap collapses what it keeps in flight and takes
many times the fault-free time; one that tells them apart stays near it.

    python benchmarks/overload.py            # about a minute
    python benchmarks/overload.py --rows 600 # shorter
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CASES: list[tuple[str, list[str]]] = [
    ("no faults", []),
    ("3% random 503s", ["--fault", "503=0.03"]),
    ("3% random 503s + 2% hangs", ["--fault", "503=0.03", "hang=0.02"]),
    ("cap of 16 in flight, bare 503s", ["--max-in-flight", "16", "--overload-status", "503",
                                        "--error-format", "text"]),
    ("cap of 16, JSON 'in flight' 503s", ["--max-in-flight", "16", "--overload-status", "503"]),
    ("cap of 16, bare 503s + 3% random 503s", ["--max-in-flight", "16", "--overload-status",
                                               "503", "--error-format", "text",
                                               "--fault", "503=0.03"]),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_case(args: list[str], rows: int, workdir: pathlib.Path) -> dict[str, object]:
    port = _free_port()
    sim = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--port", str(port),
                            "--latency", "0.05", "--seed", "1", *args],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        sim.stdout.readline()  # its base URL: it is serving
        source = workdir / "in.csv"
        source.write_text("text\n" + "".join(f"row {i}\n" for i in range(rows)))
        out = workdir / f"out-{port}.csv"
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", str(source), "-o", str(out),
             "--template", "Classify: {text}", "--max-tokens", "4",
             "--base-url", f"http://127.0.0.1:{port}/v1", "--no-cache", "--no-progress",
             "--concurrency", "64", "--timeout", "1"],
            env={**os.environ, "OPENAI_API_KEY": "sk-local"}, capture_output=True, text=True,
            check=False)
        wall = time.perf_counter() - start
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/stats") as answer:
            stats = json.load(answer)
    finally:
        sim.terminate()
        sim.wait(10)
    return {"exit": done.returncode, "wall": wall, "ok": stats["ok"],
            "requests": stats["requests"], "faults": stats["faults"],
            "refused": stats["overloaded"], "in_flight": stats["max_in_flight"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_200)
    rows = parser.parse_args().rows
    print(f"pipeline run, {rows:,} rows, 64 in flight, 50 ms latency, no limits told; "
          "figures from the simulator's counters")
    header = f"{'case':40s} {'exit':>4s} {'answered':>9s} {'sent':>6s} {'faults':>6s} " \
             f"{'refused':>7s} {'most in flight':>14s} {'wall s':>7s} {'x clean':>7s}"
    print(header)
    print("-" * len(header))
    clean = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in CASES:
            row = run_case(args, rows, pathlib.Path(tmp))
            wall = float(row["wall"])  # type: ignore[arg-type]
            clean = clean or wall
            print(f"{name:40s} {row['exit']:>4} {row['ok']:>9,} {row['requests']:>6,} "
                  f"{row['faults']:>6,} {row['refused']:>7,} {row['in_flight']:>14} "
                  f"{wall:>7.1f} {wall / clean:>6.2f}x")
    print("wall includes the CLI's start-up (about a second); 'refused': refusals by the cap.")


if __name__ == "__main__":
    main()
