"""Embeddings in batches vs one row per request: requests sent, wall time, 429s.

``--rows`` review-like texts (default 10,000; 15 to 100 simulator tokens each, about 57 on
average) are embedded twice against the bundled simulator (its own process, 127.0.0.1), each
time on a fresh simulator with the same limits:

* batched: ``service.embeddings(model=...)`` as it comes (many rows per request, up to 2,048
  inputs and 300,000 tokens);
* one row per request: the same job with ``batch_size=1`` (what the OpenAI cookbook and a
  per-row Ray Data map send).

Limits: 3,000 requests and 1,000,000 tokens a minute (``--rpm``/``--tpm``), the published
tier-1 limits of ``text-embedding-3-small`` as we read them; the client is told the same
numbers. The simulator enforces them over one-second buckets, as OpenAI documents. Latency
is uniform between 0.1 and 0.3 s per request (``--latency``) and does *not* grow with the
inputs in a request (a real server takes longer for 2,048 inputs than for one: the batched
wall time here is a lower bound). Vectors have 256 dimensions (the ``dimensions`` many users
ask for), to keep the JSON small on a 2-core machine. Requests and 429s are counted from the
simulator's own log; every row's vector is checked to be the same in both modes.

    python benchmarks/embedding_batches.py
    python benchmarks/embedding_batches.py --rows 2000 --rpm 600
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass

import pipeline
from pipeline.simulator import Simulator, count_input_tokens

MODEL = "text-embedding-3-small"
WORDS = ("the", "product", "arrived", "late", "but", "works", "fine", "battery", "screen",
         "great", "awful", "price", "quality", "support", "would", "buy", "again", "never")


def texts(n: int, seed: int = 1) -> list[str]:
    """Review-like texts of 60 to 400 characters (15 to 100 simulator tokens)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(60, 400)
        words = [f"review {i}:"]
        while sum(len(w) + 1 for w in words) < length:
            words.append(rng.choice(WORDS))
        out.append(" ".join(words)[:length])
    return out


@dataclass
class Outcome:
    mode: str
    rows: int
    ok: int
    requests: int
    rate_limited: int
    wall: float
    vectors: list[list[float] | None]


async def one_mode(mode: str, rows: list[dict[str, str]], *, rpm: float, tpm: float,
                   latency: str, batch_size: int | None) -> Outcome:
    with Simulator(rpm=rpm, tpm=tpm, latency=latency, embedding_dimensions=256, seed=3,
                   process=True) as sim:
        async with pipeline.OpenAIService(api_key="sk-bench", base_url=sim.base_url, rpm=rpm,
                                          tpm=tpm) as service:
            job = service.embeddings(model=MODEL, batch_size=batch_size)
            start = time.perf_counter()
            results = await pipeline.run(rows, job)
            wall = time.perf_counter() - start
        log = [e for e in sim.log() if e.path.endswith("/embeddings")]
    return Outcome(mode, len(rows), sum(r.ok for r in results), len(log),
                   sum(e.outcome == "rate_limited" for e in log), wall,
                   [r.embedding for r in results])


def table(outcomes: list[Outcome]) -> str:
    head = ("mode", "rows", "answered", "requests sent", "rows/request", "429s", "wall s",
            "rows/s")
    lines = [head]
    for o in outcomes:
        lines.append((o.mode, f"{o.rows:,}", f"{o.ok:,}", f"{o.requests:,}",
                      f"{o.rows / max(1, o.requests):,.1f}", f"{o.rate_limited:,}",
                      f"{o.wall:.1f}", f"{o.rows / o.wall:,.0f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(line, widths, strict=True)))
            for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rpm", type=float, default=3_000)
    parser.add_argument("--tpm", type=float, default=1_000_000)
    parser.add_argument("--latency", default="uniform:0.1,0.3")
    args = parser.parse_args()
    data = texts(args.rows)
    rows = [{"text": t} for t in data]
    tokens = sum(count_input_tokens(t) for t in data)
    print(f"{args.rows:,} rows, {tokens:,} tokens ({tokens / args.rows:.0f} a row); limits "
          f"{args.rpm:,.0f} rpm, {args.tpm:,.0f} tpm; latency {args.latency}; 256 dims")
    print(f"the quota's sustained pace: {args.rows / args.rpm * 60:,.1f} s for the rows as "
          f"requests, {tokens / args.tpm * 60:,.1f} s for the tokens (a request larger than "
          "the provider's one-second bucket is admitted in debt, so a few large batches may "
          "beat the second)\n")
    batched = await one_mode("batched (default)", rows, rpm=args.rpm, tpm=args.tpm,
                             latency=args.latency, batch_size=None)
    alone = await one_mode("one row per request", rows, rpm=args.rpm, tpm=args.tpm,
                           latency=args.latency, batch_size=1)
    print(table([batched, alone]))
    same = sum(a == b and a is not None for a, b in zip(batched.vectors, alone.vectors,
                                                        strict=True))
    print(f"\nrequests: {alone.requests / max(1, batched.requests):,.0f}x fewer batched; "
          f"wall time: {alone.wall / batched.wall:,.1f}x shorter batched; "
          f"rows with the same vector in both modes: {same:,} of {args.rows:,}")


if __name__ == "__main__":
    asyncio.run(main())
