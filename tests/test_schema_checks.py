"""The schema checks run in a plain clone too: without ../shared/openai-openapi beside the
checkout, ``validate_schema`` and ``spec_fields`` use the ``openai`` SDK's own types instead
of skipping (issue 13: 51 tests skipped in a plain clone)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Every test file that checks bodies against the spec.
SPEC_USERS = ["test_schemas.py", "test_payloads.py", "test_io.py", "test_simulator.py",
              "test_simulator_limits.py"]


def test_the_spec_checks_run_without_the_openapi_document(tmp_path):
    pytest.importorskip("openai")
    clone = tmp_path / "clone"  # no ../shared beside it, as in a fresh clone anywhere
    shutil.copytree(ROOT / "tests", clone / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    shutil.copy(ROOT / "pyproject.toml", clone)
    assert not (clone.parent / "shared").exists()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         *[f"tests/{name}" for name in SPEC_USERS]],
        cwd=clone, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")})
    tail = result.stdout[-3000:]
    assert result.returncode == 0, tail
    assert "OpenAPI spec not found" not in result.stdout, tail
    assert "skipped" not in tail.splitlines()[-1], tail


def test_the_sdk_checks_catch_what_the_spec_would(request):
    pytest.importorskip("openai")
    sys.path.insert(0, str(ROOT / "tests"))
    request.addfinalizer(lambda: sys.path.remove(str(ROOT / "tests")))
    import _sdk_schemas as sdk

    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert sdk.validate(chat, "CreateChatCompletionRequest") == []
    assert sdk.validate({**chat, "temperatur": 1}, "CreateChatCompletionRequest")
    assert sdk.validate({"model": "m", "messages": [{"role": "robot", "content": "x"}]},
                        "CreateChatCompletionRequest")
    assert sdk.validate({"model": "e", "input": [[1, 2], [3]]}, "CreateEmbeddingRequest") == []
    assert sdk.validate({"model": "e", "input": [[1, "a"]]}, "CreateEmbeddingRequest")
    assert sdk.validate({"error": {"type": "x"}}, "ErrorResponse")
    assert sdk.validate({"object": "list", "data": [{"id": "m"}]}, "ListModelsResponse")
    assert {"model", "input", "dimensions"} <= sdk.fields("CreateEmbeddingRequest")
