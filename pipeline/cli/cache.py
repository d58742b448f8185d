"""Inspect, clear or scope a response cache directory (the one `pipeline run --cache DIR` keeps).

Examples:

    pipeline cache stats answers.csv.cache        # entries and bytes on disk
    pipeline cache clear answers.csv.cache        # remove every stored response
    pipeline cache scope team-cache key           # serve each API key only its own answers

A cleared cache makes the next run send every request again (rows already in a run's
journal are still skipped: delete OUTPUT.journal, or pass --fresh, to redo them). `clear`
also removes a damaged cache (one whose database SQLite cannot read).

By default a cache serves an answer to anyone who asks the same question of the same base
URL, whatever their API key. A directory shared between keys can be scoped by key: every
run using it then mixes a fingerprint of its key (never the key) into the cache key.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["configure", "main"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``pipeline cache`` options to ``parser``."""
    parser.add_argument("action", choices=("stats", "clear", "scope"),
                        help="stats: show entries and size; clear: remove every entry (or a "
                             "damaged cache); scope: show or set whose answers it serves")
    parser.add_argument("directory", metavar="DIR", help="the cache directory")
    parser.add_argument("scope", nargs="?", choices=("key", "shared"), default=None,
                        help="with `scope`: key (each API key gets only the answers it paid "
                             "for) or shared (anyone's; the default)")


def _error(message: str) -> int:
    print(f"pipeline cache: error: {message}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    """Entry point of ``pipeline cache``."""
    from pipeline.errors import PipelineError
    from pipeline.state.cache import (
        CacheDamagedError,
        ResponseCache,
        is_response_cache,
        remove_cache_files,
        set_scope,
    )

    directory = args.directory
    if args.scope is not None and args.action != "scope":
        return _error(f"`{args.scope}` only goes with `pipeline cache scope DIR`")
    if args.action == "scope" and args.scope is not None:
        # Setting a scope may prepare a directory before its first run.
        try:
            set_scope(directory, args.scope)
        except (OSError, PipelineError) as exc:
            return _error(str(exc))
        print(f"{directory}: {_scope_words(args.scope)}")
        return 0
    # Looking must not create: `stats` or `clear` on a directory that is not a cache would
    # otherwise leave a new, empty cache.db in it.
    if not is_response_cache(directory):
        return _error(f"{directory} is not a response cache (no cache.db in it)"
                      if os.path.isdir(directory) else
                      f"{directory} is not a response cache (no such directory)")
    try:
        with ResponseCache(directory) as cache:
            if args.action == "clear":
                removed = cache.clear()
                print(f"removed {removed:,} cached responses from {directory}")
                return 0
            if args.action == "scope":
                print(f"{directory}: {_scope_words(cache.scope)}")
                return 0
            stats = cache.stats()
    except CacheDamagedError as exc:
        if args.action != "clear":
            return _error(str(exc))
        try:
            remove_cache_files(directory)
        except OSError as os_exc:
            return _error(f"cannot remove the damaged cache at {directory}: {os_exc}")
        print(f"removed the damaged response cache at {directory} (the next run asks again "
              "for what it held)")
        return 0
    except PipelineError as exc:
        return _error(str(exc))
    print(f"cache      {stats['directory']}")
    print(f"entries    {stats['entries']:,}")
    print(f"size       {stats['bytes'] / 2**20:,.1f} MiB")
    print(f"scope      {stats['scope']}")
    return 0


def _scope_words(scope: str) -> str:
    if scope == "key":
        return "scoped by API key: each key is served only the answers it paid for"
    return "shared: answers are served to any API key asking the same question"
