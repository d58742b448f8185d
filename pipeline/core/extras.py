"""Optional packages: which extra of this distribution brings each one, and one clear error
when one is missing.

The library runs on its core dependencies alone; Parquet, pandas, Polars, plots and the faster
transport come with extras. Code that needs one calls :func:`require` *before* it does any
work it cannot undo (above all before the first paid request), so a missing package is one
line naming what to install, never a traceback after the money is spent:

>>> require("json", feature="reading JSON").__name__
'json'
>>> require("no_such_module_here", feature="plotting", extra="plot")
Traceback (most recent call last):
...
pipeline.core.extras.MissingExtraError: plotting needs no_such_module_here, which is not \
installed: pip install "ratelimited-pipeline[plot]"
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from pipeline.errors import ConfigError

__all__ = ["DISTRIBUTION", "EXTRAS", "MissingExtraError", "install_hint", "require"]

#: This package's name on PyPI (``pipeline`` there is an unrelated project); the import name
#: and the command are ``pipeline``.
DISTRIBUTION = "ratelimited-pipeline"

#: Top-level module -> the extra (in pyproject.toml) that installs it.
EXTRAS: dict[str, str] = {
    "pyarrow": "parquet",
    "pandas": "pandas",
    "polars": "polars",
    "matplotlib": "plot",
    "aiohttp": "fast",
    "httpx_aiohttp": "fast",
    "uvloop": "fast",
}


class MissingExtraError(ConfigError, ModuleNotFoundError):
    """An optional package a feature needs is not installed; the message says what to install.

    It is a :class:`~pipeline.errors.ConfigError` (the command line exits with code 2 on it)
    and a :class:`ModuleNotFoundError`, so ``except ImportError`` catches it too.
    ``name`` is the missing module, ``extra`` the extra that brings it.
    """

    def __init__(self, message: str, *, name: str | None = None, extra: str | None = None
                 ) -> None:
        ModuleNotFoundError.__init__(self, message, name=name)
        self.extra = extra

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (str(self), self.name, self.extra)


def _rebuild(message: str, name: str | None, extra: str | None) -> MissingExtraError:
    return MissingExtraError(message, name=name, extra=extra)


def install_hint(extra: str) -> str:
    """The command that installs ``extra``.

    >>> install_hint("pandas")
    'pip install "ratelimited-pipeline[pandas]"'
    """
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def require(module: str, *, feature: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` (``"pyarrow.parquet"``), or raise :class:`MissingExtraError`.

    ``feature`` says what needs it, in the user's words (``"writing Parquet"``); ``extra``
    defaults to the one :data:`EXTRAS` lists for the module's top-level package.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        missing = (exc.name or top).split(".")[0]
        if missing != top:
            raise  # the package is there but broken (one of *its* imports failed): show that
        extra = extra or EXTRAS.get(top)
        how = install_hint(extra) if extra else f"pip install {top}"
        raise MissingExtraError(f"{feature} needs {top}, which is not installed: {how}",
                                name=top, extra=extra) from None
