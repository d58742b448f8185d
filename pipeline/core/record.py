"""The record: one input item on its way through the pipeline.

Every stage takes a :class:`Record` and gives it back, filled in a little more. Errors are
values here (``record.error``), never exceptions that end the stream: one bad row must not stop
the rows around it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipeline.core.protocols import Grant
from pipeline.core.request import APIRequest, Response, Usage
from pipeline.errors import APIError, RateLimitError, SchemaValidationError, StageError

__all__ = ["KeptParts", "KeptResponse", "Record", "kept_parts"]


# What every KeptResponse's ``headers`` is: the headers are not kept. One dict shared by
# every kept response (nothing writes a response's headers; a read-only mapping would not
# pickle, and results are pickled: to disk, across processes).
_NO_HEADERS: dict[str, str] = {}
# Model names and finish reasons repeat on every row: one string each, not one a row.
_NAMES: dict[str, str] = {}


def _name(value: Any) -> str | None:
    if type(value) is not str:
        return None
    if len(_NAMES) > 10_000:  # a server naming every answer differently: stop sharing
        return value
    return _NAMES.setdefault(value, value)


class KeptResponse(Response, gc=False):
    """What a finished record keeps of a chat, completion or embeddings response by default:
    the answer (text, refusal or first vector), ``finish_reason``, the model and ``usage``;
    not the request, the headers nor the rest of the body (ids, timestamps, fingerprints).

    ``pipeline.run`` keeps these (about 100 bytes a row, against about 2 KB for the request
    and the whole body) unless given ``keep_responses=True``; a response with more than one
    answer in it (``n`` > 1, tool calls, log probabilities) is kept whole. ``body`` rebuilds
    the kept part of the body, in the server's shape, so code reading
    ``body["choices"][0]["message"]["content"]`` or ``body["usage"]`` still works.

    >>> kept = KeptResponse(status=200, body=None, kind="chat", model="gpt-4o-mini",
    ...                     content="Paris", finish_reason="stop", has_usage=True,
    ...                     prompt_tokens=9, completion_tokens=1, total_tokens=10)
    >>> kept.body["choices"][0]["message"]["content"], kept.usage.total_tokens
    ('Paris', 10)
    """

    kind: str = "chat"  # "chat", "completion" or "embedding"
    model: str | None = None
    #: The model the request asked for (costs are looked up by it; the request is not kept).
    requested_model: str | None = None
    content: str | None = None
    refusal: str | None = None
    finish_reason: str | None = None
    embedding: list[float] | None = None
    has_usage: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0

    @property  # type: ignore[misc]  # a field of Response, rebuilt here on reading
    def body(self) -> dict[str, Any]:
        """The kept part of the body, in the server's shape (a new dict each time)."""
        body: dict[str, Any] = {}
        if self.model is not None:
            body["model"] = self.model
        if self.kind == "embedding":
            body["object"] = "list"
            body["data"] = [{"object": "embedding", "index": 0, "embedding": self.embedding}]
        elif self.kind == "completion":
            body["object"] = "text_completion"
            body["choices"] = [{"index": 0, "text": self.content,
                                "finish_reason": self.finish_reason}]
        else:
            message: dict[str, Any] = {"role": "assistant", "content": self.content}
            if self.refusal is not None:
                message["refusal"] = self.refusal
            body["object"] = "chat.completion"
            body["choices"] = [{"index": 0, "message": message,
                                "finish_reason": self.finish_reason}]
        if self.has_usage:
            usage: dict[str, Any] = {"prompt_tokens": self.prompt_tokens,
                                     "completion_tokens": self.completion_tokens,
                                     "total_tokens": self.total_tokens}
            if self.cached_tokens:
                usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
            body["usage"] = usage
        return body

    @property
    def usage(self) -> Usage | None:
        if not self.has_usage:
            return None
        return Usage(self.prompt_tokens, self.completion_tokens, self.total_tokens)

    @property
    def text(self) -> str | None:
        """The answer text (a chat refusal when there is no content), else ``None``."""
        if self.kind == "embedding":
            return None
        return self.content if self.content is not None or self.kind == "completion" \
            else self.refusal

    @classmethod
    def of(cls, response: Response, requested_model: str | None = None) -> Response:
        """The kept part of ``response``, or ``response`` itself when its body holds more
        than one plain answer (several choices, tool calls, log probabilities, fields this
        class does not know): nothing a reader could use is dropped. ``requested_model``:
        the model the request asked for (what its cost is looked up by)."""
        parts = kept_parts(response, requested_model)
        if parts is None:
            return response
        # Positional: msgspec takes a dozen keywords about six times slower.
        return cls(*parts, status=response.status, body=None, headers=_NO_HEADERS,
                   latency=response.latency)


