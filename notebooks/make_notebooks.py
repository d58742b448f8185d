"""Write the tutorial notebooks of this folder (outputs cleared) from the cells below.

    python notebooks/make_notebooks.py          # rewrites 01_...ipynb to 07_...ipynb

Edit the cells here, not the .ipynb files, so the notebooks stay reviewable as Python.
``tests/test_notebooks.py`` executes every notebook against the local simulator.
"""

from __future__ import annotations

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).resolve().parent

Cells = list[tuple[str, str]]  # ("md" | "py", source)


STAND_IN = """\
def keyword_label(text):
    \"\"\"The stand-in model's rule: a few keywords decide the label.\"\"\"
    text = text.lower()
    rules = [("negative", ("broken", "stopped working", "cracked", "returned", "overpriced",
                           "never answered", "too small", "wrong")),
             ("neutral", ("not bad", "fine", "average", "decent", "okay", "took a while",
                          "different from")),
             ("positive", ("great", "love", "happy", "sturdy", "just works"))]
    for label, words in rules:
        if any(word in text for word in words):
            return label
    return "neutral"

def question(body):
    \"\"\"The row's own question: the first user message (a re-ask adds the model's answer
    and a correction after it, so the last message is not the question).\"\"\"
    return next(m["content"] for m in body["messages"] if m["role"] == "user")

def stand_in_model(endpoint, body):
    \"\"\"The simulator's "model": a keyword rule, so that the answers make sense.\"\"\"
    return keyword_label(question(body))
"""


QUICKSTART: Cells = [
    ("md", """\
# Quickstart: 200 rows of a DataFrame through an API

This notebook starts a local OpenAI-compatible **simulator** (real rate limits, latency and
faults; nothing leaves your machine), sends 200 rows of a pandas DataFrame through
`pipeline.run`, and shows the progress bar, the status tracker and the results lined up with
the rows. To use a real provider, drop the simulator and give `OpenAIService` your key (or set
`OPENAI_API_KEY`)."""),
    ("py", """\
import importlib.resources

import pandas as pd

from pipeline import OpenAIService, io, run
from pipeline.simulator import Simulator"""),
    ("md", """\
## 1. Start the simulator

It runs in a background thread (so it keeps answering while this notebook's event loop is
busy) and allows 600 requests and 100,000 tokens a minute, like a small API tier. Its
"model" is a stand-in keyword rule, so the answers below make sense."""),
    ("py", STAND_IN + """
sim = Simulator(rpm=600, tpm=100_000, latency="lognormal:0.1,0.3", seed=0,
                responder=stand_in_model).start()
sim.base_url"""),
    ("md", """\
## 2. The data: 200 product reviews

A small dataset ships with the package."""),
    ("py", """\
data = importlib.resources.files("pipeline") / "data" / "reviews.csv"
with importlib.resources.as_file(data) as path:
    df = pd.read_csv(path).head(200)
df.head()"""),
    ("md", """\
## 3. A service and a job

`OpenAIService` holds the base URL, the key and one HTTP client; its endpoints get a rate
limiter from `rpm`/`tpm`. A **job** says what to send for each row: here a chat completion
whose prompt is filled from the row's `review` column."""),
    ("py", """\
service = OpenAIService(api_key="sk-local-test", base_url=sim.base_url, rpm=600, tpm=100_000)
job = service.chat(model="gpt-4o-mini", max_tokens=5,
                   prompt="Is this review positive, negative or neutral? {review}")
job.build(df.iloc[0]).body"""),
    ("md", """\
## 4. Run

`await` works at the top level of a notebook cell. `io.read(df)` numbers the rows by position,
so results come back lined up with the frame. `progress=True` shows a progress bar."""),
    ("py", """\
results = await run(io.read(df), job, concurrency=16, progress=True)
results"""),
    ("md", """\
The run's **status tracker**: counters, tokens and latency percentiles (`print(results.status)`
gives the same as text)."""),
    ("py", """\
results.status"""),
    ("md", """\
Each result is a `Record`: the row, the request, the response (or the error), attempts and
timings. `results[i]` belongs to row `i`."""),
    ("py", """\
results[0]"""),
    ("md", """\
## 5. Back to a DataFrame

`io.to_pandas` adds `answer`, `status`, `error`, `tokens` and `latency` columns, row for row,
keeping the frame's index. (`await io.run_frame(df, job)` does run + to_pandas in one go.)"""),
    ("py", """\
out = io.to_pandas(results, df)
out[["product", "stars", "answer", "status", "tokens", "latency"]].head(10)"""),
    ("md", """\
How do the answers compare with the stars the reviewers gave?"""),
    ("py", """\
pd.crosstab(out["stars"], out["answer"])"""),
    ("md", """\
The simulator's own view: every request answered and no rate-limit errors (429), because the
client's limiter kept within the limits."""),
    ("py", """\
stats = sim.stats()
assert stats.ok == len(df) and stats.rate_limited == 0
stats"""),
    ("md", """\
## Clean up"""),
    ("py", """\
await service.aclose()
sim.stop()"""),
]


