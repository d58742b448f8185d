"""Serve a local OpenAI-compatible API with real rate limits, latency and faults.

Prints its base URL, then serves on 127.0.0.1 until Ctrl-C or SIGTERM. Example:

    pipeline serve --rpm 500 --tpm 200000 --latency 0.2 --fault 500=0.05 --port 8000

    export OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=sk-anything

Latency: SECONDS, uniform:LOW,HIGH or lognormal:MEDIAN,SIGMA (plus --latency-per-token).
Limit shapes (--policy): second (default; a bucket of one second of the limit), minute (a
bucket of a full minute), window (a fixed window of --window seconds, reset at each boundary).
--burst SECONDS sizes the bucket in seconds of the limit, as pipeline run --burst does the
client's (--burst 6: a tenth of the minute limit at once).
Faults (--fault NAME=PROBABILITY, repeatable, or several after one --fault): 500, 502, 503,
context_length, hang, reset, truncated, malformed. --invalid-json P spoils that share of JSON
answers (structured outputs).
The request log and counters: GET /_sim/log, GET /_sim/stats.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.errors import ConfigError
from pipeline.simulator import (
    ERROR_FORMATS,
    HEADER_STYLES,
    POLICIES,
    RETRY_AFTER,
    Faults,
    Latency,
    SimulatorConfig,
    parse_model_limit,
    serve_forever,
)

__all__ = ["add_burst", "add_faults", "add_provider_modes", "burst_share", "configure", "main",
           "provider_modes"]


def _model_limit(text: str) -> tuple[str, dict[str, float | None]]:
    try:
        return parse_model_limit(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(
            f"a bucket of {text} s: give seconds of the limit in (0, 60] (60: a full minute)")
    return value


def _seconds_or_policy(text: str) -> float | str:
    return "policy" if text.lower() == "policy" else _seconds(text)


def add_burst(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, default: str,
              policy: bool = False) -> None:
    """Add ``--burst SECONDS``: the provider's bucket in seconds of its limit, the unit
    ``pipeline run --burst`` gives the client's in. ``policy``: also accept ``policy`` (the
    --policy's own bucket). :func:`burst_share` turns it into the simulator's share."""
    parser.add_argument(
        "--burst", type=_seconds_or_policy if policy else _seconds, default=None, metavar="SECONDS",
        help=f"seconds of the limit the provider's bucket holds, in (0, 60], as for pipeline "
             f"run --burst (6: a tenth of the minute limit at once; 60: all of it); {default}")


def burst_share(seconds: float | None) -> float | None:
    """The simulator's ``burst`` (a share of the minute limit) of ``--burst SECONDS``; a value
    below one second gets a note on stderr, as it once meant a share of the minute.

    >>> burst_share(6.0), burst_share(None)
    (0.1, None)
    """
    if seconds is None:
        return None
    if seconds < 1:
        print(f"note: --burst is seconds of the limit, as in pipeline run: --burst {seconds:g} "
              f"is a {seconds:g} s bucket (it once meant a share of the minute: for that, "
              f"give --burst {seconds * 60:g})", file=sys.stderr)
    return seconds / 60.0


def add_faults(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--fault NAME=P``: repeatable, several after one flag too (``--faults`` is the
    same flag, kept for old command lines and not shown in ``--help``)."""
    parser.add_argument("--fault", action="extend", nargs="+", default=[], metavar="NAME=P",
                        help="inject a fault with probability P, e.g. 500=0.01 503=0.01 "
                             "hang=0.001 (repeatable)")
    parser.add_argument("--faults", dest="fault", action="extend", nargs="+",
                        help=argparse.SUPPRESS)


