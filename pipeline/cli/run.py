"""Send every row of a file through an OpenAI-compatible API and write the answers, resumably.

Example:

    export OPENAI_API_KEY=sk-...
    pipeline run reviews.csv -o answers.csv --model gpt-4o-mini \\
        --template "Classify the sentiment of this review as positive, negative or neutral: {text}"

Formats come from the file extensions: .csv, .tsv, .parquet, .jsonl. The output holds the
input's columns plus answer (or embedding), status, error, tokens and latency, one row per
input row in input order. A JSONL input of OpenAI Batch lines ({"custom_id", "method", "url",
"body"}) or of request bodies (one per line, optional "metadata"; the endpoint is the one
the bodies are for) is sent as it is; a Batch input with a .jsonl output is written in the
Batch output format, and --output-format cookbook writes the OpenAI cookbook's
[request, response, metadata] lines.

--schema FILE.json (a JSON Schema of an object) asks for structured answers: each is
decoded and checked, its fields become typed columns of the output, and an answer that does
not fit is asked again up to --reasks times (default 2) before its row fails with the reason.

Add --dry-run to see first what the run would send and cost (rows, estimated tokens, rows
the cache answers, the time --rpm/--tpm allow, the cost range): nothing is sent. Costs use
OpenAI's prices as published in 2025; --prices FILE.json gives yours.

Interrupted (Ctrl-C, a crash, kill -9)? Run the same command again: rows already answered
(kept in OUTPUT.journal) are not sent again, and failed rows are retried. A first Ctrl-C
stops sending and waits for the requests in flight (at most the attempt timeout), so the
answers paid for are kept; a second Ctrl-C abandons them.

One run per output: a second run on the same output stops at once, naming the one running
(or waits for it with --wait-for-lock). An existing output that has no journal of this tool
beside it is never replaced without --overwrite. The API key comes only from
OPENAI_API_KEY (a --dry-run needs none), the server from --base-url or OPENAI_BASE_URL.

Several servers: --base-url A --base-url B spreads the rows over both (same key and model;
--rpm/--tpm are each one's ceiling), at the sum of their quotas; --deployments FILE gives
each its own key, model names and limits:

    # deployments.toml (keys by environment variable name: the file holds none)
    [[deployments]]
    name = "east"
    base_url = "https://east.openai.azure.com"
    api_key_env = "AZURE_EAST_KEY"
    azure_api_version = "2024-10-21"
    models = { "gpt-4o-mini" = "mini-east" }
    rpm = 3000

    [[deployments]]
    name = "openai"
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"

A deployment that stops answering or refuses its key is left out (one line says so) and
tried again later; its rows go to the others.

Exit codes: 0 every row answered, 1 some rows failed, 2 bad arguments or input, an output
that cannot be written (a read-only directory, a full disk), another run on the output or a
--shared-limit Redis that cannot be used (checked before anything is sent), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, TextIO

from pipeline.errors import PipelineError
from pipeline.io import OUTPUT_FORMATS
from pipeline.options import DEFAULTS

if TYPE_CHECKING:
    from pipeline.http import Job, OpenAIService
    from pipeline.http.deployments import Deployment, RoutedService
    from pipeline.io import Source
    from pipeline.io.resume import RunControl
    from pipeline.schema import OutputSchema
    from pipeline.state.status import StatusTracker

__all__ = ["build_job", "configure", "execute", "load_schema", "main"]

_DEFAULT_MODELS = {"chat": "gpt-4o-mini", "embeddings": "text-embedding-3-small",
                   "completions": "gpt-3.5-turbo-instruct"}
_PATHS = {"chat": "chat/completions", "embeddings": "embeddings", "completions": "completions"}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``pipeline run`` options to ``parser``."""
    add = parser.add_argument
    add("input", help="input file: .csv, .tsv, .parquet or .jsonl")
    add("-o", "--output", required=True, help="results file: .csv, .tsv, .parquet or .jsonl")
    add("--output-format", choices=OUTPUT_FORMATS, default=None,
        help="how to write the results (default: from the output's extension; the Batch "
             "output format for a Batch input). cookbook: the OpenAI cookbook's "
             "[request, response, metadata] JSONL lines")
    add("--encoding", metavar="ENC", default=None,
        help="text encoding of a CSV, TSV or JSONL input (default utf-8; e.g. cp1252, latin-1)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--template",
                      help='prompt template over the columns, e.g. "Summarize: {text}"')
    what.add_argument("--column", help="column holding what to send: ready chat messages "
                      "(a JSON list), or the text for embeddings/completions")
    what.add_argument("--request-column", metavar="COLUMN",
                      help="column holding ready request bodies (JSON objects), sent as they are")
    add("--system", help="system message template (chat)")
    add("--schema", metavar="FILE.json", default=None,
        help="JSON Schema of the answer (an object): structured answers, one typed column "
        "per field (chat only)")
    add("--reasks", type=int, default=DEFAULTS.reasks, metavar="N",
        help="with --schema: times an answer that does not fit is asked again "
        f"(default {DEFAULTS.reasks})")
    add("--endpoint", choices=sorted(_PATHS), default=None,
        help="API endpoint (default: chat, or the one the input's request bodies are for)")
    add("--model", help="model (default: gpt-4o-mini; text-embedding-3-small for embeddings)")
    add("--max-tokens", type=int, default=None, help="most tokens per answer")
    add("--temperature", type=float, default=None,
        help="sampling temperature, 0 to 2 (default: the model's; 0 for repeatable answers)")
    add("--base-url", action="append", default=None,
        help="API base URL (default: OPENAI_BASE_URL, else OpenAI); given more than once, the "
        "rows are spread over those servers (same key and model) at the sum of their quotas, "
        "and one that goes down or refuses the key is left out while the others go on")
    add("--deployments", default=None, metavar="FILE",
        help="a TOML or JSON file of deployments to spread the rows over, each with its own "
        "base_url, key (api_key_env: the name of the environment variable holding it), model "
        "names, rpm/tpm and weight (see the README, 'Several deployments')")
    add("--rpm", type=float, default=None,
        help="requests per minute your key allows: a ceiling (default: found out from the "
        "provider's headers and 429s)")
    add("--tpm", type=float, default=None,
        help="tokens per minute your key allows: a ceiling (default: found out as --rpm)")
    add("--no-adaptive", action="store_true",
        help="send at exactly --rpm/--tpm, never slower after 429s (for comparison)")
    add("--burst", type=float, default=None, metavar="SECONDS",
        help="seconds of the rate sent at once after a pause (default 0.5: a provider that "
        "enforces its minute limit per second takes that)")
    add("--shared-limit", default=None, metavar="redis://HOST:PORT/DB",
        help="share --rpm/--tpm with every process and machine using this Redis "
        "(default: PIPELINE_LIMITER_URL; needs pip install \"ratelimited-pipeline[redis]\"); "
        "checked before anything is sent: one that cannot be used stops the run (exit 2)")
    add("--provider", default=None, metavar="NAME",
        help="how the server states its limits: openai, azure, anthropic, groq, together, "
        "fireworks, litellm, none or auto (default: chosen by the --base-url host; name it "
        "for a LiteLLM proxy on localhost or Azure behind a gateway)")
    add("--concurrency", type=int, default=DEFAULTS.concurrency,
        help=f"requests in flight at most (default {DEFAULTS.concurrency})")
    add("--batch-size", type=int, default=None, metavar="N",
        help="embeddings: rows per request at most (default: as many as fit the limits, up "
             "to 2,048 inputs and 300,000 tokens; 1 sends one row per request)")
    add("--attempts", "--max-attempts", dest="attempts", type=int, default=DEFAULTS.attempts,
        metavar="N", help=f"attempts per row on errors, run()'s attempts= (default "
        f"{DEFAULTS.attempts}); 429 rate limits do not count")
    add("--max-wait", type=float, default=DEFAULTS.max_wait, metavar="SECONDS",
        help="how long a row may be held back by 429s before it fails "
        f"(default {DEFAULTS.max_wait:g})")
    add("--timeout", type=float, default=None, metavar="SECONDS",
        help="seconds one attempt may take (default: 6x the slowest answers seen so far, "
        "at least 10 s, once 20 have arrived)")
    add("--cache", default=None, metavar="DIR",
        help="response cache directory (default: OUTPUT.cache next to the output)")
    add("--no-cache", action="store_true", help="keep no response cache")
    add("--fresh", action="store_true", help="ignore an earlier run's journal (start over)")
    add("--batch-api", action="store_true",
        help="send the rows through the provider's Batch API: half the price, answers within "
        "24 h; interrupted, the batches go on and the same command picks them up "
        "(needs the cache; --dry-run shows both costs)")
    add("--batch-poll", type=float, default=5.0, metavar="SECONDS",
        help="with --batch-api: seconds between looks at a batch at first (default 5; it "
        "grows to 60 while nothing changes)")
    add("--stage", action="append", default=None, metavar="MODULE:NAME",
        help="your own stage (a Stage instance or class, or a function of one record) from "
        "a module importable here (the working directory included), run on every answer; "
        "what it leaves on record.data becomes columns (repeatable, in order)")
    add("--overwrite", action="store_true",
        help="replace an existing output that has no journal of this tool beside it "
        "(without it, such a file is never overwritten)")
    add("--wait-for-lock", action="store_true",
        help="when another run is writing the same output, wait for it to end, then resume "
        "from its journal (default: stop at once, exit 2)")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--dry-run", action="store_true",
        help="send nothing: print the rows, estimated tokens, rows the cache answers, the "
        "time --rpm/--tpm allow and the cost range, then exit 0")
    add("--prices", default=None, metavar="FILE.json",
        help='USD per 1M tokens per model, over the dated defaults: {"MODEL": {"input": '
        '0.15, "output": 0.60}} (default: OpenAI\'s published 2025 prices)')
    add("--transport", choices=("auto", "httpx", "aiohttp"), default="auto",
        help="HTTP transport (auto: aiohttp when installed, it is faster)")


