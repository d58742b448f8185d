"""Outcome values for limiter tests, read from errors and headers the way the call stage does."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.http import signals
from pipeline.limiter import Outcome


def outcome(error: BaseException | None = None, headers: Mapping[str, str] | None = None,
            tokens: float | None = None, exact: bool = False) -> Outcome:
    """What :class:`pipeline.stages.call` settles a lease with for this answer or error."""
    if error is None:
        return signals.answered(headers, tokens=tokens, exact=exact)
    return signals.refused(error)
