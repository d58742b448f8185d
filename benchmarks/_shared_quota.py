"""The end-to-end rows of ``shared_limiter.py``: N processes spending one quota, as users run them.

One run = one contender x one setting x N processes. The harness starts a fresh simulator
(``pipeline.simulator.Simulator`` in its own process) enforcing ``rps`` requests a second with
its one-second bucket (``policy="second"``), rate-limit headers off (``headers=False``; a 429
still carries ``retry-after``/``retry-after-ms``), cuts ``rows`` unique prompts into N equal
slices and starts N processes at once, each on its own slice, all on one Redis key:

* ``pipeline``: the real command line, ``python -m pipeline run SLICE.csv -o OUT.jsonl
  --shared-limit redis://127.0.0.1:PORT/0?key=KEY ...``; told right adds ``--rpm``/``--tpm``
  equal to the simulator's limits, not told gives neither;
* ``pyrate`` / ``limits``: this file run as a client (``python _shared_quota.py --client ...``),
  the script a user writes: httpx, a semaphore of 64 (the pipeline's default concurrency), the
  peer's Redis limiter told the right request rate (pyrate-limiter's ``RedisBucket``, a
  one-second sliding log; limits' async ``RedisStorage`` with the moving window and a waiting
  acquire), then ``POST /chat/completions``; a 429 waits its ``retry-after-ms`` (else
  ``retry-after``) and tries again, acquiring again;
* ``none``: the same script with no limiter: what a user without a number does (a peer limiter
  needs a rate, it cannot find one out).

Everything scored comes from the simulator's own log: rows answered (distinct request bodies
with an ``ok`` answer; every prompt is unique), rows answered more than once (paid twice), 429s,
the wall time from its first request to its last answer over ``rows / rps``, and Redis commands
(``INFO stats``) over requests received (each attempt acquires once). A run past its budget is
interrupted (SIGINT, then SIGKILL) and shows what was answered by then.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
MODEL = "gpt-4o-mini"
MAX_TOKENS = 16
TPM = 10_000_000  # tokens never bind: requests are the quota under test
TEMPLATE = "Classify the sentiment of review {id}: {text}"
LATENCY = "uniform:0.02,0.06"
CONCURRENCY = 64  # per process, for every contender (the pipeline's default)
KEY = "sk-bench-shared-0123456789abcdef"

NOT_TOLD, TOLD = "not told", "told right"
#: setting -> (most 429s as a share of rows, most wall time over rows / rate)
TARGETS = {NOT_TOLD: (0.02, 1.20), TOLD: (0.005, 1.08)}
#: contender -> settings it runs in (a peer limiter needs a rate; ``none`` is the untold peer)
CONTENDERS = {"pipeline": (NOT_TOLD, TOLD), "none": (NOT_TOLD,), "pyrate": (TOLD,),
              "limits": (TOLD,)}
LABELS = {"pipeline": "ours pipeline run", "none": "httpx, no limiter",
          "pyrate": "httpx + pyrate Redis", "limits": "httpx + limits Redis"}


def prompt(row: dict[str, str]) -> str:
    return TEMPLATE.format(**row)


def make_rows(count: int) -> list[dict[str, str]]:
    return [{"id": str(i), "text": f"it was fine, I guess (row {i})"} for i in range(count)]


def write_slice(path: pathlib.Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------- the peer client
def retry_after(headers: Any) -> float | None:
    """Seconds a 429 asks to wait: ``retry-after-ms`` (finer) first, then ``retry-after``."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers[name]) * scale)
        except (KeyError, ValueError):
            continue
    return None


async def build_acquire(limiter: str, redis_url: str, key: str,
                        rps: int) -> tuple[Callable[[], Awaitable[Any]] | None,
                                           Callable[[], Awaitable[None]]]:
    """The peer's Redis limiter told ``rps`` requests a second (``None`` for ``none``)."""
    async def nothing() -> None:
        return None

    if limiter == "none":
        return None, nothing
    if limiter == "pyrate":
        import pyrate_limiter as pyrate
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(redis_url)
        bucket = await pyrate.RedisBucket.init([pyrate.Rate(rps, 1000)], client, key)
        peer = pyrate.Limiter(bucket, buffer_ms=0)
        return (lambda: peer.try_acquire_async("rows", 1)), client.aclose
    import limits
    from limiter_throughput import limits_waiting_acquire  # type: ignore[import-not-found]
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import MovingWindowRateLimiter

    storage = RedisStorage(redis_url.replace("redis://", "async+redis://"),
                           implementation="redispy", key_prefix=key)
    acquire = limits_waiting_acquire(MovingWindowRateLimiter(storage),
                                     limits.RateLimitItemPerSecond(rps, 1))
    return (lambda: acquire(1)), nothing