DATAFRAMES: Cells = [
    ("md", """\
# DataFrames in and out: pandas, Polars, LazyFrames, failed rows and reruns

- results are lined up with the input rows, whatever the index;
- pandas and Polars frames (including a `LazyFrame`, streamed in batches) go in and come out;
- a row that fails does not stop the others, and can be rerun alone;
- with a cache, rerunning everything costs nothing for the rows already answered.

The simulator here answers every prompt with an **echo** of it, so we can check that each answer
sits on the row it came from. It also fails 10% of the requests with a 503."""),
    ("py", """\
import shutil
import tempfile

import pandas as pd
import polars as pl

from pipeline import OpenAIService, io
from pipeline.simulator import Simulator


def echo(endpoint, body):
    return "echo: " + body["messages"][-1]["content"]


sim = Simulator(rpm=3_000, tpm=500_000, latency=0.02, faults={"503": 0.1}, seed=1,
                responder=echo).start()
service = OpenAIService(api_key="sk-local-test", base_url=sim.base_url, rpm=3_000, tpm=500_000)
job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=20)"""),
    ("md", """\
## pandas: any index, results on the right rows

An index of string ids in shuffled order. The pipeline runs requests concurrently and they
finish in any order; `io.run_frame` puts each answer back on its row."""),
    ("py", """\
df = pd.DataFrame({"text": [f"row number {i}" for i in range(60)]},
                  index=[f"id-{i:03d}" for i in range(60)]).sample(frac=1, random_state=0)
out = await io.run_frame(df, job, concurrency=16)
assert (out["answer"] == "echo: " + out["text"]).all()   # every answer is its own row's
assert out.index.equals(df.index)
out.head()"""),
    ("md", """\
The 503s were retried (up to 6 attempts by default), so every row succeeded. The simulator's
log shows the extra attempts:"""),
    ("py", """\
stats = sim.stats()
print(f"{len(df)} rows, {stats.requests} requests sent, {stats.faults} answered 503")"""),
    ("md", """\
## Polars, and a LazyFrame

A Polars `DataFrame` comes back as a Polars `DataFrame` with the result columns added. A
`LazyFrame` is streamed into the pipeline in batches and comes back collected."""),
    ("py", """\
pl_df = pl.DataFrame({"id": range(40), "text": [f"polars row {i}" for i in range(40)]})
pl_out = await io.run_frame(pl_df, job, concurrency=16)
pl_out.head()"""),
    ("py", """\
lazy = pl_df.lazy().filter(pl.col("id") % 2 == 0).with_columns(
    text=pl.concat_str([pl.lit("even "), pl.col("text")]))
lazy_out = await io.run_frame(lazy, job, concurrency=16)
assert (lazy_out["answer"] == "echo: " + lazy_out["text"]).all()
lazy_out.head()"""),
    ("md", """\
## Failed rows, and rerunning only them

With `attempts=1` (no retries) about one row in ten fails on a 503. A row that cannot even be
built (a missing prompt value) fails too, and is never sent. The other rows are unaffected."""),
    ("py", """\
df = pd.DataFrame({"text": [f"review {i}" for i in range(50)]})
df.loc[7, "text"] = None   # this row cannot be built
out = await io.run_frame(df, job, attempts=1, concurrency=16)
failed = out[out["status"] == "failed"]
failed[["text", "status", "error"]]"""),
    ("md", """\
Rerun just those rows (with retries this time) and put their results back. The None row still
fails, with an error that says why."""),
    ("py", """\
retried = await io.run_frame(df.loc[failed.index], job, concurrency=16)
out = pd.concat([out.drop(index=retried.index), retried]).loc[df.index]   # input order
out.loc[failed.index, ["text", "answer", "status", "error"]]"""),
    ("md", """\
## The cache makes a rerun free

With `cache=` (a directory), answers are kept on disk keyed by the request (no secrets in the
key). Run the frame once without retries, then rerun the *whole* frame: only the rows that
failed the first time are sent again. A third run sends nothing at all."""),
    ("py", """\
cache_dir = tempfile.mkdtemp(prefix="pipeline-cache-")
df = pd.DataFrame({"text": [f"cached review {i}" for i in range(50)]})

sim.reset()
first = await io.run_frame(df, job, cache=cache_dir, attempts=1, concurrency=16)
sent_first = sim.stats().requests
second = await io.run_frame(df, job, cache=cache_dir, concurrency=16)
sent_second = sim.stats().requests - sent_first
third = await io.run_frame(df, job, cache=cache_dir, concurrency=16)
sent_third = sim.stats().requests - sent_first - sent_second

print(f"first run:  {sent_first} requests, {(first['status'] == 'failed').sum()} rows failed")
print(f"second run: {sent_second} requests (only the failed rows, retried as needed)")
answered = (third["status"] == "succeeded").sum()
print(f"third run:  {sent_third} requests; all {answered} rows answered from the cache")
assert sent_third == 0 and (third["answer"] == second["answer"]).all()"""),
    ("md", """\
Without a cache, running the same frame twice sends every request twice: a pipeline is lazy
and re-executes each time it runs.

## Clean up"""),
    ("py", """\
shutil.rmtree(cache_dir)
await service.aclose()
sim.stop()"""),
]


