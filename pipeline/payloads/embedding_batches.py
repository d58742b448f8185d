"""Embeddings in batches: many rows in one request, the vectors split back to their rows.

The cookbook sends one row per embeddings request; the API takes up to 2,048 inputs and
300,000 tokens in one (both documented on ``CreateEmbeddingRequest.input`` in OpenAI's API
reference), so batching cuts requests by up to a hundred times. Pure functions, no I/O:

- :func:`pack` (or a :class:`Packer`, fed one row at a time by a stream stage) groups rows
  into :class:`Batch` values under the limits, keeping input order. Only rows whose bodies
  differ in nothing but ``input`` share a request (same model, dimensions, encoding_format,
  user, and text with text, token ids with token ids);
- :attr:`Batch.body` is the one request body for the batch;
- :func:`split` turns the batch's response into one response body per row, shaped like the
  answer to that row alone (``data`` re-indexed from 0, ``usage`` shared out in proportion to
  each row's tokens), so caching and reading a row do not care that it was batched. A
  response whose vectors do not match the inputs (too few, too many, an index missing or
  repeated: a server that lies) is a :class:`~pipeline.errors.MalformedResponseError` for
  every row of the batch.

>>> rows = [EmbeddingRow(i, {"model": "m", "input": text}, tokens=2)
...         for i, text in enumerate(["a", "b", "c"])]
>>> [b.rows for b in pack(rows, max_inputs=2)]
[(0, 1), (2,)]
>>> batch = pack(rows)[0]
>>> batch.body
{'model': 'm', 'input': ['a', 'b', 'c']}
>>> answer = {"object": "list", "model": "m", "usage": {"prompt_tokens": 6, "total_tokens": 6},
...           "data": [{"object": "embedding", "index": i, "embedding": [float(i)]}
...                    for i in range(3)]}
>>> [(b["data"][0]["embedding"], b["usage"]["prompt_tokens"]) for b in split(batch, answer)]
[([0.0], 2), ([1.0], 2), ([2.0], 2)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from pipeline.errors import ConfigError, MalformedResponseError, PayloadError

__all__ = ["MAX_INPUTS", "MAX_TOKENS", "Batch", "EmbeddingRow", "Packer", "pack", "split"]

#: OpenAI's documented limits for one embeddings request: inputs, and tokens over all inputs.
MAX_INPUTS = 2048
MAX_TOKENS = 300_000


class EmbeddingRow(msgspec.Struct, frozen=True):
    """One row's embeddings request: ``key`` (its position in the input), the ``body`` it
    would send alone, and its token estimate.

    >>> EmbeddingRow(7, {"model": "m", "input": ["a", "b"]}, tokens=2).count
    2
    """

    key: int
    body: dict[str, Any]
    tokens: int = 0

    @property
    def inputs(self) -> list[Any]:
        """The row's inputs: a string or one list of token ids is one input; a list of
        strings or of token-id lists is one input each."""
        return _inputs(self.body.get("input"), self.key)

    @property
    def count(self) -> int:
        """How many inputs (so vectors) the row has."""
        return len(self.inputs)


class Batch(msgspec.Struct, frozen=True):
    """Rows sent as one embeddings request.

    Attributes:
        rows: the rows' keys, in input order.
        counts: how many inputs each row has (its slice of the response's ``data``).
        tokens: each row's token estimate (its share of the response's ``usage``).
        body: the request body: the rows' shared fields and all their inputs.
    """

    rows: tuple[int, ...]
    counts: tuple[int, ...]
    tokens: tuple[int, ...]
    body: dict[str, Any]

    @property
    def inputs(self) -> int:
        """Inputs in the request."""
        return sum(self.counts)

    @property
    def token_estimate(self) -> int:
        """Tokens to reserve on the rate limiter for the request."""
        return sum(self.tokens)

    def __repr__(self) -> str:
        first, last = self.rows[0], self.rows[-1]
        return (f"Batch(rows {first}..{last} ({len(self.rows)}), inputs={self.inputs}, "
                f"tokens={self.token_estimate})")


class Packer:
    """Groups rows into batches as they come (for a stream stage); :func:`pack` is the
    whole-list form.

    ``add(row)`` returns the batches that row closed (one that it would have overflowed);
    ``flush()`` closes the rest, oldest first. A batch holds at most ``max_inputs`` inputs,
    ``max_tokens`` estimated tokens and ``batch_size`` rows (``None``: no cap of its own). A
    row over a limit by itself goes alone: the server's answer (a 400) is then that row's.

    >>> packer = Packer(batch_size=2)
    >>> [packer.add(EmbeddingRow(i, {"model": "m", "input": "x"})) for i in range(3)]
    [[], [], [Batch(rows 0..1 (2), inputs=2, tokens=0)]]
    >>> packer.flush()
    [Batch(rows 2..2 (1), inputs=1, tokens=0)]
    """

    __slots__ = ("_open", "batch_size", "max_inputs", "max_tokens")

    def __init__(self, *, max_inputs: int = MAX_INPUTS, max_tokens: int = MAX_TOKENS,
                 batch_size: int | None = None) -> None:
        for name, value in (("max_inputs", max_inputs), ("max_tokens", max_tokens),
                            ("batch_size", batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        self.max_inputs = max_inputs
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._open: dict[bytes, _Group] = {}  # one open batch per kind of body

    def add(self, row: EmbeddingRow) -> list[Batch]:
        """Take ``row``; the batches it closed (empty, or one)."""
        inputs = row.inputs
        key = _shared_key(row, inputs)
        group = self._open.get(key)
        closed = []
        if group is not None and not self._fits(group, row, len(inputs)):
            closed.append(group.batch())
            group = None
        if group is None:
            group = self._open[key] = _Group()
        group.add(row, inputs)
        return closed

    def _fits(self, group: _Group, row: EmbeddingRow, count: int) -> bool:
        if self.batch_size is not None and len(group.rows) >= self.batch_size:
            return False
        return (len(group.inputs) + count <= self.max_inputs
                and group.tokens + row.tokens <= self.max_tokens)

    def is_open(self, head: int) -> bool:
        """Whether an open batch starts with the row keyed ``head`` (a stream stage asks
        this right after :meth:`add`: that row opened a batch, and will send it)."""
        return any(g.rows[0].key == head for g in self._open.values())

    def close(self, head: int) -> Batch | None:
        """Close the open batch that starts with the row keyed ``head`` (``None``: it was
        closed already, by a row that would have overflowed it).

        >>> packer = Packer()
        >>> packer.add(EmbeddingRow(4, {"model": "m", "input": "x"}))
        []
        >>> packer.is_open(4), packer.close(4), packer.close(4), packer.pending
        (True, Batch(rows 4..4 (1), inputs=1, tokens=0), None, 0)
        """
        for key, group in self._open.items():
            if group.rows[0].key == head:
                del self._open[key]
                return group.batch()
        return None

    def flush(self) -> list[Batch]:
        """Close every open batch, in the order of their first rows."""
        groups = sorted(self._open.values(), key=lambda g: g.rows[0].key)
        self._open.clear()
        return [g.batch() for g in groups]

    @property
    def pending(self) -> int:
        """Rows waiting in open batches."""
        return sum(len(g.rows) for g in self._open.values())

    def __repr__(self) -> str:
        return (f"Packer(max_inputs={self.max_inputs}, max_tokens={self.max_tokens}, "
                f"batch_size={self.batch_size}, pending={self.pending})")


def pack(rows: Iterable[EmbeddingRow], *, max_inputs: int = MAX_INPUTS,
         max_tokens: int = MAX_TOKENS, batch_size: int | None = None) -> list[Batch]:
    """``rows`` in batches under the limits (see :class:`Packer`), ordered by first row.

    >>> rows = [EmbeddingRow(0, {"model": "a", "input": "x"}),
    ...         EmbeddingRow(1, {"model": "b", "input": "y"}),
    ...         EmbeddingRow(2, {"model": "a", "input": "z"})]
    >>> [b.rows for b in pack(rows)]
    [(0, 2), (1,)]
    """
    packer = Packer(max_inputs=max_inputs, max_tokens=max_tokens, batch_size=batch_size)
    batches = [batch for row in rows for batch in packer.add(row)]
    batches.extend(packer.flush())
    batches.sort(key=lambda b: b.rows[0])
    return batches


def split(batch: Batch, body: Any) -> list[dict[str, Any]]:
    """The batch's response ``body`` as one response body per row (in ``batch.rows`` order).

    Each row gets its own ``data`` (re-indexed from 0), the ``model``, and a ``usage`` share
    in proportion to its token estimate (by input count when there are no estimates; the
    shares add up to the total). Raises :class:`~pipeline.errors.MalformedResponseError`
    when the vectors do not match the inputs: every row of the batch then fails with it.
    """
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list):
        raise MalformedResponseError(
            f"the embeddings response has no 'data' list, so no row of the batch of "
            f"{len(batch.rows)} gets a vector", body=_short(body))
    expected = batch.inputs
    by_index: dict[int, dict[str, Any]] = {}
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or \
                not 0 <= index < expected or index in by_index or "embedding" not in item:
            raise MalformedResponseError(
                f"the embeddings response does not match the request: an item with index "
                f"{index!r} (or no embedding) for {expected} inputs; no row of the batch of "
                f"{len(batch.rows)} can be trusted with a vector", body=_short(body))
        by_index[index] = item
    if len(by_index) != expected:
        raise MalformedResponseError(
            f"the embeddings response has {len(data)} vectors for {expected} inputs; no row of "
            f"the batch of {len(batch.rows)} can be trusted with a vector", body=_short(body))
    usage = body.get("usage")
    prompt = usage.get("prompt_tokens") if isinstance(usage, Mapping) else None
    weights = list(batch.tokens) if any(batch.tokens) else list(batch.counts)
    shares = _shares(prompt, weights) if isinstance(prompt, int) else None
    out = []
    start = 0
    for position, count in enumerate(batch.counts):
        items = [{**by_index[start + i], "index": i} for i in range(count)]
        row: dict[str, Any] = {"object": body.get("object", "list"), "data": items,
                               "model": body.get("model")}
        if shares is not None:
            row["usage"] = {"prompt_tokens": shares[position], "total_tokens": shares[position]}
        out.append(row)
        start += count
    return out


# -- helpers -----------------------------------------------------------------------------------
def _inputs(value: Any, key: int) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            return [value]  # one input given as token ids
        if all(isinstance(x, str) for x in value) or all(
                isinstance(x, list) and x and all(isinstance(t, int) for t in x)
                for x in value):
            return list(value)
    raise PayloadError(f"row {key}: an embeddings input is a string, a list of strings, a "
                       f"list of token ids or a list of such lists, got {_short(value)}",
                       field="input")


def _shared_key(row: EmbeddingRow, inputs: list[Any]) -> bytes:
    """What must be equal for rows to share a request: every field but ``input``, and
    whether the inputs are text or token ids (the API takes one kind per request)."""
    kind = b"text:" if isinstance(inputs[0], str) else b"tokens:"
    rest = {k: v for k, v in row.body.items() if k != "input"}
    return kind + msgspec.json.encode(rest, order="sorted")


class _Group:
    """An open batch, with running totals (a 2,048-row batch is not summed again per row)."""

    __slots__ = ("counts", "inputs", "rows", "tokens")

    def __init__(self) -> None:
        self.rows: list[EmbeddingRow] = []
        self.counts: list[int] = []
        self.inputs: list[Any] = []
        self.tokens = 0

    def add(self, row: EmbeddingRow, inputs: list[Any]) -> None:
        self.rows.append(row)
        self.counts.append(len(inputs))
        self.inputs.extend(inputs)
        self.tokens += row.tokens

    def batch(self) -> Batch:
        body = {k: v for k, v in self.rows[0].body.items() if k != "input"}
        body["input"] = self.inputs
        return Batch(rows=tuple(r.key for r in self.rows), counts=tuple(self.counts),
                     tokens=tuple(r.tokens for r in self.rows), body=body)


def _shares(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` as whole numbers that add up to it (the
    largest remainders get the leftover units; ties go to the earlier row).

    >>> _shares(10, [1, 1, 1]), _shares(7, [0, 0]), _shares(5, [3, 1])
    ([4, 3, 3], [4, 3], [4, 1])
    """
    whole = sum(weights)
    if whole <= 0:
        weights, whole = [1] * len(weights), len(weights)
    exact = [total * w / whole for w in weights]
    shares = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
