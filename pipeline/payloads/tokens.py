"""Token estimates for request bodies: what the rate limiter reserves before a call.

An estimate is the prompt's tokens plus the most the answer can use (``max_tokens`` x ``n``),
which is also how OpenAI counts a request against a tokens-per-minute limit. After the call the
response's ``usage`` reconciles it, so the estimate needs to be fast and a little high rather
than exact: too low means 429s, too high only means a slower start.

Text is counted by a :class:`Tokenizer`. The default, :class:`HeuristicTokenizer`, costs about a
microsecond per string and needs nothing installed; plug in an exact one with
:func:`tiktoken_tokenizer` (``tiktoken`` is optional and downloads its vocabulary on first use)
or any object with ``count(text) -> int``::

    >>> body = {"model": "m", "messages": [{"role": "user", "content": "Say hi"}],
    ...         "max_tokens": 20}
    >>> estimate_tokens(body, "chat/completions")
    29
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

import msgspec

__all__ = [
    "CHAT_DEFAULT_MAX_TOKENS",
    "COMPLETION_DEFAULT_MAX_TOKENS",
    "IMAGE_TOKENS",
    "IMAGE_TOKENS_LOW_DETAIL",
    "MESSAGE_OVERHEAD_TOKENS",
    "REPLY_PRIMER_TOKENS",
    "SCHEMA_OVERHEAD_TOKENS",
    "HeuristicTokenizer",
    "Tokenizer",
    "chat_prompt_tokens",
    "completion_prompt_tokens",
    "embedding_input_tokens",
    "estimate_tokens",
    "max_output_tokens",
    "output_tokens_bound",
    "provider_charge",
    "resolve_tokenizer",
    "response_format_tokens",
    "schema_prompt_text",
    "tiktoken_tokenizer",
]

#: Reserved for the answer when a chat request sets no ``max_tokens``/``max_completion_tokens``.
#: The API itself has no small default there; 1,024 covers typical answers, and ``usage`` refunds
#: what was not used. Pass ``default_max_tokens=`` to a builder to change it.
CHAT_DEFAULT_MAX_TOKENS: Final = 1024
#: The legacy completions endpoint's own default ``max_tokens`` (from the API spec).
COMPLETION_DEFAULT_MAX_TOKENS: Final = 16
#: Per message: the ``<|start|>role ... <|end|>`` framing, role name included.
MESSAGE_OVERHEAD_TOKENS: Final = 4
#: Every chat reply is primed with ``<|start|>assistant<|message|>``.
REPLY_PRIMER_TOKENS: Final = 3
#: An image part of unknown size: a 1024x1024 image at high detail (85 + 4 tiles x 170).
IMAGE_TOKENS: Final = 765
#: An image part with ``"detail": "low"`` (a flat cost).
IMAGE_TOKENS_LOW_DETAIL: Final = 85
#: Framing around the tool definitions block.
TOOLS_OVERHEAD_TOKENS: Final = 10
#: Framing around a ``response_format`` JSON schema in the prompt. OpenAI does not document
#: how it counts a schema; users who measured ``usage`` report the tokens of the schema as
#: compact JSON without ``required``, ``additionalProperties`` and ``$schema``, plus about 9.
SCHEMA_OVERHEAD_TOKENS: Final = 9
# Schema keywords the provider is reported not to show the model (they steer the decoder).
_SCHEMA_KEYS_NOT_COUNTED: Final = frozenset({"required", "additionalProperties", "$schema"})
# Keywords whose value maps names to schemas: those names are kept whatever they are.
_NAMES_TO_SCHEMAS: Final = frozenset({"properties", "$defs", "definitions",
                                      "patternProperties", "dependentSchemas"})
# JSON punctuation runs ('{"', '":"', '","', '"}]}'...) are mostly single tokens in the BPE
# vocabularies: the heuristic counts one symbol per run, not per character.
_JSON_PUNCTUATION_RUN: Final = re.compile(r'[{}\[\]":,]+')


@runtime_checkable
class Tokenizer(Protocol):
    """Anything that counts the tokens of a text.

    >>> class Words:
    ...     def count(self, text: str) -> int:
    ...         return len(text.split())
    >>> isinstance(Words(), Tokenizer)
    True
    """

    def count(self, text: str) -> int:
        """The number of tokens ``text`` encodes to."""
        ...


_LETTERS_AND_SPACE: Final = (string.ascii_letters + " ").encode("ascii")
_DROP_LETTERS_AND_SPACE: Final = {ord(ch): None for ch in string.ascii_letters + " "}


class HeuristicTokenizer:
    """A fast estimate: about 4.5 letters per token, and most other characters cost more.

    Letters and spaces weigh ``letter_weight`` tokens each (common words are one token of about
    4-5 characters with their leading space); digits, punctuation, newlines and non-ASCII
    characters weigh ``symbol_weight`` each (numbers split into 1-3 digit tokens, punctuation is
    often a token of its own, and CJK runs near one token per character). ``scale`` multiplies
    the result, to calibrate on your own data against a real tokenizer.

    Measured in ``tests/test_tokens.py`` against a regex pre-tokenizer on a mixed sample: see
    there for the error it is held to.

    >>> HeuristicTokenizer().count("The quick brown fox jumps over the lazy dog.")
    11
    >>> HeuristicTokenizer(scale=2).count("The quick brown fox jumps over the lazy dog.")
    21
    """

    __slots__ = ("letter_weight", "scale", "symbol_weight")

    def __init__(
        self, *, letter_weight: float = 0.22, symbol_weight: float = 0.65, scale: float = 1.0
    ) -> None:
        self.letter_weight = letter_weight
        self.symbol_weight = symbol_weight
        self.scale = scale

    def count(self, text: str) -> int:
        """Estimated tokens of ``text`` (0 for an empty string, else at least 1)."""
        if not text:
            return 0
        # isascii() is O(1) in CPython; bytes.translate(None, delete) is a C table loop, so the
        # common case costs well under a microsecond for a paragraph.
        if text.isascii():
            symbols = len(text.encode("ascii").translate(None, _LETTERS_AND_SPACE))
        else:
            symbols = len(text.translate(_DROP_LETTERS_AND_SPACE))
        raw = (len(text) - symbols) * self.letter_weight + symbols * self.symbol_weight
        return max(1, math.ceil(raw * self.scale))

    def __repr__(self) -> str:
        return (
            f"HeuristicTokenizer(letter_weight={self.letter_weight}, "
            f"symbol_weight={self.symbol_weight}, scale={self.scale})"
        )


_DEFAULT_TOKENIZER: Final = HeuristicTokenizer()


class _CallableTokenizer:
    __slots__ = ("_func",)

    def __init__(self, func: Callable[[str], int]) -> None:
        self._func = func

    def count(self, text: str) -> int:
        return int(self._func(text))

    def __repr__(self) -> str:
        return f"Tokenizer({self._func!r})"


def resolve_tokenizer(tokenizer: Tokenizer | Callable[[str], int] | None) -> Tokenizer:
    """The tokenizer to use: the default heuristic for ``None``, a function wrapped as one.

    >>> resolve_tokenizer(lambda text: len(text.split())).count("two words")
    2
    """
    if tokenizer is None:
        return _DEFAULT_TOKENIZER
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    if callable(tokenizer):
        return _CallableTokenizer(tokenizer)
    raise TypeError(f"tokenizer must have a count(text) method or be callable, not {tokenizer!r}")


class _Tiktoken:
    __slots__ = ("_encoding", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._encoding: Any = None

    def count(self, text: str) -> int:
        if self._encoding is None:  # first use: tiktoken may download its vocabulary here
            import tiktoken

            self._encoding = tiktoken.get_encoding(self.name)
        return len(self._encoding.encode_ordinary(text))

    def __repr__(self) -> str:
        return f"tiktoken_tokenizer({self.name!r})"


def tiktoken_tokenizer(encoding: str = "o200k_base") -> Tokenizer:
    """Exact counts with tiktoken (``pip install tiktoken``), loaded lazily on the first count.

    Use ``"o200k_base"`` for the gpt-4o and later families, ``"cl100k_base"`` for gpt-4 and
    gpt-3.5. Nothing is imported or downloaded until the first ``count``.

    >>> tiktoken_tokenizer("cl100k_base")
    tiktoken_tokenizer('cl100k_base')
    """
    return _Tiktoken(encoding)


def _text_tokens(value: Any, count: Callable[[str], int]) -> int:
    if isinstance(value, str):
        return count(value)
    if value is None:
        return 0
    return count(msgspec.json.encode(value).decode())


def _content_tokens(content: Any, count: Callable[[str], int]) -> int:
    if isinstance(content, str):
        return count(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "image_url":
            detail = part.get("image_url", {}).get("detail")
            total += IMAGE_TOKENS_LOW_DETAIL if detail == "low" else IMAGE_TOKENS
        elif kind == "text":
            total += count(part.get("text", ""))
        elif kind == "refusal":
            total += count(part.get("refusal", ""))
        else:  # audio, files and future kinds: their JSON is a rough stand-in
            total += _text_tokens(part, count)
    return total


def _without_hidden_keys(node: Any, names: bool = False) -> Any:
    if isinstance(node, Mapping):
        if names:  # {"name": schema, ...}: every name stays
            return {k: _without_hidden_keys(v) for k, v in node.items()}
        return {k: _without_hidden_keys(v, k in _NAMES_TO_SCHEMAS) for k, v in node.items()
                if k not in _SCHEMA_KEYS_NOT_COUNTED}
    if isinstance(node, list | tuple):
        return [_without_hidden_keys(v) for v in node]
    return node


# The schema of one job is the same on every row: its text is computed once (keyed by its
# JSON bytes, which the body encoding gives cheaply), not walked again per row.
_SCHEMA_TEXTS: dict[bytes, str] = {}


def schema_prompt_text(response_format: Any) -> str | None:
    """The text a ``response_format`` JSON schema adds to the prompt, as it is counted:
    the schema as compact JSON, without ``required``, ``additionalProperties`` and
    ``$schema`` (``None`` when there is no ``json_schema``).

    This follows what users measured against OpenAI's ``usage`` (OpenAI does not document
    it): the schema is counted, but not as the pretty JSON a person would write.

    >>> schema_prompt_text({"type": "json_schema", "json_schema": {"name": "x", "schema": {
    ...     "type": "object", "properties": {"required": {"type": "boolean"}},
    ...     "required": ["required"], "additionalProperties": False}}})
    '{"type":"object","properties":{"required":{"type":"boolean"}}}'
    """
    if not isinstance(response_format, Mapping):
        return None
    spec = response_format.get("json_schema")
    if not isinstance(spec, Mapping):
        return None
    schema = spec.get("schema")
    if schema is None:
        return ""
    try:
        key = msgspec.json.encode(schema)
    except (TypeError, msgspec.EncodeError):
        return ""
    text = _SCHEMA_TEXTS.get(key)
    if text is None:
        text = msgspec.json.encode(_without_hidden_keys(schema)).decode()
        if len(_SCHEMA_TEXTS) >= 64:
            _SCHEMA_TEXTS.clear()
        _SCHEMA_TEXTS[key] = text
    return text


def response_format_tokens(response_format: Any, tokenizer: Tokenizer | None = None) -> int:
    """Prompt tokens a ``response_format`` adds: for a JSON schema, the tokens of
    :func:`schema_prompt_text` plus :data:`SCHEMA_OVERHEAD_TOKENS`; 0 otherwise.

    With the default heuristic tokenizer a run of JSON punctuation (``'":{"'``) counts as one
    symbol, as it mostly is one token; an exact tokenizer counts the text as it is.

    >>> response_format_tokens({"type": "json_object"})
    0
    >>> response_format_tokens({"type": "json_schema", "json_schema": {"name": "x", "schema": {
    ...     "type": "object", "properties": {"label": {"type": "string"}}}}})
    22
    """
    text = schema_prompt_text(response_format)
    if text is None:
        return 0
    tokenizer = tokenizer or _DEFAULT_TOKENIZER
    if isinstance(tokenizer, HeuristicTokenizer):
        text = _JSON_PUNCTUATION_RUN.sub('"', text)
    return SCHEMA_OVERHEAD_TOKENS + tokenizer.count(text)


def chat_prompt_tokens(body: Mapping[str, Any], tokenizer: Tokenizer | None = None) -> int:
    """Prompt tokens of a chat completion body: messages, tool definitions, response schema.

    Each message costs :data:`MESSAGE_OVERHEAD_TOKENS` plus its text (a ``name`` one more), the
    reply primer :data:`REPLY_PRIMER_TOKENS`; images a fixed :data:`IMAGE_TOKENS` each (85 at low
    detail); tools are counted from their JSON text, a ``response_format`` JSON schema by
    :func:`response_format_tokens`.

    >>> chat_prompt_tokens({"messages": [{"role": "user", "content": "Say hi"}]})
    9
    """
    count = (tokenizer or _DEFAULT_TOKENIZER).count
    total = REPLY_PRIMER_TOKENS
    for message in body.get("messages") or ():
        content = message.get("content")
        total += MESSAGE_OVERHEAD_TOKENS + (
            count(content) if type(content) is str else _content_tokens(content, count)
        )
        if len(message) > 2:  # rarer keys; most messages are just role and content
            name = message.get("name")
            if name:
                total += count(name) + 1
            for key in ("tool_calls", "refusal", "tool_call_id"):
                if key in message:
                    total += _text_tokens(message[key], count)
    tools = body.get("tools")
    if tools:
        total += TOOLS_OVERHEAD_TOKENS + _text_tokens(tools, count)
    response_format = body.get("response_format")
    if response_format is not None:
        total += response_format_tokens(response_format, tokenizer)
    return total


def _input_tokens(value: Any, count: Callable[[str], int]) -> int:
    # The four spec forms: "text", ["text", ...], [token ids], [[token ids], ...].
    if isinstance(value, str):
        return count(value)
    if not isinstance(value, Sequence) or not value:
        return 0
    total = 0
    for item in value:
        if isinstance(item, str):
            total += count(item)
        elif isinstance(item, int):
            total += 1
        elif isinstance(item, Sequence):
            total += len(item)
    return total


def completion_prompt_tokens(body: Mapping[str, Any], tokenizer: Tokenizer | None = None) -> int:
    """Prompt tokens of a legacy completion body (``prompt`` in any of its four forms).

    >>> completion_prompt_tokens({"prompt": [[1, 2, 3], [4, 5]]})
    5
    """
    count = (tokenizer or _DEFAULT_TOKENIZER).count
    return _input_tokens(body.get("prompt"), count) + _input_tokens(body.get("suffix"), count)


def embedding_input_tokens(body: Mapping[str, Any], tokenizer: Tokenizer | None = None) -> int:
    """Input tokens of an embeddings body (``input`` in any of its four forms).

    >>> embedding_input_tokens({"input": [101, 2023, 102]})
    3
    """
    return _input_tokens(body.get("input"), (tokenizer or _DEFAULT_TOKENIZER).count)


def max_output_tokens(body: Mapping[str, Any], default_max_tokens: int) -> int:
    """The most tokens the answers can use: the limit times ``n`` (or ``best_of`` if larger).

    The limit is ``max_completion_tokens``, else ``max_tokens``, else ``default_max_tokens``.
    A limit of 0 counts as 0: falsy values are honoured, not replaced by the default.

    >>> max_output_tokens({"max_tokens": 50, "n": 3}, default_max_tokens=1024)
    150
    >>> max_output_tokens({}, default_max_tokens=1024)
    1024
    """
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if limit is None:
        limit = default_max_tokens
    choices = body.get("n")
    best_of = body.get("best_of")
    answers = max(choices if choices is not None else 1, best_of if best_of is not None else 1)
    return int(limit) * int(answers)


def _endpoint(path: str) -> str:
    path = path.strip("/")
    return path.removeprefix("v1/")


def output_tokens_bound(body: Mapping[str, Any] | None, path: str,
                        default_max_tokens: int | None = None) -> int:
    """The most output tokens a request to ``path`` may use: ``max_tokens`` x ``n`` for chat
    and completions (``default_max_tokens``, else the endpoint's default, when unset); 0 for
    embeddings, files and the rest. An unreadable limit counts as 0 (the request will fail on
    its own).

    This is the one place that knows which endpoints generate output: the token estimate, the
    call stage's charge and the run estimate all ask it.

    >>> output_tokens_bound({"max_tokens": 50, "n": 2}, "chat/completions")
    100
    >>> output_tokens_bound({"input": "hi"}, "/v1/embeddings")
    0
    """
    if not body:
        return 0
    endpoint = _endpoint(path)
    if endpoint == "chat/completions":
        default = CHAT_DEFAULT_MAX_TOKENS
    elif endpoint == "completions":
        default = COMPLETION_DEFAULT_MAX_TOKENS
    else:
        return 0
    try:
        return max_output_tokens(body, default if default_max_tokens is None
                                 else default_max_tokens)
    except (TypeError, ValueError):
        return 0


def provider_charge(body: Mapping[str, Any] | None, path: str, prompt_tokens: int) -> int:
    """What an OpenAI-style provider counts against the token limit for one request: the real
    prompt tokens plus the most its answers may use, used or not.

    >>> provider_charge({"max_tokens": 16}, "chat/completions", prompt_tokens=12)
    28
    """
    return prompt_tokens + output_tokens_bound(body, path)


def estimate_tokens(
    body: Mapping[str, Any] | None,
    path: str,
    *,
    tokenizer: Tokenizer | None = None,
    default_max_tokens: int | None = None,
) -> int:
    """Tokens to reserve for sending ``body`` to ``path``: prompt plus maximum output.

    Chat and completions count both parts (``default_max_tokens`` defaults to
    :data:`CHAT_DEFAULT_MAX_TOKENS` or :data:`COMPLETION_DEFAULT_MAX_TOKENS`); embeddings count
    their input; other endpoints (files, fine-tuning jobs) cost 0 tokens.

    >>> estimate_tokens({"prompt": "Once upon a time", "max_tokens": 30}, "/v1/completions")
    34
    >>> estimate_tokens({"training_file": "file-abc"}, "fine_tuning/jobs")
    0
    """
    if body is None:
        return 0
    endpoint = _endpoint(path)
    if endpoint == "chat/completions":
        prompt = chat_prompt_tokens(body, tokenizer)
    elif endpoint == "completions":
        prompt = completion_prompt_tokens(body, tokenizer)
    elif endpoint == "embeddings":
        return embedding_input_tokens(body, tokenizer)
    else:
        return 0
    return prompt + output_tokens_bound(body, endpoint, default_max_tokens)
