"""The track stage: counters in a :class:`~pipeline.status.StatusTracker` and a progress bar."""

from __future__ import annotations

import time
from typing import Any

from pipeline.record import Record
from pipeline.stages._core import Stage
from pipeline.status import StatusTracker

__all__ = ["track"]


class track(Stage):
    """Count records in a :class:`~pipeline.status.StatusTracker` and show a progress bar.

    Args:
        status: the tracker to update (a new one if ``None``).
        progress: show a tqdm progress bar (a widget in notebooks). It counts rows
            *finished*, and shows the limiter's effective rate when the tracker has one.
        total: the number of items expected, for the bar.
        initial: rows already done before this run (a resumed run starts the bar there).
    """

    after_done = True

    def __init__(self, status: StatusTracker | None = None, *, progress: bool = False,
                 total: int | None = None, description: str = "rows",
                 initial: int = 0) -> None:
        self.status = status if status is not None else StatusTracker()
        self.progress = progress
        self.total = total
        self.initial = initial
        self.description = description
        self._bar: Any = None
        self._last_postfix = 0.0

    def begin(self, record: Record) -> None:
        self.status.record_started(record)

    async def process(self, record: Record) -> Record:
        record.finished = time.perf_counter()
        status = self.status
        status._t1 = record.finished
        if record.error is not None:
            status.record_attempt_error(record.error)
        status.record_finished(record)
        if self.progress:
            self._update_bar()
        return record

    def _update_bar(self) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm

            total = None if self.total is None else self.total + self.initial
            self._bar = tqdm(total=total, initial=self.initial, desc=self.description,
                             unit="row", mininterval=0.2, smoothing=0.05, dynamic_ncols=True)
        self._bar.update(1)
        now = time.monotonic()
        if now - self._last_postfix > 0.25:
            self._last_postfix = now
            self._set_postfix()

    def _set_postfix(self) -> None:
        s = self.status
        text = (f"ok={s.succeeded} failed={s.failed} cached={s.cached} retries={s.retries} "
                f"429s={s.rate_limit_errors}")
        rate = s.rate_text()
        if rate:
            text += f" {rate}"
        self._bar.set_postfix_str(text, refresh=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._set_postfix()
            self._bar.close()
            self._bar = None

    def __repr__(self) -> str:
        return f"track({self.status!r})"
