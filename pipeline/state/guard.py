"""RunGuard: stop a run early when every later request would fail the same way, and hold
sending while the server is not answering.

Some failures are not about the row: the account is out of credit (``insufficient_quota``),
the key is wrong (401), the key may not use the model (403), the model or path does not exist
(404), or nothing listens at the base URL. Sending the other 49,999 rows would only repeat
them (and, for some, cost money). A guard watches every attempt's outcome and stops the run:

* at once on ``insufficient_quota``: no later request can succeed;
* when the first ``fail_fast_after`` attempts, before any success, all failed with the same
  error class among 401, 403, 404 and connection failures.

A server that answered and then stops answering (it crashed, a deploy restarts it, the
network dropped) is a circuit breaker's job: after ``breaker_after`` attempts in a row failed
without an answer (refused, reset, unresolvable, timed out), the breaker *opens*. Nothing is
sent then: rows wait (they do not spend their attempts), and one request at a time *probes*
the server, after ``probe_after`` seconds, then twice as long each time up to
``max_probe_after``. Any answer closes the breaker and every row goes again at once. When the
breaker has been open ``stop_after`` seconds with no answer, the run stops.

Once stopped, rows not yet sent fail with :class:`~pipeline.errors.RunStoppedError` (nothing is
sent for them), whose message says why, and ``guard.stopped`` is that error. Rows already
sent keep their own error. Requests in flight when the guard stops still land: a failure of
the same kind is counted in the reason, so its number is what the server saw.

>>> from pipeline.errors import AuthenticationError
>>> guard = RunGuard(fail_fast_after=2)
>>> for _ in range(3):  # the third was in flight when the guard stopped
...     guard.observe(AuthenticationError("401 Unauthorized: Incorrect API key", status=401))
>>> print(guard.stopped)
stopped after 3 requests failed the same way: 401 Unauthorized: Incorrect API key
"""

from __future__ import annotations

import asyncio
import math
import time

from pipeline.errors import (
    APIConnectionError,
    AuthenticationError,
    ConfigError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RunStoppedError,
    TransportError,
)

__all__ = ["DEFAULT_STOP_AFTER", "RunGuard"]

# Errors that, when they are all a run has seen, will be all it ever sees.
_FAIL_FAST = (AuthenticationError, PermissionDeniedError, NotFoundError, APIConnectionError)

#: Seconds the breaker stays open with no answer before the run stops. A restarted server (a
#: deploy, a container restart, a model server reloading) is back within seconds; one silent
#: for a minute is down, and the rows left are better sent by a rerun than waited for.
DEFAULT_STOP_AFTER = 60.0