async def send_row(client: Any, url: str, row: dict[str, str], gate: asyncio.Semaphore,
                   acquire: Callable[[], Awaitable[Any]] | None,
                   seen: collections.Counter[str]) -> bool:
    """One row as the peer script sends it: acquire (if it has a limiter), ``POST``, a 429
    waits its ``retry-after`` and tries again (429s, counted in ``seen``, do not count
    against the six attempts: the run's budget bounds them); ``True`` once answered."""
    import httpx

    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt(row)}],
            "max_tokens": MAX_TOKENS}
    headers = {"Authorization": f"Bearer {KEY}"}
    failures = 0
    while failures < 6:
        async with gate:
            if acquire is not None:
                await acquire()
            try:
                response = await client.post(url, json=body, headers=headers)
            except httpx.TransportError:
                failures += 1
                await asyncio.sleep(0.5 * 2 ** failures)
                continue
        if response.status_code == 200:
            return True
        if response.status_code == 429:
            seen["429"] += 1
            wait = retry_after(response.headers)
            await asyncio.sleep(1.0 if wait is None else wait)
            continue
        failures += 1
        if response.status_code < 500:
            return False
        await asyncio.sleep(0.5 * 2 ** failures)
    return False


async def client_main(args: argparse.Namespace, rows: list[dict[str, str]]) -> dict[str, int]:
    """Send every row (see the module docstring); what this client says it saw."""
    import httpx

    acquire, close = await build_acquire(args.client, args.redis_url, args.key, args.rps)
    url = args.base_url.rstrip("/") + "/chat/completions"
    gate = asyncio.Semaphore(CONCURRENCY)
    seen = collections.Counter[str]()
    limits_ = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits_) as client:
        done = await asyncio.gather(*(send_row(client, url, row, gate, acquire, seen)
                                      for row in rows))
    await close()
    return {"answered": sum(done), "failed": len(done) - sum(done), "429s": seen["429"]}


# ----------------------------------------------------------------------------- one run
@dataclass
class RunResult:
    """One row of the end-to-end table; every count but ``said`` from the simulator's log."""

    contender: str
    setting: str
    processes: int
    rows: int
    answered: int
    twice: int
    rate_limited: int
    other_errors: int
    requests: int
    wall: float
    minimum: float
    elapsed: float
    redis_commands: int | None
    said: int
    cut: bool
    notes: list[str]

    def verdict(self) -> str:
        """``pass`` or what missed its target."""
        share, pace = TARGETS[self.setting]
        missed = []
        if self.cut:
            missed.append("cut at budget")
        if self.answered < self.rows:
            missed.append(f"{self.rows - self.answered} unanswered")
        if self.twice:
            missed.append(f"{self.twice} paid 2x")
        if self.rate_limited > share * self.rows:
            missed.append(f"429s > {share:.1%}")
        if self.wall > pace * self.minimum:
            missed.append(f"wall > {pace:g}x")
        return "pass" if not missed else "FAIL: " + ", ".join(missed)


def commands_processed(redis_url: str) -> int:
    import redis

    return int(redis.Redis.from_url(redis_url).info("stats")["total_commands_processed"])


def command_for(contender: str, setting: str, slice_path: pathlib.Path, out: pathlib.Path,
                base_url: str, redis_url: str, key: str, rps: int) -> list[str]:
    if contender == "pipeline":
        told = ["--rpm", str(rps * 60), "--tpm", str(TPM)] if setting == TOLD else []
        return [sys.executable, "-m", "pipeline", "run", str(slice_path), "-o", str(out),
                "--template", TEMPLATE, "--max-tokens", str(MAX_TOKENS), "--base-url", base_url,
                "--shared-limit", f"{redis_url}?key={key}", "--no-progress", "--no-cache",
                "--concurrency", str(CONCURRENCY), *told]
    return [sys.executable, str(HERE / "_shared_quota.py"), "--client", contender,
            "--rows", str(slice_path), "--base-url", base_url, "--redis-url", redis_url,
            "--key", key, "--rps", str(rps), "--out", str(out)]


def said_answered(contender: str, out: pathlib.Path) -> int:
    """Rows the client says it answered (a cross-check only; the table trusts the log)."""
    if not out.exists():
        return 0
    if contender != "pipeline":
        return int(json.loads(out.read_text())["answered"])
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return sum(1 for line in lines if line.get("status") == "succeeded")


def last_line(path: pathlib.Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1][:200] if lines else "(nothing on stderr)"


