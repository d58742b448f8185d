"""The ``pipeline`` command line.

Each subcommand lives in its own module, which exposes ``configure(parser)`` (add arguments,
set the help text) and ``main(args) -> int`` (run, return the exit code). They are imported
only when used, so ``pipeline --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "version"]

# name -> (module, one-line help). A module that is not there yet is left out of the menu.
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pipeline.cli.demo", "run the main job on a bundled dataset against the simulator"),
    "run": ("pipeline.cli.run", "send every row of a file through an API, with resume"),
    "serve": ("pipeline.cli.serve", "start the OpenAI-compatible simulator"),
    "bench": ("pipeline.cli.bench", "benchmark limiter settings against the simulator"),
    "cache": ("pipeline.cli.cache", "inspect or clear a response cache"),
}


def version() -> str:
    """The installed version of this distribution (``pipeline.__version__`` when it runs from
    a checkout that is not installed), what ``pipeline --version`` prints.

    >>> version().split(".")[0].isdigit()
    True
    """
    from importlib import metadata

    from pipeline.core.extras import DISTRIBUTION

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        import pipeline

        return pipeline.__version__


class _PrintVersion(argparse.Action):
    """``--version``: looked up only when asked for (reading the metadata costs milliseconds)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None
                 ) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                         nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from pipeline.core.extras import DISTRIBUTION

        print(f"pipeline {version()} ({DISTRIBUTION})")  # stdout, as git and pip do
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Call rate-limited APIs at scale. Start with: pipeline demo",
    )
    parser.add_argument("--version", action=_PrintVersion, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in _COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # not built yet
            raise
        command = sub.add_parser(
            name, help=help_text, description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(command)
        command.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pipeline`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "_main", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