#: What a :class:`KeptResponse` holds beyond the status and latency, in its field order:
#: kind, model, requested model, content, refusal, finish reason, embedding, has usage,
#: prompt, completion, total and cached tokens.
KeptParts = tuple[str, str | None, str | None, str | None, str | None, str | None,
                  list[float] | None, bool, int, int, int, int]


def kept_parts(response: Response, requested_model: str | None = None) -> KeptParts | None:
    """What :meth:`KeptResponse.of` keeps of ``response`` (:data:`KeptParts`), or ``None``
    when the response must be kept whole (it is not a plain ``Response``, or its body holds
    more than one plain answer). Names that repeat on every row (models, finish reasons)
    come back as one shared string each."""
    body = response.body
    if type(response) is not Response or type(body) is not dict or \
            not (body.keys() <= _BODY_KEYS or _plain(body, _BODY_KEYS)):
        return None
    kind = "chat"
    content = refusal = reason = None
    embedding = None
    data, choices = body.get("data"), body.get("choices")
    if type(choices) is list and len(choices) == 1 and data is None:
        choice = choices[0]
        if type(choice) is not dict or \
                not (choice.keys() <= _CHOICE_KEYS or _plain(choice, _CHOICE_KEYS)):
            return None
        message, text = choice.get("message"), choice.get("text")
        if type(message) is dict and text is None:
            content, refusal = message.get("content"), message.get("refusal")
            if not (message.keys() <= _MESSAGE_KEYS or _plain(message, _MESSAGE_KEYS)) or \
                    message.get("role") not in (None, "assistant") or \
                    not isinstance(content, _TEXT) or \
                    not isinstance(refusal, _TEXT):
                return None
        elif isinstance(text, str) and message is None:
            kind, content = "completion", text
        else:
            return None
        reason = choice.get("finish_reason")
        if not isinstance(reason, _TEXT):
            return None
    elif type(data) is list and len(data) == 1 and choices is None:
        first = data[0]
        if type(first) is not dict or \
                not (first.keys() <= _EMBEDDING_KEYS or _plain(first, _EMBEDDING_KEYS)) or \
                type(first.get("embedding")) is not list:
            return None
        kind, embedding = "embedding", first["embedding"]
    else:
        return None
    name = body.get("model")
    if not isinstance(name, _TEXT):
        return None
    raw = body.get("usage")
    prompt = completion = total = cached = 0
    if raw is not None:
        if type(raw) is not dict or not (raw.keys() <= _USAGE_KEYS or _plain(raw, _USAGE_KEYS)):
            return None  # counts that are not plain: keep them as they came
        prompt = raw.get("prompt_tokens", 0)
        completion = raw.get("completion_tokens", 0)
        total = raw.get("total_tokens", 0)
        if type(prompt) is not int or type(completion) is not int or \
                type(total) is not int:
            return None  # Response.usage ignores such counts: so must we
        details = raw.get("prompt_tokens_details")
        if details is not None:
            if type(details) is not dict or \
                    not (details.keys() <= _CACHED_KEYS or _plain(details, _CACHED_KEYS)):
                return None
            cached = details.get("cached_tokens") or 0
            if type(cached) is not int:
                return None
        details = raw.get("completion_tokens_details")
        if details is not None and (type(details) is not dict or not _plain(details)):
            return None
    names = _NAMES
    if name is not None:
        name = names.get(name) or _name(name)
    asked = requested_model if requested_model is None else \
        names.get(requested_model) or _name(requested_model)
    return (kind, name, asked, content, refusal,
            reason if reason is None else names.get(reason) or _name(reason),
            embedding, raw is not None, prompt, completion, total, cached)


def _plain(mapping: dict[Any, Any], known: frozenset[str] = frozenset()) -> bool:
    """Whether every key of ``mapping`` outside ``known`` holds nothing (None, 0, empty).
    (kept_parts checks ``mapping.keys() <= known``, the usual case, in C before calling;
    here only the other keys are read: OpenAI's ``logprobs: null``, ``annotations: []``.)"""
    for key in mapping.keys() - known:
        value = mapping[key]
        if value is not None and value != 0 and value != [] and value != {} and \
                not (isinstance(value, dict) and _plain(value)):
            return False
    return True


# Keys whose values a kept response holds, or that hold nothing a reader of results uses
# (ids, timestamps, fingerprints); any other key with a value keeps the body whole.
_BODY_KEYS = frozenset({"id", "object", "created", "model", "choices", "data", "usage",
                        "system_fingerprint", "service_tier"})
