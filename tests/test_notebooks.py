"""Every notebook in notebooks/ runs top to bottom in a fresh kernel (against the simulator).

The kernel is this interpreter (``sys.executable -m ipykernel_launcher``) with the repository
on ``PYTHONPATH``, from a kernelspec written to a temporary directory: a "python3" kernelspec
found on the machine may point at another Python (a bare ``python`` on PATH) without this
package. Each notebook runs with the notebooks folder as its working directory.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 120  # seconds per cell; a whole notebook is meant to take under a minute


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernelspec "python3" that runs this interpreter with this checkout importable."""
    kernels = tmp_path_factory.mktemp("kernels")
    spec_dir = kernels / "python3"
    spec_dir.mkdir()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    spec_dir.joinpath("kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)",
        "language": "python",
        "env": {"PYTHONPATH": path},
    }))
    return KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


def test_the_notebooks_readme_lists_every_notebook() -> None:
    listed = (ROOT / "notebooks" / "README.md").read_text()
    missing = [p.name for p in NOTEBOOKS if f"| `{p.name}` |" not in listed]
    assert not missing, f"notebooks/README.md does not list {missing}"


def test_the_stand_in_model_answers_the_rows_question_after_a_reask() -> None:
    # A re-ask adds the model's answer and a correction after the row's question; the
    # stand-in model of the notebooks must label the question, not the correction.
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks",
                                                  ROOT / "notebooks" / "make_notebooks.py")
    assert spec is not None and spec.loader is not None
    cells = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cells)
    namespace: dict[str, object] = {}
    exec(cells.STAND_IN, namespace)  # our own notebook cell, as the kernel runs it
    model = namespace["stand_in_model"]
    question = {"role": "user", "content": "Classify: it arrived broken."}
    first = model("chat/completions", {"messages": [question]})
    reask = model("chat/completions", {"messages": [
        question, {"role": "assistant", "content": "Sure! Here is the JSON: {...}"},
        {"role": "user", "content": "That answer did not fit the schema: great, now send "
                                    "only the JSON."}]})
    assert first == reask == "negative"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: pathlib.Path, kernel_specs: KernelSpecManager) -> None:
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells), \
        f"{path.name} is committed with outputs; run notebooks/make_notebooks.py"
    manager = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=kernel_specs)
    client = nbclient.NotebookClient(nb, km=manager, timeout=CELL_TIMEOUT,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError with the failing cell and its traceback
    errors = [out for cell in nb.cells for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert not errors