def _loop_time() -> float:
    """The running loop's clock (virtual under :mod:`pipeline.testing`), else monotonic."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


def _seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


class RunGuard:
    """Watches attempts' outcomes; :attr:`stopped` becomes the reason to stop, or stays ``None``.

    Args:
        fail_fast_after: how many attempts in a row, before the first success, failing with
            the same 401/403/404/connection error stop the run (0: never fail fast).
        breaker_after: how many attempts in a row, after a success, failing with no answer
            (connection failures, timeouts) open the breaker (0: no breaker).
        probe_after: seconds from opening to the first probe; doubles after each failed one.
        max_probe_after: the longest wait between probes.
        stop_after: seconds the breaker may stay open with no answer before the run stops.

    Attributes:
        server: the host the requests go to, named in the reason (the ``call`` stage sets it).

    The stages call :meth:`observe` after each attempt and ``await`` :meth:`admit` before
    each one (only when :attr:`holding` is true: a closed breaker costs nothing).

    >>> from pipeline.errors import APIConnectionError
    >>> guard = RunGuard(breaker_after=3)
    >>> guard.observe(None)                     # the server answered once
    >>> for _ in range(3):
    ...     guard.observe(APIConnectionError("ConnectError: connection refused"))
    >>> guard
    <RunGuard holding: the server is not answering (breaker open)>
    >>> guard.observe(None); guard                # any answer closes it
    <RunGuard running>
    """

    __slots__ = ("_changed", "_counting", "_down_since", "_first", "_kind", "_opened_at",
                 "_probe", "_probe_at", "_probe_wait", "_silent", "_streak", "_succeeded",
                 "breaker_after", "fail_fast_after", "max_probe_after", "probe_after",
                 "server", "stop_after", "stopped")

    def __init__(self, *, fail_fast_after: int = 5, breaker_after: int = 5,
                 probe_after: float = 0.5, max_probe_after: float = 8.0,
                 stop_after: float = DEFAULT_STOP_AFTER) -> None:
        for name, count in (("fail_fast_after", fail_fast_after),
                            ("breaker_after", breaker_after)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigError(f"{name} must be an int >= 0, got {count!r}")
        self.fail_fast_after = fail_fast_after
        self.breaker_after = breaker_after
        self.probe_after = _seconds("probe_after", probe_after)
        self.max_probe_after = max(self.probe_after,
                                   _seconds("max_probe_after", max_probe_after))
        self.stop_after = _seconds("stop_after", stop_after)
        self.server: str | None = None
        self.stopped: RunStoppedError | None = None
        self._succeeded = False
        self._kind: type[BaseException] | None = None
        self._streak = 0
        self._first: BaseException | None = None
        self._counting = False  # the reason counts failures of self._kind (fail fast)
        # The breaker: attempts in a row with no answer, and when it opened (None: closed).
        self._silent = 0
        self._down_since = 0.0  # wall-clock time of the first of them
        self._opened_at: float | None = None
        self._probe: asyncio.Task[object] | None = None
        self._probe_at = 0.0
        self._probe_wait = 0.0
        self._changed: asyncio.Event | None = None

    @property
    def holding(self) -> bool:
        """Whether a request must go through :meth:`admit` first (stopped, or breaker open)."""
        return self.stopped is not None or self._opened_at is not None

    def observe(self, error: BaseException | None) -> None:
        """One attempt ended with ``error`` (``None``: it succeeded)."""
        if self.stopped is not None:
            if self._counting and self._kind is not None and isinstance(error, self._kind):
                # In flight when the guard stopped, and it failed the same way: the reason
                # says how many the server really saw.
                self._streak += 1
                self.stopped.args = (self._same_way(),)
            return
        if isinstance(error, QuotaExceededError):
            self._stop(RunStoppedError(
                f"stopped: the account is out of quota, so every request would fail: {error}",
                cause=error))
            return
        if self._succeeded:
            self._breaker(error)
            return
        if error is None:
            self._succeeded = True
            self._streak = 0
            self._breaker(None)
            return
        if not self.fail_fast_after:
            return
        kind = next((k for k in _FAIL_FAST if isinstance(error, k)), None)
        if kind is None:
            self._streak = 0
            self._kind = None
            return
        if kind is not self._kind:
            self._kind, self._streak, self._first = kind, 0, error
        self._streak += 1
        if self._streak >= self.fail_fast_after:
            self._counting = True
            self._stop(RunStoppedError(self._same_way(), cause=self._first))

    def _same_way(self) -> str:
        return f"stopped after {self._streak} requests failed the same way: {self._first}"

    # ----------------------------------------------------------------- the breaker
    def _breaker(self, error: BaseException | None) -> None:
        if not isinstance(error, TransportError):
            # The server answered (an answer, or an error status it sent): it is up.
            self._silent = 0
            if self._opened_at is not None:
                self._opened_at = None
                self._probe = None
                self._notify()
            return
        if not self.breaker_after:
            return
        now = _loop_time()
        self._silent += 1
        if self._silent == 1:
            self._down_since = time.time()
        if self._opened_at is None:
            if self._silent >= self.breaker_after:
                self._opened_at = now
                self._probe = None
                self._probe_wait = self.probe_after
                self._probe_at = now + self._probe_wait
                self._notify()
            return
        if self._probe is not None and self._probe is _current_task():
            # The probe failed too: wait longer before the next one (or give up).
            self._probe = None
            self._probe_wait = min(self.max_probe_after, max(self._probe_wait * 2, 0.01))
            self._probe_at = now + self._probe_wait
            if now - self._opened_at >= self.stop_after:
                self._stop_unreachable()
            self._notify()
        # Others in flight when it opened fail as well: they say nothing new.

    async def admit(self) -> RunStoppedError | None:
        """Wait while the breaker is open; return ``None`` when the request may go, or the
        reason the run stopped (then nothing may be sent)."""
        while True:
            if self.stopped is not None:
                return self.stopped
            opened = self._opened_at
            if opened is None:
                return None
            task = _current_task()
            if task is not None and self._probe is task:
                return None  # this request is the probe
            now = _loop_time()
            deadline = opened + self.stop_after
            if now >= deadline:
                self._stop_unreachable()
                continue
            probing = self._probe is not None and not self._probe.done()
            if not probing and now >= self._probe_at:
                self._probe = task
                return None
            wake = deadline if probing else min(self._probe_at, deadline)
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            try:
                async with asyncio.timeout(max(0.0, wake - now)):
                    await changed.wait()
            except TimeoutError:
                pass

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _stop_unreachable(self) -> None:
        where = self.server or "the base URL"
        since = time.strftime("%H:%M:%S", time.localtime(self._down_since))
        self._stop(RunStoppedError(
            f"stopped: the server at {where} stopped answering at {since} and did not answer "
            f"for {self.stop_after:g} s; run again to send the rows that were not sent"))

    def _stop(self, reason: RunStoppedError) -> None:
        self.stopped = reason
        self._opened_at = None
        self._probe = None
        self._notify()

    def __repr__(self) -> str:
        if self.stopped is not None:
            state = f"stopped: {self.stopped}"
        elif self._opened_at is not None:
            state = "holding: the server is not answering (breaker open)"
        else:
            state = "running"
        return f"<RunGuard {state}>"


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop (a unit test calling observe directly)
        return None
