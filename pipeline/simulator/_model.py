"""The fake model: validate a generation request, count its tokens, write its answer.

Chat completions, legacy completions and embeddings. The token cost charged to the rate limit
is ``prompt_tokens + max_tokens * n`` (embeddings: the input tokens), where ``max_tokens`` is
``max_completion_tokens`` or ``max_tokens`` from the request, else ``default_max_tokens`` for
chat and 16 (the API's own default) for legacy completions. The counting rule is in
:mod:`pipeline.simulator._tokens`.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

import msgspec

from pipeline.simulator._config import SimulatorConfig
from pipeline.simulator._schemas import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    RequestError,
    check_input,
    decode_body,
)
from pipeline.simulator._structured import fake_json_text, spoil_json_text
from pipeline.simulator._tokens import (
    answer_length,
    count_chat_tokens,
    count_input_tokens,
    count_schema_tokens,
    count_text_tokens,
    default_answer,
    fake_embedding,
)

__all__ = ["FakeModel", "Prepared", "Responder", "bad_answer"]

#: ``responder(endpoint, body) -> text``: the assistant text for a chat or completion request
#: (``endpoint`` is ``"chat/completions"`` or ``"completions"``, ``body`` the decoded JSON).
Responder = Callable[[str, dict[str, Any]], str]

_encode = msgspec.json.encode
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # the legacy completions API's own default


class Prepared:
    """A validated generation request: its costs and how to build its answer."""

    __slots__ = ("cost", "kind", "max_tokens", "n", "prompt_tokens", "request")

    def __init__(self, kind: str, request: Any, prompt_tokens: int, max_tokens: int | None,
                 n: int, cost: int) -> None:
        self.kind = kind
        self.request = request
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.n = n
        self.cost = cost


class FakeModel:
    """Answers chat, completion and embedding requests deterministically (see module doc)."""

    def __init__(self, config: SimulatorConfig, responder: Responder | None = None) -> None:
        self.config = config
        self.responder = responder
        self._counter = 0
        # Its own seeded stream, so spoiling answers does not shift the fault and latency draws.
        self._spoil_rng = random.Random(config.seed)
        #: Whether the last :meth:`answer` spoiled a JSON answer (``invalid_json``).
        self.spoiled = False

    def prepare(self, kind: str, body: bytes) -> Prepared:
        """Validate a ``kind`` ("chat", "completion", "embedding") body and count its cost."""
        cfg = self.config
        request: Any
        if kind == "chat":
            request = decode_body(body, ChatRequest)
            prompt = count_chat_tokens(request.messages) + \
                count_schema_tokens(request.response_format)
            asked = request.max_completion_tokens or request.max_tokens
            max_tokens = asked or cfg.default_max_tokens
        elif kind == "completion":
            request = decode_body(body, CompletionRequest)
            check_input(request.prompt, "prompt")
            prompt = count_input_tokens(request.prompt)
            asked = request.max_tokens
            max_tokens = asked or _COMPLETIONS_DEFAULT_MAX_TOKENS
        else:
            request = decode_body(body, EmbeddingRequest)
            check_input(request.input, "input")
            if request.input == "":
                raise RequestError("'input' must not be empty.", "input", "invalid_value")
            prompt = count_input_tokens(request.input)
            self._check_model(request.model)
            # Each input is held to the context window on its own (OpenAI: 8,192 tokens for
            # text-embedding-3-*): one long row in a batch makes the whole request a 400.
            longest = max(map(count_input_tokens, _inputs_of(request.input)), default=0)
            if longest > cfg.context_window:
                raise RequestError(
                    f"This model's maximum context length is {cfg.context_window} tokens, "
                    f"however you requested {longest} tokens in one input. Please reduce "
                    "your input.", "input", "context_length_exceeded")
            return Prepared(kind, request, prompt, None, 1, prompt)
        self._check_model(request.model)
        if request.stream:
            raise RequestError("The simulator does not stream: 'stream' must be false.",
                               "stream", "unsupported_value")
        n = request.n or 1
        if prompt + (asked or 0) > cfg.context_window:
            raise RequestError(
                f"This model's maximum context length is {cfg.context_window} tokens. However, "
                f"you requested {prompt + (asked or 0)} tokens ({prompt} in the messages, "
                f"{asked or 0} in the completion). Please reduce the length of the messages or "
                "completion.", "messages", "context_length_exceeded")
        return Prepared(kind, request, prompt, max_tokens, n, prompt + max_tokens * n)

    def _check_model(self, model: str) -> None:
        models = self.config.models
        if models and model not in models:
            raise RequestError(f"The model `{model}` does not exist or you do not have access "
                               "to it.", None, "model_not_found", 404)

    def _text(self, prepared: Prepared, body: bytes, index: int) -> tuple[str, str]:
        """One choice's text and finish_reason."""
        limit = prepared.max_tokens or 1
        if self.responder is not None:
            endpoint = "chat/completions" if prepared.kind == "chat" else "completions"
            text = self.responder(endpoint, msgspec.json.decode(body))
            if count_text_tokens(text) > limit:
                return text[: limit * 4], "length"
            return text, "stop"
        digest = hashlib.sha256(body + index.to_bytes(2, "big")).digest()
        response_format = getattr(prepared.request, "response_format", None)
        if response_format:
            json_text = fake_json_text(response_format, digest)
            spoil = self.config.invalid_json
            if json_text is not None and spoil and self._spoil_rng.random() < spoil:
                json_text = spoil_json_text(json_text, response_format, self._spoil_rng)
                self.spoiled = True
            if json_text is not None:
                if count_text_tokens(json_text) > limit:  # cut JSON, as a real model's would be
                    return json_text[: limit * 4], "length"
                return json_text, "stop"
        low, high = self.config.answer_tokens
        length = answer_length(digest, low, high)
        if length > limit:
            return default_answer(digest, limit), "length"
        return default_answer(digest, length), "stop"

    def answer(self, prepared: Prepared, body: bytes) -> tuple[bytes, tuple[int, int]]:
        """The response body and its (prompt_tokens, completion_tokens)."""
        req = prepared.request
        created = int(time.time())
        self._counter += 1
        self.spoiled = False
        if prepared.kind == "embedding":
            inputs = _inputs_of(req.input)
            dims = req.dimensions or self.config.embedding_dimensions
            fmt = req.encoding_format or "float"
            data = [{"object": "embedding", "index": i,
                     "embedding": fake_embedding(_encode([req.model, item]), dims, fmt)}
                    for i, item in enumerate(inputs)]
            usage = {"prompt_tokens": prepared.prompt_tokens,
                     "total_tokens": prepared.prompt_tokens}
            return _encode({"object": "list", "data": data, "model": req.model,
                            "usage": usage}), (prepared.prompt_tokens, 0)
        completion = 0
        choices = []
        for index in range(prepared.n):
            text, finish = self._text(prepared, body, index)
            completion += count_text_tokens(text)
            if prepared.kind == "chat":
                choices.append({"index": index, "message": {
                    "role": "assistant", "content": text, "refusal": None, "annotations": []},
                    "logprobs": None, "finish_reason": finish})
            else:
                choices.append({"index": index, "text": text, "logprobs": None,
                                "finish_reason": finish})
        usage = {"prompt_tokens": prepared.prompt_tokens, "completion_tokens": completion,
                 "total_tokens": prepared.prompt_tokens + completion}
        obj = "chat.completion" if prepared.kind == "chat" else "text_completion"
        prefix = "chatcmpl" if prepared.kind == "chat" else "cmpl"
        return _encode({"id": f"{prefix}-sim{self._counter:012d}", "object": obj,
                        "created": created, "model": req.model, "choices": choices,
                        "usage": usage, "system_fingerprint": "fp_simulator"}), (
            prepared.prompt_tokens, completion)


