"""The record: one input item on its way through the pipeline.

Every stage takes a :class:`Record` and gives it back, filled in a little more. Errors are
values here (``record.error``), never exceptions that end the stream: one bad row must not stop
the rows around it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from pipeline.core.request import APIRequest, Response
from pipeline.errors import APIError, RateLimitError, SchemaValidationError

if TYPE_CHECKING:  # a value the limiter layer makes; records only carry it
    from pipeline.limiter import Lease

__all__ = ["Record"]


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
    error: Any = None  # an exception instance: msgspec cannot type it more precisely
    cached: bool = False
    started: float = 0.0
    finished: float = 0.0
    latency: float = 0.0
    # The limiter grant the acquire stage made, settled by the call stage with the outcome.
    reservation: Lease | None = None
    #: The decoded structured answer (a job with ``schema=``): a Struct, a pydantic model or
    #: a JSON value; ``None`` until decoded, or when the answer did not fit.
    value: Any = None
    #: How many times the answer was asked again because it did not fit the schema.
    reasks: int = 0
    #: Errors of earlier attempts that were tried again, oldest first (None: none).
    earlier_errors: list[Any] | None = None
    #: Tokens of answers paid for and thrown away (re-asked for not fitting the schema).
    discarded_prompt_tokens: int = 0
    discarded_completion_tokens: int = 0
    #: Rows that shared the request that answered this one (0: no batch stage sent it).
    batched: int = 0
    #: The Batch API batch that answered this record (costed at the batch price), or ``None``.
    batch_id: str | None = None

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
        if error is not None and not isinstance(error, SchemaValidationError):
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
        """The response body, or ``None``."""
        return None if self.response is None else self.response.body

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
