"""Your own stages inside run(): the stage contract (which records a stage sees), stages=[...],
record.data, a raise that fails one row, and `|` refusing a plain function.

The integration tests run against the simulator over loopback HTTP; its request log says what
was sent (and so what was paid for).
"""

from __future__ import annotations

import asyncio

import pytest
from aiostream import pipe, stream

import pipeline
from pipeline.core.record import Record
from pipeline.errors import ConfigError, StageError
from pipeline.simulator import Simulator
from pipeline.stages import Flow, Stage, build, each, guarded, track, user_stages
from pipeline.state.status import StatusTracker
from pipeline.testing import InstantService

ROWS = [{"text": f"review {i}: {'great' if i % 3 else 'awful'} product"} for i in range(30)]


# The README's ten-line custom stage, word for word in spirit: a score per answer.
class Score(Stage):
    """Score each answer: 1 for 'positive', 0 otherwise; keep it on record.data."""

    async def process(self, record: Record) -> Record:
        text = (record.text or "").lower()
        record.data = {"score": 1 if "positive" in text else 0, "words": len(text.split())}
        return record


@pytest.fixture
def sim():
    with Simulator(rpm=6_000, tpm=2_000_000, latency=0.0, seed=3) as server:
        yield server


def _service(sim: Simulator) -> pipeline.OpenAIService:
    return pipeline.OpenAIService(api_key="sk-test-custom", base_url=sim.base_url)


async def test_a_custom_stage_inside_run_keeps_results_order_status_and_the_cache(sim, tmp_path):
    async with _service(sim) as service:
        job = service.chat(model="gpt-4o-mini", prompt="Sentiment of: {text}", max_tokens=5)
        results = await pipeline.run(ROWS, job, stages=[Score()], cache=tmp_path / "cache")
    assert isinstance(results, pipeline.Results)
    assert [r.index for r in results] == list(range(len(ROWS)))
    assert all(r.ok and r.data is not None and set(r.data) == {"score", "words"}
               for r in results)
    assert results.status.succeeded == len(ROWS) and results.status.failed == 0
    assert len(sim.log()) == len(ROWS)

    # A rerun is answered from the cache (nothing sent) and the stage runs on cached answers.
    async with _service(sim) as service:
        job = service.chat(model="gpt-4o-mini", prompt="Sentiment of: {text}", max_tokens=5)
        again = await pipeline.run(ROWS, job, stages=[Score()], cache=tmp_path / "cache")
    assert len(sim.log()) == len(ROWS)
    assert all(r.cached and r.data == first.data for r, first in zip(again, results,
                                                                       strict=True))


async def test_functions_plain_and_async_are_stages_too(sim):
    seen: list[int] = []

    def note(record: Record) -> None:
        seen.append(record.index)

    async def length(record: Record) -> Record:
        await asyncio.sleep(0)
        record.data = {"chars": len(record.text or "")}
        return record

    async with _service(sim) as service:
        results = await pipeline.run(ROWS[:5], service.chat(model="m", prompt="{text}"),
                                     stages=[note, length])
    assert sorted(seen) == list(range(5))
    assert all(r.ok and r.data["chars"] > 0 for r in results)


async def test_a_raise_fails_only_its_row_and_the_paid_answer_stays_in_the_cache(sim, tmp_path):
    def picky(record: Record) -> None:
        if record.index == 7:
            raise KeyError("score")

    async with _service(sim) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)
        results = await pipeline.run(ROWS, job, stages=[picky], cache=tmp_path / "c")
    bad = results[7]
    assert isinstance(bad.error, StageError) and bad.error.stage == "test_a_raise_fails_only_" \
        "its_row_and_the_paid_answer_stays_in_the_cache.<locals>.picky"
    assert "KeyError" in str(bad.error) and isinstance(bad.error.__cause__, KeyError)
    assert bad.response is not None  # the answer is still on the record
    assert results.status.failed == 1 and results.status.succeeded == len(ROWS) - 1
    # The answer was paid for: it is in the run's cost like every other.
    assert len(results.failed) == 1 and results.costs()[7] == results.costs()[6] > 0

    # Fixed, the rerun pays nothing: the row that failed in the stage is answered from cache.
    async with _service(sim) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)
        again = await pipeline.run(ROWS, job, stages=[lambda r: None], cache=tmp_path / "c")
    assert len(sim.log()) == len(ROWS) and all(r.ok for r in again) and again[7].cached


