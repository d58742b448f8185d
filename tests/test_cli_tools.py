"""The tool commands (serve, bench, demo, --version) as a user runs them: in subprocesses.

One flag has one meaning in every command (``--burst`` is seconds of the rate, ``--fault``
is the fault flag), errors are one ``error:`` line with exit code 2, and nothing is left
behind in the working directory unless asked for.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import socket
import subprocess
import sys
from importlib import metadata

import pytest

from pipeline.cli import bench as cli_bench
from pipeline.cli import serve as cli_serve
from pipeline.limiter import DEFAULT_BURST_SECONDS

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Runs the CLI with some modules made unimportable, as if their packages were not installed.
WITHOUT = ("import sys\n"
           "for name in sys.argv.pop(1).split(','):\n"
           "    sys.modules[name] = None\n"
           "from pipeline.cli import main\n"
           "sys.exit(main(sys.argv[1:]))\n")


def pipeline_cli(*args: str, cwd: pathlib.Path | None = None, without: tuple[str, ...] = (),
                 env_extra: dict[str, str] | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-c", WITHOUT, ",".join(without)] if without else \
        [sys.executable, "-m", "pipeline"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)


def parse(configure, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(list(argv))


# -- pipeline --version --------------------------------------------------------------------
def test_version_prints_the_installed_version():
    result = pipeline_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == \
        f"pipeline {metadata.version('ratelimited-pipeline')} (ratelimited-pipeline)"


# -- pipeline serve --------------------------------------------------------------------------
def test_serve_on_a_busy_port_is_one_error_line_and_exit_2():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = pipeline_cli("serve", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"pipeline serve: error: port {port} on 127.0.0.1 is in use (another server listens "
        "there: choose another --port, or --port 0 for a free one)"]
    assert result.stdout == ""


def test_serve_config_errors_start_with_error():
    result = pipeline_cli("serve", "--latency", "lognormal:oops")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipeline serve: error: "), result.stderr


def test_burst_is_seconds_of_the_rate_in_serve_and_bench_as_in_run():
    # pipeline run --burst 6: six seconds of the client's rate. The same number gives the
    # simulator's bucket six seconds of its limit (a share of 0.1 of the minute).
    assert cli_serve._config(parse(cli_serve.configure, "--rpm", "600", "--burst", "6")
                             ).burst == pytest.approx(0.1)
    assert cli_serve._config(parse(cli_serve.configure, "--burst", "60")).burst == 1.0
    for bad in ("0", "61", "a lot"):
        with pytest.raises(SystemExit):
            parse(cli_serve.configure, "--burst", bad)
    bench_args = parse(cli_bench.configure, "--burst", "6")
    assert bench_args.burst == 6.0
    run_help = pipeline_cli("run", "--help").stdout
    assert "--burst SECONDS" in run_help and "seconds of the rate" in run_help


def test_a_sub_second_burst_gets_a_note_about_the_old_meaning(capsys):
    config = cli_serve._config(parse(cli_serve.configure, "--burst", "0.1"))
    assert config.burst == pytest.approx(0.1 / 60)  # a 0.1 s bucket, as the flag says
    err = capsys.readouterr().err
    assert "note: --burst is seconds" in err and "--burst 6" in err


def test_fault_is_one_flag_in_serve_and_bench_and_faults_a_hidden_alias():
    for configure in (cli_serve.configure, cli_bench.configure):
        spellings = [("--fault", "500=0.1", "--fault", "503=0.2"),
                     ("--fault", "500=0.1", "503=0.2"),
                     ("--faults", "500=0.1", "503=0.2"),
                     ("--faults", "500=0.1", "--fault", "503=0.2")]
        for argv in spellings:
            assert parse(configure, *argv).fault == ["500=0.1", "503=0.2"], argv
    for command in ("serve", "bench"):
        shown = pipeline_cli(command, "--help").stdout
        assert "--fault NAME=P" in shown and "--faults" not in shown


# -- pipeline bench --------------------------------------------------------------------------
TINY_BENCH = ("bench", "--rpm", "600", "--tpm", "200000", "--burst", "0.6", "--latency", "0.05",
              "--requests", "20", "--fractions", "1.0", "--concurrency", "4",
              "--target-seconds", "0.4", "--thread", "--quiet")


def test_bench_writes_a_plot_by_default_and_says_where(tmp_path):
    pytest.importorskip("matplotlib")
    result = pipeline_cli(*TINY_BENCH, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    plot = tmp_path / "pipeline-bench.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {plot}" in result.stderr
    assert "adaptive" in result.stdout  # the limiter pipeline run uses is the default kind


def test_bench_without_matplotlib_says_how_to_get_a_plot(tmp_path):
    result = pipeline_cli(*TINY_BENCH, cwd=tmp_path, without=("matplotlib",), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no plot" in result.stderr and "ratelimited-pipeline[plot]" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_bench_help_gives_the_real_default_bucket():
    shown = " ".join(pipeline_cli("bench", "--help").stdout.split())
    assert f"{DEFAULT_BURST_SECONDS:g} s of its rate" in shown
    assert "a full minute" not in shown
    assert "adaptive" in shown


# -- pipeline demo ---------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_demo_writes_into_a_temporary_folder_it_names_not_the_working_directory(tmp_path):
    work, temp = tmp_path / "checkout", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    result = pipeline_cli("demo", "--rpm", "100000", "--tpm", "10000000", "--latency", "0.01",
                          "--error-rate", "0", "--no-progress", cwd=work,
                          env_extra={"TMPDIR": str(temp)}, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = temp / "pipeline-demo" / "pipeline-demo-results.csv"
    assert expected.stat().st_size > 0
    first = result.stderr.splitlines()[0]
    assert str(expected) in first
    assert list(work.iterdir()) == []


def test_the_checkout_ignores_what_the_tools_write():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for name in ("pipeline-demo-results.csv", "pipeline-bench.png"):
        result = subprocess.run([git, "check-ignore", "-q", "--no-index", name], cwd=ROOT,
                                timeout=30)
        assert result.returncode == 0, f"{name} is not ignored"
