"""What the simulator saw: one :class:`LogEntry` per request and running :class:`Stats`.

Tests read these to prove client behaviour: that a client stayed under the limits
(``stats().rate_limited == 0``), that nothing was sent twice (``body_hash`` values are unique),
or how requests were spread in time (``arrival``).
"""

from __future__ import annotations

import threading
from collections import Counter, deque

import msgspec

__all__ = ["LogEntry", "RequestLog", "Stats"]

class LogEntry(msgspec.Struct, frozen=True):
    """One request as the simulator saw it.

    Attributes:
        arrival: seconds since the simulator started when the request was complete.
        method, path: as sent (``path`` without the query string).
        status: the HTTP status sent, or 0 when none was (``hang``, ``reset``).
        outcome: ``"ok"``, ``"rate_limited"``, ``"insufficient_quota"``, ``"fault:500"``,
            ``"fault:502"``, ``"fault:503"``, ``"fault:context_length"``, ``"context_length"``
            (a real prompt + max_tokens overflow), ``"hang"``, ``"reset"``, ``"truncated"``,
            ``"malformed"``, ``"invalid_json"`` (a 200 whose JSON answer was spoiled on
            purpose: ``invalid_json``), ``"bad_request"``, ``"unauthorized"``, ``"not_found"``,
            ``"overloaded"`` (refused by ``max_in_flight``), or ``"error"`` (a bug in the
            simulator or an exception in a custom responder: a 500).
        tokens: the token cost charged (or that would have been charged) to the rate limit:
            prompt tokens + max_tokens x n; 0 for files and fine-tuning.
        body_hash: sha256 hex digest of the raw request body.
        prompt_tokens, completion_tokens: the ``usage`` sent back (0 when none was).
        latency: the delay the simulator chose before answering (seconds; 0 for answers it
            sends at once: 4xx, 429, hang).
    """

    arrival: float
    method: str
    path: str
    status: int
    outcome: str
    tokens: int
    body_hash: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0


class Stats(msgspec.Struct, frozen=True):
    """Counters since start (or the last reset).

    Attributes:
        requests: requests received on the API (admin calls excluded).
        ok: requests answered 2xx with a valid body.
        rate_limited: times a request exceeded the simulator's rpm/tpm limits (each got a 429).
        insufficient_quota: 429 ``insufficient_quota`` answers.
        overloaded: requests refused because ``max_in_flight`` were already in flight.
        faults: injected faults (5xx, context_length, hang, reset, truncated, malformed,
            invalid_json).
        tokens: token cost admitted by the rate limit (the sum over accepted requests).
        prompt_tokens, completion_tokens: the ``usage`` totals sent back.
        max_in_flight: the most requests being served at once (waiting out their latency).
        outcomes: the count of every outcome.
    """

    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    insufficient_quota: int = 0
    faults: int = 0
    overloaded: int = 0
    tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_in_flight: int = 0
    outcomes: dict[str, int] = msgspec.field(default_factory=dict)


_FAULT_OUTCOMES = frozenset({"fault:500", "fault:502", "fault:503", "fault:context_length",
                             "hang", "reset", "truncated", "malformed", "invalid_json"})


class RequestLog:
    """A thread-safe, bounded log plus counters (the server thread writes, tests read)."""

    def __init__(self, limit: int | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: deque[LogEntry] = deque(maxlen=limit)
        self._outcomes: Counter[str] = Counter()
        self._tokens = 0
        self._prompt = 0
        self._completion = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def add(self, entry: LogEntry, admitted_tokens: int = 0) -> None:
        """Record one finished request."""
        with self._lock:
            self._entries.append(entry)
            self._outcomes[entry.outcome] += 1
            self._tokens += admitted_tokens
            self._prompt += entry.prompt_tokens
            self._completion += entry.completion_tokens

    def entries(self) -> list[LogEntry]:
        """A copy of the log, oldest first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Forget every entry and counter."""
        with self._lock:
            self._entries.clear()
            self._outcomes.clear()
            self._tokens = self._prompt = self._completion = 0
            self.max_in_flight = self.in_flight

    def stats(self) -> Stats:
        """The counters now."""
        with self._lock:
            outcomes = dict(self._outcomes)
            return Stats(
                requests=sum(outcomes.values()),
                ok=outcomes.get("ok", 0),
                rate_limited=outcomes.get("rate_limited", 0),
                insufficient_quota=outcomes.get("insufficient_quota", 0),
                faults=sum(n for o, n in outcomes.items()
                           if o in _FAULT_OUTCOMES or o.startswith("fault:")),
                overloaded=outcomes.get("overloaded", 0),
                tokens=self._tokens,
                prompt_tokens=self._prompt,
                completion_tokens=self._completion,
                max_in_flight=self.max_in_flight,
                outcomes=outcomes,
            )

    def __len__(self) -> int:
        return len(self._entries)
