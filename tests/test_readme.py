"""The README's Python blocks run as written, in order, in one namespace (as in a notebook),
against the bundled simulator: the first block starts one, and OPENAI_BASE_URL points the
blocks that leave out base_url (as they would for OpenAI) at another."""

from __future__ import annotations

import ast
import asyncio
import pathlib
import re

import pytest

import pipeline
from pipeline.simulator import Simulator

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.timeout(120)
def test_the_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    assert len(BLOCKS) >= 5
    monkeypatch.chdir(tmp_path)
    pytest.importorskip("pandas")
    with Simulator(rpm=30_000, tpm=3_000_000) as provider:
        monkeypatch.setenv("OPENAI_BASE_URL", provider.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-readme")
        namespace: dict[str, object] = {}

        async def main() -> None:
            try:
                for number, block in enumerate(BLOCKS, 1):
                    # dont_inherit: not this module's `from __future__ import annotations`
                    # (a notebook cell evaluates annotations at once; msgspec relies on it).
                    code = compile(block, f"README block {number}", "exec",
                                   flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
                    result = eval(code, namespace)  # our own README, as a notebook would
                    if asyncio.iscoroutine(result):
                        await result
                # The embeddings block's `batch_size=1` job (on service.embeddings, not on
                # run): one request per row. No `dimensions`, so no row is in the cache.
                rows = namespace["rows"]
                one_each = namespace["one_each"]
                assert one_each.batch_size == 1  # type: ignore[attr-defined]
                singles = await pipeline.run(rows, one_each)  # type: ignore[arg-type]
                assert all(r.ok for r in singles)
                assert singles.status.requests == len(rows) > 1  # type: ignore[arg-type]
            finally:
                service = namespace.get("service")
                if service is not None:
                    await service.aclose()  # type: ignore[attr-defined]
                sim = namespace.get("sim")
                if sim is not None:
                    sim.stop()  # type: ignore[attr-defined]

        asyncio.run(main())
    results = namespace["results"]
    assert all(r.ok for r in results)  # type: ignore[attr-defined]
    out = namespace["out"]
    assert list(out.index) == [7, 8, 9]  # type: ignore[attr-defined]
    labels = namespace["labels"]  # the typed-columns block: every answer decoded
    assert all(r.ok and r.value is not None for r in labels)  # type: ignore[attr-defined]
    halved = namespace["halved"]  # the Batch API block: answered in a batch, not online
    assert all(r.ok and r.batch_id for r in halved)  # type: ignore[attr-defined]
    vectors = namespace["vectors"]  # the batched-embeddings block: one vector per row
    assert [len(r.embedding) for r in vectors] == [8] * len(vectors)  # type: ignore[attr-defined]
    assert vectors.status.requests < len(vectors)  # type: ignore[attr-defined]
