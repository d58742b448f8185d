"""Does each client get every row answered, once, as fast as the provider allows, without 429s?

A matrix of *provider behaviours* x *what the user tells the client* x *which limit binds*,
each cell run by every client against a fresh simulator (thread mode, seeded), one table at the
end with the clients side by side.

Clients (``benchmarks/_peers.py`` has the two peers):

- ``pipeline-adaptive``: ``pipeline.OpenAIService(..., adaptive=True)`` + ``pipeline.run``;
- ``pipeline-static``: the same with ``adaptive=False`` (both fall back to not passing
  ``adaptive=`` while the library does not take it: then the two are the same client);
- ``aiolimiter``: a hand-written aiolimiter + httpx script with one-second buckets and retries;
- ``cookbook``: the logic of the OpenAI cookbook's ``api_request_parallel_processor.py``.

Provider modes (table rows; a mode the simulator does not offer yet is listed as "mode not
available"): ``second`` (a continuous bucket holding one second of the minute limit, with
``x-ratelimit-*`` headers and retry-after), ``second-bare`` (the same without headers or
retry-after), ``minute`` (a bucket holding the full minute), ``window`` (fixed 6 s windows, each
holding 6 s of the minute limit: a minute scaled down so windows can turn over in a run),
``in-flight`` (no rate limit, at most 8 requests in flight, 0.1 s latency, the rest 429),
``azure-429`` and ``text-429`` (second-bucket limits whose 429 bodies are in Azure's shape, or
plain text).

Told: ``right`` (the provider's limits), ``2x-high`` (twice them), ``not-told`` (rpm=tpm=None).
For ``in-flight``, "right" is the rate the cap sustains (8 / 0.1 s = 4,800 rpm).
Binding: ``requests`` (rpm 6,000, tpm 10,000,000) and ``tokens`` (rpm 60,000, tpm set so tokens
bind at 100 requests/s: the simulator's cost per row x 6,000, printed at the start).

Measured per run, from the simulator's own log: rows answered (distinct request bodies that got
a 200; every prompt is unique), 429s sent, duplicate answers (200s beyond the first for the
same body: a row paid twice); and the client's wall time against the minimum the provider's
sustained pace allows, ``max(rows / (rpm/60), token cost / (tpm/60))`` (``rows x latency / cap``
for the in-flight cap). That is the pace, not a floor: a bucket that starts full lets its
contents out at once (one second's worth for ``second``: about 0.83x at 600 rows), and
full-minute buckets and fixed windows let a client that bursts beat it by far (a ratio well
below 1), which says nothing against the others. A 6 s window at rpm 6,000 holds 600 requests:
it turns over within a run only with ``--rows`` above that (or a shorter ``--window``).
Every run is capped at ``--budget`` seconds; a run cut short shows what it had answered by
then.

    python benchmarks/quota_control.py --quick            # second-bucket mode only: ~9 min
    python benchmarks/quota_control.py                    # the whole matrix: ~31 min
    python benchmarks/quota_control.py --modes minute,window --clients pipeline-static,cookbook
    python benchmarks/quota_control.py --rows 300 --latency 0.05 --json /tmp/quota.json
    python benchmarks/quota_control.py --modes window --rows 1800   # three 6 s windows
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from _peers import ClientResult, run_aiolimiter, run_cookbook

import pipeline
from pipeline.errors import ConfigError
from pipeline.simulator import Simulator, count_chat_tokens

MAX_TOKENS = 16
REQUESTS_RPM = 6_000  # 100 requests/s
VERY_HIGH_TPM = 10_000_000
VERY_HIGH_RPM = 60_000
TARGET_RPS = 100  # the pace tokens allow when they bind
IN_FLIGHT_CAP = 8
IN_FLIGHT_LATENCY = 0.1
WINDOW_SECONDS = 6.0

Client = Callable[..., Awaitable[ClientResult]]


# -- the library under test ----------------------------------------------------------------------

async def run_pipeline(base_url: str, rows: list[str], *, rpm: float | None, tpm: float | None,
                       max_tokens: int, concurrency: int, adaptive: bool) -> ClientResult:
    """``pipeline.run`` over an ``OpenAIService``, as the README shows it."""
    notes: list[str] = []
    options: dict[str, Any] = {"base_url": base_url, "api_key": "sk-bench", "rpm": rpm,
                               "tpm": tpm}
    try:
        service = pipeline.OpenAIService(**options, adaptive=adaptive)
    except TypeError as exc:
        if "adaptive" not in str(exc):
            raise
        service = pipeline.OpenAIService(**options)
        notes.append("no adaptive= yet")
    start = time.perf_counter()
    async with service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=max_tokens)
        results = await pipeline.run([{"text": text} for text in rows], job,
                                     concurrency=concurrency)
    answered = len(results.succeeded)
    return ClientResult(answered=answered, failed=len(rows) - answered,
                        rate_limited=results.status.rate_limit_errors,
                        wall=time.perf_counter() - start, notes=notes)


async def run_pipeline_adaptive(base_url: str, rows: list[str], **kw: Any) -> ClientResult:
    return await run_pipeline(base_url, rows, adaptive=True, **kw)


async def run_pipeline_static(base_url: str, rows: list[str], **kw: Any) -> ClientResult:
    return await run_pipeline(base_url, rows, adaptive=False, **kw)


CLIENTS: dict[str, Client] = {
    "pipeline-adaptive": run_pipeline_adaptive,
    "pipeline-static": run_pipeline_static,
    "aiolimiter": run_aiolimiter,
    "cookbook": run_cookbook,
}


# -- the matrix ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mode:
    """A provider behaviour: simulator keywords, and an older spelling of the same behaviour
    (``fallback``) for a simulator without the new keywords."""

    name: str
    kwargs: dict[str, Any]
    fallback: dict[str, Any] | None = None
    fallback_text: str = ""
    in_flight: bool = False


MODES = [
    Mode("second", {"policy": "second"}, fallback={"burst": 1 / 60}, fallback_text="burst=1/60"),
    Mode("second-bare", {"policy": "second", "headers": False, "retry_after": "none"}),
    Mode("minute", {"policy": "minute"}, fallback={"burst": 1.0}, fallback_text="burst=1"),
    Mode("window", {"policy": "window", "window": WINDOW_SECONDS}),  # --window changes it
    Mode("in-flight", {"max_in_flight": IN_FLIGHT_CAP, "overload_status": 429}, in_flight=True),
    Mode("azure-429", {"policy": "second", "error_format": "azure"}),
    Mode("text-429", {"policy": "second", "error_format": "text"}),
]
TOLD = {"right": 1.0, "2x-high": 2.0, "not-told": None}
BINDINGS = ("requests", "tokens")


def make_rows(n: int) -> list[str]:
    """``n`` unique prompts of the same length (so every row costs the same tokens)."""
    return [f"Echo row {i:06d}: answer in a few words." for i in range(n)]


def row_cost(text: str, max_tokens: int = MAX_TOKENS) -> int:
    """What the simulator charges one row against tpm: prompt tokens + max_tokens."""
    return count_chat_tokens([{"role": "user", "content": text}]) + max_tokens


@dataclass
class Cell:
    """One client's run in one (mode, told, binding) cell, with what the simulator saw."""

    mode: str
    told: str
    binding: str
    client: str
    provider: dict[str, Any] = field(default_factory=dict)
    told_rpm: float | None = None
    told_tpm: float | None = None
    minimum: float = 0.0
    status: str = "ok"  # "ok", "timed out", "error: ...", "mode not available"
    client_result: dict[str, Any] | None = None
    wall: float = 0.0
    answered: int = 0
    sim_429: int = 0
    duplicates: int = 0
    sim_requests: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def provider_limits(mode: Mode, binding: str, token_tpm: int) -> tuple[float | None, float | None]:
    """The provider's (rpm, tpm) in a cell."""
    if mode.in_flight:
        return None, None
    if binding == "requests":
        return REQUESTS_RPM, VERY_HIGH_TPM
    return VERY_HIGH_RPM, token_tpm