async def test_a_stage_that_sets_an_error_fails_the_row_and_a_later_stage_skips_it():
    class Reject(Stage):
        async def process(self, record: Record) -> Record:
            if record.index % 2:
                record.error = ValueError("odd rows are not wanted")
            return record

    after: list[int] = []
    counted: list[int] = []

    class Count(Stage):
        on_failed = True

        async def process(self, record: Record) -> Record:
            counted.append(record.index)
            return record

    service = InstantService()
    results = await pipeline.run(ROWS[:6], service.chat(model="m", prompt="{text}"),
                                 stages=[Reject(), each(lambda r: after.append(r.index)),
                                         Count()])
    assert sorted(after) == [0, 2, 4]           # the default: failed records are skipped
    assert sorted(counted) == list(range(6))     # on_failed=True: it sees every record
    assert results.status.failed == 3 and [r.ok for r in results] == [True, False] * 3


async def test_by_default_a_stage_after_the_call_sees_every_answer_cached_ones_too():
    # The old contract (after_done=False) skipped a stage after the call for every answered
    # record, silently: a user's post-processing never ran.
    seen: list[bool] = []

    class Look(Stage):
        async def process(self, record: Record) -> Record:
            seen.append(record.ok)
            return record

    service = InstantService()
    job = service.chat(model="m", prompt="{text}")
    chain = build(job) | pipeline.retry(pipeline.stages.acquire(job.endpoint)
                                        | pipeline.stages.call(service, job.endpoint)) | Look()
    records = await (stream.iterate(ROWS[:4]) | chain | pipe.list())
    assert seen == [True] * 4 and all(r.ok for r in records)


def test_the_request_stages_skip_answered_records_and_only_store_and_track_see_failures():
    service = InstantService()
    job = service.chat(model="m", prompt="{text}")
    flow = pipeline.default_flow(job, cache=None)
    seen = {type(s).__name__: (s.on_answered, s.on_failed) for s in flow.stages()}
    assert seen["build"] == (False, False) and seen["retry"] == (False, False)
    assert seen["track"] == (True, True)
    assert (Stage.on_answered, Stage.on_failed) == (True, False)


def test_the_older_after_done_spelling_still_means_every_record():
    class Old(Stage):
        after_done = True

    class Older(Stage):
        after_done = False

    assert (Old.on_answered, Old.on_failed) == (True, True)
    assert (Older.on_answered, Older.on_failed) == (False, False)
    assert Old().after_done is True and Stage().after_done is False


async def test_stages_are_checked_before_anything_is_sent(sim):
    async with _service(sim) as service:
        job = service.chat(model="m", prompt="{text}")
        with pytest.raises(ConfigError, match="stages"):
            await pipeline.run(ROWS, job, stages=[42])
        with pytest.raises(ConfigError, match="stages"):
            await pipeline.run(ROWS, job, stages="Score")
    assert sim.log() == []


async def test_as_completed_takes_stages_too():
    service = InstantService()
    flow = pipeline.as_completed(ROWS[:3], service.chat(model="m", prompt="{text}"),
                                 stages=[Score()])
    records = await (flow | pipe.list())
    assert sorted(r.index for r in records) == [0, 1, 2] and all(r.data for r in records)


def test_a_plain_function_after_a_bar_is_refused_with_the_way_out():
    def per_record(record):
        return record

    with pytest.raises(ConfigError, match=r"each\(.*per_record\)"):
        _ = build(str.upper) | per_record
    with pytest.raises(ConfigError, match="each"):
        _ = (build(str.upper) | pipe.filter(lambda r: r.ok)) | per_record


async def test_aiostream_operators_and_an_explicit_flow_still_compose():
    def evens(source):
        return source | pipe.filter(lambda r: r.index % 2 == 0)

    flow = Flow(build(str.upper) | each(lambda r: None), evens) | pipe.map(lambda r: r.index)
    assert sorted(await (stream.iterate("abcd") | flow | pipe.list())) == [0, 2]
    flow = build(str.upper) | pipe.filter(lambda r: r.index < 2) | track(StatusTracker())
    assert len(await (stream.iterate("abcd") | flow | pipe.list())) == 2


