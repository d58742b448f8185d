"""The simulated provider's front door: routing, auth, quota, rate limits, faults, the log.

Every API request goes through the same steps, in the order a provider's front door would:

0. with ``max_in_flight``, the gateway's concurrency cap (429 or 503 ``overloaded``, a short
   body and no rate-limit headers, while that many requests are being answered);
1. route (404 for an unknown path or method);
2. bearer key (401 when keys are configured);
3. body validation and the context-window check (400);
4. the total token quota (429 ``insufficient_quota``);
5. the key's rpm/tpm limits, and those of (key, model) when ``model_limits`` has the model
   (429 ``rate_limit_exceeded`` + ``retry-after``; the body as ``error_format`` says);
6. one seeded fault draw;
7. the answer (from :class:`~pipeline.simulator._model.FakeModel`, or the file store), sent
   after the sampled latency.

Steps 0-5 answer at once; only requests that pass step 5 are charged to the limits and quota.
Unless ``headers=False``, every answer to a known key carries its ``x-ratelimit-*`` headers
(the model's limits when it has its own; only ``remaining`` with ``error_format="azure"``;
none on a ``"text"`` 429), or those of ``header_style``'s provider, whose 429 bodies it also
imitates (see :meth:`~pipeline.simulator._ratelimit.KeyLimits.headers`). 401s, 404s for
unknown paths and admin answers have none, as no
key's limits apply to them.
Admin endpoints under ``/_sim/`` (``GET log``, ``GET stats``, ``POST reset[?limits=1]``,
``POST limits``, ``GET health``) skip all of it and are not logged.

Routes (each also without the ``/v1`` prefix): ``POST /v1/chat/completions``,
``POST /v1/completions``, ``POST /v1/embeddings``, ``POST /v1/files``, ``GET /v1/files``,
``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``POST /v1/fine_tuning/jobs``,
``GET /v1/fine_tuning/jobs/{id}``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/batches``, ``GET /v1/batches``, ``GET /v1/batches/{id}``,
``POST /v1/batches/{id}/cancel`` (see :mod:`pipeline.simulator._batches`).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
import traceback
from typing import Any

import msgspec

from pipeline.simulator._batches import BatchStore
from pipeline.simulator._config import FAULT_KINDS, SimulatorConfig
from pipeline.simulator._files import FileStore
from pipeline.simulator._http import Connection, HTTPRequest
from pipeline.simulator._log import LogEntry, RequestLog
from pipeline.simulator._model import FakeModel, Responder, bad_answer
from pipeline.simulator._ratelimit import KeyLimits, Limiter
from pipeline.simulator._schemas import (
    FineTuningJobRequest,
    RequestError,
    decode_body,
)

__all__ = ["SimulatorApp", "error_body"]

_encode = msgspec.json.encode
_MODEL_ROUTES = {"chat": "chat", "completions": "completion", "embeddings": "embedding"}
# (method, path) -> route; paths with an id are matched by prefix in _route.
_ROUTES = {("POST", "/chat/completions"): "chat", ("POST", "/completions"): "completions",
           ("POST", "/embeddings"): "embeddings", ("POST", "/files"): "upload",
           ("GET", "/files"): "files", ("POST", "/fine_tuning/jobs"): "create_job",
           ("GET", "/models"): "models", ("POST", "/batches"): "create_batch",
           ("GET", "/batches"): "batches"}
_ID_ROUTES = (("GET", "/files/", "file"), ("GET", "/fine_tuning/jobs/", "job"),
              ("GET", "/models/", "model"), ("GET", "/batches/", "batch"),
              ("POST", "/batches/", "cancel_batch"))
_BATCH_KINDS = {"/v1/chat/completions": "chat", "/v1/completions": "completion",
                "/v1/embeddings": "embedding"}
_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small",
           "text-embedding-3-large")


def _route(method: str, path: str) -> tuple[str, str]:
    """The route name and the id in the path (``""`` if none), or a 404 RequestError."""
    route = _ROUTES.get((method, path))
    if route is not None:
        return route, ""
    for verb, prefix, name in _ID_ROUTES:
        if path.startswith(prefix) and len(path) > len(prefix):
            rest = path[len(prefix):]
            if name == "file" and rest.endswith("/content"):
                name, rest = "file_content", rest[: -len("/content")]
            if name == "cancel_batch":
                if not rest.endswith("/cancel"):
                    continue
                rest = rest[: -len("/cancel")]
            if "/" not in rest and method == verb:
                return name, rest
    raise RequestError(f"Invalid URL ({method} /v1{path})", None, None, 404)


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_700_000_000,
            "owned_by": "pipeline-simulator"}
_AZURE_OPERATIONS = {"chat": "ChatCompletions_Create", "completions": "Completions_Create",
                     "embeddings": "Embeddings_Create"}
_AZURE_API_VERSION = "2024-06-01"
_FAULT_STATUS = {"server_error": (500, "The server had an error while processing your request. "
                                       "Sorry about that!"),
                 "bad_gateway": (502, "Bad gateway."),
                 "unavailable": (503, "The engine is currently overloaded, please try again "
                                      "later.")}


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> bytes:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return _encode({"error": {"message": message, "type": type, "param": param, "code": code}})


def _azure_message(route: str, unit: str, limiter: Limiter, cost: int, wait: float) -> str:
    """Azure OpenAI's 429 wording ("call rate limit" for requests, "token rate limit")."""
    operation = _AZURE_OPERATIONS.get(route, "ChatCompletions_Create")
    kind = "call rate limit" if unit == "requests" else "token rate limit"
    head = (f"Requests to the {operation} Operation under Azure OpenAI API version "
            f"{_AZURE_API_VERSION} have exceeded {kind} of your current OpenAI S0 pricing tier.")
    if math.isinf(wait):
        return (f"{head} This request needs {cost} tokens, more than the limit of "
                f"{limiter.limit:g}: reduce its input or max_tokens.")
    seconds = max(1, math.ceil(wait))
    return (f"{head} Please retry after {seconds} second{'' if seconds == 1 else 's'}. "
            "Please go here: https://aka.ms/oai/quotaincrease if you would like to further "
            "increase the default rate limit.")


