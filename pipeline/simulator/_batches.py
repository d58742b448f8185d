"""The Batch API, kept in memory: ``/v1/batches`` create, retrieve, list and cancel.

A batch reads its requests from an uploaded ``purpose=batch`` file (OpenAI's Batch input lines:
``custom_id``, ``method``, ``url``, ``body``) and moves through the states a provider reports::

    validating -> in_progress -> finalizing -> completed
         |             |--> cancelling -> cancelled     (POST /batches/{id}/cancel)
         |             '--> expired                      (``expire_after`` of the lines done)
         '--> failed                                     (the file does not validate)

Time is read on every request (no background task): a batch spends a tenth of ``seconds``
validating, answers its lines evenly over the next eight tenths (``request_counts`` grows as it
goes) and finalizes in the last tenth. Each line is answered by the simulator's own model,
outside the rate limits, as a provider does; a line that the online endpoint would refuse
(a bad body, a context too long) goes to the error file with the same status and error body.
Output and error files are ordinary files of the :class:`~pipeline.simulator._files.FileStore`
(``purpose="batch_output"``), downloaded with ``GET /v1/files/{id}/content``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import msgspec

from pipeline.simulator._files import FileStore
from pipeline.simulator._schemas import RequestError

__all__ = ["ENDPOINTS", "BatchStore", "LineAnswer"]

#: Endpoints a batch may be for (the ones the simulator answers).
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
#: One input file's limits, as OpenAI documents them.
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
_TERMINAL = ("completed", "failed", "expired", "cancelled")

#: ``answer(endpoint, body_bytes) -> (status, response_body_bytes, prompt_tokens)``.
LineAnswer = Callable[[str, bytes], tuple[int, bytes, int]]

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class BatchStore:
    """The batches of one simulator.

    Args:
        files: where input files are read and output files are written.
        answer: answers one request line (see :data:`LineAnswer`).
        seconds: how long a batch takes from creation to ``completed``.
        expire_after: ``None``, or the fraction of lines (0 to 1) answered before every batch
            expires (the rest go to the error file as ``batch_expired``).
        queue_tokens: the most prompt tokens of unfinished batches per model (OpenAI's
            "enqueued token limit"); a batch over it fails with ``token_limit_exceeded``.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, files: FileStore, answer: LineAnswer, *, seconds: float = 2.0,
                 expire_after: float | None = None, queue_tokens: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.files = files
        self.answer = answer
        self.seconds = seconds
        self.expire_after = expire_after
        self.queue_tokens = queue_tokens
        self.clock = clock
        self.batches: dict[str, dict[str, Any]] = {}
        #: Lines answered (billed) over the store's life: what a test counts paid answers from.
        self.lines_answered = 0
        self._state: dict[str, _Work] = {}
        self._counter = 0

    # -- the API --------------------------------------------------------------------------------
    def create(self, body: bytes) -> dict[str, Any]:
        """Handle ``POST /batches``; return the Batch object (``validating``)."""
        try:
            params = _decode(body or b"{}")
        except msgspec.DecodeError:
            raise RequestError("We could not parse the JSON body of your request.") from None
        if not isinstance(params, dict):
            raise RequestError("The request body must be a JSON object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(params.get(name), str):
                raise RequestError(f"Missing required parameter: '{name}'.", name,
                                   "missing_required_parameter")
        if params["endpoint"] not in ENDPOINTS:
            raise RequestError(f"Invalid value for 'endpoint': '{params['endpoint']}'. "
                               f"Supported: {', '.join(ENDPOINTS)}.", "endpoint",
                               "invalid_value")
        if params["completion_window"] != "24h":
            raise RequestError("Invalid value for 'completion_window': only '24h' is "
                               "supported.", "completion_window", "invalid_value")
        info = self.files.files.get(params["input_file_id"])
        if info is None:
            raise RequestError(f"No such File object: {params['input_file_id']}",
                               "input_file_id", None, 404)
        if info["purpose"] != "batch":
            raise RequestError("The input file must be uploaded with purpose 'batch'.",
                               "input_file_id", "invalid_value")
        metadata = params.get("metadata")
        if metadata is not None and not (isinstance(metadata, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
            raise RequestError("Invalid 'metadata': an object of strings.", "metadata",
                               "invalid_value")
        self._counter += 1
        batch_id = f"batch_sim{self._counter:08d}"
        now = int(time.time())
        batch = {"id": batch_id, "object": "batch", "endpoint": params["endpoint"],
                 "errors": None, "input_file_id": params["input_file_id"],
                 "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": now,
                 "in_progress_at": None, "expires_at": now + 86_400, "finalizing_at": None,
                 "completed_at": None, "failed_at": None, "expired_at": None,
                 "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": metadata}
        self.batches[batch_id] = batch
        self._state[batch_id] = _Work(self.clock())
        return batch

    def get(self, batch_id: str) -> dict[str, Any]:
        """Handle ``GET /batches/{id}``: the batch as it stands now."""
        batch = self.batches.get(batch_id)
        if batch is None:
            raise RequestError(f"No such Batch object: {batch_id}", "batch_id", None, 404)
        self._advance(batch)
        return batch

    def list(self, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        """Handle ``GET /batches``: newest first, ``after`` a batch id, at most ``limit``."""
        ordered = sorted(self.batches, reverse=True)
        if after is not None and after in self.batches:
            ordered = ordered[ordered.index(after) + 1:]
        page = [self.get(batch_id) for batch_id in ordered[:max(1, min(limit, 100))]]
        return {"object": "list", "data": page, "has_more": len(ordered) > len(page),
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None}

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """Handle ``POST /batches/{id}/cancel``."""
        batch = self.get(batch_id)
        if batch["status"] in _TERMINAL or batch["status"] == "cancelling":
            if batch["status"] != "cancelled":
                raise RequestError(f"Cannot cancel a batch with status {batch['status']}.",
                                   None, "invalid_state", 409)
            return batch
        work = self._state[batch_id]
        work.cancelled_at = self.clock()
        batch["status"] = "cancelling"
        batch["cancelling_at"] = int(time.time())
        return batch

    # -- time passing -----------------------------------------------------------------------------
    def _advance(self, batch: dict[str, Any]) -> None:
        status = batch["status"]
        if status in _TERMINAL:
            return
        work = self._state[batch["id"]]
        elapsed = self.clock() - work.created
        seconds = self.seconds
        if status == "validating":
            if elapsed < 0.1 * seconds:
                return
            self._validate(batch, work)
            if batch["status"] != "in_progress":
                return
        if work.cancelled_at is not None:
            self._answer_until(batch, work, work.cancelled_at - work.created)
            if self.clock() - work.cancelled_at >= min(0.1 * seconds, 0.5):
                self._finish(batch, work, "cancelled")
            return
        self._answer_until(batch, work, elapsed)
        if work.done == len(work.lines):
            if work.stop_at is not None:  # expired: the rest are never answered
                self._finish(batch, work, "expired")
            elif elapsed >= seconds:
                self._finish(batch, work, "completed")
            elif batch["status"] == "in_progress":
                batch["status"] = "finalizing"
                batch["finalizing_at"] = int(time.time())

    def _validate(self, batch: dict[str, Any], work: _Work) -> None:
        data = self.files.contents.get(batch["input_file_id"], b"")
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        tokens = 0
        for number, raw in enumerate(data.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = _decode(raw)
            except msgspec.DecodeError:
                line = None
            problem = _line_problem(line, batch["endpoint"], seen)
            if problem is not None:
                errors.append({"code": problem[0], "message": problem[1], "param": problem[2],
                               "line": number})
                continue
            assert isinstance(line, dict)
            seen.add(line["custom_id"])
            body = _encode(line["body"])
            work.lines.append((line["custom_id"], body))
            tokens += len(body) // 4
        if not errors and not work.lines:
            errors.append({"code": "empty_file", "message": "The input file has no requests.",
                           "param": None, "line": None})
        if len(work.lines) > MAX_REQUESTS or len(data) > MAX_BYTES:
            errors.append({"code": "too_many_requests" if len(work.lines) > MAX_REQUESTS else
                           "file_too_large", "message": f"A batch holds at most {MAX_REQUESTS:,}"
                           f" requests and {MAX_BYTES // 2**20} MB.", "param": None,
                           "line": None})
        model = _model_of(work.lines)
        if not errors and self.queue_tokens is not None:
            queued = sum(w.tokens for b, w in self._state.items() if w is not work and
                         w.model == model and self.batches[b]["status"] in
                         ("in_progress", "finalizing", "cancelling"))
            if queued + tokens > self.queue_tokens:
                errors.append({"code": "token_limit_exceeded", "message": (
                    f"Enqueued token limit reached for {model}. Limit: {self.queue_tokens:,} "
                    f"enqueued tokens. Please try again once some in_progress batches have "
                    "been completed."), "param": None, "line": None})
        now = int(time.time())
        batch["request_counts"]["total"] = len(work.lines)
        if errors:
            work.lines.clear()
            batch["request_counts"]["total"] = 0
            batch.update(status="failed", failed_at=now,
                         errors={"object": "list", "data": errors})
            return
        work.tokens, work.model = tokens, model
        if self.expire_after is not None:
            work.stop_at = math.floor(len(work.lines) * self.expire_after)
        batch.update(status="in_progress", in_progress_at=now)

    def _answer_until(self, batch: dict[str, Any], work: _Work, elapsed: float) -> None:
        """Answer the lines due by ``elapsed`` seconds after creation."""
        total = len(work.lines)
        span = 0.8 * self.seconds
        due = total if span <= 0 else math.floor(total * (elapsed - 0.1 * self.seconds) / span)
        due = max(0, min(total, due))
        if work.stop_at is not None:
            due = min(due, work.stop_at)
            if due == work.stop_at and elapsed >= 0.9 * self.seconds:
                due = total  # the rest expire
        counts = batch["request_counts"]
        while work.done < due:
            custom_id, body = work.lines[work.done]
            work.done += 1
            if work.stop_at is not None and work.done > work.stop_at:
                work.errors.append(_result_line(custom_id, None, None, {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion "
                               "window expired."}))
                counts["failed"] += 1
                continue
            status, answer, _ = self.answer(batch["endpoint"], body)
            self.lines_answered += status == 200
            result = _result_line(custom_id, status, _decode(answer), None)
            if status == 200:
                work.output.append(result)
                counts["completed"] += 1
            else:
                work.errors.append(result)
                counts["failed"] += 1

    def _finish(self, batch: dict[str, Any], work: _Work, status: str) -> None:
        now = int(time.time())
        if work.output:
            batch["output_file_id"] = self.files.add(
                f"{batch['id']}_output.jsonl", b"".join(work.output), "batch_output")
        if work.errors:
            batch["error_file_id"] = self.files.add(
                f"{batch['id']}_error.jsonl", b"".join(work.errors), "batch_output")
        batch["status"] = status
        batch[f"{status}_at"] = now
        if status == "completed" and batch["finalizing_at"] is None:
            batch["finalizing_at"] = now


class _Work:
    """What a batch has to do and has done (the Batch object is the public part)."""

    __slots__ = ("cancelled_at", "created", "done", "errors", "lines", "model", "output",
                 "stop_at", "tokens")

    def __init__(self, created: float) -> None:
        self.created = created
        self.lines: list[tuple[str, bytes]] = []
        self.done = 0
        self.output: list[bytes] = []
        self.errors: list[bytes] = []
        self.tokens = 0
        self.model = ""
        self.stop_at: int | None = None
        self.cancelled_at: float | None = None


def _line_problem(line: Any, endpoint: str,
                  seen: set[str]) -> tuple[str, str, str | None] | None:
    """Why an input line cannot be part of the batch, or ``None``."""
    if not isinstance(line, dict):
        return "invalid_json_line", "This line is not a JSON object.", None
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "missing_required_parameter", "Missing 'custom_id'.", "custom_id"
    if custom_id in seen:
        return "duplicate_custom_id", f"The custom_id '{custom_id}' is used more than once.", \
            "custom_id"
    if line.get("method") != "POST":
        return "invalid_method", "Only POST requests are supported in a batch.", "method"
    if line.get("url") != endpoint:
        return "mismatched_endpoint", (f"The url '{line.get('url')}' does not match the "
                                       f"batch's endpoint {endpoint}."), "url"
    if not isinstance(line.get("body"), dict):
        return "missing_required_parameter", "Missing 'body' (a JSON object).", "body"
    return None


def _model_of(lines: list[tuple[str, bytes]]) -> str:
    if not lines:
        return ""
    body = _decode(lines[0][1])
    return str(body.get("model", "")) if isinstance(body, dict) else ""


_counter = [0]


def _result_line(custom_id: str, status: int | None, body: Any,
                 error: dict[str, str] | None) -> bytes:
    """One line of an output or error file, as OpenAI writes it."""
    _counter[0] += 1
    response = None if status is None else {
        "status_code": status, "request_id": f"req_batch{_counter[0]:010d}", "body": body}
    return _encode({"id": f"batch_req_{_counter[0]:010d}", "custom_id": custom_id,
                    "response": response, "error": error}) + b"\n"