CUSTOM: Cells = [
    ("md", """\
# Custom pipelines: stages, aiostream operators, your own stage, two endpoints

`pipeline.run` uses a default chain of stages:

    build | retry(acquire | call) | track        (plus lookup/store with a cache)

Each stage takes a `Record` and returns it a little more filled in. Stages compose with `|`;
neighbouring stages fuse into one concurrent step, and any
[aiostream](https://aiostream.readthedocs.io) operator can sit between them."""),
    ("py", """\
import importlib.resources

import pandas as pd
from aiostream import pipe, stream

from pipeline import OpenAIService, Record, StatusTracker, TokenBucketLimiter
from pipeline.simulator import Simulator
from pipeline.stages import Stage, acquire, build, call, retry, track

""" + STAND_IN + """
sim = Simulator(rpm=1_200, tpm=200_000, latency=0.03, seed=2, responder=stand_in_model).start()

data = importlib.resources.files("pipeline") / "data" / "reviews.csv"
with importlib.resources.as_file(data) as path:
    reviews = pd.read_csv(path)
rows = reviews.to_dict("records")
len(rows)"""),
    ("md", """\
## Two endpoints, one shared limiter

A provider counts the requests of all endpoints against one key. Giving chat and embeddings
the same limiter keeps their sum within the limits."""),
    ("py", """\
shared = TokenBucketLimiter(max_requests=1_200, max_tokens=200_000)
service = OpenAIService(api_key="sk-local-test", base_url=sim.base_url,
                        limits={"chat/completions": {"limiter": shared},
                                "embeddings": {"limiter": shared}})
chat = service.chat(model="gpt-4o-mini", max_tokens=5,
                    prompt="Positive, negative or neutral? {review}")
embed = service.embeddings(model="text-embedding-3-small", dimensions=64)
shared"""),
    ("md", """\
## 1. The default chain, spelled out

A flow is applied to a stream with `|`; `pipe.list()` collects the records."""),
    ("py", """\
status = StatusTracker()
classify = (build(chat)
            | retry(acquire(chat.endpoint) | call(service, chat.endpoint), attempts=4)
            | track(status, progress=True, total=len(rows)))
classify"""),
    ("py", """\
records = await (stream.iterate(rows) | classify | pipe.list())
records.sort(key=lambda r: r.index)   # records arrive as they complete; index = input position
print(status)
records[:3]"""),
    ("md", """\
## 2. aiostream operators between stages

Keep only the 1- and 2-star reviews before anything is built, and stop after the first 10
answers. The stream is lazy and pulls rows only as fast as they are processed, so `take(10)`
stops the run: only a handful more than 10 requests are sent (those already in flight)."""),
    ("py", """\
sim.reset()
flow = (build(chat)
        | retry(acquire(chat.endpoint) | call(service, chat.endpoint)))
first_ten = await (stream.iterate(rows)
                   | pipe.filter(lambda row: row["stars"] <= 2)
                   | flow.with_concurrency(4)
                   | pipe.filter(lambda record: record.ok)
                   | pipe.take(10)
                   | pipe.list())
print(f"{len(first_ten)} answers; the simulator saw {sim.stats().requests} requests "
      f"out of {sum(r['stars'] <= 2 for r in rows)} low-star rows")
[(r.row["stars"], r.text) for r in first_ten[:3]]"""),
    ("md", """\
## 3. Embeddings in batches with `pipe.chunks`

The embeddings endpoint takes up to 2,048 inputs per request. `pipe.chunks(32)` groups the
texts, and the embeddings builder turns a list of rows into one batched request."""),
    ("py", """\
texts = [r["review"] for r in rows]
embed_flow = (build(embed)
              | retry(acquire(embed.endpoint) | call(service, embed.endpoint))
              | track(StatusTracker(), progress=True, total=-(-len(texts) // 32)))
batches = await (stream.iterate(texts) | pipe.chunks(32) | embed_flow | pipe.list())
batches.sort(key=lambda r: r.index)   # batch i holds texts 32*i ... 32*i+31
vectors = [item["embedding"] for batch in batches for item in batch.body["data"]]
print(f"{len(batches)} requests for {len(vectors)} texts; vectors of {len(vectors[0])} floats")"""),
    ("md", """\
## 4. Your own stage

Subclass `Stage` and write `async def process(self, record)`. This one cleans the review text
before the request is built: it collapses whitespace and cuts long reviews (fewer tokens). A
stage sees every record that has not failed; the second one sets `on_failed = True` to see
failures too, since it tallies every finished record. (With `pipeline.run(rows, job,
stages=[Tally()])` a stage runs inside the default pipeline and keeps `Results`.)"""),
    ("py", """\
from collections import Counter


class Clean(Stage):
    \"\"\"Collapse whitespace and cut the review to `max_chars` characters.\"\"\"

    def __init__(self, max_chars: int = 80):
        self.max_chars = max_chars

    async def process(self, record: Record) -> Record:
        row = dict(record.row)
        row["review"] = " ".join(str(row["review"]).split())[: self.max_chars]
        record.row = row
        return record


class Tally(Stage):
    \"\"\"Count the answers (runs on succeeded and failed records too).\"\"\"

    on_failed = True

    def __init__(self):
        self.counts = Counter()

    async def process(self, record: Record) -> Record:
        self.counts[record.text if record.ok else "(failed)"] += 1
        return record


tally = Tally()
custom = Clean(max_chars=80) | flow | tally
cleaned = await (stream.iterate(rows[:50]) | custom | pipe.list())
print(max(len(r.row["review"]) for r in cleaned), "characters at most")
tally.counts.most_common(5)"""),
    ("md", """\
## 5. Two endpoints in one flow

Classify each review, keep the successes, then embed each *answer* together with its review.
`pipe.map` turns a finished chat record into a new record for the embeddings chain; it keeps
the record's `index`, so the final results still line up with the input rows. Both endpoints
draw on the shared limiter."""),
    ("py", """\
def to_embedding_input(record: Record) -> Record:
    text = f"{record.text}: {record.row['review']}"
    return Record(index=record.index, row={"text": text})


two_step = (flow
            | pipe.filter(lambda record: record.ok)
            | pipe.map(to_embedding_input)
            | build(embed)
            | retry(acquire(embed.endpoint) | call(service, embed.endpoint)))
sim.reset()
pairs = await (stream.iterate(rows[:40]) | two_step | pipe.list())
pairs.sort(key=lambda r: r.index)
print(sim.stats().outcomes, "| paths:", sorted({e.path for e in sim.log()}))
[(r.index, r.row["text"][:40], len(r.embedding)) for r in pairs[:3]]"""),
    ("md", """\
## Clean up"""),
    ("py", """\
await service.aclose()
sim.stop()"""),
]


