"""pipeline.stages._track: the progress bar and the status counts."""

from __future__ import annotations

from pipeline.record import Record
from pipeline.stages import (
    track,
)
from pipeline.status import StatusTracker
from pipeline.testing import InstantService, run_virtual

ROWS = [{"text": f"row {i}"} for i in range(20)]


def _job(service: InstantService, **config):
    return service.chat(model="m", prompt="Classify: {text}", max_tokens=5, **config)



def test_the_progress_bar_counts_finished_rows_and_a_resumed_run_starts_where_it_left():
    stage = track(StatusTracker(), progress=True, total=2_616, initial=384)
    record = Record(index=0, row={})
    stage.begin(record)  # a row entering the chain does not move the bar
    assert stage._bar is None
    run_virtual(stage.process(record))
    bar = stage._bar
    assert (bar.n, bar.total) == (385, 3_000)
    stage.finish()
