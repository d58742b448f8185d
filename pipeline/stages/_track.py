"""The track stage: counters in a :class:`~pipeline.state.status.StatusTracker` and a progress
bar."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pipeline.core.record import Record
from pipeline.stages._core import Stage
from pipeline.state.status import StatusTracker

__all__ = ["track"]


class track(Stage):
    """Count records in a :class:`~pipeline.state.status.StatusTracker` and show a progress bar.

    Retries and re-asks are counted from the records (``record.earlier_errors``), so a
    track stage anywhere after a retry stage sees them, without wiring the tracker into the
    retry's ``hooks``; a tracker that is also a hook counts them as they happen, and once.

    Args:
        status: the tracker to update (a new one if ``None``).
        progress: show a tqdm progress bar (a widget in notebooks). It counts rows
            *finished*, and shows the limiter's effective rate when the tracker has one.
        total: the number of items expected, for the bar.
        initial: rows already done before this run (a resumed run starts the bar there).
        bar_options: tqdm keyword arguments over the defaults (``file=``, ``mininterval=``,
            ``ncols=``...).

    >>> import io
    >>> stage = track(progress=True, bar_options={"file": io.StringIO()})
    >>> stage
    track(<StatusTracker started=0 in_progress=0 succeeded=0 failed=0 cached=0 retries=0 \
rate_limit_errors=0>)
    """

    on_failed = True  # counts every record, failures included

    def __init__(self, status: StatusTracker | None = None, *, progress: bool = False,
                 total: int | None = None, description: str = "rows",
                 initial: int = 0, bar_options: Mapping[str, Any] | None = None) -> None:
        self.status = status if status is not None else StatusTracker()
        self.progress = progress
        self.total = total
        self.initial = initial
        self.description = description
        self.bar_options = dict(bar_options or {})
        self._bar: Any = None

    def begin(self, record: Record) -> None:
        self.status.record_started(record)

    async def process(self, record: Record) -> Record:
        record.finished = time.perf_counter()
        status = self.status
        status._t1 = record.finished
        if self.progress and self._bar is None:
            self._open_bar()  # first, so its first frame shows the counts before this row
        if record.error is not None:
            status.record_attempt_error(record.error)
        status.record_finished(record)
        if self.progress:
            self._update_bar()
        return record

    def _open_bar(self) -> None:
        from tqdm.auto import tqdm

        total = None if self.total is None else self.total + self.initial
        options: dict[str, Any] = {"total": total, "initial": self.initial,
                                   "desc": self.description, "unit": "row",
                                   "mininterval": 0.2, "smoothing": 0.05,
                                   "dynamic_ncols": True, "postfix": self._postfix()}
        options.update(self.bar_options)
        self._bar = tqdm(**options)

    def _update_bar(self) -> None:
        bar = self._bar
        # The counters go into the postfix on the tick tqdm draws the new count (its own
        # test, from update()), so the count and ok=/failed= on screen always agree.
        # Building the text every row would cost more than the rest of this stage.
        if bar.n + 1 - bar.last_print_n >= bar.miniters and \
                time.time() - bar.last_print_t >= bar.mininterval:
            bar.set_postfix_str(self._postfix(), refresh=False)
        bar.update(1)

    def _postfix(self) -> str:
        s = self.status
        text = (f"ok={s.succeeded} failed={s.failed} cached={s.cached} retries={s.retries} "
                f"429s={s.rate_limit_errors}")
        rate = s.rate_text()
        if rate:
            text += f" {rate}"
        return text

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.close()
            self._bar = None

    def __repr__(self) -> str:
        return f"track({self.status!r})"