def _inputs_of(value: Any) -> list[Any]:
    """An embeddings ``input`` as its inputs: a string or one list of token ids is one."""
    if isinstance(value, str) or (value and isinstance(value[0], int)):
        return [value]
    return list(value)


def bad_answer(fault: str, kind: str | None, answer: bytes, usage: tuple[int, int],
               headers: dict[str, str]) -> tuple[bytes, tuple[int, int], str]:
    """The 200 body a bad-answer fault sends instead of ``answer``: (body, usage, content type).

    ``kind`` is the prepared request's (``"chat"``, ``"completion"``, ``"embedding"``, or
    ``None`` for files and fine-tuning), ``headers`` the request's (``echo_headers`` sends
    them back). The kinds are described on :class:`~pipeline.simulator.Faults`.
    """
    json = "application/json"
    if fault == "empty_body":
        return b"", (0, 0), json
    if fault == "null_body":
        return b"null", (0, 0), json
    if fault == "empty_object":
        return b"{}", (0, 0), json
    if fault == "list_body":
        return b"[]", (0, 0), json
    if fault == "error_200":
        return _encode({"error": {"message": "The upstream server failed to answer; please "
                                             "retry.", "type": "server_error", "param": None,
                                  "code": "upstream_error"}}), (0, 0), json
    if fault == "echo_headers":
        lines = [f"{name}: {value}" for name, value in headers.items()]
        auth = headers.get("authorization", "")
        bare = auth[7:].strip() if auth[:7].lower() == "bearer " else auth
        text = ("502 Bad Gateway: the upstream refused this request. It was sent with:\n"
                + "\n".join(lines) + f"\ncredential {bare} (check it)\n")
        return text.encode(), (0, 0), "text/plain"
    obj = msgspec.json.decode(answer)
    if fault == "empty_choices":
        obj["data" if kind == "embedding" else "choices"] = []
        usage = (0, 0)
    elif fault == "null_content":
        if kind == "embedding":
            for item in obj["data"]:
                item["embedding"] = None
        for choice in obj.get("choices", ()):
            if "message" in choice:
                choice["message"]["content"] = None
            else:
                choice["text"] = None
        usage = (0, 0)
    elif fault == "content_filter" and kind in ("chat", "completion"):
        for choice in obj["choices"]:
            choice["finish_reason"] = "content_filter"
            if "message" in choice:
                choice["message"]["content"] = None
            else:
                choice["text"] = ""
        usage = (usage[0], 0)
        obj["usage"] = {"prompt_tokens": usage[0], "completion_tokens": 0,
                        "total_tokens": usage[0]}
    if "usage" in obj and usage == (0, 0):
        del obj["usage"]
    return _encode(obj), usage, json