TUNING: Cells = [
    ("md", """\
# Quota control: adaptive against static, then tuning settings before paying

Providers enforce their per-minute limits in ways a client cannot see: OpenAI documents that
"60,000 requests/minute may be enforced as 1,000 requests/second". Users also often do not
know their limits, or give them wrong. This notebook measures, against the bundled simulator,
what the client does in each case, and then sweeps client settings with `pipeline.bench`.

Every figure below comes from the **simulator's own request log**; every conclusion is
printed by code from those figures, so it cannot drift from them."""),
    ("py", """\
import asyncio
import time
import tempfile
from collections import Counter
from pathlib import Path

import pandas as pd
from IPython.display import Image

import pipeline
from pipeline import bench
from pipeline.simulator import Simulator"""),
    ("md", """\
## Adaptive against static, on a provider that enforces per second

The provider: 6,000 requests a minute, enforced as a bucket holding one second of that (100
requests), the simulator's default. The client sends 400 rows, told the limits right, told
2x too high, or not told at all; with the adaptive limiter (the default) or a static one
(`adaptive=False`, which needs limits). "pace" is the fastest the limit allows: 400 rows at
100 a second, 4 s."""),
    ("py", """\
RPM, ROWS = 6_000, 400
rows = [{"text": f"Echo row {i}"} for i in range(ROWS)]

async def trial(told, adaptive):
    factor = {"right": 1, "2x too high": 2}.get(told)
    limits = {} if factor is None else {"rpm": RPM * factor}
    with Simulator(rpm=RPM, seed=3) as sim:
        async with pipeline.OpenAIService(base_url=sim.base_url, api_key="sk-local",
                                          adaptive=adaptive, **limits) as service:
            job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=8)
            start = time.perf_counter()
            results = await pipeline.run(rows, job, concurrency=64)
            wall = time.perf_counter() - start
        log = sim.log()
    answered = Counter(e.body_hash for e in log if e.status == 200)
    return {"limiter": "adaptive" if adaptive else "static", "told": told,
            "answered": len(answered), "failed": len(results.failed),
            "429s": sum(e.status == 429 for e in log),
            "wall / pace": round(wall / (ROWS / (RPM / 60)), 2)}

cases = [("right", True), ("2x too high", True), ("not told", True),
         ("right", False), ("2x too high", False)]
table = pd.DataFrame([await trial(told, adaptive) for told, adaptive in cases])
table"""),
    ("py", """\
def row(limiter, told):
    return table[(table.limiter == limiter) & (table.told == told)].iloc[0]

a2, s2, a0, ar = (row("adaptive", "2x too high"), row("static", "2x too high"),
                  row("adaptive", "not told"), row("adaptive", "right"))
print(f"Told right, the adaptive limiter answered {ar.answered}/{ROWS} rows with "
      f"{ar['429s']} 429s in {ar['wall / pace']}x the pace.")
print(f"Told 2x too high: static drew {s2['429s']} 429s, adaptive {a2['429s']} "
      f"({'fewer' if a2['429s'] < s2['429s'] else 'not fewer'}); wall {s2['wall / pace']}x "
      f"against {a2['wall / pace']}x the pace.")
print(f"Not told at all, the adaptive limiter found the rate: {a0.answered}/{ROWS} rows, "
      f"{a0['429s']} 429s, {a0['wall / pace']}x the pace.")"""),
    ("md", """\
Why: a static limiter told 2x the limit sends 200 requests a second into a provider that
admits 100, and every extra request is a 429 (a 429 costs time here, not an attempt, so rows
still get answered, slowly). The adaptive limiter treats the limits as ceilings: each round
of 429s cuts its rate, quiet periods grow it back (CUBIC), and `x-ratelimit-*` headers, when
the provider sends them, are taken as facts. Its state is in its repr and in the progress
bar and status table (`rate .../... req/min`)."""),
    ("md", """\
## Sweeping settings with `pipeline.bench`

`pipeline.bench.sweep` sends the same job once per client setting, each time against a
**fresh simulator** (same seed) configured like the provider. Time is compressed so each
setting takes a second or two; the table reports rates and times in the provider's time
(`run_s` is how long the run would take against the real API). From a shell,
`pipeline bench --help` runs the same sweep, and `benchmarks/limiter_sweep.py` a larger one.

The provider: 600 rpm and 100,000 tpm enforced over 6-second buckets (`burst=0.1` of a
minute), a lognormal latency with a 0.2 s median, and 1% of requests failing with a 500.
The grid: the static token bucket at 0.8, 1.0 and 1.2 x the provider's limits, with its
default bucket (half a second of its rate) or one matching the provider's (6 s), at
concurrency 32; 1.0 x with a 6 s bucket at concurrency 4; and the interval limiter (a fixed
one-minute window)."""),
    ("py", """\
provider = bench.Provider(rpm=600, tpm=100_000, burst=0.1, latency="lognormal:0.2,0.4",
                          faults={"500": 0.01}, seed=7)
settings = [
    *bench.grid(fractions=[0.8, 1.0, 1.2], bursts=[None, 6.0], concurrency=[32]),
    bench.Setting(fraction=1.0, burst_s=6.0, concurrency=4),
    bench.Setting(limiter="interval", fraction=1.0, concurrency=32),
]
df = await bench.sweep_async(provider, settings, requests=200, target_seconds=1.5,
                             process=False)
print(bench.format_table(df))"""),
    ("md", """\
Columns: `run_s` run time in provider seconds; `req_per_s`/`tok_per_s` answered per provider
second; `util_req`/`util_tok` what the provider admitted over what it would have admitted in
that time (1.0 leaves nothing on the table); `n_429` and `retries` from the simulator's log;
`failed` rows; `p50_s`..`p99_s` per-row time from start to done; `cpu_s` the client's CPU."""),
    ("py", """\
png = Path(tempfile.mkdtemp()) / "limiter_sweep.png"
bench.plot(df, png)
Image(str(png))"""),
    ("md", """\
## What this sweep measured

Printed from the table above (the figures move a little from run to run, the 429 counts
most):"""),
    ("py", """\
tb = df[df.limiter == "token_bucket"]
def pick(fraction, burst, concurrency=32):
    burst_match = tb.burst_s.isna() if burst is None else tb.burst_s == burst
    return tb[(tb.fraction == fraction) & burst_match & (tb.concurrency == concurrency)].iloc[0]

low, at, high = pick(0.8, 6.0), pick(1.0, 6.0), pick(1.2, 6.0)
print(f"fraction: 0.8x used {low.util_req:.0%} of the request limit, 1.0x {at.util_req:.0%}, "
      f"1.2x {high.util_req:.0%} with {high.n_429} 429s (1.0x: {at.n_429}).")
default, matching = pick(1.0, None), pick(1.0, 6.0)
print(f"bucket: the default half-second bucket drew {default.n_429} 429s at "
      f"{default.util_req:.0%} utilisation; a 6 s bucket {matching.n_429} at "
      f"{matching.util_req:.0%}.")
few = pick(1.0, 6.0, concurrency=4)
print(f"concurrency: 4 in flight reached {few.util_req:.0%} utilisation (32: "
      f"{matching.util_req:.0%}), median time per row {few.p50_s:.2f} s against "
      f"{matching.p50_s:.2f} s.")
interval = df[df.limiter == "interval"].iloc[0]
print(f"limiter kind: the interval limiter reached {interval.util_req:.0%} utilisation with "
      f"{interval.n_429} 429s; the token bucket at the same settings {matching.util_req:.0%}.")"""),
    ("md", """\
To try your own provider from a shell:

    pipeline bench --rpm 600 --tpm 100000 --burst 6 --latency lognormal:0.2,0.4 \\
        --fault 500=0.01 --requests 300 --fractions 0.8,1.0,1.2 --concurrency 16,64 \\
        --limiters adaptive,token_bucket --bursts default,6 --csv bench.csv --out bench.png

(`--burst` and `--bursts` are seconds of the rate, as `pipeline run --burst` is.)"""),
    ("md", """\
## Outgrown one key: several deployments

Two deployments of different sizes (say two Azure regions), limits not told: each gets its own
adaptive limiter, each row goes where it would be granted soonest, and when one dies a third of
the way in, its rows move to the other. Counted from the two simulators' own logs."""),
    ("py", """\
from pipeline import Deployment, RoutedService

ROWS_D = 600
small, large = Simulator(rpm=3_000).start(), Simulator(rpm=6_000).start()
routed = RoutedService([Deployment(base_url=small.base_url, api_key="sk-local", name="small"),
                        Deployment(base_url=large.base_url, api_key="sk-local", name="large")])
job_d = routed.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=5)


async def kill_small_at_a_third():
    while sum(1 for e in small.log() if e.outcome == "ok") + \\
            sum(1 for e in large.log() if e.outcome == "ok") < ROWS_D // 3:
        await asyncio.sleep(0.05)
    small.stop()


killer = asyncio.ensure_future(kill_small_at_a_third())
t0 = time.perf_counter()
spread = await pipeline.run([{"text": f"item {i}"} for i in range(ROWS_D)], job_d)
spread_wall = time.perf_counter() - t0
await killer
await routed.aclose()
answered = Counter(e.body_hash for sim in (small, large) for e in sim.log() if e.outcome == "ok")
by_deployment = {name: sum(1 for e in sim.log() if e.outcome == "ok")
                 for name, sim in (("small", small), ("large", large))}
large.stop()
by_deployment"""),
    ("py", """\
assert len(spread.succeeded) == ROWS_D, "every row answered"
assert len(answered) == ROWS_D and max(answered.values()) == 1, "each exactly once"
print(f"{len(spread.succeeded)}/{ROWS_D} rows answered, each exactly once "
      f"({by_deployment['small']} by the small deployment before it died, "
      f"{by_deployment['large']} by the large one) in {spread_wall:.1f} s.")"""),
]