def test_user_stages_wraps_stages_and_functions_and_reprs_say_what_they_are():
    wrapped = user_stages([Score(), len, build(str.upper) | Score()])
    assert [type(s).__name__ for s in wrapped] == ["guarded", "each", "guarded", "guarded"]
    assert repr(wrapped[1]) == "each(len)" and repr(wrapped[0]) == "Score()"
    assert user_stages(None) == () and len(user_stages(Score())) == 1
    assert isinstance(guarded(Score()), Stage)


async def test_record_data_becomes_frame_columns_lined_up_with_the_rows(sim):
    pd = pytest.importorskip("pandas", reason="the pandas extra: pip install -e .[pandas]")
    pl = pytest.importorskip("polars", reason="the polars extra: pip install -e .[polars]")

    def mark(record: Record) -> None:
        if record.index == 1:
            record.error = ValueError("rejected by review")  # fails only this row
        elif record.index == 2:
            record.data = 0.5  # not a dict: one `data` column
        else:
            record.data = {"words": len((record.text or "").split()), "status": "checked"}

    frame = pd.DataFrame({"text": [r["text"] for r in ROWS[:4]]}, index=[10, 11, 12, 13])
    async with _service(sim) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)
        results = await pipeline.run(frame, job, stages=[mark])
    out = results.to_pandas(frame)
    # The user's columns come last; "status" is taken (the run's), so theirs is suffixed.
    assert list(out.columns)[-3:] == ["words", "status_data", "data"]
    assert list(out.index) == [10, 11, 12, 13]
    assert list(out["status"]) == ["succeeded", "failed", "succeeded", "succeeded"]
    assert out["status_data"].isna().tolist() == [False, True, True, False]
    assert out["status_data"][10] == "checked" and out["data"][12] == 0.5
    assert out["words"].isna().tolist() == [False, True, True, False]
    assert "rejected by review" in out["error"].tolist()[1]

    polars = results.to_polars(pl.DataFrame({"text": [r["text"] for r in ROWS[:4]]}))
    assert polars.columns[-3:] == ["words", "status_data", "data"]
    assert polars["status_data"].to_list() == ["checked", None, None, "checked"]
    assert polars["words"].null_count() == 2


async def test_frames_without_record_data_get_no_extra_columns(sim):
    pd = pytest.importorskip("pandas", reason="the pandas extra: pip install -e .[pandas]")
    frame = pd.DataFrame({"text": [r["text"] for r in ROWS[:3]]})
    async with _service(sim) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)
        results = await pipeline.run(frame, job)
    assert list(results.to_pandas(frame).columns) == [
        "text", "answer", "status", "error", "tokens", "latency", "cost"]


async def test_run_frame_takes_your_stages_and_their_columns(sim):
    pd = pytest.importorskip("pandas", reason="the pandas extra: pip install -e .[pandas]")
    frame = pd.DataFrame({"text": [r["text"] for r in ROWS[:5]]}, index=list("abcde"))
    async with _service(sim) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)
        out = await pipeline.io.run_frame(frame, job, stages=[Score()])
    assert list(out.index) == list("abcde")
    assert list(out.columns)[-2:] == ["score", "words"]
    assert out["words"].notna().all() and (out["status"] == "succeeded").all()


def _score_file(tmp_path, n=6):
    path = tmp_path / "rows.csv"
    path.write_text("text\n" + "".join(f"review {i}\n" for i in range(n)))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
async def test_run_file_writes_your_stages_data_as_columns_and_resumes_it(sim, tmp_path,
                                                                         suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow", reason="the parquet extra: pip install -e .[parquet]")
    pd = pytest.importorskip("pandas", reason="the pandas extra: pip install -e .[pandas]")
    source, output = _score_file(tmp_path), tmp_path / f"out{suffix}"

    def mark(record: Record) -> None:
        if record.index == 2:
            raise ValueError("rejected by review")  # fails this row; its answer is paid
        record.data = {"chars": len(record.text or ""), "status": "seen"}

    async with _service(sim) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)
        summary = await pipeline.io.run_file(source, output, job, stages=[mark])
    assert (summary.succeeded, summary.failed) == (5, 1)
    sent = len(sim.log())
    read = {".csv": pd.read_csv, ".parquet": pd.read_parquet,
            ".jsonl": lambda p: pd.read_json(p, lines=True)}[suffix]
    out = read(output)
    assert list(out.columns)[-2:] == ["chars", "status_data"]
    assert out["status_data"].isna().tolist() == [False, False, True, False, False, False]
    assert "StageError" in out["error"][2] and "rejected by review" in out["error"][2]
    assert out["chars"].notna().sum() == 5

    # Resumed: nothing answered is sent or run again; the journal kept the data.
    def never(record: Record) -> None:
        raise AssertionError("a stage ran again on a journaled row")

    async with _service(sim) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)
        again = await pipeline.io.run_file(source, output, job, stages=[never])
    assert again.resumed == 5 and len(sim.log()) == sent + 1  # only the failed row again
    out = read(output)
    assert out["chars"].notna().sum() == 5  # written from the journal
    assert "ran again" in out["error"][2] and out["error"].notna().sum() == 1


