"""pipeline run over several servers, in subprocesses: --base-url given more than once, and a
--deployments file; counts come from the simulators' logs."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from collections import Counter

import pytest

from pipeline.simulator import Simulator

pytestmark = pytest.mark.timeout(90)

KEY = "sk-test-deployments-cli-0123456789"


def pipeline_cli(*args: str,
                 env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OPENAI_API_KEY=KEY)
    env.pop("OPENAI_BASE_URL", None)
    env.pop("PIPELINE_LIMITER_URL", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env,
                          capture_output=True, text=True, timeout=80)


def _input(tmp_path, n: int) -> str:
    path = tmp_path / "in.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        writer.writerows([f"row {i}"] for i in range(n))
    return str(path)


def _output(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_base_url_given_twice_spreads_the_rows_over_both(tmp_path):
    # Before: the last --base-url silently won, and the other server got nothing.
    with Simulator(rpm=3_000, latency=0.01, api_key=KEY, seed=1) as small, \
            Simulator(rpm=9_000, latency=0.01, api_key=KEY, seed=2) as large:
        out = tmp_path / "out.csv"
        result = pipeline_cli("run", _input(tmp_path, 300), "-o", str(out), "--template",
                              "{text}", "--max-tokens", "8", "--base-url", small.base_url,
                              "--base-url", large.base_url, "--no-progress")
        assert result.returncode == 0, result.stderr
        assert "2 deployments" in result.stderr
        rows = _output(out)
        assert len(rows) == 300 and {r["status"] for r in rows} == {"succeeded"}
        answered = Counter(e.body_hash for sim in (small, large) for e in sim.log()
                           if e.outcome == "ok")
        assert len(answered) == 300 and set(answered.values()) == {1}
        ok_small = sum(e.outcome == "ok" for e in small.log())
        ok_large = sum(e.outcome == "ok" for e in large.log())
        assert ok_large > ok_small > 0
        assert KEY not in result.stderr + result.stdout


def test_a_deployments_file_with_keys_by_env_a_model_map_and_one_server_down(tmp_path):
    seen: list[str] = []

    def model_of(endpoint, body):
        seen.append(body["model"])
        return "fine"

    down = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    with Simulator(latency=0.01, api_key="sk-east-0123456789", responder=model_of) as east:
        spec = tmp_path / "deployments.toml"
        spec.write_text(
            "[[deployments]]\n"
            'name = "east"\n'
            f'base_url = "{east.base_url}"\n'
            'api_key_env = "EAST_KEY"\n'
            'models = { "gpt-4o-mini" = "mini-east" }\n'
            "rpm = 6000\n"
            "\n[[deployments]]\n"
            'name = "down"\n'
            f'base_url = "{down}"\n'
            'api_key_env = "DOWN_KEY"\n')
        out = tmp_path / "out.csv"
        result = pipeline_cli("run", _input(tmp_path, 120), "-o", str(out), "--template",
                              "{text}", "--max-tokens", "8", "--deployments", str(spec),
                              "--no-progress",
                              env_extra={"EAST_KEY": "sk-east-0123456789",
                                         "DOWN_KEY": "sk-down-0123456789"})
        assert result.returncode == 0, result.stderr
        rows = _output(out)
        assert len(rows) == 120 and {r["status"] for r in rows} == {"succeeded"}
        assert sum(e.outcome == "ok" for e in east.log()) == 120 and set(seen) == {"mini-east"}
        lines = [line for line in result.stderr.splitlines() if "is out" in line]
        assert len(lines) == 1 and lines[0].startswith("deployment down is out")
        assert "sk-east" not in result.stderr and "sk-down" not in result.stderr


def test_a_deployments_file_naming_an_unset_key_variable_is_exit_2_before_sending(tmp_path):
    with Simulator(latency=0.0) as sim:
        spec = tmp_path / "deployments.json"
        spec.write_text(f'[{{"base_url": "{sim.base_url}", "api_key_env": "NOT_SET_KEY"}}]')
        result = pipeline_cli("run", _input(tmp_path, 5), "-o", str(tmp_path / "out.csv"),
                              "--template", "{text}", "--deployments", str(spec),
                              env_extra={"NOT_SET_KEY": ""})
        assert result.returncode == 2
        assert "NOT_SET_KEY" in result.stderr and sim.stats().requests == 0