def start_simulator(mode: Mode, rpm: float | None, tpm: float | None, latency: float,
                    seed: int) -> tuple[Simulator | None, str]:
    """A started simulator for the mode, or ``None`` and why not."""
    base = {"rpm": rpm, "tpm": tpm, "latency": latency, "seed": seed}
    note = ""
    try:
        sim = Simulator(**base, **mode.kwargs)
    except (TypeError, ConfigError) as exc:
        if mode.fallback is None:
            return None, f"mode not available ({exc})"
        sim = Simulator(**base, **mode.fallback)
        note = f"no policy= yet: {mode.fallback_text}"
    return sim.start(), note


async def run_cell(cell: Cell, mode: Mode, client: Client, rows: list[str], *, latency: float,
                   concurrency: int, budget: float, seed: int) -> None:
    """Run one client against a fresh simulator and fill ``cell`` from both sides."""
    sim, note = start_simulator(mode, cell.provider.get("rpm"), cell.provider.get("tpm"),
                                latency, seed)
    if note:
        cell.notes.append(note)
    if sim is None:
        cell.status = "mode not available"
        return
    try:
        start = time.perf_counter()
        try:
            result = await asyncio.wait_for(
                client(sim.base_url, rows, rpm=cell.told_rpm, tpm=cell.told_tpm,
                       max_tokens=MAX_TOKENS, concurrency=concurrency), budget)
            cell.client_result = asdict(result)
            cell.notes.extend(result.notes)
        except TimeoutError:
            cell.status = "timed out"
        except Exception as exc:  # a client that crashes is a result too
            cell.status = f"error: {type(exc).__name__}: {exc}"
        cell.wall = time.perf_counter() - start
        log = [e for e in sim.log() if e.path.endswith("/chat/completions")]
    finally:
        sim.stop()
    answers = Counter(e.body_hash for e in log if e.status == 200)
    cell.answered = len(answers)
    cell.duplicates = sum(answers.values()) - len(answers)
    cell.sim_429 = sum(1 for e in log if e.status == 429)
    cell.sim_requests = len(log)
    cell.outcomes = dict(Counter(e.outcome for e in log))
    if cell.client_result is not None and cell.client_result["answered"] != cell.answered:
        cell.notes.append(f"client says {cell.client_result['answered']} answered")


