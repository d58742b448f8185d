"""Inspect or clear a response cache directory (the one `pipeline run --cache DIR` keeps).

Examples:

    pipeline cache stats answers.csv.cache     # entries and bytes on disk
    pipeline cache clear answers.csv.cache     # remove every stored response

A cleared cache makes the next run send every request again (rows already in a run's
journal are still skipped: delete OUTPUT.journal, or pass --fresh, to redo them).
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["configure", "main"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``pipeline cache`` options to ``parser``."""
    parser.add_argument("action", choices=("stats", "clear"),
                        help="stats: show entries and size; clear: remove every entry")
    parser.add_argument("directory", metavar="DIR", help="the cache directory")


def main(args: argparse.Namespace) -> int:
    """Entry point of ``pipeline cache``."""
    from pipeline.cache import ResponseCache
    from pipeline.errors import PipelineError

    directory = args.directory
    if not os.path.isdir(directory):
        print(f"pipeline cache: error: no cache directory at {directory!r}", file=sys.stderr)
        return 2
    try:
        with ResponseCache(directory) as cache:
            if args.action == "clear":
                removed = cache.clear()
                print(f"removed {removed:,} cached responses from {directory}")
                return 0
            stats = cache.stats()
    except PipelineError as exc:
        print(f"pipeline cache: error: {exc}", file=sys.stderr)
        return 2
    print(f"cache      {stats['directory']}")
    print(f"entries    {stats['entries']:,}")
    print(f"size       {stats['bytes'] / 2**20:,.1f} MiB")
    return 0
