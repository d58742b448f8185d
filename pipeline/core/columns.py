"""Finished records held as columns: what a run keeps of a million rows in a few hundred MB.

A :class:`~pipeline.core.record.Record` with its kept answer takes about 480 bytes; a million
of them, half a gigabyte before the rows themselves. :class:`RecordColumns` keeps what a
reader of results uses (the row, the answer text, usage, status, error, timings) in one
column per field, most of them typed arrays, and builds a row's ``Record`` when it is read:
about 100 bytes a row. What few rows have (an error, a decoded value, your stage's data, a
response with several answers) sits in a column made on its first value.

A record once read is kept and handed out again, so a change to it (``record.data = ...``)
stays: later reads, frames and files see it. :meth:`RecordColumns.scan` reads every row
without keeping what it builds (frames, files and costs read that way).

>>> from pipeline.core.request import Response
>>> columns = RecordColumns()
>>> columns.add(Record(index=1, row="b", attempts=1, response=Response(status=200, body={
...     "choices": [{"message": {"content": "yes"}, "finish_reason": "stop"}]})))
>>> columns.add(Record(index=0, row="a", error=ValueError("bad row")))
>>> columns.finish()
>>> [(r.index, r.row, r.status, r.text) for r in columns.scan()]
[(0, 'a', 'failed', None), (1, 'b', 'succeeded', 'yes')]
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from typing import Any

from msgspec.structs import astuple

from pipeline.core.record import _NO_HEADERS, KeptResponse, Record, kept_parts
from pipeline.core.request import Response

__all__ = ["RecordColumns"]

# A row's flags (one byte): what its response is, and two facts about it.
_KIND = 7  # the low bits: 0 none, 1 chat, 2 completion, 3 embedding, 4 held as it came
_KINDS = ("", "chat", "completion", "embedding")
_KIND_CODE = {"chat": 1, "completion": 2, "embedding": 3}
_AS_IS = 4
_CACHED = 8
_USAGE = 16
_HELD = 32  # the whole Record is held (RecordColumns(whole=True))

# Fields few rows set, each a column made on its first value: (field, default). A record
# setting none of them takes the fast path of add().
_SPARSE: tuple[tuple[str, Any], ...] = (
    ("error", None), ("value", None), ("data", None), ("earlier_errors", None),
    ("reasks", 0), ("discarded_prompt_tokens", 0), ("discarded_completion_tokens", 0),
    ("batched", 0), ("batch_id", None))
# Besides those, columns made on first use: "refusal", "embedding" (of a kept answer),
# "response" (a response held as it came) and "attempts" (past 2**32).

#: Record's fields in the order RecordColumns.add unpacks them.
FIELD_ORDER = ("index", "row", "request", "path", "token_estimate", "cache_key", "attempts",
               "response", "error", "cached", "started", "finished", "latency", "lease",
               "value", "reasks", "earlier_errors", "discarded_prompt_tokens",
               "discarded_completion_tokens", "batched", "batch_id", "data")
_COUNTS = 5  # numbers a row in RecordColumns._counts
_TIMES = 3  # and in _times
_Meta = tuple[str | None, str | None, str | None, int]

#: Answers shorter than this are shared between rows that give the same one (a
#: classifier's "positive" is one string, not a million), up to _SHARED_MAX of them.
_SHARED_LENGTH = 64
_SHARED_MAX = 50_000


class RecordColumns:
    """Finished records, one column per field; ``record(i)`` builds the ``i``-th in order.

    Records are added as they finish, in any order (:meth:`add`), then put in order of
    ``index`` once (:meth:`finish`). What is kept of each is what :meth:`Record.slim` keeps:
    the request and the lease are dropped, a plain answer is kept as a
    :class:`~pipeline.core.record.KeptResponse`; ``whole=True`` keeps records as they are.
    ``rows=False`` drops each record's input row.
    """

    __slots__ = ("_cache_key", "_counts", "_drop_rows", "_estimate", "_flags", "_held",
                 "_index", "_meta", "_meta_ids", "_metas", "_order", "_path", "_read",
                 "_rows", "_shared", "_sparse", "_text", "_times")

    def __init__(self, *, whole: bool = False, rows: bool = True) -> None:
        self._held: list[Record] | None = [] if whole else None  # records kept whole
        self._drop_rows = not rows
        # (a whole record holds its own row)
        self._rows: list[Any] | None = [] if rows and not whole else None
        self._index = array("q")
        self._flags = bytearray()
        # What repeats from row to row, once each: (model, requested model, finish reason,
        # HTTP status) of the kept answer; _meta holds each row's number in _metas.
        self._meta = array("I")
        self._metas: list[_Meta] = [(None, None, None, 0)]
        self._meta_ids: dict[_Meta, int] = {(None, None, None, 0): 0}
        self._text: list[str | None] = []
        self._shared: dict[str, str] = {}
        # _COUNTS numbers a row: prompt, completion, total and cached tokens, attempts.
        self._counts = array("I")
        # _TIMES numbers a row: latency, started, finished.
        self._times = array("d")
        self._path: list[str | None] = []
        self._estimate: list[int] = []
        self._cache_key: list[str | None] = []
        self._sparse: dict[str, list[Any]] = {}
        self._order: array[int] | None = None  # position of the i-th record; None: as added
        self._read: list[Record | None] | None = None  # records built by record(), kept

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"<RecordColumns {len(self):,} rows, {len(self._sparse)} sparse columns>"

    @classmethod
    def of(cls, records: Iterable[Record]) -> RecordColumns:
        """Records kept whole, in the order given (not sorted by index)."""
        columns = cls(whole=True)
        for record in records:
            columns.add(record)
        return columns

    # ------------------------------------------------------------------ writing

    def add(self, record: Record) -> None:
        """Keep ``record`` (finished): as :meth:`Record.slim` would, or whole."""
        n = len(self._index)
        self._index.append(record.index)
        if self._held is not None:  # kept whole: no other column is read for it
            if self._drop_rows:
                record.row = None
            self._flags.append(_HELD)
            self._held.append(record)
            return
        # Every field in one C call (Record's field order; tests/test_columns.py checks it).
        (_index, row, request, path, estimate, cache_key, attempts, response, error, cached,
         started, finished, latency, _lease, value, reasks, earlier, discarded_prompt,
         discarded_completion, batched, batch_id, data) = astuple(record)
        if self._rows is not None:
            self._rows.append(row)
        flags = _CACHED if cached else 0
        parts = None
        if response is not None:
            if type(response) is KeptResponse:
                parts = _parts_of(response)
            else:
                body = request.body if request is not None else None
                asked = body.get("model") if type(body) is dict else None
                parts = kept_parts(response, asked if type(asked) is str else None)
        prompt = completion = total = cached_tokens = meta = 0
        text = None
        if parts is None:
            if response is not None:
                flags |= _AS_IS  # more than one plain answer: kept as it came
                self._put("response", n, response)
        else:
            (kind, model, asked_model, text, refusal, reason, embedding, usage,
             prompt, completion, total, cached_tokens) = parts
            assert response is not None  # (parts are a response's)
            code = _KIND_CODE.get(kind)
            if code is None or response.latency != latency or not (
                    0 <= prompt < _LIMIT and 0 <= completion < _LIMIT and
                    0 <= total < _LIMIT and 0 <= cached_tokens < _LIMIT):
                # What no column takes (a count past 2**32, a second latency): the kept
                # answer as an object.
                flags |= _AS_IS
                self._put("response", n, response if type(response) is KeptResponse else
                          KeptResponse(*parts, status=response.status, body=None,
                                       headers=_NO_HEADERS, latency=response.latency))
                prompt = completion = total = cached_tokens = 0
                text = None
            else:
                flags |= code | (_USAGE if usage else 0)
                key = (model, asked_model, reason, response.status)
                meta = self._meta_ids.get(key, -1)
                if meta < 0:
                    meta = self._meta_ids[key] = len(self._metas)
                    self._metas.append(key)
                if text is not None and len(text) < _SHARED_LENGTH:
                    shared = self._shared.get(text)
                    if shared is not None:
                        text = shared
                    elif len(self._shared) < _SHARED_MAX:
                        self._shared[text] = text
                if refusal is not None:
                    self._put("refusal", n, refusal)
                if embedding is not None:
                    self._put("embedding", n, embedding)
        self._flags.append(flags)
        self._meta.append(meta)
        self._text.append(text)
        if not 0 <= attempts < _LIMIT:
            self._put("attempts", n, attempts)
            attempts = 0
        self._counts.extend((prompt, completion, total, cached_tokens, attempts))
        self._times.extend((latency, started, finished))
        self._path.append(path)
        self._estimate.append(estimate)
        self._cache_key.append(cache_key)
        if error is not None or value is not None or data is not None or \
                earlier is not None or reasks or discarded_prompt or \
                discarded_completion or batched or batch_id is not None:
            for name, default in _SPARSE:
                value = getattr(record, name)
                if value is not default and (default is None or value != default):
                    self._put(name, n, value)
        if self._sparse:  # each is one row longer than the others now, or as long
            for name, column in self._sparse.items():
                if len(column) == n:
                    column.append(_DEFAULTS.get(name))

    def _put(self, name: str, n: int, value: Any) -> None:
        """Set row ``n``'s ``name`` (a sparse column, made here on its first value)."""
        column = self._sparse.get(name)
        if column is None:
            column = self._sparse[name] = [_DEFAULTS.get(name)] * n
        if len(column) == n:
            column.append(value)
        else:
            column[n] = value

    def finish(self) -> None:
        """Put the rows in order of ``index`` (as added, when they came in that order)."""
        index = self._index
        n = len(index)
        if index == array("q", range(n)):
            self._order = None
            return
        order = array("q", [-1]) * n
        for position, i in enumerate(index):
            if not 0 <= i < n or order[i] >= 0:  # gaps (a resumed run) or repeats
                order = array("q", sorted(range(n), key=index.__getitem__))
                break
            order[i] = position
        self._order = order

    # ------------------------------------------------------------------ reading

    def position(self, i: int) -> int:
        """Where the ``i``-th record in order was added."""
        return i if self._order is None else self._order[i]

    def record(self, i: int) -> Record:
        """The ``i``-th record in order, built on its first read and kept from then on (a
        change to it stays)."""
        at = self.position(i)
        read = self._read
        if read is None:
            read = self._read = [None] * len(self._index)
        record = read[at]
        if record is None:
            record = read[at] = self._build(at)
        return record

    def scan(self) -> Iterator[Record]:
        """Every record in order, built as read and not kept (one read before is)."""
        read, build, position = self._read, self._build, self.position
        for i in range(len(self._index)):
            at = position(i)
            record = read[at] if read is not None else None
            yield record if record is not None else build(at)

    def where(self, failed: bool) -> list[Record]:
        """The failed records (``True``) or the succeeded ones, in order, kept as read.
        Rows not read yet are told apart by their columns, without building the others."""
        errors = self._sparse.get("error")
        held = self._held
        flags, read, out = self._flags, self._read, []
        for i in range(len(self._index)):
            at = self.position(i)
            record = read[at] if read is not None else None
            if record is None and held is not None:
                record = held[at]
            if record is not None:
                match = record.error is not None if failed else record.ok
            else:
                error = errors[at] if errors is not None else None
                match = error is not None if failed else \
                    error is None and flags[at] & _KIND != 0
            if match:
                out.append(self.record(i))
        return out

    def _build(self, at: int) -> Record:
        flags = self._flags[at]
        sparse = self._sparse
        if flags & _HELD:
            return self._held[at]  # type: ignore[index]  # (only held rows have the flag)
        kind = flags & _KIND
        c = at * _COUNTS
        prompt, completion, total, cached_tokens, attempts = self._counts[c:c + _COUNTS]
        t = at * _TIMES
        latency, started, finished = self._times[t:t + _TIMES]
        response: Response | None = None
        if kind == _AS_IS:
            response = sparse["response"][at]
        elif kind:
            model, asked, reason, http = self._metas[self._meta[at]]
            refusal = sparse["refusal"][at] if "refusal" in sparse else None
            embedding = sparse["embedding"][at] if "embedding" in sparse else None
            response = KeptResponse(
                _KINDS[kind], model, asked, self._text[at], refusal, reason, embedding,
                bool(flags & _USAGE), prompt, completion, total, cached_tokens, status=http,
                body=None, headers=_NO_HEADERS, latency=latency)
        record = Record(
            index=self._index[at], row=self._rows[at] if self._rows is not None else None,
            path=self._path[at], token_estimate=self._estimate[at],
            cache_key=self._cache_key[at], attempts=attempts, response=response,
            cached=bool(flags & _CACHED), started=started, finished=finished,
            latency=latency)
        for name, _ in _SPARSE:
            column = sparse.get(name)
            if column is not None:
                setattr(record, name, column[at])
        if "attempts" in sparse and sparse["attempts"][at]:
            record.attempts = sparse["attempts"][at]
        return record


_DEFAULTS: dict[str, Any] = {**dict(_SPARSE), "attempts": 0}


def _parts_of(kept: KeptResponse) -> tuple[Any, ...]:
    return (kept.kind, kept.model, kept.requested_model, kept.content, kept.refusal,
            kept.finish_reason, kept.embedding, kept.has_usage, kept.prompt_tokens,
            kept.completion_tokens, kept.total_tokens, kept.cached_tokens)


_LIMIT = 1 << 32
