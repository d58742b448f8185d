"""Token counting and deterministic fake outputs.

The token rule (the same everywhere in the simulator, so a client can predict ``usage``):

- text: ``ceil(len(text) / 4)`` tokens, ``len`` counting Unicode code points (``""`` is 0);
- a chat prompt: for each message, 4 tokens of overhead plus the tokens of its text content
  (every ``text`` part of a list content; each image/audio/file part counts 85) plus the tokens
  of its ``name``; then 3 more tokens that prime the reply (the layout ``pipeline.payloads.tokens``
  also assumes);
- a ``response_format`` JSON schema (what OpenAI is reported to count; it does not document
  it): the text of the schema as compact JSON without ``required``, ``additionalProperties``
  and ``$schema``, plus 9 tokens (``json_object`` and ``text`` add nothing);
- a completion prompt or an embedding input: a string counts as text, a list of strings is the
  sum, a list of token ids counts one per id, a list of such lists is the sum;
- the answer: ``completion_tokens = ceil(len(answer) / 4)`` per choice, summed over ``n``.

The default answer is made of three-letter words chosen by a hash of the request, so the same
request gets the same text; its length is between ``answer_tokens`` bounds (one word = one
token) and never above ``max_tokens`` (then ``finish_reason`` is ``"length"``).
"""

from __future__ import annotations

import array
import base64
import hashlib
import json
import math
import struct
from typing import Any

__all__ = ["count_chat_tokens", "count_input_tokens", "count_schema_tokens", "count_text_tokens",
           "default_answer", "fake_embedding"]

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3
NON_TEXT_PART_TOKENS = 85
SCHEMA_OVERHEAD = 9
_HIDDEN_SCHEMA_KEYS = frozenset({"required", "additionalProperties", "$schema"})
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties",
                          "dependentSchemas"})

# 256 three-letter words: one byte of hash picks one word, and a word plus its space is 4 chars.
_SYLLABLES_A = "bcdfghlmnprstvwz"
_SYLLABLES_B = "aeiouyaeiouyaeio"
_WORDS = [f"{c1}{v}{c2}" for c1 in _SYLLABLES_A for v, c2 in zip(_SYLLABLES_B, "nrstlmdkprstnlmd",
                                                                     strict=True)]
assert len(_WORDS) == 256


def count_text_tokens(text: str) -> int:
    """Tokens in a piece of text: ``ceil(len(text) / 4)``.

    >>> count_text_tokens("hello world"), count_text_tokens("")
    (3, 0)
    """
    return -(-len(text) // CHARS_PER_TOKEN)


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_text_tokens(content)
    total = 0
    for part in content:  # a list of content parts (already validated as dicts)
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            total += count_text_tokens(part["text"])
        elif isinstance(part, dict) and isinstance(part.get("refusal"), str):
            total += count_text_tokens(part["refusal"])
        else:
            total += NON_TEXT_PART_TOKENS
    return total


def count_chat_tokens(messages: list[Any]) -> int:
    """Prompt tokens of a list of chat messages (dicts or objects with ``content``/``name``).

    >>> count_chat_tokens([{"role": "user", "content": "hello world"}])
    10
    """
    total = REPLY_PRIMING
    for message in messages:
        if isinstance(message, dict):
            content, name = message.get("content"), message.get("name")
        else:
            content, name = message.content, message.name
        total += MESSAGE_OVERHEAD + _content_tokens(content)
        if name:
            total += count_text_tokens(name)
    return total


def _shown(node: Any, names: bool = False) -> Any:
    # The schema as the model is shown it: keywords that only steer the decoder left out.
    if isinstance(node, dict):
        if names:
            return {k: _shown(v) for k, v in node.items()}
        return {k: _shown(v, k in _SCHEMA_MAPS) for k, v in node.items()
                if k not in _HIDDEN_SCHEMA_KEYS}
    if isinstance(node, list):
        return [_shown(v) for v in node]
    return node


def count_schema_tokens(response_format: Any) -> int:
    """Prompt tokens a ``response_format`` adds (0 unless it holds a ``json_schema``).

    >>> count_schema_tokens({"type": "json_schema", "json_schema": {"name": "x", "schema": {
    ...     "type": "object", "properties": {"label": {"type": "string"}},
    ...     "required": ["label"], "additionalProperties": False}}})
    24
    >>> count_schema_tokens({"type": "json_object"})
    0
    """
    if not isinstance(response_format, dict):
        return 0
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        return 0
    schema = spec.get("schema")
    text = json.dumps(_shown(schema), separators=(",", ":"), ensure_ascii=False) \
        if schema is not None else ""
    return SCHEMA_OVERHEAD + count_text_tokens(text)


def count_input_tokens(value: Any) -> int:
    """Tokens of a completion prompt or embedding input (str, [str], [int] or [[int]]).

    >>> count_input_tokens("abcdefgh"), count_input_tokens(["ab", "cd"]), count_input_tokens([1, 2])
    (2, 2, 2)
    """
    if isinstance(value, str):
        return count_text_tokens(value)
    total = 0
    for item in value:
        if isinstance(item, str):
            total += count_text_tokens(item)
        elif isinstance(item, int):
            total += 1
        else:
            total += len(item)
    return total


def default_answer(seed: bytes, length: int) -> str:
    """``length`` deterministic three-letter words derived from ``seed`` (``length`` tokens).

    >>> default_answer(b"x", 3) == default_answer(b"x", 3), len(default_answer(b"x", 3).split())
    (True, 3)
    """
    raw = hashlib.shake_256(seed).digest(max(length, 1))
    return " ".join([_WORDS[b] for b in raw[:length]])


def answer_length(digest: bytes, low: int, high: int) -> int:
    """A length in ``[low, high]`` picked by the first bytes of ``digest``."""
    return low + int.from_bytes(digest[:4], "big") % (high - low + 1)


def fake_embedding(seed: bytes, dimensions: int, encoding_format: str) -> list[float] | str:
    """A deterministic unit vector of ``dimensions`` floats (or base64 float32 when asked)."""
    raw = hashlib.shake_256(seed).digest(2 * dimensions)
    ints = struct.unpack(f"<{dimensions}h", raw)
    norm = math.sqrt(sum(i * i for i in ints)) or 1.0
    scale = 1.0 / norm
    values = [round(i * scale, 6) for i in ints]
    if encoding_format == "base64":
        return base64.b64encode(array.array("f", values).tobytes()).decode("ascii")
    return values
