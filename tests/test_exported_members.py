"""The public names: each package's ``__all__`` is what it exports, every name in it resolves
and says what it is, and the top-level names are the same objects as in their packages."""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

import pipeline

PACKAGES = ["pipeline", "pipeline.limiter", "pipeline.http", "pipeline.stages",
            "pipeline.payloads", "pipeline.simulator", "pipeline.bench", "pipeline.io",
            "pipeline.errors", "pipeline.options", "pipeline.testing", "pipeline.ray_data",
            "pipeline.batch_api", "pipeline.schema"]
# Packages whose namespace holds nothing public beyond __all__ (and their submodules).
CLEAN = ["pipeline", "pipeline.limiter", "pipeline.http", "pipeline.stages",
         "pipeline.payloads", "pipeline.simulator", "pipeline.bench", "pipeline.schema"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves_once_and_says_what_it_is(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "a name twice in __all__"
    for member in exported:
        assert hasattr(module, member), f"{name}.__all__ names {member!r}, which is not there"
        value = getattr(module, member)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{member} has no docstring"
            assert value.__module__.startswith("pipeline"), (name, member, value.__module__)


@pytest.mark.parametrize("name", CLEAN)
def test_a_package_exports_what_it_means_to(name: str) -> None:
    module = importlib.import_module(name)
    public = {n for n, v in vars(module).items()
              if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    stray = sorted(n for n in public - set(module.__all__) if n != "annotations")
    assert not stray, f"{name} has public names outside __all__: {stray}"


def test_top_level_names_are_the_packages_own_objects() -> None:
    for member in pipeline.__all__:
        value = getattr(pipeline, member)
        home = getattr(value, "__module__", "")
        if not home.startswith("pipeline.") or isinstance(value, types.ModuleType):
            continue
        package = importlib.import_module(home)
        assert getattr(package, getattr(value, "__name__", member), value) is value, member