def stop(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    """Ctrl-C for the ones still running (the pipeline keeps what is in flight), then kill."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_end_to_end(contender: str, setting: str, processes: int, rows: int, rps: int,
                   redis_url: str, workdir: pathlib.Path, budget: float) -> RunResult:
    """Run one cell: a fresh simulator, N processes on one Redis key, scored from the log."""
    import redis

    from pipeline.simulator import Simulator

    data = make_rows(rows)
    run_dir = workdir / f"{contender}-{setting.replace(' ', '-')}-{processes}"
    run_dir.mkdir(parents=True, exist_ok=True)
    key = f"e2e:{contender}:{setting.replace(' ', '-')}:{processes}"
    env = dict(os.environ, OPENAI_API_KEY=KEY)
    for name in ("OPENAI_BASE_URL", "PIPELINE_LIMITER_URL"):
        env.pop(name, None)
    redis.Redis.from_url(redis_url).flushall()
    with Simulator(rpm=rps * 60, tpm=TPM, policy="second", headers=False, latency=LATENCY,
                   seed=0, process=True, log_limit=None) as sim:
        before = commands_processed(redis_url)
        size = -(-rows // processes)
        procs, outs, errs = [], [], []
        start = time.monotonic()
        for i in range(processes):
            slice_path = run_dir / f"slice{i}.csv"
            write_slice(slice_path, data[i * size:(i + 1) * size])
            out = run_dir / f"out{i}.{'jsonl' if contender == 'pipeline' else 'json'}"
            outs.append(out)
            errs.append(open(run_dir / f"stderr{i}.txt", "wb"))  # noqa: SIM115 (closed below)
            procs.append(subprocess.Popen(
                command_for(contender, setting, slice_path, out, sim.base_url, redis_url, key,
                            rps), env=env, cwd=run_dir, stdout=subprocess.DEVNULL,
                stderr=errs[-1]))
        cut = False
        for proc in procs:
            try:
                proc.wait(max(0.1, budget - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                cut = True
                break
        if cut:
            stop(procs, grace=10.0)
        elapsed = time.monotonic() - start
        after = commands_processed(redis_url)
        for file in errs:
            file.close()
        normal = (0, 1) if contender == "pipeline" else (0,)  # 1: some rows failed
        notes = [f"process {i} exit {proc.returncode}: {last_line(run_dir / f'stderr{i}.txt')}"
                 for i, proc in enumerate(procs) if proc.returncode not in normal and not cut]
        log = sim.log()
    return score(log, contender, setting, processes, rows, rps, elapsed,
                 # The INFO that reads "before" is counted in "after": one command of ours.
                 redis_commands=None if contender == "none" else after - before - 1,
                 said=sum(said_answered(contender, out) for out in outs), cut=cut,
                 notes=notes)


def score(log: list[Any], contender: str, setting: str, processes: int, rows: int, rps: int,
          elapsed: float, *, redis_commands: int | None, said: int, cut: bool,
          notes: list[str]) -> RunResult:
    """One cell's row from the simulator's log (``Simulator.log()``): rows answered (distinct
    bodies with an ``ok`` answer), paid twice, 429s, wall from the first request to the last
    answer."""
    billed = collections.Counter(e.body_hash for e in log if e.outcome == "ok")
    first = min((e.arrival for e in log), default=0.0)
    last = max((e.arrival + e.latency for e in log if e.outcome == "ok"), default=first)
    return RunResult(
        contender=contender, setting=setting, processes=processes, rows=rows,
        answered=len(billed), twice=sum(1 for n in billed.values() if n > 1),
        rate_limited=sum(1 for e in log if e.status == 429),
        other_errors=sum(1 for e in log if e.status not in (200, 429)), requests=len(log),
        wall=last - first, minimum=rows / rps, elapsed=elapsed,
        redis_commands=redis_commands, said=said, cut=cut, notes=notes)


HEADER = (f"{'contender':<22}{'setting':<12}{'procs':>5}{'answered':>10}{'2x':>4}"
          f"{'429s':>8}{'429 %':>8}{'wall s':>8}{'x min':>7}{'run s':>7}"
          f"{'cmds/req':>9}  target")


def format_row(r: RunResult) -> str:
    cmds = "-" if r.redis_commands is None or not r.requests else \
        f"{r.redis_commands / r.requests:.2f}"
    answered = f"{r.answered}/{r.rows}"
    said = "" if r.said == r.answered else f" (client said {r.said})"
    return (f"{LABELS[r.contender]:<22}{r.setting:<12}{r.processes:>5}{answered:>10}"
            f"{r.twice:>4}{r.rate_limited:>8,}{r.rate_limited / r.rows:>8.1%}{r.wall:>8.1f}"
            f"{r.wall / r.minimum:>7.2f}{r.elapsed:>7.1f}{cmds:>9}  {r.verdict()}{said}"
            + (f"\n    {r.other_errors} answers neither 200 nor 429" if r.other_errors else "")
            + "".join(f"\n    {note}" for note in r.notes))


def client_cli() -> None:
    parser = argparse.ArgumentParser(description="one peer client process (see the docstring)")
    parser.add_argument("--client", choices=("none", "pyrate", "limits"), required=True)
    parser.add_argument("--rows", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--rps", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.rows, newline="") as f:
        rows = list(csv.DictReader(f))
    said = asyncio.run(client_main(args, rows))
    pathlib.Path(args.out).write_text(json.dumps(said))


if __name__ == "__main__":
    client_cli()