RAY_DATA: Cells = [
    ("md", """\
# Ray Data: one API quota shared by many workers

A dataset larger than one machine runs on **Ray Data**: `map_batches` with the callable class
`pipeline.ray_data.AnswerBatches`, built on every worker from a small picklable `BatchJob`.
However many workers (on however many machines) send requests, one API key is **one quota**:
with `shared_limit="redis://..."` they all spend it through one Redis
(`pipeline.limiter.RedisLimiter`: leases of a tenth of a second, both dimensions in one
atomic step on the Redis server's clock).

Here everything runs on this machine: a local Ray instance (`ray.init(num_cpus=2)`), four
workers, one simulator standing in for the provider, and one `redis-server` on 127.0.0.1.

**What this notebook needs:** `pip install "ratelimited-pipeline[ray,redis]"` (Ray Data,
pandas, pyarrow, redis-py), and either the `redis-server` binary on `PATH`
(`apt-get install redis-server`, `brew install redis`), which the notebook starts on a free
port and stops at the end, or `REDIS_URL` pointing at a Redis you run yourself. Nothing
leaves the machine."""),
    ("py", """\
import importlib.resources
import os
import shutil
import socket
import subprocess
import time

import pandas as pd
import ray
import redis

from pipeline.ray_data import AnswerBatches, BatchJob
from pipeline.simulator import Simulator"""),
    ("md", """\
## 1. Redis

Started here without persistence on 127.0.0.1 (a throwaway server for this notebook),
unless `REDIS_URL` names one."""),
    ("py", """\
redis_proc = None
REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL is None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("this notebook needs Redis: install redis-server "
                           "(apt-get install redis-server) or set REDIS_URL")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    redis_proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    REDIS_URL = f"redis://127.0.0.1:{port}/0"
client = redis.Redis.from_url(REDIS_URL)
for _ in range(500):  # wait for it to answer (at most 5 s)
    try:
        client.ping()
        break
    except redis.ConnectionError:
        time.sleep(0.01)
print("Redis answers at", REDIS_URL)"""),
    ("md", """\
## 2. The provider and the data

The simulator allows **12,000 requests a minute** (200 a second) on its one key, enforced as
OpenAI documents it (a bucket holding one second of the limit). Its "model" is a keyword
rule, so the answers make sense. The data: the bundled product reviews, four times over (each
prompt carries its row number, so no two are alike)."""),
    ("py", STAND_IN + """
RPM = 12_000
sim = Simulator(rpm=RPM, tpm=10_000_000, latency=0.005, seed=0,
                responder=stand_in_model).start()

data = importlib.resources.files("pipeline") / "data" / "reviews.csv"
with importlib.resources.as_file(data) as path:
    reviews = pd.read_csv(path)
frame = pd.concat([reviews] * 4, ignore_index=True)
frame.insert(0, "row", range(len(frame)))
ROWS = len(frame)
frame.head(3)"""),
    ("md", """\
## 3. Four Ray workers, one shared quota

`BatchJob` says what every worker builds for itself: the endpoint, the prompt template, the
key's limits and the shared limiter's URL (`?key=` names the quota). No live object is
pickled: clients, connections and the limiter are made on each worker. The workers take a
quarter of a CPU each, so four fit in `num_cpus=2` (they wait on the network, not on the
CPU); sixteen blocks keep all four busy to the end."""),
    ("py", """\
job = BatchJob(model="gpt-4o-mini",
               prompt="Review {row}: {review}\\nPositive, negative or neutral?",
               max_tokens=5, temperature=0, base_url=sim.base_url, api_key="sk-local",
               rpm=RPM, tpm=10_000_000, shared_limit=f"{REDIS_URL}?key=notebook-org")
job"""),
    ("py", """\
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
ray.data.DataContext.get_current().enable_progress_bars = False  # no progress lines here
blocks = [frame.iloc[i::16].reset_index(drop=True) for i in range(16)]
ds = ray.data.from_pandas(blocks)
four = ray.data.ActorPoolStrategy(size=4)  # four workers, each one AnswerBatches(job)
answered = ds.map_batches(AnswerBatches, fn_constructor_args=(job,), compute=four,
                          num_cpus=0.25, batch_size=25, batch_format="pandas")
out = answered.to_pandas().sort_values("row").reset_index(drop=True)
out[["row", "product", "review", "answer", "status", "tokens", "latency"]].head()"""),
    ("md", """\
## 4. What the provider saw

The simulator logs every request it received. From that log: was every row answered exactly
once, how many 429s, the most requests in any one-second window against the rate, and how
much of the quota the four workers used together."""),
    ("py", """\
def provider_figures(log, rate):
    ok = sorted(e.arrival for e in log if e.outcome == "ok")
    peak = start = 0
    for end, t in enumerate(ok):  # the most requests in any window [t - 1 s, t]
        while ok[start] <= t - 1.0:
            start += 1
        peak = max(peak, end - start + 1)
    return {"answered": len(ok), "distinct": len({e.body_hash for e in log if e.outcome == "ok"}),
            "429s": sum(e.outcome == "rate_limited" for e in log),
            "max 1 s / rate": round(peak / rate, 2),
            "utilisation": round(len(ok) / (rate * (ok[-1] - ok[0])), 3),
            "seconds": round(ok[-1] - ok[0], 1)}

shared = provider_figures(sim.log(), RPM / 60)
per_second = pd.Series(1, index=pd.to_datetime([e.arrival for e in sim.log()], unit="s"))
per_second.resample("1s").sum().reset_index(drop=True).plot(
    kind="bar", title="requests per second at the provider (limit 200)");
shared"""),
    ("md", """\
## 5. The same job without the shared quota

Each worker now has its own limiter told the key's full limit (the usual mistake: four
workers, four times the quota). They learn the real rate from the provider's 429s and
headers, each on its own."""),
    ("py", """\
sim.reset()
alone = BatchJob(**{**{f: getattr(job, f) for f in job.__struct_fields__}, "shared_limit": None})
out_alone = ray.data.from_pandas(blocks).map_batches(
    AnswerBatches, fn_constructor_args=(alone,), compute=four, num_cpus=0.25, batch_size=25,
    batch_format="pandas").to_pandas()
separate = provider_figures(sim.log(), RPM / 60)
pd.DataFrame({"one shared quota": shared, "a limiter per worker": separate}, dtype=object)"""),
    ("md", """\
## What this run showed

Printed from the figures above (they move a little from run to run):"""),
    ("py", """\
print(f"Shared quota: {shared['distinct']}/{ROWS} rows answered exactly once "
      f"({(out.status == 'succeeded').sum()} succeeded in the output), {shared['429s']} 429s, "
      f"{shared['utilisation']:.0%} of the rate used over {shared['seconds']} s, the busiest "
      f"second at {shared['max 1 s / rate']}x the rate.")
print(f"A limiter per worker: {separate['distinct']}/{ROWS} rows, {separate['429s']} 429s "
      f"({'more' if separate['429s'] > shared['429s'] else 'not more'} than shared), "
      f"{separate['utilisation']:.0%} of the rate used, the busiest second at "
      f"{separate['max 1 s / rate']}x.")
labels = out.answer.value_counts()
print(f"Answers: {', '.join(f'{n} {label}' for label, n in labels.items())}.")"""),
    ("md", """\
The shared limiter kept the four workers together inside the key's limit: the provider
never had to refuse, and the quota was used to the full. Workers on other machines join the
same quota by giving the same `redis://` URL and `?key=`, and they share one rate controller
too: limits nobody told are discovered as by one client. If Redis stops answering, each
worker goes on alone at its share of the quota (one over the workers that were live), never
more, and rejoins when Redis is back."""),
    ("py", """\
ray.shutdown()
sim.stop()
client.close()
if redis_proc is not None:
    redis_proc.terminate()
    redis_proc.wait(10)"""),
]


