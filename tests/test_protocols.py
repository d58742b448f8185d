"""The package's own classes fit the structural types of ``pipeline.core.protocols`` (what
the stages, the estimate and the Batch API runner take), as a type checker sees them: a
method renamed or retyped on one side is a failure here, not a silent ``Any``."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

mypy_api = pytest.importorskip("mypy.api", reason="mypy is a dev dependency")

ROOT = pathlib.Path(__file__).resolve().parents[1]

FITS = textwrap.dedent("""
    from pipeline.core.protocols import (
        BuilderLike, EndpointLike, Grant, JobLike, LeasingLimiter, LimiterLike, ServiceLike,
    )
    from pipeline.http import Endpoint, Job, JSONService, OpenAIService
    from pipeline.http.deployments import RoutedService
    from pipeline.limiter import (
        AdaptiveLimiter, IntervalLimiter, Lease, RedisLimiter, TokenBucketLimiter,
    )
    from pipeline.testing import InstantService

    def fits(job: Job, openai: OpenAIService, plain: JSONService, routed: RoutedService,
             instant: InstantService, endpoint: Endpoint, adaptive: AdaptiveLimiter,
             bucket: TokenBucketLimiter, interval: IntervalLimiter, redis: RedisLimiter,
             lease: Lease) -> None:
        jobs: list[JobLike] = [job]
        services: list[ServiceLike] = [openai, plain, routed, instant]
        endpoints: list[EndpointLike] = [endpoint]
        builders: list[BuilderLike] = [job.builder]
        limiters: list[LeasingLimiter] = [adaptive, bucket, interval, redis]
        plain_limiters: list[LimiterLike] = [endpoint.limiter]
        grants: list[Grant] = [lease]
""")

MISSING = textwrap.dedent("""
    from pipeline.core.protocols import JobLike
    from pipeline.http import Endpoint

    def wrong(endpoint: Endpoint) -> JobLike:
        return endpoint
""")


def _mypy(program: str, where: pathlib.Path) -> tuple[str, int]:
    # The project's settings (strict, 3.11), errors of this file only; a cache of its own, shared
    # by the tests of one session, so the package is analysed once.
    path = where / "fits.py"
    path.write_text(program, encoding="utf-8")
    out, err, status = mypy_api.run([
        "--strict", "--ignore-missing-imports", "--python-version", "3.11",
        "--follow-imports", "silent", "--no-error-summary",
        "--cache-dir", str(where.parent / "mypy-cache"), str(path)])
    return out + err, status


@pytest.mark.timeout(300)
def test_the_package_classes_fit_the_protocols(tmp_path: pathlib.Path) -> None:
    out, status = _mypy(FITS, tmp_path)
    assert status == 0, out


@pytest.mark.timeout(300)
def test_a_class_without_the_fields_does_not_fit(tmp_path: pathlib.Path) -> None:
    out, status = _mypy(MISSING, tmp_path)
    assert status == 1 and "JobLike" in out, out


@pytest.mark.timeout(300)
def test_mypy_finds_no_errors_in_the_package() -> None:
    # What `mypy pipeline` reports (strict, as pyproject.toml configures it) is held at zero,
    # so an error cannot creep back in unnoticed. It uses the project's .mypy_cache: under a
    # second warm, about 8 s cold (a fresh clone), so not marked slow.
    done = subprocess.run([sys.executable, "-m", "mypy", "pipeline"], cwd=ROOT,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0 and "Success: no issues found" in done.stdout, \
        done.stdout + done.stderr
