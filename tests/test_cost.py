"""Cost and planning (pipeline.pricing.cost): prices, the cost of a run, estimate() and --dry-run.

Runs go to the simulator on 127.0.0.1; the CLI test runs ``pipeline run`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

import pipeline
from pipeline.adapters.estimate import Estimate, estimate, quota_minutes
from pipeline.errors import ConfigError
from pipeline.pricing.cost import DEFAULT_PRICES, ModelPrice, Prices, UnknownPriceWarning
from pipeline.simulator import Simulator
from pipeline.state.cache import ResponseCache

KEY = "sk-test-cost-0123456789abcdef"
ROWS = [{"text": f"review number {i}: " + "words " * (i % 7)} for i in range(24)]
MAX_TOKENS = 6


@pytest.fixture(scope="module")
def sim():
    with Simulator(latency=0.0, api_key=KEY) as simulator:
        yield simulator


@pytest.fixture
def service(sim):
    sim.reset(limits=True)
    return pipeline.OpenAIService(base_url=sim.base_url, api_key=KEY, rpm=60_000,
                                  tpm=10_000_000)


def chat_job(service, model="gpt-4o-mini"):
    return service.chat(model=model, prompt="Classify: {text}", max_tokens=MAX_TOKENS,
                        temperature=0)


def expected_cost(results, input_price, output_price):
    total = 0.0
    for record in results:
        usage = record.response.usage
        total += (usage.prompt_tokens * input_price + usage.completion_tokens * output_price)
    return total / 1_000_000


def unknown_price_warnings(caught):
    return [w for w in caught if issubclass(w.category, UnknownPriceWarning)]


# ------------------------------------------------------------------------------ prices
def test_default_prices_are_the_dated_openai_table():
    assert DEFAULT_PRICES["gpt-4o-mini"] == ModelPrice(0.15, 0.60)
    assert DEFAULT_PRICES["gpt-4o"] == ModelPrice(2.50, 10.00)
    assert DEFAULT_PRICES["gpt-4.1-mini"] == ModelPrice(0.40, 1.60)
    assert DEFAULT_PRICES["gpt-4.1"] == ModelPrice(2.00, 8.00)
    assert DEFAULT_PRICES["text-embedding-3-small"] == ModelPrice(0.02, 0)
    assert DEFAULT_PRICES["text-embedding-3-large"] == ModelPrice(0.13, 0)
    assert DEFAULT_PRICES["gpt-3.5-turbo-instruct"] == ModelPrice(1.50, 2.00)
    assert "2025" in DEFAULT_PRICES.source and "OpenAI" in DEFAULT_PRICES.source
    # A dated snapshot is priced as its family; a longer family name is not a prefix match.
    assert DEFAULT_PRICES.price("gpt-4o-mini-2024-07-18") == ModelPrice(0.15, 0.60)
    assert DEFAULT_PRICES.price("gpt-4o-2024-08-06") == ModelPrice(2.50, 10.00)
    assert DEFAULT_PRICES.price("gpt-4o-audio-preview") is None


def test_prices_from_a_dict_override_the_defaults_and_keep_the_rest():
    prices = Prices({"gpt-4o-mini": (1.0, 2.0), "local-model": {"input": 0.5, "output": 1},
                     "my-embedder": {"input": 0.25, "output": 0}})
    assert prices["gpt-4o-mini"] == ModelPrice(1.0, 2.0)
    assert prices["local-model"] == ModelPrice(0.5, 1.0)
    assert prices["my-embedder"] == ModelPrice(0.25, 0.0)
    assert prices["gpt-4o"] == DEFAULT_PRICES["gpt-4o"]
    assert prices.cost("gpt-4o-mini", 1_000_000, 500_000) == pytest.approx(2.0)
    only = Prices({"local-model": (1, 1)}, defaults=False)
    assert "gpt-4o" not in only and len(only) == 1


def test_prices_from_a_json_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"gpt-4o-mini": {"input": 3, "output": 4}, "x": [1, 2]}))
    prices = Prices.from_file(path)
    assert prices["gpt-4o-mini"] == ModelPrice(3, 4) and prices["x"] == ModelPrice(1, 2)
    assert prices["gpt-4.1"] == DEFAULT_PRICES["gpt-4.1"]
    assert str(path) in prices.source
    assert Prices.of(str(path)) == prices
    (tmp_path / "again.json").write_text(json.dumps(prices.as_dict()))  # a round trip
    assert Prices.from_file(tmp_path / "again.json", defaults=False) == prices


@pytest.mark.parametrize("table", [{"m": -1}, {"m": "cheap"}, {"m": {"in": 1}}, {"m": (1, 2, 3)},
                                   {"": 1}, ["m"]])
def test_bad_prices_are_refused_with_a_config_error(table):
    with pytest.raises(ConfigError):
        Prices(table)


@pytest.mark.parametrize("price, missing", [(5, "no output price"),
                                            ({"input": 5}, "no output price"),
                                            ({"output": 5}, "no input price"),
                                            ((5,), "wrong shape"), ({}, "no input and no output")])
def test_a_price_without_input_or_output_names_the_model_and_what_is_missing(price, missing):
    # A bare number used to price output at 0: a silent 0 the README promises never to give.
    with pytest.raises(ConfigError, match=missing) as caught:
        Prices({"gpt-4o-mini": price})
    assert "'gpt-4o-mini'" in str(caught.value)


def test_a_cached_input_price_is_optional_and_prices_the_cached_prompt_tokens(tmp_path):
    from pipeline.core.record import Record
    from pipeline.core.request import APIRequest, Response

    prices = Prices({"m": {"input": 2, "output": 8, "cached_input": 0.5}}, defaults=False)
    assert prices["m"] == ModelPrice(2, 8, cached_input=0.5)
    assert prices.cost("m", 1_000_000, 0, cached_tokens=400_000) == pytest.approx(1.4)
    assert Prices({"m": (2, 8)}).cost("m", 1_000_000, 0, cached_tokens=400_000) == 2.0
    (tmp_path / "p.json").write_text(json.dumps(prices.as_dict()))  # a round trip
    assert Prices.from_file(tmp_path / "p.json", defaults=False) == prices
    usage = {"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010,
             "prompt_tokens_details": {"cached_tokens": 600}}
    record = Record(index=0, request=APIRequest(path="chat/completions", body={"model": "m"}),
                    response=Response(status=200, body={"usage": usage}))
    assert prices.record_cost(record) == pytest.approx((400 * 2 + 600 * 0.5 + 10 * 8) / 1e6)


def test_a_prices_file_with_a_bare_number_stops_the_cli_in_one_line(tmp_path, sim):
    (tmp_path / "in.csv").write_text("text\nhello\n")
    (tmp_path / "prices.json").write_text(json.dumps({"gpt-4o-mini": 5}))
    env = dict(os.environ, OPENAI_API_KEY=KEY)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(tmp_path / "in.csv"),
         "-o", str(tmp_path / "out.csv"), "--template", "Classify: {text}",
         "--model", "gpt-4o-mini", "--base-url", sim.base_url, "--prices",
         str(tmp_path / "prices.json"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "error:" in lines[-1] and "'gpt-4o-mini'" in lines[-1] and "output" in lines[-1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.csv").exists()


def test_a_bad_prices_file_is_a_config_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    for name in ("bad.json", "list.json", "missing.json"):
        with pytest.raises(ConfigError, match=name):
            Prices.from_file(tmp_path / name)


# ------------------------------------------------------------------------------ a run's cost
async def test_the_cost_of_a_run_is_the_sum_of_usage_times_price(service):
    results = await pipeline.run(ROWS, chat_job(service))
    assert len(results.succeeded) == len(ROWS)
    expected = expected_cost(results, 0.15, 0.60)
    assert expected > 0
    assert results.cost == pytest.approx(expected)
    assert results.status.cost == pytest.approx(expected)
    assert results.status.as_dict()["cost_usd"] == pytest.approx(expected)
    table = str(results.status)
    assert "cost" in table and "as published by OpenAI, 2025" in table
    frame = results.to_pandas()
    assert frame["cost"].sum() == pytest.approx(expected)
    assert list(frame["cost"]) == pytest.approx(
        [(r.response.usage.prompt_tokens * 0.15 + r.response.usage.completion_tokens * 0.6)
         / 1e6 for r in results])
    assert results.to_polars()["cost"].sum() == pytest.approx(expected)
    await service.aclose()


async def test_cached_answers_cost_nothing_in_the_rerun(service, tmp_path):
    job = chat_job(service)
    first = await pipeline.run(ROWS, job, cache=tmp_path / "cache")
    second = await pipeline.run(ROWS, job, cache=tmp_path / "cache")
    assert first.cost > 0
    assert second.status.cached == len(ROWS) and second.cost == 0
    await service.aclose()


async def test_an_unknown_model_costs_none_and_is_said_once(service):
    prices = Prices()  # a fresh table: "said once" is per table
    job = chat_job(service, model="my-local-model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = await pipeline.run(ROWS, job, prices=prices)
        assert results.cost is None and results.cost is None
        frame = results.to_pandas()
    said = unknown_price_warnings(caught)
    assert len(said) == 1 and "my-local-model" in str(said[0].message)
    assert "Prices(" in str(said[0].message)  # says how to give one
    assert frame["cost"].isna().all()  # missing, never a silent 0
    assert results.status.as_dict()["cost_usd"] is None
    row = dict(results.status._rows())["cost"]
    assert row.startswith("unknown") and "my-local-model" in row
    await service.aclose()


async def test_overriding_prices_changes_the_cost_with_a_dict_and_a_json_file(service,
                                                                            tmp_path):
    job = chat_job(service)
    by_dict = await pipeline.run(ROWS, job, prices={"gpt-4o-mini": (1.0, 3.0)})
    assert by_dict.cost == pytest.approx(expected_cost(by_dict, 1.0, 3.0))
    assert by_dict.status.cost == pytest.approx(by_dict.cost)
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"gpt-4o-mini": {"input": 7, "output": 11}}))
    by_file = await pipeline.run(ROWS, job, prices=str(path))
    assert by_file.cost == pytest.approx(expected_cost(by_file, 7, 11))
    assert str(path) in str(by_file.status)
    # Any table can cost results after the run too.
    assert Prices({"gpt-4o-mini": (2, 2)}).total(by_file) == pytest.approx(
        expected_cost(by_file, 2, 2))
    await service.aclose()


# ------------------------------------------------------------------------------ estimate
def test_estimate_sends_nothing_and_counts_tokens_like_the_builder(sim, service):
    job = chat_job(service)
    plan = pipeline.estimate(ROWS, job)
    assert sim.log() == []
    assert isinstance(plan, Estimate)
    assert plan.rows == plan.to_send == len(ROWS) and plan.cached == plan.invalid == 0
    requests = [job.build(row) for row in ROWS]
    assert plan.prompt_tokens == sum(r.token_estimate - MAX_TOKENS for r in requests)
    assert plan.output_tokens == MAX_TOKENS * len(ROWS)
    assert plan.cost_low == pytest.approx(plan.prompt_tokens * 0.15 / 1e6)
    assert plan.cost_high == pytest.approx(
        (plan.prompt_tokens * 0.15 + plan.output_tokens * 0.60) / 1e6)
    text = str(plan)
    for words in ("rows", "prompt tokens (estimated)", "output tokens (upper bound)",
                  "time the quota allows", "cost (USD)", "as published by OpenAI, 2025"):
        assert words in text
    assert "<table>" in plan._repr_html_() and "Estimate" in repr(plan)


async def test_estimate_counts_the_rows_a_first_run_cached(sim, service, tmp_path):
    job = chat_job(service)
    await pipeline.run(ROWS[:10], job, cache=tmp_path / "cache")
    sent = len(sim.log())
    assert sent == 10
    plan = estimate(ROWS, job, cache=tmp_path / "cache")
    assert plan.cached == 10 and plan.to_send == len(ROWS) - 10
    rest = [job.build(row) for row in ROWS[10:]]
    assert plan.prompt_tokens == sum(r.token_estimate - MAX_TOKENS for r in rest)
    with ResponseCache(tmp_path / "cache") as cache:  # an open cache works the same
        assert estimate(ROWS, job, cache=cache).cached == 10
    assert len(sim.log()) == sent  # the estimate sent nothing
    # Another server's answers are not this one's: the base URL is part of the key.
    other = pipeline.OpenAIService(base_url="http://127.0.0.1:9/v1", api_key=KEY)
    assert estimate(ROWS, chat_job(other), cache=tmp_path / "cache").cached == 0
    # A cache directory that does not exist answers nothing and is not created.
    assert estimate(ROWS, job, cache=tmp_path / "nothing").cached == 0
    assert not (tmp_path / "nothing").exists()
    await service.aclose()


def test_estimate_time_is_the_quota_arithmetic(service):
    job = chat_job(service)
    plan = estimate(ROWS, job, rpm=12, tpm=500)
    tokens = plan.prompt_tokens + plan.output_tokens
    assert plan.minutes == pytest.approx(max(len(ROWS) / 12, tokens / 500))
    assert estimate(ROWS, job, rpm=12, tpm=10**9).minutes == pytest.approx(len(ROWS) / 12)
    assert estimate(ROWS, job, rpm=10**9, tpm=100).minutes == pytest.approx(tokens / 100)
    # Without rpm/tpm given, the job's endpoint limits (60,000 rpm and 10M tpm here).
    assert estimate(ROWS, job).minutes == pytest.approx(
        max(len(ROWS) / 60_000, tokens / 10_000_000))
    unlimited = pipeline.OpenAIService(base_url=service.base_url, api_key=KEY)
    plan = estimate(ROWS, chat_job(unlimited))
    assert plan.minutes is None and "unknown" in dict(plan._rows())["time the quota allows"]
    assert quota_minutes(600, 90_000, rpm=300, tpm=30_000) == 3.0
    with pytest.raises(ConfigError):
        estimate(ROWS, job, rpm=0)


def test_estimate_of_an_unknown_model_has_no_cost_range(service):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = estimate(ROWS, chat_job(service, model="estimate-unknown-model"),
                        prices=Prices())
    assert plan.cost_low is None and plan.cost_high is None
    assert plan.unpriced == ["estimate-unknown-model"]
    assert "no price for 'estimate-unknown-model'" in str(plan)
    assert len(unknown_price_warnings(caught)) == 1
    priced = estimate(ROWS, chat_job(service, model="estimate-unknown-model"),
                      prices={"estimate-unknown-model": (1, 1)})
    assert priced.cost_high == pytest.approx((priced.prompt_tokens + priced.output_tokens) / 1e6)


def test_estimate_counts_rows_that_cannot_be_built(service):
    rows = [*ROWS[:3], {"other": "no text column"}, {"text": None}]
    plan = estimate(rows, chat_job(service))
    assert plan.rows == 5 and plan.invalid == 2 and plan.to_send == 3
    assert "cannot be built" in str(plan)


def test_estimate_of_embeddings_has_no_output_tokens(service):
    job = service.embeddings(model="text-embedding-3-small")
    plan = estimate(["some text", "more text"], job)
    assert plan.output_tokens == 0
    assert plan.prompt_tokens == sum(job.build(t).token_estimate for t in ["some text",
                                                                          "more text"])
    assert plan.cost_low == plan.cost_high == pytest.approx(plan.prompt_tokens * 0.02 / 1e6)


# ------------------------------------------------------------------------------ the CLI
def pipeline_cli(*args, timeout=60):
    env = dict(os.environ, OPENAI_API_KEY=KEY)
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_cli_dry_run_prints_the_estimate_and_sends_nothing(sim, tmp_path):
    sim.reset(limits=True)
    write_jsonl(tmp_path / "in.jsonl", ROWS)
    result = pipeline_cli("run", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.csv"),
                          "--template", "Classify: {text}", "--max-tokens", str(MAX_TOKENS),
                          "--base-url", sim.base_url, "--rpm", "12", "--tpm", "500",
                          "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Estimate (nothing sent)" in result.stdout
    assert f"rows                         {len(ROWS)}" in result.stdout
    assert "output tokens (upper bound)  " + f"{MAX_TOKENS * len(ROWS):,}" in result.stdout
    assert "12 rpm, 500 tpm" in result.stdout and "as published by OpenAI, 2025" in result.stdout
    assert sim.log() == []
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out.csv.cache").exists()


def test_cli_prices_file_costs_the_run_and_the_dry_run(sim, tmp_path):
    sim.reset(limits=True)
    write_jsonl(tmp_path / "in.jsonl", ROWS[:5])
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"cli-model": {"input": 1000, "output": 1000}}))
    common = ("run", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.csv"),
              "--template", "Classify: {text}", "--model", "cli-model", "--max-tokens", "3",
              "--base-url", sim.base_url, "--prices", str(prices), "--no-progress")
    planned = pipeline_cli(*common, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    planned_cost = next(line for line in planned.stdout.splitlines() if "cost (USD)" in line)
    assert "$" in planned_cost and "unknown" not in planned_cost
    assert "time the quota allows        unknown" in planned.stdout  # no --rpm/--tpm
    assert sim.log() == []
    ran = pipeline_cli(*common)
    assert ran.returncode == 0, ran.stderr
    entries = sim.log()
    assert len(entries) == 5
    paid = sum(e.prompt_tokens + e.completion_tokens for e in entries) * 1000 / 1e6
    cost_row = next(line for line in ran.stderr.splitlines() if line.strip().startswith("cost"))
    assert f"${paid:,.2f}" in cost_row and str(prices) in cost_row
    bad = pipeline_cli(*common[:-3], "--prices", str(tmp_path / "missing.json"), "--dry-run")
    assert bad.returncode == 2 and "missing.json" in bad.stderr


def test_cli_dry_run_leaves_out_the_rows_the_resume_journal_answered(tmp_path):
    # A run that answered only some rows (a 500 on about half, one attempt each): the dry run
    # of the same command counts the answered ones as done and plans only the rest.
    write_jsonl(tmp_path / "in.jsonl", ROWS)
    with Simulator(faults={"500": 0.5}, seed=4, latency=0) as flaky:
        common = ("run", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.csv"),
                  "--template", "Classify: {text}", "--max-tokens", str(MAX_TOKENS),
                  "--base-url", flaky.base_url, "--attempts", "1", "--no-progress")
        first = pipeline_cli(*common)
        sent = len(flaky.log())
        answered = sum(1 for e in flaky.log() if e.outcome == "ok")
        planned = pipeline_cli(*common, "--dry-run")
        assert len(flaky.log()) == sent  # the dry run sent nothing
    assert first.returncode == 1 and 0 < answered < len(ROWS), first.stderr
    assert f"{answered:,} answered by the resume journal" in planned.stdout, planned.stdout
    assert f"to send                      {len(ROWS) - answered:,} requests" in planned.stdout
    fresh = pipeline_cli(*common, "--dry-run", "--fresh")
    assert "resume journal" not in fresh.stdout
