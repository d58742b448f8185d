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


# Runs the CLI with some modules made unimportable, as if their packages were not installed.
WITHOUT = ("import sys\n"
           "for name in sys.argv.pop(1).split(','):\n"
           "    sys.modules[name] = None\n"
           "from pipeline.cli import main\n"
           "sys.exit(main(sys.argv[1:]))\n")


def pipeline_cli(*args, env_extra=None, timeout=60, without=()):
    env = dict(os.environ, OPENAI_API_KEY=KEY)
    env.pop("OPENAI_BASE_URL", None)
    env.update(env_extra or {})
    command = [sys.executable, "-c", WITHOUT, ",".join(without)] if without else \
        [sys.executable, "-m", "pipeline"]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


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


def test_run_embeddings_in_batches_of_batch_size_rows(tmp_path):
    (tmp_path / "in.csv").write_text("text\n" + "".join(f"row {i}\n" for i in range(25)))
    with Simulator(latency=0.0, api_key=KEY, embedding_dimensions=4) as own:
        result = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.jsonl"),
                              "--endpoint", "embeddings", "--column", "text",
                              "--batch-size", "10", "--base-url", own.base_url, "--no-progress")
        sent = len(own.log())
    assert result.returncode == 0, result.stderr
    assert sent == 3  # 10 + 10 + 5 rows
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out) == 25 and all(len(line["embedding"]) == 4 for line in out)
    refused = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.csv"),
                           "--template", "{text}", "--batch-size", "10")
    assert refused.returncode == 2 and "--batch-size is for embeddings" in refused.stderr


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
    from pipeline.core.request import Response
    from pipeline.state.cache import ResponseCache

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


def write_lines(path, items):
    path.write_text("".join(json.dumps(x) + "\n" for x in items))