STRUCTURED: Cells = [
    ("md", """\
# Structured answers into typed columns

`service.chat(..., schema=Review)` asks for JSON that fits a msgspec Struct (a JSON Schema
dict or a pydantic model work too), decodes every answer into that type, and
`pipeline.io.run_frame` adds one **typed** column per field. An answer that does not fit is
asked again (`reasks=`, counted in the status) and a row that never fits fails with the
reason: never a silent NaN. This notebook classifies the bundled reviews against the local
simulator and shows what the run cost."""),
    ("py", """\
import importlib.resources
import json
from typing import Literal

import msgspec
import pandas as pd

from pipeline import OpenAIService, io
from pipeline.simulator import Simulator"""),
    ("md", """\
## 1. The answer's type

A label from a fixed set and a score from 1 to 5. The strict `response_format` sent with
every request is made from it."""),
    ("py", """\
class Review(msgspec.Struct):
    label: Literal["positive", "negative", "neutral"]
    score: int

data = importlib.resources.files("pipeline") / "data" / "reviews.csv"
with importlib.resources.as_file(data) as path:
    reviews = pd.read_csv(path)
reviews.head(3)"""),
    ("md", """\
## 2. A stand-in model that answers JSON, and sometimes does not

The simulator's "model" is a keyword rule. The first time it sees a review that mentions a
box, it wraps its JSON in prose, as real models sometimes do: those rows are asked again."""),
    ("py", STAND_IN + """
wrapped = set()

def json_model(endpoint, body):
    text = question(body)
    label = keyword_label(text)
    answer = json.dumps({"label": label, "score": {"negative": 1, "neutral": 3,
                                                   "positive": 5}[label]})
    if "box" in text.lower() and text not in wrapped:
        wrapped.add(text)
        return "Sure! Here is the JSON: " + answer
    return answer

sim = Simulator(rpm=6_000, latency=0.01, seed=0, responder=json_model)
sim.start()"""),
    ("md", "## 3. Run the frame"),
    ("py", """\
async with OpenAIService(api_key="sk-sim", base_url=sim.base_url) as service:
    job = service.chat(model="gpt-4o-mini", schema=Review, max_tokens=50,
                       prompt="Classify this review and score it 1-5: {review}")
    out = await io.run_frame(reviews, job, reasks=2)
out[["review", "label", "score", "status", "cost"]].head()"""),
    ("py", """\
out.dtypes[["label", "score", "cost"]]"""),
    ("md", "## 4. What the numbers say"),
    ("py", """\
answered = int((out["status"] == "succeeded").sum())
reasked = out["review"].str.contains("box", case=False)  # the rows wrapped in prose at first
expected = out["review"].map(keyword_label)  # the stand-in model's own rule, row by row
right = out["label"] == expected
by_label = out["label"].value_counts()
mean_score = out.groupby("label")["score"].mean()
total = out["cost"].sum()
print(f"{answered} of {len(out)} reviews answered with typed fields; {int(reasked.sum())} "
      f"answers did not fit at first and were asked again ({len(wrapped)} wrapped in prose).")
print(f"labels: {int(right.sum())} of {len(out)} are the stand-in model's label for their own "
      f"review, {int(right[reasked].sum())} of {int(reasked.sum())} among the re-asked rows.")
print(f"most common label: {by_label.idxmax()} ({by_label.max()} reviews); "
      f"mean score by label: {mean_score.round(2).to_dict()}")
print(f"the score column is {out['score'].dtype}, so arithmetic needs no parsing: "
      f"mean {out['score'].mean():.2f}")
print(f"cost at gpt-4o-mini prices: ${total:.5f} for {len(out)} rows "
      f"(${total / len(out) * 1_000_000:,.2f} per million rows)")
# What this notebook claims, checked (the test suite runs it): every row answered, every
# label the one its own review gets, re-asked rows included.
assert answered == len(out) and right.all() and reasked.any(), out[~right]"""),
    ("py", "sim.stop()"),
]