def minimum_seconds(mode: Mode, rows: list[str], rpm: float | None, tpm: float | None) -> float:
    """The fastest the provider's sustained pace allows (see the module docstring)."""
    if mode.in_flight:
        return len(rows) * IN_FLIGHT_LATENCY / IN_FLIGHT_CAP
    by_requests = len(rows) / (rpm / 60) if rpm else 0.0
    by_tokens = sum(row_cost(text) for text in rows) / (tpm / 60) if tpm else 0.0
    return max(by_requests, by_tokens)


def plan(modes: list[Mode], told: list[str], bindings: list[str], clients: list[str],
         rows: list[str], token_tpm: int) -> list[tuple[Cell, Mode]]:
    """Every cell to run, in table order."""
    cells = []
    for mode in modes:
        for told_name in told:
            for binding in (["in-flight"] if mode.in_flight else bindings):
                rpm, tpm = provider_limits(mode, binding, token_tpm)
                factor = TOLD[told_name]
                if mode.in_flight:  # "right" is the rate the cap sustains
                    right_rpm = IN_FLIGHT_CAP / IN_FLIGHT_LATENCY * 60
                    told_rpm = right_rpm * factor if factor else None
                    told_tpm = None
                else:
                    told_rpm = rpm * factor if factor and rpm else None
                    told_tpm = tpm * factor if factor and tpm else None
                for client in clients:
                    cell = Cell(mode.name, told_name, binding, client,
                                provider={"rpm": rpm, "tpm": tpm, **mode.kwargs},
                                told_rpm=told_rpm, told_tpm=told_tpm,
                                minimum=minimum_seconds(mode, rows, rpm, tpm))
                    cells.append((cell, mode))
    return cells


# -- output ----------------------------------------------------------------------------------------

COLUMNS = ("mode", "told", "binding", "client", "answered", "429s (sim log)", "wall / min",
           "duplicates", "notes")


def table_row(cell: Cell, rows: int) -> tuple[str, ...]:
    if cell.status == "mode not available":
        return (cell.mode, cell.told, cell.binding, cell.client, "-", "-", "-", "-",
                "; ".join(cell.notes) or cell.status)
    ratio = cell.wall / cell.minimum if cell.minimum else float("nan")
    wall = f"{cell.wall:.1f}/{cell.minimum:.1f} s = {ratio:.2f}x"
    notes = ([] if cell.status == "ok" else [cell.status]) + cell.notes
    return (cell.mode, cell.told, cell.binding, cell.client, f"{cell.answered}/{rows}",
            f"{cell.sim_429:,}", wall, str(cell.duplicates), "; ".join(notes))