def read_lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def one_line_error(result):
    """The failure is one line on stderr naming the problem: no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    return lines[-1]


# -- issue 13, item 1: a cookbook file of embeddings bodies ------------------------------------
def test_cookbook_embeddings_bodies_go_to_embeddings_and_the_vectors_are_written(tmp_path, sim):
    write_lines(tmp_path / "cookbook.jsonl",
                [{"model": "text-embedding-3-small", "input": f"text {i}",
                  "metadata": {"row_id": i}} for i in range(4)])
    before = sim.stats().requests
    result = pipeline_cli("run", str(tmp_path / "cookbook.jsonl"), "-o",
                          str(tmp_path / "out.jsonl"), "--base-url", sim.base_url,
                          "--no-progress")
    assert result.returncode == 0, result.stderr
    header = result.stderr.splitlines()[0]
    assert "(embeddings at" in header and "chat/completions" not in header
    out = read_lines(tmp_path / "out.jsonl")
    assert [x["metadata"] for x in out] == [{"row_id": i} for i in range(4)]
    assert all(x["status"] == "succeeded" for x in out)
    assert all(isinstance(x["embedding"], list) and len(x["embedding"]) > 8 for x in out)
    assert "answer" not in out[0]
    assert {e.path for e in sim.log()[before:]} == {"/v1/embeddings"}


@pytest.mark.parametrize("bodies, words", [
    ([{"model": "m", "messages": [{"role": "user", "content": "hi"}]},
      {"model": "text-embedding-3-small", "input": "hi"}],
     "several endpoints: chat/completions (first at line 1), embeddings (first at line 2)"),
    ([{"model": "m", "messages": [{"role": "user", "content": "hi"}], "input": "x"}],
     "cannot tell which endpoint the request body at line 1"),
])
def test_bodies_for_mixed_or_unclear_endpoints_are_refused_before_sending(tmp_path, sim,
                                                                          bodies, words):
    write_lines(tmp_path / "in.jsonl", bodies)
    before = sim.stats().requests
    result = pipeline_cli("run", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
                          "--base-url", sim.base_url, "--no-progress")
    assert result.returncode == 2
    message = one_line_error(result)
    assert words in message and "--endpoint" in message
    assert sim.stats().requests == before
    assert not (tmp_path / "out.jsonl").exists()


# -- items 2 and 3: optional packages ----------------------------------------------------------
def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_parquet_output_is_written_without_polars(tmp_path, sim):
    pq = pytest.importorskip("pyarrow.parquet")
    write_csv(tmp_path / "in.csv", [{"id": str(i), "text": f"row {i}"} for i in range(5)])
    result = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.parquet"),
                          "--template", "Say: {text}", "--max-tokens", "3",
                          "--base-url", sim.base_url, "--no-progress", without=("polars",))
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["id"] for r in table] == [str(i) for i in range(5)]
    assert all(r["status"] == "succeeded" and r["answer"] for r in table)


def test_demo_writes_parquet_without_polars(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    output = tmp_path / "x.parquet"
    result = pipeline_cli("demo", "-o", str(output), "--rpm", "100000", "--tpm", "10000000",
                          "--latency", "0.01", "--error-rate", "0", "--no-progress",
                          without=("polars",))
    assert result.returncode == 0, result.stderr
    assert pq.read_table(output).num_rows == 300


def test_parquet_output_without_pyarrow_is_refused_before_anything_is_sent(tmp_path, sim):
    write_csv(tmp_path / "in.csv", [{"text": "a"}])
    before = sim.stats().requests
    result = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.parquet"),
                          "--template", "{text}", "--base-url", sim.base_url,
                          without=("pyarrow", "pyarrow.parquet"))
    assert result.returncode == 2
    assert one_line_error(result) == (
        'pipeline run: error: writing Parquet needs pyarrow, which is not installed: '
        'pip install "ratelimited-pipeline[parquet]"')
    assert sim.stats().requests == before
    demo = pipeline_cli("demo", "-o", str(tmp_path / "x.parquet"),
                        without=("pyarrow", "pyarrow.parquet"))
    assert demo.returncode == 2
    assert 'pip install "ratelimited-pipeline[parquet]"' in one_line_error(demo)


def test_parquet_input_without_pyarrow_is_one_line_naming_the_extra(tmp_path, sim):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "in.parquet")
    result = pipeline_cli("run", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out.csv"),
                          "--template", "{text}", "--base-url", sim.base_url,
                          without=("pyarrow", "pyarrow.parquet"))
    assert result.returncode == 2
    assert 'reading Parquet needs pyarrow' in one_line_error(result)
    assert 'pip install "ratelimited-pipeline[parquet]"' in one_line_error(result)


# -- item 4: a CSV that is not UTF-8 -----------------------------------------------------------
def test_a_cp1252_csv_is_explained_and_read_with_encoding(tmp_path, sim):
    path = tmp_path / "excel.csv"
    path.write_bytes("id,text\r\n1,plain\r\n2,caf\u00e9 \u2019quoted\u2019\r\n".encode("cp1252"))
    before = sim.stats().requests
    refused = pipeline_cli("run", str(path), "-o", str(tmp_path / "out.csv"),
                           "--template", "{text}", "--base-url", sim.base_url)
    assert refused.returncode == 2
    message = one_line_error(refused)
    assert str(path) in message and "byte 0xe9 at byte position 23 (line 3)" in message
    assert "--encoding" in message
    assert sim.stats().requests == before
    result = pipeline_cli("run", str(path), "-o", str(tmp_path / "out.csv"), "--template",
                          "{text}", "--max-tokens", "3", "--encoding", "cp1252",
                          "--base-url", sim.base_url, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert [r["text"] for r in read_csv(tmp_path / "out.csv")] == [
        "plain", "caf\u00e9 \u2019quoted\u2019"]


# -- item 5: a template over a column the file lacks -------------------------------------------
def test_a_misspelt_template_column_is_refused_with_a_did_you_mean(tmp_path, sim):
    write_csv(tmp_path / "in.csv", [{"id": "1", "review": "great"}, {"id": "2", "review": "bad"}])
    before = sim.stats().requests
    result = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"),
                          "--template", "Classify: {reveiw}", "--base-url", sim.base_url)
    assert result.returncode == 2
    message = one_line_error(result)
    assert "needs column 'reveiw'" in message and "(did you mean 'review'?)" in message
    assert sim.stats().requests == before
    assert not (tmp_path / "out.csv").exists()


# -- item 12: the demo says where its results go, and why some rows were cached ----------------
def test_demo_says_first_where_the_results_go_and_explains_the_cached_rows(tmp_path):
    output = tmp_path / "demo.csv"
    result = pipeline_cli("demo", "-o", str(output), "--rpm", "100000", "--tpm", "10000000",
                          "--latency", "0.01", "--error-rate", "0", "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"pipeline demo: the results will be written to {output}"
    repeats = next(x for x in lines if "repeat an earlier review" in x)
    assert repeats.startswith("24 of the 300 rows repeat an earlier review word for word")
    assert "answered from the response cache" in repeats


# -- item 14: the cookbook's output format -----------------------------------------------------
def test_cookbook_output_format_writes_request_response_metadata_lines(tmp_path, sim):
    bodies = [{"model": "gpt-4o-mini", "max_tokens": 3, "metadata": {"row_id": 0},
               "messages": [{"role": "user", "content": "hi"}]},
              {"model": "gpt-4o-mini", "max_tokens": 3,
               "messages": [{"role": "user", "content": "no metadata"}]},
              {"model": "gpt-4o-mini", "max_tokens": 1_000_000, "metadata": {"row_id": 2},
               "messages": [{"role": "user", "content": "too long"}]}]
    write_lines(tmp_path / "requests.jsonl", bodies)
    result = pipeline_cli("run", str(tmp_path / "requests.jsonl"), "-o",
                          str(tmp_path / "results.jsonl"), "--output-format", "cookbook",
                          "--base-url", sim.base_url, "--max-attempts", "1", "--no-progress")
    assert result.returncode == 1, result.stderr
    out = read_lines(tmp_path / "results.jsonl")
    assert [len(x) for x in out] == [3, 2, 3]
    requests = [{k: v for k, v in b.items() if k != "metadata"} for b in bodies]
    assert [x[0] for x in out] == requests
    assert out[0][1]["object"] == "chat.completion" and out[0][2] == {"row_id": 0}
    assert out[1][1]["choices"][0]["message"]["content"]
    assert isinstance(out[2][1], list) and all(isinstance(e, str) for e in out[2][1])
    assert "ContextLengthExceeded" in out[2][1][0] and out[2][2] == {"row_id": 2}
    # The cookbook's own parser: json.loads per line, then [request, response(, metadata)].
    for line in (tmp_path / "results.jsonl").read_text().splitlines():
        request, response, *metadata = json.loads(line)
        assert "messages" in request and isinstance(response, dict | list)
        assert metadata in ([], [{"row_id": 0}], [{"row_id": 2}])


def test_cookbook_output_must_be_jsonl(tmp_path, sim):
    write_csv(tmp_path / "in.csv", [{"text": "a"}])
    result = pipeline_cli("run", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"),
                          "--template", "{text}", "--output-format", "cookbook",
                          "--base-url", sim.base_url)
    assert result.returncode == 2 and "name the output .jsonl" in one_line_error(result)


# -- item 11 (part): every option says what it is for -----------------------------------------
@pytest.mark.parametrize("command", ["run", "demo"])
def test_every_option_has_a_help_text(command):
    import argparse

    from pipeline import cli

    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    silent = [a.option_strings or a.dest for a in sub.choices[command]._actions if not a.help]
    assert silent == []


# -- item 15: the distribution's name ---------------------------------------------------------
def test_the_distribution_is_not_the_unrelated_pypi_pipeline():
    import tomllib
    from importlib import metadata

    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    name = project["name"]
    assert name == "ratelimited-pipeline"
    assert any(x.startswith(f"{name}[") for x in project["optional-dependencies"]["dev"])
    assert project["scripts"] == {"pipeline": "pipeline.cli:main"}
    assert metadata.distribution(name).read_text("top_level.txt") in (None, "pipeline\n")
    from pipeline.core.extras import install_hint

    assert install_hint("pandas") == 'pip install "ratelimited-pipeline[pandas]"'
    assert pipeline_cli("--help").returncode == 0
