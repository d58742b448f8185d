"""The command line end to end, in subprocesses, against the simulator on 127.0.0.1."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from pipeline.simulator import Simulator

KEY = "sk-test-cli-0123456789abcdef"


def pipeline_cli(*args, env_extra=None, timeout=60):
    env = dict(os.environ, OPENAI_API_KEY=KEY)
    env.pop("OPENAI_BASE_URL", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sim():
    with Simulator(latency=0.0, api_key=KEY) as simulator:
        yield simulator


@pytest.mark.parametrize("command", ["run", "demo", "cache"])
def test_every_command_explains_itself_with_an_example(command):
    result = pipeline_cli(command, "--help")
    assert result.returncode == 0
    assert "Example" in result.stdout and f"pipeline {command}" in result.stdout


def test_run_csv_end_to_end(tmp_path, sim):
    rows = [{"id": str(i), "text": f"review {i}"} for i in range(40)]
    rows[5]["text"] = ""  # a missing prompt: that row fails, the others run
    with open(tmp_path / "in.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(rows)
    result = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"),
                          "--template", "Classify: {text}", "--max-tokens", "4",
                          "--base-url", sim.base_url, "--rpm", "60000", "--tpm", "10000000",
                          "--concurrency", "8", "--cache", str(tmp_path / "cache"))
    assert result.returncode == 1, result.stderr
    assert "1 of 40 rows failed" in result.stderr
    assert "succeeded" in result.stderr and "latency p50" in result.stderr  # the status table
    out = read_csv(tmp_path / "out.csv")
    assert [r["id"] for r in out] == [str(i) for i in range(40)]
    assert out[5]["status"] == "failed" and "value is missing" in out[5]["error"]
    assert all(r["answer"] and int(r["tokens"]) > 0 for i, r in enumerate(out) if i != 5)
    # The key appears nowhere: not in the output, the journal, the cache or the messages.
    assert KEY not in result.stderr + result.stdout
    for root, _, files in os.walk(tmp_path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert KEY.encode() not in f.read(), name


def test_run_embeddings_from_a_column_to_parquet(tmp_path, sim):
    pl = pytest.importorskip("polars")
    pl.DataFrame({"doc": ["a", "b", None]}).write_parquet(tmp_path / "in.parquet")
    result = pipeline_cli("run", str(tmp_path / "in.parquet"), "-o",
                          str(tmp_path / "out.parquet"), "--endpoint", "embeddings",
                          "--column", "doc", "--base-url", sim.base_url, "--no-progress")
    assert result.returncode == 1 and "1 of 3 rows failed" in result.stderr
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out["doc"].to_list() == ["a", "b", None]
    assert [v is not None for v in out["embedding"].to_list()] == [True, True, False]


def test_run_batch_file_writes_batch_output(tmp_path, sim):
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "max_tokens": 3,
                       "messages": [{"role": "user", "content": f"hi {i}"}]}} for i in range(5)]
    (tmp_path / "batch.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = pipeline_cli("run", str(tmp_path / "batch.jsonl"), "-o",
                          str(tmp_path / "out.jsonl"), "--base-url", sim.base_url)
    assert result.returncode == 0, result.stderr
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["custom_id"] for x in out] == [f"c{i}" for i in range(5)]
    assert all(x["response"]["status_code"] == 200 for x in out)


def test_bad_input_is_refused_before_anything_is_sent(tmp_path, sim):
    before = sim.stats().requests
    missing = pipeline_cli("run", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o.csv"),
                           "--template", "{text}", "--base-url", sim.base_url)
    assert missing.returncode == 2 and "input file not found" in missing.stderr
    (tmp_path / "in.csv").write_text("text\na\n")
    unknown = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.xlsx"),
                           "--template", "{text}", "--base-url", sim.base_url)
    assert unknown.returncode == 2 and "unknown file format '.xlsx'" in unknown.stderr
    nothing = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.csv"),
                           "--base-url", sim.base_url)
    assert nothing.returncode == 2 and "--template" in nothing.stderr
    assert sim.stats().requests == before


def test_cache_stats_and_clear(tmp_path):
    from pipeline.cache import ResponseCache
    from pipeline.request import Response

    with ResponseCache(tmp_path / "c") as cache:
        cache.put("k", Response(status=200, body={"ok": True}))
    stats = pipeline_cli("cache", "stats", str(tmp_path / "c"))
    assert stats.returncode == 0 and "entries    1" in stats.stdout
    cleared = pipeline_cli("cache", "clear", str(tmp_path / "c"))
    assert cleared.returncode == 0 and "removed 1" in cleared.stdout
    assert "entries    0" in pipeline_cli("cache", "stats", str(tmp_path / "c")).stdout
    assert pipeline_cli("cache", "stats", str(tmp_path / "none")).returncode == 2


def test_demo_runs_the_bundled_dataset_and_says_where_the_results_are(tmp_path):
    output = tmp_path / "demo.csv"
    result = pipeline_cli("demo", "-o", str(output), "--rpm", "100000", "--latency", "0.01",
                          "--error-rate", "0", "--concurrency", "64")
    assert result.returncode == 0, result.stderr
    assert f"wrote 300 rows to {output}" in result.stderr
    rows = read_csv(output)
    assert len(rows) == 300 and {r["status"] for r in rows} == {"succeeded"}
    assert {r["answer"] for r in rows} <= {"positive", "negative", "neutral"}


def test_run_chat_from_a_column_of_messages(tmp_path, sim):
    messages = [json.dumps([{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": f"question {i}"}]) for i in range(3)]
    with open(tmp_path / "in.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "conversation"])
        writer.writerows([i, m] for i, m in enumerate(messages))
    result = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.jsonl"),
                          "--column", "conversation", "--max-tokens", "3",
                          "--base-url", sim.base_url, "--no-progress")
    assert result.returncode == 0, result.stderr
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["id"] for x in out] == ["0", "1", "2"]
    assert all(x["status"] == "succeeded" and x["answer"] for x in out)
