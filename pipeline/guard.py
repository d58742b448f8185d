"""RunGuard: stop a run early when every later request would fail the same way.

Some failures are not about the row: the account is out of credit (``insufficient_quota``),
the key is wrong (401), the key may not use the model (403), the model or path does not exist
(404), or nothing listens at the base URL. Sending the other 49,999 rows would only repeat
them (and, for some, cost money). A guard watches every attempt's outcome and stops the run:

* at once on ``insufficient_quota``: no later request can succeed;
* when the first ``fail_fast_after`` attempts, before any success, all failed with the same
  error class among 401, 403, 404 and connection failures.

Once stopped, rows not yet sent fail with :class:`~pipeline.errors.RunStoppedError` (nothing is
sent for them), whose message quotes the first error, and ``guard.stopped`` says why.

>>> from pipeline.errors import AuthenticationError
>>> guard = RunGuard(fail_fast_after=2)
>>> for _ in range(2):
...     guard.observe(AuthenticationError("401 Unauthorized: Incorrect API key", status=401))
>>> print(guard.stopped)
stopped after 2 requests failed the same way: 401 Unauthorized: Incorrect API key
"""

from __future__ import annotations

from pipeline.errors import (
    APIConnectionError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RunStoppedError,
)

__all__ = ["RunGuard"]

# Errors that, when they are all a run has seen, will be all it ever sees.
_FAIL_FAST = (AuthenticationError, PermissionDeniedError, NotFoundError, APIConnectionError)


class RunGuard:
    """Watches attempts' outcomes; :attr:`stopped` becomes the reason to stop, or stays ``None``.

    Args:
        fail_fast_after: how many attempts in a row, before the first success, failing with
            the same 401/403/404/connection error stop the run (0: never fail fast).
    """

    __slots__ = ("_first", "_kind", "_streak", "_succeeded", "fail_fast_after", "stopped")

    def __init__(self, *, fail_fast_after: int = 5) -> None:
        self.fail_fast_after = fail_fast_after
        self.stopped: RunStoppedError | None = None
        self._succeeded = False
        self._kind: type[BaseException] | None = None
        self._streak = 0
        self._first: BaseException | None = None

    def observe(self, error: BaseException | None) -> None:
        """One attempt ended with ``error`` (``None``: it succeeded)."""
        if self.stopped is not None:
            return
        if error is None:
            self._succeeded = True
            self._streak = 0
            return
        if isinstance(error, QuotaExceededError):
            self.stopped = RunStoppedError(
                f"stopped: the account is out of quota, so every request would fail: {error}",
                cause=error)
            return
        if self._succeeded or not self.fail_fast_after:
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
            self.stopped = RunStoppedError(
                f"stopped after {self._streak} requests failed the same way: {self._first}",
                cause=self._first)

    def __repr__(self) -> str:
        state = "running" if self.stopped is None else f"stopped: {self.stopped}"
        return f"<RunGuard {state}>"