def _transport(choice: str) -> Literal["httpx", "aiohttp"]:
    if choice in ("httpx", "aiohttp"):
        return choice  # type: ignore[return-value]
    found = importlib.util.find_spec("httpx_aiohttp") and importlib.util.find_spec("aiohttp")
    return "aiohttp" if found else "httpx"


def build_job(service: OpenAIService | RoutedService, args: argparse.Namespace,
              source: Source) -> Job:
    """The job the arguments describe, for ``source`` (a :class:`~pipeline.io.Source`)."""
    endpoint = args.endpoint
    if endpoint is None:
        reversed_paths = {v: k for k, v in _PATHS.items()}
        endpoint = reversed_paths.get(source.endpoint or "", "chat")
    if getattr(args, "batch_size", None) is not None and endpoint != "embeddings":
        raise PipelineError("--batch-size is for embeddings (--endpoint embeddings): chat and "
                            "completions requests answer one row each")
    config: dict[str, Any] = {"model": args.model or _DEFAULT_MODELS[endpoint]}
    if args.max_tokens is not None:
        config["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        config["temperature"] = args.temperature
    template, column = args.template, args.column
    if endpoint == "chat":
        if args.system:
            config["system"] = args.system
        if getattr(args, "schema", None) is not None:
            config["schema"] = load_schema(args.schema)
        if template is not None:
            config["prompt"] = template
        if column is not None:
            config["messages_column"] = column
        elif template is None and not source.ready_requests and not args.system and \
                "messages" not in (source.columns or ["messages"]):
            raise PipelineError("say what to send: --template \"...{column}...\" or "
                                "--column COLUMN (a column of chat messages)")
        return service.chat(**config)
    if endpoint == "embeddings":
        if template is not None:
            config["input"] = template
        if column is not None:
            config["input_column"] = column
        return service.embeddings(batch_size=getattr(args, "batch_size", None), **config)
    if template is not None:
        config["prompt"] = template
    if column is not None:
        config["prompt_column"] = column
    return service.completion(**config)


def load_schema(path: str) -> OutputSchema[Any]:
    """The :class:`~pipeline.schema.OutputSchema` in a JSON Schema file; a
    :class:`~pipeline.errors.PipelineError` with one clear line when it cannot be used."""
    import json

    from pipeline.schema import OutputSchema

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise PipelineError(f"--schema {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise PipelineError(f"--schema {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PipelineError(f"--schema {path}: a JSON Schema is an object, got "
                            f"{type(data).__name__}")
    try:
        return OutputSchema.of(data)
    except PipelineError as exc:
        raise PipelineError(f"--schema {path}: {exc}") from None


def load_stages(specs: list[str] | None) -> list[Any]:
    """The stages ``--stage MODULE:NAME`` names, imported (the working directory is on the
    path, as for ``python -m``): a :class:`~pipeline.stages.Stage` class is made with no
    arguments; an instance or a function of one record is taken as it is. A
    :class:`~pipeline.errors.PipelineError` with one clear line when one cannot be used."""
    import importlib

    from pipeline.stages import Stage, user_stages

    found: list[Any] = []
    for spec in specs or ():
        module_name, _, name = spec.partition(":")
        if not module_name or not name:
            raise PipelineError(f"--stage {spec!r}: write MODULE:NAME, e.g. --stage "
                                "scoring:Score (a file scoring.py here)")
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PipelineError(f"--stage {spec}: cannot import {module_name!r} ({exc})"
                                ) from None
        except Exception as exc:  # the user's module failed while it ran
            raise PipelineError(f"--stage {spec}: importing {module_name!r} raised "
                                f"{type(exc).__name__}: {exc}") from None
        target = module
        for part in name.split("."):
            if not hasattr(target, part):
                raise PipelineError(f"--stage {spec}: {module_name!r} has no {name!r}")
            target = getattr(target, part)
        if isinstance(target, type) and issubclass(target, Stage):
            try:
                target = target()
            except TypeError as exc:
                raise PipelineError(f"--stage {spec}: {name} needs arguments ({exc}); give "
                                    "an instance made in the module instead") from None
        found.append(target)
    try:
        user_stages(found)  # the same check run() makes: a stage or a function of a record
    except PipelineError as exc:
        raise PipelineError(f"--stage: {exc}") from None
    return found


def _deployments(args: argparse.Namespace) -> list[Deployment] | None:
    """The deployments to spread the rows over (``--deployments``, ``--base-url`` more than
    once), or ``None`` for one server."""
    from pipeline.http.deployments import Deployment, load_deployments

    base_urls = args.base_url or []
    path = getattr(args, "deployments", None)
    if path is not None:
        if base_urls:
            raise PipelineError("give --deployments FILE or --base-url, not both (put every "
                                "server in the file)")
        return load_deployments(path)
    if len(base_urls) > 1:
        return [Deployment(base_url=url) for url in base_urls]
    return None


def _check_args(args: argparse.Namespace) -> None:
    for flag in ("rpm", "tpm", "burst", "timeout"):
        value = getattr(args, flag)
        if value is not None and not (value > 0 and value != float("inf")):
            raise PipelineError(f"--{flag} must be a positive number, got {value:g} (leave "
                                f"it out{' for no limit' if flag in ('rpm', 'tpm') else ''})")
    if args.max_wait < 0:
        raise PipelineError(f"--max-wait must be >= 0 seconds, got {args.max_wait:g}")
    if args.no_adaptive and args.rpm is None and args.tpm is None:
        raise PipelineError("--no-adaptive needs --rpm and/or --tpm: without them nothing "
                            "would limit the rate at all")
    provider = getattr(args, "provider", None)
    if provider is not None:
        from pipeline.http.signals import PROVIDERS

        if provider.strip().lower() not in PROVIDERS:
            raise PipelineError(f"--provider {provider!r} is not one this knows; use one of: "
                                f"{', '.join(PROVIDERS)}")
    if args.concurrency < 1:
        raise PipelineError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.attempts < 1:
        raise PipelineError(f"--attempts must be at least 1, got {args.attempts}")
    if getattr(args, "reasks", 2) < 0:
        raise PipelineError(f"--reasks must be at least 0, got {args.reasks}")
    if getattr(args, "schema", None) is not None:
        if args.endpoint not in (None, "chat"):
            raise PipelineError("--schema is for chat answers, not --endpoint "
                                f"{args.endpoint}")
        load_schema(args.schema)  # a bad schema: one line, before anything is read or sent
    if getattr(args, "stage", None):
        if getattr(args, "batch_api", False):
            raise PipelineError("--stage runs on rows sent one request each; --batch-api "
                                "sends them through the Batch API: give one or the other")
        load_stages(args.stage)  # an import error: one line, before anything is sent
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise PipelineError("the output must be another file than the input")


async def execute(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run the job the parsed arguments describe; return the exit code."""
    from pipeline import io
    from pipeline.adapters.estimate import estimate
    from pipeline.http import OpenAIService
    from pipeline.io import resume
    from pipeline.pricing.cost import Prices
    from pipeline.state.status import StatusTracker

    out = out if out is not None else sys.stderr
    _check_args(args)
    endpoint = _PATHS[args.endpoint] if args.endpoint else None
    source = io.read(args.input, request_column=args.request_column, endpoint=endpoint,
                     encoding=args.encoding)
    output_format = io.check_output(args.output, args.output_format, source)
    shared = args.shared_limit if args.shared_limit is not None else \
        os.environ.get("PIPELINE_LIMITER_URL")
    deployments = _deployments(args)
    redis_urls = {shared} if shared else set()
    redis_urls.update(d.shared_limit for d in deployments or () if d.shared_limit)
    if redis_urls and not args.dry_run:
        # A Redis that cannot be used (a typo, no password, a port nothing listens on) is a
        # mistake to say now, with exit 2, not an outage to run through at a share of the
        # rate; nothing is opened or sent before this.
        from pipeline.limiter import check_redis

        for url in sorted(redis_urls):
            await check_redis(url)
    cache = None if args.no_cache else (args.cache or f"{args.output}.cache")
    status = StatusTracker()
    status.prices = Prices.from_file(args.prices) if args.prices else None
    # A dry run sends nothing, so it needs no key (a placeholder stands in for a missing one).
    dry_key = "dry-run-no-key" if args.dry_run and not os.environ.get("OPENAI_API_KEY") \
        else None
    options: dict[str, Any] = {
        "rpm": args.rpm, "tpm": args.tpm, "adaptive": not args.no_adaptive,
        "burst": args.burst, "limiter": args.shared_limit,
        "transport": _transport(args.transport), "provider": getattr(args, "provider", None)}
    service: OpenAIService | RoutedService
    if deployments is not None:
        from pipeline.http.deployments import RoutedService

        if dry_key is not None:  # nothing is sent: a placeholder for the keys not set
            deployments = [replace(d, api_key=dry_key, api_key_env=None)
                           if d.api_key is None else d for d in deployments]
        service = RoutedService(deployments, **options)
    else:
        base_urls = args.base_url or [None]
        service = OpenAIService(base_url=base_urls[0], api_key=dry_key, **options)
    if not os.environ.get("OPENAI_API_KEY") and not args.dry_run:
        print("note: OPENAI_API_KEY is not set: requests go out without a key (fine for a "
              "local server; a hosted API will answer 401 and the run will stop)", file=out)
    control = resume.RunControl()
    async with service:
        job = build_job(service, args, source)
        # (the builders of service.chat() and friends have a config; PayloadBuilder does not)
        config: Mapping[str, Any] = getattr(job.builder, "config", {})
        model = "from the file" if source.ready_requests else config.get("model")
        if isinstance(service, OpenAIService):
            where = service.base_url
        else:
            where = f"{len(service.deployments)} deployments: {service.server_name}"
        print(f"pipeline run: {args.input} -> {args.output} ({job.path} at "
              f"{where}, model {model})", file=out)
        if args.dry_run:  # before the run's first request: nothing is sent
            done = set() if args.fresh else resume.answered(
                source, args.output, job, output_format=args.output_format)
            print(estimate(source, job, cache=cache, prices=status.prices, answered=done),
                  file=sys.stdout)
            return 0
        if getattr(args, "batch_api", False) and cache is None:
            raise PipelineError("--batch-api needs the cache (leave out --no-cache): it keeps "
                                "the batches' ids and answers for the rerun")
        with _ctrl_c_stops(control, out):
            try:
                summary = await resume.run_file(
                    source, args.output, job, cache=cache, concurrency=args.concurrency,
                    attempts=args.attempts, progress=not args.no_progress,
                    resume=not args.fresh, output_format=output_format,
                    max_wait=args.max_wait, timeout=args.timeout, status=status,
                    reasks=getattr(args, "reasks", 2), overwrite=args.overwrite,
                    wait=args.wait_for_lock, control=control,
                    batch_api=getattr(args, "batch_api", False),
                    batch_poll=getattr(args, "batch_poll", 5.0),
                    stages=load_stages(getattr(args, "stage", None)))
            except resume.JournalBusyError:
                if control.stopping:  # Ctrl-C while waiting for another run's lock
                    raise KeyboardInterrupt from None
                raise
    if summary.restarted:
        print("(an earlier journal was for other input or settings: started afresh, and its "
              "output is replaced)", file=out)
    if summary.resumed:
        print(f"resumed: {summary.resumed:,} rows were answered by an earlier run "
              "(nothing sent for them)", file=out)
    print(summary.status.summary(), file=out)
    rows = "1 row" if summary.rows == 1 else f"{summary.rows:,} rows"
    print(f"wrote {rows} to {summary.output}", file=out)
    if summary.interrupted:
        if getattr(args, "batch_api", False):
            print("interrupted: the batches go on at the provider; run the same command "
                  "again to collect their answers (nothing is submitted twice)", file=out)
            return 130
        print(interrupted_message(summary.journal), file=out)
        return 130
    if summary.failed:
        where = "field" if output_format in ("jsonl", "batch", "cookbook") else "column"
        print(f"{summary.failed:,} of {summary.rows:,} rows failed (see the error {where}).",
              file=out)
        print(failure_advice(summary.status), file=out)
        return 1
    return 0


# Failures a rerun of the same command can fix on its own (the cause was passing).
_TRANSIENT = {"RateLimitError", "ThrottledError", "ServerError", "APITimeoutError",
              "APIConnectionError", "TransportError", "MalformedResponseError",
              "RequestTimeoutError", "ConflictError", "CacheError", "NoAnswerError",
              "ErrorBodyError", "BatchExpiredError"}


def failure_advice(status: StatusTracker) -> str:
    """What to do about the failures: the first message of each kind, and whether rerunning
    the same command can help (it cannot for a wrong key, a bad request or a full context).

    >>> from pipeline.state.status import StatusTracker
    >>> status = StatusTracker(); status.errors_by_type = {"AuthenticationError": 3}
    >>> status.first_errors = {"AuthenticationError": "401 Unauthorized: Incorrect API key"}
    >>> print(failure_advice(status))
      AuthenticationError (3 rows): 401 Unauthorized: Incorrect API key
    Fix the cause above, then run the same command again: answered rows are kept.
    """
    lines = []
    stopped = status.stopped
    for name, count in sorted(status.errors_by_type.items(), key=lambda kv: -kv[1]):
        if name == "RunStoppedError" and stopped:
            lines.append(f"  {count:,} {'row was' if count == 1 else 'rows were'} not sent: "
                         "the run stopped early (see \"stopped\" above)")
            continue
        message = status.first_errors.get(name, "")
        lines.append(f"  {name} ({count:,} rows): {message}")
    kinds = set(status.errors_by_type) - {"RunStoppedError"}
    if stopped or not kinds <= _TRANSIENT:
        lines.append("Fix the cause above, then run the same command again: answered rows "
                     "are kept.")
    else:
        lines.append("These look transient: run the same command again to retry just them "
                     "(answered rows are kept).")
    return "\n".join(lines)


@contextlib.contextmanager
def _ctrl_c_stops(control: RunControl, out: TextIO) -> Iterator[None]:
    """While the run sends: a first Ctrl-C stops sending and waits for the requests in flight
    (their answers are paid for: they are journaled and written); a second abandons them."""
    loop = asyncio.get_running_loop()

    def on_ctrl_c() -> None:
        if not control.stopping:
            control.stop("interrupted (Ctrl-C)")
            waiting = control.in_flight
            print("\nCtrl-C: nothing more is sent; " + (
                f"waiting up to {control.grace:.0f} s for the {waiting:,} requests in flight, "
                "to keep their answers (Ctrl-C again abandons them)" if waiting else
                "no request is in flight"), file=out, flush=True)
        else:
            control.abandon()
            print("abandoning the requests in flight", file=out, flush=True)

    try:
        loop.add_signal_handler(signal.SIGINT, on_ctrl_c)
    except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
        yield  # Ctrl-C then ends the run at once, as KeyboardInterrupt
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``pipeline run``."""
    try:
        return asyncio.run(execute(args))
    except PipelineError as exc:
        print(f"pipeline run: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a disk error outside the run's own checks: one line, not a trace
        print(f"pipeline run: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(interrupted_message(f"{args.output}.journal"), file=sys.stderr)
        return 130


def interrupted_message(journal: str) -> str:
    """What a Ctrl-C leaves behind: how many answers the journal kept, and how to go on."""
    import msgspec

    answered = 0
    try:
        with open(journal, "rb") as f:
            for line in f.read().split(b"\n")[1:]:
                try:
                    item = msgspec.json.decode(line)
                except msgspec.DecodeError:
                    continue
                if isinstance(item, dict) and item.get("status") == "succeeded":
                    answered += 1
    except OSError:
        return "interrupted before any answer was saved; run the same command to start"
    return (f"interrupted: {answered:,} answered rows are saved in {journal}; run the same "
            "command again to answer the rest (nothing answered is sent again)")