async def test_run_file_writes_data_json_has_no_type_for_as_text_and_numbers(sim, tmp_path):
    np = pytest.importorskip("numpy", reason="numpy comes with the pandas extra")
    source, output = _score_file(tmp_path, 2), tmp_path / "out.jsonl"

    def mark(record: Record) -> None:
        record.data = {"score": np.float64(0.25), "when": object.__new__(type("Stamp", (), {
            "__str__": lambda self: "stamp"}))}

    async with _service(sim) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)
        await pipeline.io.run_file(source, output, job, stages=[mark])
    import json

    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(line["score"], line["when"]) for line in lines] == [(0.25, "stamp")] * 2


async def test_run_file_refuses_stages_with_the_batch_api(sim, tmp_path):
    async with _service(sim) as service:
        job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)
        with pytest.raises(ConfigError, match="stages= runs on rows sent one request each"):
            await pipeline.io.run_file(_score_file(tmp_path), tmp_path / "o.csv", job,
                                       stages=[Score()], batch_api=True, cache=tmp_path / "c")
    assert sim.log() == []


def test_data_the_journal_cannot_take_is_kept_as_text_not_a_failed_write():
    from pipeline.io import entry

    record = Record(index=0, row={})
    record.data = {(1, 2): "tuple keys"}  # JSON objects have string keys only
    assert entry(record).data == "{(1, 2): 'tuple keys'}"
    looped: dict[str, object] = {}
    looped["self"] = looped
    record.data = looped
    assert entry(record).data == "{'self': {...}}"
    record.data = {"n": 1, 2: "b"}  # keys JSON can take as text
    assert entry(record).data == {"n": 1, "2": "b"}


def _cli(tmp_path, *args):
    import os
    import subprocess
    import sys

    env = dict(os.environ, OPENAI_API_KEY="sk-test-custom")
    env.pop("OPENAI_BASE_URL", None)
    # The console script, as a user runs it: the working directory is not on its path.
    script = os.path.join(os.path.dirname(sys.executable), "pipeline")
    return subprocess.run([script, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


def test_pipeline_run_takes_your_stage_from_a_module_here(sim, tmp_path):
    (tmp_path / "scoring.py").write_text(
        "from pipeline.stages import Stage\n\n\n"
        "class Score(Stage):\n"
        "    async def process(self, record):\n"
        "        record.data = {'words': len((record.text or '').split())}\n"
        "        return record\n\n\n"
        "def shout(record):\n"
        "    record.data = {**(record.data or {}), 'loud': (record.text or '').upper()}\n")
    _score_file(tmp_path, 4)
    done = _cli(tmp_path, "run", "rows.csv", "-o", "out.csv", "--base-url", sim.base_url,
                "--template", "{text}", "--stage", "scoring:Score", "--stage", "scoring:shout",
                "--no-progress")
    assert done.returncode == 0, done.stderr
    import csv

    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["succeeded"] * 4
    assert all(r["words"] and r["loud"] == r["answer"].upper() for r in rows)


@pytest.mark.parametrize(("spec", "says"), [
    ("nosuchmodule:Score", "cannot import 'nosuchmodule'"),
    ("scoring:Nope", "'scoring' has no 'Nope'"),
    ("scoring", "write MODULE:NAME"),
    ("scoring:NUMBER", "--stage"),
])
def test_a_stage_that_cannot_be_used_is_one_line_and_exit_2_before_sending(sim, tmp_path,
                                                                          spec, says):
    (tmp_path / "scoring.py").write_text("NUMBER = 3\n")
    _score_file(tmp_path, 2)
    before = len(sim.log())
    done = _cli(tmp_path, "run", "rows.csv", "-o", "out.csv", "--base-url", sim.base_url,
                "--template", "{text}", "--stage", spec, "--no-progress")
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(sim.log()) == before
