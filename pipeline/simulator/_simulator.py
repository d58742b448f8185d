"""The :class:`Simulator` handle: start a simulated provider in a thread or a subprocess.

Thread mode runs the server on its own event loop in a background thread, so it answers while
the caller's loop (a test's, a notebook's) is busy or blocked, and never competes with it for
that loop. Process mode runs the same server in ``python -m pipeline.simulator`` so a
benchmark's client and server get a core each; the log and stats then come over the admin
endpoints (``GET /_sim/log``, ``GET /_sim/stats``, ``POST /_sim/reset``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from pipeline.errors import ConfigError
from pipeline.simulator._app import SimulatorApp
from pipeline.simulator._config import ErrorFormat, Faults, Latency, RetryAfter, SimulatorConfig
from pipeline.simulator._http import HTTPServer
from pipeline.simulator._log import LogEntry, Stats
from pipeline.simulator._model import Responder
from pipeline.simulator._ratelimit import HeaderStyle, Policy

__all__ = ["Simulator"]

HOST = "127.0.0.1"  # loopback only, always
START_TIMEOUT = 10.0
T = TypeVar("T")


class Simulator:
    """A local OpenAI-compatible API with real rate limits, latency and faults.

    Args:
        rpm, tpm: requests and tokens per minute allowed per API key (``None``: unlimited).
        policy: how the limits are enforced. ``"second"`` (default): a bucket holding one
            second of the limit (``limit / 60``), refilled at ``limit / 60`` per second, as
            OpenAI documents; a request costing more tokens than that bucket (but not more than
            ``tpm``) is admitted when the bucket is full and leaves it in debt. ``"minute"``: a
            bucket holding the full minute. ``"window"``: at most ``limit x window / 60`` per
            fixed window, the count reset at each boundary (multiples of ``window`` seconds
            since start); reset headers and ``retry-after`` give the time to the boundary.
        window: the window length in seconds for ``policy="window"`` (default 60: the limit
            resets on the minute).
        burst: fraction in (0, 1] of the minute limit a bucket holds, overriding the policy's
            (``"second"``: 1/60, ``"minute"``: 1); not for ``policy="window"``.
        model_limits: limits per model as well as per key, e.g.
            ``{"gpt-4o": {"rpm": 500, "tpm": 30_000}}``: a request for such a model must fit
            both the key's limits and those of (key, model), same policy, or takes neither.
            Its headers then report the model's limits.
        max_in_flight: a cap on requests being answered at once (as a self-hosted gateway
            has); one arriving while that many are in flight is refused at once with
            ``overload_status``, a short body and no rate-limit headers, logged
            ``"overloaded"`` (``None``: no cap).
        overload_status: 429 (default) or 503, the status of those refusals.
        headers: send ``x-ratelimit-limit/remaining/reset-requests|tokens`` (default True).
        retry_after: which retry headers a rate-limit 429 carries: ``"both"`` (default:
            ``retry-after`` in whole seconds, rounded up, and ``retry-after-ms``),
            ``"seconds"``, ``"ms"`` or ``"none"``.
        error_format: the rate-limit 429's body: ``"openai"`` (default, ``{"error": {"message",
            "type", "param", "code": "rate_limit_exceeded"}}``), ``"azure"`` (Azure OpenAI's
            ``{"error": {"code": "429", "message": ...}}``; only ``x-ratelimit-remaining-*``
            headers, on every answer) or ``"text"`` (a proxy's ``text/plain`` body
            ``429 Too Many Requests``, without x-ratelimit headers).
        header_style: whose rate-limit headers and 429 bodies to imitate: ``"openai"`` (the
            default, as above), ``"azure"`` (only ``x-ratelimit-remaining-*``, Azure's 429
            text "... Please retry after N seconds"), ``"anthropic"``
            (``anthropic-ratelimit-*`` with RFC 3339 resets, ``retry-after`` in seconds, a
            ``rate_limit_error`` body "... of N input tokens per minute"), ``"groq"``
            (``x-ratelimit-limit-requests`` per *day*, tokens per minute, OpenAI's 429 text,
            ``retry-after`` in seconds), ``"litellm"`` (a LiteLLM proxy's per-key
            ``x-ratelimit-api_key-*`` and upstream ``llm_provider-x-ratelimit-*`` headers,
            its 429 "Limit type: requests. Current limit: N" with ``rate_limit_type``) or
            ``"none"`` (a self-hosted server: no rate-limit or retry headers, a plain-text
            429). Every style enforces the same limits; only what is said differs.
        quota_tokens: total token budget; once spent every request gets 429
            ``insufficient_quota`` (``0``: from the first request).
        latency: a :class:`Latency`, seconds (``0.2``) or text (``"uniform:0.1,0.3"``).
        faults: a :class:`Faults` or a mapping such as ``{"500": 0.05, "hang": 0.01}``.
        seed: seeds the fault and latency draws (``None``: random).
        api_key: a key or keys the server accepts; ``None`` accepts any (or no) key.
            Each key has its own buckets.
        context_window: prompt + max_tokens above this gets 400 ``context_length_exceeded``.
        default_max_tokens: ``max_tokens`` assumed for the token cost of a chat request that
            sets none (legacy completions use the API's own default, 16).
        answer_tokens: (low, high) length in tokens of the default answers.
        embedding_dimensions: vector length when a request does not set ``dimensions``.
        fine_tune_seconds: how long a fine-tuning job runs before it has succeeded.
        responder: ``responder(endpoint, body) -> str`` makes the assistant text (thread mode).
        port: the port to bind on 127.0.0.1 (0: a free one).
        process: run the server in a subprocess instead of a thread.
        log_limit: the most log entries kept (oldest dropped first; ``None``: unbounded).
        models: the model names it knows; a request for another gets OpenAI's 404
            ``model_not_found`` (empty, the default: any model name is accepted).
        invalid_json: the probability (seeded by ``seed``) that a chat answer asked for JSON
            (``response_format`` ``json_schema`` or ``json_object``) is spoiled the way a model
            without strict mode spoils it: wrapped in prose, cut short, missing a required
            field, or with a field of the wrong type. Each answer draws anew, so asking the
            same request again may succeed. Logged as outcome ``"invalid_json"`` (a fault);
            a ``responder`` is never spoiled.
        batch_seconds: how long a batch of the Batch API (``/v1/batches``) takes from
            creation to ``completed``; its lines are answered by the same model, outside the
            rate limits. ``batch_expire_after``: the fraction of its lines a batch answers
            before it expires (``None``: it completes). ``batch_queue_tokens``: the model's
            enqueued-token limit (a batch over it fails with ``token_limit_exceeded``).

    >>> with Simulator(rpm=600, policy="window", window=2.0, error_format="azure") as sim:
    ...     sim.config.policy, sim.config.window
    ('window', 2.0)

    >>> import openai
    >>> with Simulator(rpm=600, tpm=100_000, latency=0.01) as sim:
    ...     client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
    ...     reply = client.chat.completions.create(
    ...         model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    ...     sim.stats().ok
    1
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        burst: float | None = None,
        quota_tokens: int | None = None,
        latency: Latency | float | str | None = None,
        faults: Faults | Mapping[str, float] | None = None,
        seed: int | None = 0,
        api_key: str | Sequence[str] | None = None,
        context_window: int = 128_000,
        default_max_tokens: int = 1024,
        answer_tokens: tuple[int, int] = (8, 48),
        embedding_dimensions: int = 1536,
        fine_tune_seconds: float = 1.0,
        responder: Responder | None = None,
        port: int = 0,
        process: bool = False,
        log_limit: int | None = 1_000_000,
        policy: Policy = "second",
        window: float = 60.0,
        model_limits: Mapping[str, Mapping[str, float | None]] | None = None,
        max_in_flight: int | None = None,
        overload_status: int = 429,
        headers: bool = True,
        retry_after: RetryAfter = "both",
        error_format: ErrorFormat = "openai",
        header_style: HeaderStyle = "openai",
        models: Sequence[str] = (),
        invalid_json: float = 0.0,
        batch_seconds: float = 2.0,
        batch_expire_after: float | None = None,
        batch_queue_tokens: int | None = None,
    ) -> None:
        keys = (api_key,) if isinstance(api_key, str) else tuple(api_key or ())
        per_model = {str(model): dict(limits) for model, limits in (model_limits or {}).items()}
        self.config = SimulatorConfig(
            rpm=rpm, tpm=tpm, burst=burst, quota_tokens=quota_tokens,
            latency=Latency.parse(latency), faults=Faults.parse(faults), seed=seed,
            api_keys=keys, context_window=context_window, default_max_tokens=default_max_tokens,
            answer_tokens=tuple(answer_tokens),  # type: ignore[arg-type]
            embedding_dimensions=embedding_dimensions, fine_tune_seconds=fine_tune_seconds,
            log_limit=log_limit, policy=policy, window=float(window), model_limits=per_model,
            max_in_flight=max_in_flight, overload_status=overload_status, headers=headers,
            retry_after=retry_after, error_format=error_format, header_style=header_style,
            models=tuple(models),
            invalid_json=invalid_json, batch_seconds=batch_seconds,
            batch_expire_after=batch_expire_after, batch_queue_tokens=batch_queue_tokens)
        if process and responder is not None:
            raise ConfigError("a responder runs in this process: it needs process=False")
        self.responder = responder
        self.process = process
        self.port = port
        self._app: SimulatorApp | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._running = False

    # -- addresses --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the admin endpoints live under ``/_sim/``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: pass it to an OpenAI client."""
        return f"{self.url}/v1"

    @property
    def pid(self) -> int | None:
        """The server process id in process mode while running, else ``None``."""
        return self._child.pid if self._child is not None else None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Simulator:
        """Start serving (returns once the port accepts connections)."""
        if self._running:
            return self
        if self.process:
            self._start_process()
        else:
            self._start_thread()
        self._running = True
        return self

    def stop(self) -> None:
        """Stop serving, drop every connection and release the port (idempotent)."""
        if not self._running:
            return
        self._running = False
        if self._child is not None:
            self._stop_process()
        else:
            self._stop_thread()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Simulator:
        # Starting takes a few milliseconds (a thread and a bind); not worth a worker thread.
        return self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.stop()

    def _start_thread(self) -> None:
        self._app = SimulatorApp(self.config, self.responder)
        ready = threading.Event()
        errors: list[BaseException] = []
        server = HTTPServer(self._app)

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self.port = loop.run_until_complete(server.start(HOST, self.port))
            except BaseException as exc:
                errors.append(exc)
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
                loop.run_until_complete(server.stop())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="pipeline-simulator", daemon=True)
        self._thread.start()
        ready.wait(START_TIMEOUT)
        if errors:
            self._thread.join()
            raise errors[0]

    def _stop_thread(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT)
        self._thread = None
        self._loop = None

    def _start_process(self) -> None:
        cmd = [sys.executable, "-m", "pipeline.simulator", "--config-stdin",
               "--port", str(self.port)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._child = child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                               env=env)
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(self.config.to_json() + b"\n")
        child.stdin.flush()  # stdin stays open: the child exits when it closes (we died)
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while b"http://" not in line:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or child.poll() is not None:
                self._stop_process()
                raise RuntimeError("the simulator subprocess did not start")
            if select.select([child.stdout], [], [], remaining)[0]:
                line = child.stdout.readline()
        self.port = int(line.decode().rsplit(":", 1)[1].split("/", 1)[0])

    def _stop_process(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()  # the child's stdin watcher stops the server
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdout.close()

    # -- inspection -------------------------------------------------------------------------
    def _admin(self, method: str, name: str, body: bytes | None = None) -> bytes:
        if self._child is None:
            raise RuntimeError("the simulator process is not running: read log() and stats() "
                               "inside the with block")
        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            conn.request(method, f"/_sim/{name}", body=body)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"simulator admin {name}: HTTP {response.status}")
            return data
        finally:
            conn.close()

    def _in_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (state is only touched there) and return its result."""
        loop = self._loop
        if loop is None or not self._running or threading.current_thread() is self._thread:
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return future.result(START_TIMEOUT)

    def log(self) -> list[LogEntry]:
        """Every request seen since start or the last :meth:`reset`, oldest first."""
        if self.process:
            return msgspec.json.decode(self._admin("GET", "log"), type=list[LogEntry])
        assert self._app is not None, "start the simulator first"
        return self._app.log.entries()

    def batches(self) -> list[dict[str, Any]]:
        """Every batch of the Batch API as it stands now (thread mode), oldest first."""
        app = self._app
        assert app is not None, "start the simulator first"
        return self._in_loop(lambda: [app.batches.get(b) for b in sorted(app.batches.batches)])

    def batch_lines_answered(self) -> int:
        """Batch lines answered (billed) so far (thread mode)."""
        assert self._app is not None, "start the simulator first"
        return self._app.batches.lines_answered

    def stats(self) -> Stats:
        """Counters since start or the last :meth:`reset` (see :class:`Stats`)."""
        if self.process:
            return msgspec.json.decode(self._admin("GET", "stats"), type=Stats)
        assert self._app is not None, "start the simulator first"
        return self._app.log.stats()

    def reset(self, *, limits: bool = False) -> None:
        """Clear the log and counters; with ``limits=True`` also refill buckets and the quota."""
        if self.process:
            self._admin("POST", "reset" + ("?limits=1" if limits else ""))
            return
        app = self._app
        assert app is not None, "start the simulator first"
        self._in_loop(lambda: app.reset(limits))

    def set_limits(self, *, rpm: float | None = None, tpm: float | None = None,
                   burst: float | None = None) -> None:
        """Change rpm/tpm/burst while running (every key's buckets restart full)."""
        self.config = msgspec.structs.replace(self.config, rpm=rpm, tpm=tpm, burst=burst)
        if self.process:
            if self._child is None:
                return  # applies from the next start
            self._admin("POST", "limits", msgspec.json.encode(
                {"rpm": rpm, "tpm": tpm, "burst": burst}))
            return
        app = self._app
        if app is not None:
            self._in_loop(lambda: app.set_limits(rpm, tpm, burst))

    def __repr__(self) -> str:
        cfg = self.config
        parts = [self.base_url if self._running else "stopped"]
        parts.append(f"rpm={cfg.rpm:g}" if cfg.rpm is not None else "rpm=unlimited")
        parts.append(f"tpm={cfg.tpm:g}" if cfg.tpm is not None else "tpm=unlimited")
        if cfg.policy != "second":
            parts.append(f"policy={cfg.policy}"
                         + (f" {cfg.window:g}s" if cfg.policy == "window" else ""))
        if cfg.model_limits:
            parts.append(f"model_limits={cfg.model_limits}")
        if cfg.max_in_flight is not None:
            parts.append(f"max_in_flight={cfg.max_in_flight} ({cfg.overload_status})")
        if cfg.quota_tokens is not None:
            parts.append(f"quota_tokens={cfg.quota_tokens}")
        if not cfg.latency.is_zero:
            parts.append(repr(cfg.latency))
        if cfg.faults.any:
            parts.append(repr(cfg.faults))
        if self._child is not None:
            parts.append(f"process pid={self._child.pid}")
        elif self._app is not None:
            parts.append(f"served={self._app.log.stats().requests}")
        return f"Simulator({', '.join(parts)})"