BATCH: Cells = [
    ("md", """\
# Half the price: the same job online and through the Batch API

The provider's Batch API answers the same requests for half the price, within 24 hours and
outside the rate limits. `pipeline.batch_api.run_batch` takes the rows and the job
`pipeline.run` takes and returns the same results, lined up with the rows. Here both run
against the local simulator, which serves `/v1/files` and `/v1/batches` (its batches take two
seconds)."""),
    ("py", """\
import importlib.resources, tempfile
import pandas as pd
import pipeline
from pipeline import OpenAIService
from pipeline.batch_api import run_batch
from pipeline.simulator import Simulator

data = importlib.resources.files("pipeline") / "data" / "reviews.csv"
with importlib.resources.as_file(data) as path:
    reviews = pd.read_csv(path).head(100)
sim = Simulator(rpm=6_000, latency=0.01, seed=0, batch_seconds=2.0).start()"""),
    ("md", "## 1. Online, then as a batch, each with its own cache"),
    ("py", """\
async with OpenAIService(api_key="sk-sim", base_url=sim.base_url) as service:
    job = service.chat(model="gpt-4o-mini", max_tokens=20,
                       prompt="Classify the sentiment of this review: {review}")
    online = await pipeline.run(reviews, job, cache=tempfile.mkdtemp())
    batched = await run_batch(reviews, job, cache=tempfile.mkdtemp(), poll=0.5)
batched.to_pandas(reviews)[["review", "answer", "status", "cost"]].head()"""),
    ("md", "## 2. Side by side"),
    ("py", """\
side = pd.DataFrame({
    "rows answered": [sum(r.ok for r in online), sum(r.ok for r in batched)],
    "requests to the chat endpoint": [online.status.requests, 0],
    "batches": [0, len(sim.batches())],
    "cost (USD)": [online.cost, batched.cost],
}, index=["online", "Batch API"])
side"""),
    ("py", """\
share = batched.cost / online.cost
print(f"{side.loc['Batch API', 'rows answered']} of {len(reviews)} rows answered through "
      f"{side.loc['Batch API', 'batches']} batch(es); the batch cost {share:.0%} of the online "
      "cost for the same rows (the answers differ a little, so their tokens do too).")
# What this notebook claims, checked (the test suite runs it).
assert side["rows answered"].tolist() == [len(reviews)] * 2 and 0.3 < share < 0.7"""),
    ("py", "sim.stop()"),
]


NOTEBOOKS: dict[str, Cells] = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_dataframes.ipynb": DATAFRAMES,
    "03_custom_pipelines.ipynb": CUSTOM,
    "04_tuning_limiters.ipynb": TUNING,
    "05_ray_data.ipynb": RAY_DATA,
    "06_structured_outputs.ipynb": STRUCTURED,
    "07_batch_api.ipynb": BATCH,
}


def build(cells: Cells) -> nbformat.NotebookNode:
    """A notebook with these cells, no outputs, the python3 kernel."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in cells:
        nb.cells.append(new_markdown_cell(source) if kind == "md" else new_code_cell(source))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating changes nothing
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(cells), HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