def add_provider_modes(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add the provider-mode options (``--policy`` ... ``--model-limit``), shared by ``pipeline
    serve`` and ``pipeline bench``; :func:`provider_modes` reads them back."""
    add = parser.add_argument
    add("--policy", choices=POLICIES, default="second",
        help="limit shape: second (default: a bucket of 1 s of the limit), minute (a bucket "
             "of 60 s), window (a fixed window, reset at each boundary)")
    add("--window", type=float, default=60.0, metavar="SECONDS",
        help="window length for --policy window (default 60)")
    add("--model-limit", action="append", default=[], type=_model_limit,
        metavar="MODEL=RPM,TPM",
        help="limits per key and model too, e.g. gpt-4o=500,30000 (either may be empty; "
             "repeatable)")
    add("--max-in-flight", type=int, default=None, metavar="N",
        help="refuse requests while N are being answered (default: no cap)")
    add("--overload-status", type=int, choices=(429, 503), default=429,
        help="status of those refusals (default 429)")
    add("--no-headers", dest="headers", action="store_false",
        help="send no x-ratelimit-* headers")
    add("--retry-after", choices=RETRY_AFTER, default="both",
        help="retry headers on a 429: both (default: retry-after and retry-after-ms), "
             "seconds, ms, none")
    add("--error-format", choices=ERROR_FORMATS, default="openai",
        help="429 body: openai (default), azure, or text (plain 429 Too Many Requests)")


def provider_modes(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`SimulatorConfig` keyword arguments of the :func:`add_provider_modes`
    options."""
    return {"policy": args.policy, "window": args.window,
            "model_limits": dict(args.model_limit), "max_in_flight": args.max_in_flight,
            "overload_status": args.overload_status, "headers": args.headers,
            "retry_after": args.retry_after, "error_format": args.error_format}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``pipeline serve`` options to ``parser``."""
    add = parser.add_argument
    add("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)")
    add("--rpm", type=float, default=None, help="requests per minute per key (default: none)")
    add("--tpm", type=float, default=None, help="tokens per minute per key (default: none)")
    add_burst(parser, default="default: the --policy's own (1 for second, 60 for minute)")
    add_provider_modes(parser)
    add("--header-style", choices=HEADER_STYLES, default="openai",
        help="whose rate-limit headers and 429 bodies to imitate: openai (default), azure, "
             "anthropic, groq (requests per day), litellm (a proxy) or none (vLLM, Ollama)")
    add("--quota-tokens", type=int, default=None,
        help="total tokens before every request gets 429 insufficient_quota")
    add("--latency", default="0", help="SECONDS, uniform:LOW,HIGH or lognormal:MEDIAN,SIGMA")
    add("--latency-per-token", type=float, default=0.0,
        help="extra seconds per output token (default 0)")
    add_faults(parser)
    add("--invalid-json", type=float, default=0.0, metavar="P",
        help="probability that an answer asked for JSON (response_format json_schema or "
             "json_object) is invalid: wrapped in prose, cut short, a required field missing "
             "or of the wrong type (default 0)")
    add("--seed", type=int, default=0, help="seed of the latency and fault draws (default 0)")
    add("--api-key", action="append", default=[],
        help="accept only this bearer key (repeatable; default: any key)")
    add("--context-window", type=int, default=128_000,
        help="prompt + max_tokens above this get 400 context_length_exceeded (default 128000)")
    add("--default-max-tokens", type=int, default=1024,
        help="max_tokens assumed for the token cost of a chat request without one")
    add("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
        help="event loop: uvloop when installed (auto, the default; ~30%% less CPU per request)")


def _config(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        rpm=args.rpm, tpm=args.tpm, burst=burst_share(args.burst), quota_tokens=args.quota_tokens,
        latency=Latency.parse(args.latency, per_output_token=args.latency_per_token),
        faults=Faults.parse(args.fault), seed=args.seed, api_keys=tuple(args.api_key),
        context_window=args.context_window, default_max_tokens=args.default_max_tokens,
        invalid_json=args.invalid_json, header_style=args.header_style,
        **provider_modes(args))


def main(args: argparse.Namespace) -> int:
    """Run ``pipeline serve``; returns the exit code."""
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"pipeline serve: error: {exc}", file=sys.stderr)
        return 2
    return serve_forever(config, args.port, loop=args.loop)