_CHOICE_KEYS = frozenset({"index", "message", "text", "finish_reason"})
_MESSAGE_KEYS = frozenset({"role", "content", "refusal"})
_EMBEDDING_KEYS = frozenset({"object", "index", "embedding"})
_USAGE_KEYS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens",
                         "prompt_tokens_details", "completion_tokens_details"})
_CACHED_KEYS = frozenset({"cached_tokens"})
_TEXT = (str, type(None))  # a tuple: `str | None` would build a union on every call


class Record(msgspec.Struct, kw_only=True):
    """One input item and everything that happened to it.

    Attributes:
        index: position in the input (results are put back in this order).
        row: the input item as given (a dict, a pandas row, a string...).
        request: the request built from the row (``None`` until built, or if building failed).
        path: the endpoint path the request goes to (``"chat/completions"``): a string,
            where a job's ``endpoint`` is the :class:`~pipeline.http.Endpoint` object.
        token_estimate: tokens reserved on the rate limiter for one attempt.
        cache_key: the request's key in the response cache (no secrets in it).
        attempts: how many times the request was sent.
        response: the successful response, if any.
        error: why the item failed (an exception *value*), if it did.
        cached: whether the response came from the cache (nothing was sent).
        value: the decoded structured answer (a job with ``schema=``), else ``None``.
        reasks: how many times a structured answer was asked again for not fitting.
        earlier_errors: the errors of earlier attempts that were tried again (retries and
            re-asks), oldest first; ``None`` when the first attempt was the last. A track
            stage counts them, wherever the retry stage ran.
        started / finished: ``time.perf_counter()`` stamps of the record's first stage and of
            its completion; ``latency`` is the last attempt's HTTP round trip.
        batched: how many rows shared the request that answered this one (embeddings in
            batches; 1 for a row a batch stage sent alone); 0 without a batch stage, or from
            the cache.
        data: yours (``None`` until a stage of yours sets it): what your own stages compute
            for the row; frames and written files get it as columns.

    >>> r = Record(index=0, row={"text": "hi"})
    >>> r.ok, r.status
    (False, 'pending')
    """

    index: int
    row: Any = None
    request: APIRequest | None = None
    path: str | None = None
    token_estimate: int = 0
    cache_key: str | None = None
    attempts: int = 0
    response: Response | None = None
    error: BaseException | None = None
    cached: bool = False
    started: float = 0.0
    finished: float = 0.0
    latency: float = 0.0
    #: The limiter grant the acquire stage made (a :class:`~pipeline.limiter.Lease`), settled
    #: by the call stage with the outcome; ``None`` outside those two stages.
    lease: Grant | None = None
    #: The decoded structured answer (a job with ``schema=``): a Struct, a pydantic model or
    #: a JSON value; ``None`` until decoded, or when the answer did not fit.
    value: Any = None
    #: How many times the answer was asked again because it did not fit the schema.
    reasks: int = 0
    #: Errors of earlier attempts that were tried again, oldest first (None: none).
    earlier_errors: list[BaseException] | None = None
    #: Tokens of answers paid for and thrown away (re-asked for not fitting the schema).
    discarded_prompt_tokens: int = 0
    discarded_completion_tokens: int = 0
    #: Rows that shared the request that answered this one (0: no batch stage sent it).
    batched: int = 0
    #: The Batch API batch that answered this record (costed at the batch price), or ``None``.
    batch_id: str | None = None
    #: Yours: anything a stage of yours computes for the row (a score, a parsed field).
    #: The pipeline never reads it; ``run()`` keeps it, and ``results.to_pandas()`` /
    #: ``to_polars()``, ``run_frame`` and ``run_file``'s outputs add it as columns after the
    #: others (a dict: one per key, a name taken already suffixed ``_data``; any other
    #: value: one ``data`` column; what JSON has no type for, as text).
    data: Any = None

    def paid_tokens(self) -> tuple[int, int] | None:
        """``(prompt, completion)`` tokens this record's answers were billed, thrown-away
        answers included; ``None`` when an answer that was billed carries no ``usage``.

        A cached answer and an error without an answer cost nothing; a last answer that did
        not fit its schema was still billed, and so was a 2xx withheld by a content filter
        (:class:`~pipeline.errors.ContentFilterError` keeps the body and its ``usage``).

        >>> Record(index=0, discarded_prompt_tokens=10, discarded_completion_tokens=4).paid_tokens()
        (10, 4)
        """
        prompt, completion = self.discarded_prompt_tokens, self.discarded_completion_tokens
        error, response = self.error, self.response
        if response is None and isinstance(error, APIError) and isinstance(error.body, dict) \
                and error.status is not None and 200 <= error.status < 300:
            # A 2xx without an answer (a content filter) is billed all the same, when its
            # body says so; one without usage is taken as not billed.
            usage = Response(status=error.status, body=error.body).usage
            if usage is None:
                return prompt, completion
            return prompt + usage.prompt_tokens, completion + usage.completion_tokens
        if response is None or self.cached:
            return prompt, completion
        if error is not None and not isinstance(error, SchemaValidationError | StageError):
            # (an answer a stage of yours then failed was billed all the same)
            return prompt, completion
        usage = response.usage
        if usage is None:
            return None
        return prompt + usage.prompt_tokens, completion + usage.completion_tokens

    @property
    def ok(self) -> bool:
        """True once a response arrived (from the server or the cache)."""
        return self.response is not None and self.error is None

    @property
    def done(self) -> bool:
        """True once the record succeeded or failed."""
        return self.response is not None or self.error is not None

    @property
    def status(self) -> str:
        """``"succeeded"``, ``"failed"`` or ``"pending"``."""
        if self.error is not None:
            return "failed"
        return "succeeded" if self.response is not None else "pending"

    @property
    def error_type(self) -> str | None:
        """The error's class name (``"RateLimitError"``), or ``None``."""
        return None if self.error is None else type(self.error).__name__

    @property
    def retryable(self) -> bool:
        """Whether the error is worth another attempt."""
        return isinstance(self.error, APIError) and self.error.retryable

    @property
    def rate_limited(self) -> bool:
        """Whether the error is a 429 rate-limit answer."""
        return isinstance(self.error, RateLimitError)

    @property
    def body(self) -> Any:
        """The response body, or ``None``.

        Records from :func:`pipeline.run` keep only the answer part of a plain answer's body
        (a :class:`KeptResponse`: model, the first choice's text and finish reason, usage):
        give ``run(..., keep_responses=True)`` for the whole body as the server sent it.
        """
        return None if self.response is None else self.response.body

    def slim(self) -> None:
        """Drop what a finished record no longer needs and a reader of results rarely
        wants: the request (its body held the prompt) and every part of the response but
        the answer (:meth:`KeptResponse.of`): about 2 KB a row less. What ``pipeline.run``
        keeps of each record unless given ``keep_responses=True`` (in columns:
        :class:`~pipeline.core.columns.RecordColumns`).

        >>> r = Record(index=0, response=Response(status=200, body={"id": "x", "choices": [
        ...     {"message": {"content": "hi"}, "finish_reason": "stop"}]}))
        >>> r.slim(); r.text, type(r.response).__name__
        ('hi', 'KeptResponse')
        """
        request = self.request
        self.request = None
        self.lease = None
        response = self.response
        if response is not None and type(response) is Response:
            body = request.body if request is not None else None
            asked = body.get("model") if isinstance(body, dict) else None
            self.response = KeptResponse.of(response, asked if isinstance(asked, str) else None)

    @property
    def text(self) -> str | None:
        """The answer text of a chat or completion response (first choice), else ``None``.

        A chat answer that is a refusal (``content`` null, ``refusal`` set) gives the refusal:
        the model answered, and what it said is that it will not. Such a record is a success
        (a structured job's decode stage fails it with reason ``"refusal"``).

        >>> Record(index=0, response=Response(status=200, body={"choices": [{"message": {
        ...     "content": None, "refusal": "I can't help with that."}}]})).text
        "I can't help with that."
        """
        if type(self.response) is KeptResponse:
            return self.response.text
        body = self.body
        if not isinstance(body, dict):
            return None
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                return content
            refusal = message.get("refusal")
            return refusal if isinstance(refusal, str) else None
        text = first.get("text")
        return text if isinstance(text, str) else None

    @property
    def embedding(self) -> list[float] | None:
        """The first embedding vector of an embeddings response, else ``None``."""
        if type(self.response) is KeptResponse:
            return self.response.embedding
        body = self.body
        if not isinstance(body, dict):
            return None
        data = body.get("data")
        if isinstance(data, list) and data and isinstance(data[0], dict):
            vector = data[0].get("embedding")
            if isinstance(vector, list):
                return vector
        return None

    def __repr__(self) -> str:
        parts = [f"index={self.index}", self.status]
        if self.path:
            parts.append(repr(self.path))
        if self.attempts:
            parts.append(f"attempts={self.attempts}")
        if self.cached:
            parts.append("cached")
        if self.error is not None:
            parts.append(f"error={type(self.error).__name__}: {str(self.error)[:100]}")
        elif self.response is not None:
            text = self.text
            parts.append(f"text={text[:60]!r}" if text is not None else
                         f"status_code={self.response.status}")
        return f"Record({', '.join(parts)})"