def format_table(cells: list[Cell], rows: int) -> str:
    lines = [COLUMNS, *(table_row(c, rows) for c in cells)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = []
    for n, line in enumerate(lines):
        out.append(" | ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def parse_list(value: str, known: list[str], what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


async def main_async(args: argparse.Namespace) -> list[Cell]:
    rows = make_rows(args.rows)
    cost = row_cost(rows[0])
    token_tpm = cost * TARGET_RPS * 60
    modes = [m if m.name != "window" else Mode(m.name, {**m.kwargs, "window": args.window})
             for m in MODES if m.name in args.modes]
    cells = plan(modes, args.told, args.binding, args.clients, rows, token_tpm)
    print(f"{len(rows)} rows of {cost} tokens each (prompt {cost - MAX_TOKENS} + max_tokens "
          f"{MAX_TOKENS}); tokens bind at tpm = {cost} x {TARGET_RPS}/s x 60 = {token_tpm:,}; "
          f"requests bind at rpm = {REQUESTS_RPM:,}. {len(cells)} runs, each at most "
          f"{args.budget:g} s.", file=sys.stderr)
    if "window" in args.modes and "requests" in args.binding and \
            len(rows) <= REQUESTS_RPM * args.window / 60:
        print(f"note: a {args.window:g} s window holds {REQUESTS_RPM * args.window / 60:,.0f} "
              f"requests: with {len(rows)} rows it never turns over within a run unless a "
              "client is slower than the provider.", file=sys.stderr)
    for n, (cell, mode) in enumerate(cells, 1):
        await run_cell(cell, mode, CLIENTS[cell.client], rows, latency=(
            IN_FLIGHT_LATENCY if mode.in_flight else args.latency),
            concurrency=args.concurrency, budget=args.budget, seed=args.seed)
        print(f"[{n}/{len(cells)}] " + " | ".join(table_row(cell, len(rows))),
              file=sys.stderr, flush=True)
    return [cell for cell, _ in cells]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode_names = [m.name for m in MODES]
    parser.add_argument("--rows", type=int, default=600, help="rows per run (default 600)")
    parser.add_argument("--quick", action="store_true", help="only the second-bucket mode")
    parser.add_argument("--clients", default=",".join(CLIENTS),
                        help=f"comma-separated, of: {', '.join(CLIENTS)}")
    parser.add_argument("--modes", default=",".join(mode_names),
                        help=f"comma-separated, of: {', '.join(mode_names)}")
    parser.add_argument("--told", default=",".join(TOLD), help=f"of: {', '.join(TOLD)}")
    parser.add_argument("--binding", default=",".join(BINDINGS),
                        help=f"of: {', '.join(BINDINGS)}")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="simulator latency in seconds (the in-flight mode always uses 0.1)")
    parser.add_argument("--window", type=float, default=WINDOW_SECONDS,
                        help="window length in seconds of the window mode (default 6)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at most")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per run at most")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument("--json", metavar="PATH", help="also save every cell as JSON")
    args = parser.parse_args(argv)
    args.clients = parse_list(args.clients, list(CLIENTS), "client")
    args.modes = parse_list("second" if args.quick else args.modes, mode_names, "mode")
    args.told = parse_list(args.told, list(TOLD), "told")
    args.binding = parse_list(args.binding, list(BINDINGS), "binding")

    started = time.perf_counter()
    cells = asyncio.run(main_async(args))
    print()
    print(format_table(cells, args.rows))
    print(f"\nwall / min: the client's wall time over the fastest the provider's sustained pace "
          f"allows (rows / (rpm/60) or token cost / (tpm/60); rows x {IN_FLIGHT_LATENCY:g} s / "
          f"{IN_FLIGHT_CAP} for the in-flight cap). It is the pace, not a floor: a one-second "
          f"bucket starts full (about 0.83x at 600 rows), and full-minute buckets and fixed "
          f"windows let a bursting client beat it by far. answered, 429s and duplicates come "
          f"from the simulator's log. {len(cells)} runs in {time.perf_counter() - started:.0f} s.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": args.rows, "max_tokens": MAX_TOKENS,
                       "concurrency": args.concurrency, "latency": args.latency,
                       "budget": args.budget, "cells": [asdict(c) for c in cells]}, f, indent=1)
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