def _redact(key: str) -> str:
    return f"{key[:3]}****{key[-4:]}" if len(key) > 8 else "****"


class SimulatorApp:
    """The request handler behind :class:`~pipeline.simulator.Simulator` (one per server)."""

    def __init__(self, config: SimulatorConfig, responder: Responder | None = None) -> None:
        self.config = config
        self.log = RequestLog(config.log_limit)
        self.files = FileStore(config.fine_tune_seconds)
        self.batches = BatchStore(self.files, self._batch_line, seconds=config.batch_seconds,
                                  expire_after=config.batch_expire_after,
                                  queue_tokens=config.batch_queue_tokens)
        self.model = FakeModel(config, responder)
        self.rng = random.Random(config.seed)
        self.started = time.monotonic()
        self.quota_used = 0
        self._limits: dict[str, KeyLimits] = {}
        self._model_scopes: dict[tuple[str, str], KeyLimits] = {}
        self._counter = 0
        self._configure()

    def _configure(self) -> None:
        """Cache what every request checks (attribute reads of the config cost more)."""
        cfg = self.config
        self._faults_on = cfg.faults.any
        self._max_in_flight = cfg.max_in_flight
        self._style = cfg.header_style
        self._headers_on = cfg.headers and cfg.header_style != "none"
        self._remaining_only = cfg.error_format == "azure"
        self._model_limits = cfg.model_limits
        status = cfg.overload_status
        if cfg.error_format == "text":
            self._overload = (f"{status} Too Many Requests".encode() if status == 429 else
                              f"{status} Service Unavailable".encode(), "text/plain")
        else:
            self._overload = (error_body(
                f"Too many requests in flight (at most {cfg.max_in_flight}); retry shortly.",
                "server_overloaded", None, "overloaded"),
                "application/json")

    # -- state ------------------------------------------------------------------------------
    def limits_for(self, key: str, now: float) -> KeyLimits:
        """The buckets of one API key, created full on first use."""
        limits = self._limits.get(key)
        if limits is None:
            cfg = self.config
            limits = self._limits[key] = KeyLimits(cfg.rpm, cfg.tpm, cfg.burst, now,
                                                   policy=cfg.policy, window=cfg.window,
                                                   origin=self.started)
        return limits

    def model_limits_for(self, key: str, model: str, now: float) -> KeyLimits | None:
        """The limits of (key, model) when ``model_limits`` has the model, else ``None``."""
        scope = self._model_scopes.get((key, model))
        if scope is None:
            limits = self._model_limits.get(model)
            if limits is None:
                return None
            cfg = self.config
            scope = self._model_scopes[key, model] = KeyLimits(
                limits.get("rpm"), limits.get("tpm"), cfg.burst, now, policy=cfg.policy,
                window=cfg.window, origin=self.started)
        return scope

    def reset(self, limits: bool = False) -> None:
        """Clear the log and counters; with ``limits``, also refill buckets and the quota."""
        self.log.clear()
        if limits:
            self._limits.clear()
            self._model_scopes.clear()
            self.quota_used = 0

    def set_limits(self, rpm: float | None, tpm: float | None, burst: float | None) -> None:
        """Change the rate limits at runtime (buckets restart full)."""
        self.config = msgspec.structs.replace(self.config, rpm=rpm, tpm=tpm, burst=burst)
        self._limits.clear()
        self._model_scopes.clear()

    # -- entry point ------------------------------------------------------------------------
    def __call__(self, req: HTTPRequest, conn: Connection) -> None:
        path = req.path
        if path.startswith("/_sim/"):
            self._admin(req, conn)
            return
        if path.startswith("/v1/"):
            path = path[3:]
        now = time.monotonic()
        log = self.log
        cap = self._max_in_flight
        if cap is not None and log.in_flight >= cap:
            self._overloaded(req, conn, now)
            return
        log.in_flight += 1
        if log.in_flight > log.max_in_flight:
            log.max_in_flight = log.in_flight
        conn.on_close = self._done
        entry = dict(arrival=now - self.started, method=req.method, path=req.path,
                     body_hash=hashlib.sha256(req.body).hexdigest())
        try:
            self._serve(req, conn, path, now, entry)
        except RequestError as exc:  # unknown route: no key, no rate-limit headers
            self._reject(conn, entry, exc, None)
        except Exception as exc:  # a bug here (or in a responder): answer 500, keep serving
            traceback.print_exc()
            self._log(entry, 500, "error", 0)
            conn.respond(500, error_body(f"simulator error: {exc!r}", "server_error"))

    def _reject(self, conn: Connection, entry: dict[str, Any], exc: RequestError,
                headers: list[tuple[str, str]] | None) -> None:
        """Answer a 400/404 (nothing is charged)."""
        if exc.status == 404:
            outcome = "not_found"
        elif exc.code == "context_length_exceeded":
            outcome = "context_length"
        else:
            outcome = "bad_request"
        self._log(entry, exc.status, outcome, 0)
        conn.respond(exc.status, error_body(exc.message, exc.type, exc.param, exc.code), headers)

    def _done(self) -> None:
        self.log.in_flight -= 1

    def _overloaded(self, req: HTTPRequest, conn: Connection, now: float) -> None:
        """Refuse a request over ``max_in_flight`` at once (it never counts as in flight)."""
        conn.on_close = None
        status = self.config.overload_status
        self._log(dict(arrival=now - self.started, method=req.method, path=req.path,
                       body_hash=hashlib.sha256(req.body).hexdigest()), status, "overloaded", 0)
        body, content_type = self._overload
        conn.respond(status, body, content_type=content_type)

    def _log(self, entry: dict[str, Any], status: int, outcome: str, tokens: int,
             usage: tuple[int, int] = (0, 0), admitted: int = 0, latency: float = 0.0) -> None:
        self.log.add(LogEntry(status=status, outcome=outcome, tokens=tokens,
                              prompt_tokens=usage[0], completion_tokens=usage[1],
                              latency=latency, **entry),
                     admitted)

    def _serve(self, req: HTTPRequest, conn: Connection, path: str, now: float,
               entry: dict[str, Any]) -> None:
        route, arg = _route(req.method, path)
        kind = _MODEL_ROUTES.get(route)

        key = self._authenticate(req, conn, entry)
        if key is None:
            return
        limits = self.limits_for(key, now)
        prepared = None
        if kind is not None:
            try:
                prepared = self.model.prepare(kind, req.body)
            except RequestError as exc:
                self._reject(conn, entry, exc, limits.headers(
                    now, self._remaining_only, self._style) if self._headers_on else None)
                return
        cost = prepared.cost if prepared is not None else 0
        model_scope = None
        if self._model_limits and prepared is not None:
            model_scope = self.model_limits_for(key, prepared.request.model, now)
        shown = limits if model_scope is None else model_scope  # whose x-ratelimit-* headers

        quota = self.config.quota_tokens
        if quota is not None and (self.quota_used >= quota or self.quota_used + cost > quota):
            self._log(entry, 429, "insufficient_quota", cost)
            conn.respond(429, error_body(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota", None, "insufficient_quota"),
                shown.headers(now, self._remaining_only, self._style) if self._headers_on
                else None)
            return
        wait = limits.acquire(cost, now, model_scope)
        if wait > 0:
            self._rate_limited(conn, entry, route, limits, model_scope, prepared, cost, wait,
                               now)
            return
        self.quota_used += cost
        headers = shown.headers(now, self._remaining_only, self._style) if self._headers_on \
            else []
        self._counter += 1
        headers.append(("x-request-id", f"req_sim{self._counter:010d}"))

        fault = self.config.faults.draw(self.rng) if self._faults_on else None
        if fault in _FAULT_STATUS:
            status, message = _FAULT_STATUS[fault]
            delay = self.config.latency.sample(self.rng)
            self._log(entry, status, FAULT_KINDS[fault], cost, admitted=cost, latency=delay)
            conn.respond(status, error_body(message, "server_error"), headers, delay=delay)
            return
        if fault == "context_length":
            self._log(entry, 400, "fault:context_length", cost, admitted=cost)
            conn.respond(400, error_body(
                f"This model's maximum context length is {self.config.context_window} tokens. "
                "Please reduce the length of the messages or completion.",
                param="messages", code="context_length_exceeded"), headers)
            return
        if fault == "hang":
            self._log(entry, 0, "hang", cost, admitted=cost)
            conn.hang()
            return

        if prepared is not None:
            body, usage = self.model.answer(prepared, req.body)
        else:
            try:
                body, usage = self._object_answer(req, route, arg), (0, 0)
            except RequestError as exc:
                self._reject(conn, entry, exc, headers)
                return
        delay = self.config.latency.sample(self.rng, usage[1])
        if fault is None:
            outcome = "invalid_json" if prepared is not None and self.model.spoiled else "ok"
            self._log(entry, 200, outcome, cost, usage, cost, delay)
            conn.respond(200, body, headers, delay=delay,
                         content_type="application/octet-stream" if route == "file_content"
                         else "application/json")
        elif fault == "reset":
            self._log(entry, 0, "reset", cost, admitted=cost, latency=delay)
            data = conn.encode(200, body, headers, req.keep_alive)
            conn.reset(data[: max(1, len(data) // 2)], delay=delay)
        elif fault == "truncated":
            self._log(entry, 200, "truncated", cost, usage, cost, delay)
            conn.respond(200, body[: max(1, len(body) // 2)], headers, delay=delay)
        elif fault != "malformed":  # a 200 without an answer in it (Faults' docstring)
            kind = prepared.kind if prepared is not None else None
            if fault == "content_filter" and kind == "embedding":  # nothing to filter
                self._log(entry, 200, "ok", cost, usage, cost, delay)
                conn.respond(200, body, headers, delay=delay)
                return
            if kind is None and fault in ("empty_choices", "null_content", "content_filter"):
                fault = "empty_object"  # a files or fine-tuning answer has no choices
            body, usage, content_type = bad_answer(fault, kind, body, usage, req.headers)
            self._log(entry, 200, FAULT_KINDS[fault], cost, usage, cost, delay)
            conn.respond(200, body, headers, delay=delay, content_type=content_type)
        else:  # malformed
            self._log(entry, 200, "malformed", cost, usage, cost, delay)
            conn.respond(200, b"<html><body>upstream sent garbage: \x00\xff{]</body></html>",
                         headers, delay=delay)

    def _authenticate(self, req: HTTPRequest, conn: Connection,
                      entry: dict[str, Any]) -> str | None:
        auth = req.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        keys = self.config.api_keys
        if not keys or key in keys:
            return key
        if key:
            message = (f"Incorrect API key provided: {_redact(key)}. You can find your API key "
                       "at https://platform.openai.com/account/api-keys.")
        else:
            message = ("You didn't provide an API key. You need to provide your API key in an "
                       "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                       "YOUR_KEY).")
        self._log(entry, 401, "unauthorized", 0)
        conn.respond(401, error_body(message, "invalid_request_error", None, "invalid_api_key"))
        return None

    def _rate_limited(self, conn: Connection, entry: dict[str, Any], route: str,
                      limits: KeyLimits, model_scope: KeyLimits | None, prepared: Any,
                      cost: int, wait: float, now: float) -> None:
        """Answer 429 ``rate_limit_exceeded`` in the configured ``error_format``."""
        cfg = self.config
        _, unit, limiter = limits.blocking(cost, now)
        who = "model"
        if model_scope is not None:
            model_wait, model_unit, model_limiter = model_scope.blocking(cost, now)
            if model_limiter is not None and (limiter is None or model_wait >= wait):
                unit, limiter, who = model_unit, model_limiter, prepared.request.model
        assert limiter is not None
        fmt = cfg.error_format
        style = self._style
        if style == "azure":
            fmt = "azure"
        elif style == "none":
            fmt = "text"
        headers: list[tuple[str, str]] = []
        if self._headers_on and fmt != "text":
            shown = limits if model_scope is None else model_scope
            headers = shown.headers(now, self._remaining_only, style)
        too_large = math.isinf(wait)
        retry = cfg.retry_after
        if style in ("anthropic", "groq", "litellm"):
            retry = "seconds" if retry != "none" else "none"  # they send Retry-After only
        elif style == "none":
            retry = "none"
        if not too_large:
            if retry in ("both", "seconds"):
                headers.append(("retry-after", str(max(1, math.ceil(wait)))))
            if retry in ("both", "ms"):
                headers.append(("retry-after-ms", str(max(1, math.ceil(wait * 1000)))))
        self._log(entry, 429, "rate_limited", cost)
        if fmt == "text":
            conn.respond(429, b"429 Too Many Requests", headers, content_type="text/plain")
            return
        if fmt == "azure":
            conn.respond(429, _encode({"error": {"code": "429", "message": _azure_message(
                route, unit, limiter, cost, wait)}}), headers)
            return
        if style == "anthropic":
            kind = "requests" if unit == "requests" else "input tokens"
            message = (f"This request would exceed the rate limit for your organization "
                       f"(org-simulator) of {limiter.limit:,.0f} {kind} per minute. For "
                       "details, refer to: https://docs.claude.com/en/api/rate-limits. You "
                       "can see the response headers for current usage. Please reduce the "
                       "prompt length or the maximum tokens requested, or try again later.")
            conn.respond(429, _encode({"type": "error", "error": {
                "type": "rate_limit_error", "message": message}}), headers)
            return
        if style == "litellm":
            headers.append(("rate_limit_type", unit))
            message = (f"Rate limit exceeded for api_key: 8f4e2c. Limit type: {unit}. "
                       f"Current limit: {_whole(limiter.limit)}, Remaining: 0. Limit resets "
                       f"at: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
            conn.respond(429, _encode({"error": {"message": message, "type": "None",
                                                 "param": "None", "code": "429"}}), headers)
            return
        name = "requests per min (RPM)" if unit == "requests" else "tokens per min (TPM)"
        if style == "groq":
            name = ("requests per minute (RPM)" if unit == "requests" else
                    "tokens per minute (TPM)")
            who = f"model `{prepared.request.model}`" if prepared is not None else who
        if too_large:
            message = (f"Request too large for {who} on {name}: Limit {_whole(limiter.limit)}, "
                       f"Requested {cost}. The input or output tokens must be reduced in order "
                       "to run successfully.")
        else:
            message = (f"Rate limit reached for {who} in organization org-simulator on {name}: "
                       f"Limit {_whole(limiter.limit)}, "
                       f"Requested {1 if unit == 'requests' else cost}. "
                       f"Please try again in {wait:.3g}s.")
        conn.respond(429, error_body(message, unit, None, "rate_limit_exceeded"), headers)

    # -- files and fine-tuning --------------------------------------------------------------
    def _object_answer(self, req: HTTPRequest, route: str, arg: str) -> bytes:
        files = self.files
        obj: Any
        if route == "upload":
            obj = files.upload(req.body, req.headers.get("content-type", ""))
        elif route == "file":
            obj = files.get_file(arg)
        elif route == "file_content":
            files.get_file(arg)  # 404 when unknown
            return files.contents[arg]
        elif route == "files":
            data = list(files.files.values())
            obj = {"object": "list", "data": data, "has_more": False,
                   "first_id": data[0]["id"] if data else None,
                   "last_id": data[-1]["id"] if data else None}
        elif route == "create_job":
            obj = files.create_job(decode_body(req.body, FineTuningJobRequest))
        elif route == "job":
            obj = files.get_job(arg)
        elif route == "create_batch":
            obj = self.batches.create(req.body)
        elif route == "batch":
            obj = self.batches.get(arg)
        elif route == "cancel_batch":
            obj = self.batches.cancel(arg)
        elif route == "batches":
            query = dict(p.partition("=")[::2] for p in req.query.split("&") if p)
            try:
                limit = int(query.get("limit", 20))
            except ValueError:
                raise RequestError("Invalid 'limit': an integer.", "limit") from None
            obj = self.batches.list(query.get("after") or None, limit)
        elif route == "models":
            obj = {"object": "list", "data": [_model_object(m) for m in _MODELS]}
        else:
            obj = _model_object(arg)
        return _encode(obj)

    def _batch_line(self, endpoint: str, body: bytes) -> tuple[int, bytes, int]:
        """Answer one line of a batch as the online endpoint would, outside the limits."""
        try:
            prepared = self.model.prepare(_BATCH_KINDS[endpoint], body)
        except RequestError as exc:
            return exc.status, error_body(exc.message, exc.type, exc.param, exc.code), 0
        answer, usage = self.model.answer(prepared, body)
        return 200, answer, usage[0]

    # -- admin ------------------------------------------------------------------------------
    def _admin(self, req: HTTPRequest, conn: Connection) -> None:
        conn.on_close = None
        name = req.path[len("/_sim/"):]
        if name == "log" and req.method == "GET":
            conn.respond(200, _encode(self.log.entries()))
        elif name == "stats" and req.method == "GET":
            conn.respond(200, _encode(self.log.stats()))
        elif name == "reset" and req.method == "POST":
            self.reset(limits="limits=1" in req.query)
            conn.respond(200, b'{"ok":true}')
        elif name == "limits" and req.method == "POST":
            data = msgspec.json.decode(req.body or b"{}")
            self.set_limits(data.get("rpm"), data.get("tpm"), data.get("burst"))
            conn.respond(200, b'{"ok":true}')
        elif name == "health":
            conn.respond(200, b'{"ok":true}')
        else:
            conn.respond(404, error_body(f"Unknown admin endpoint {req.method} {req.path}"))


def _whole(value: float) -> str:
    """A limit as OpenAI writes it in a 429 message: ``1000000``, never ``1e+06`` (a client
    that reads the number from the message must not learn a limit of 1)."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:g}"
