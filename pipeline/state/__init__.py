"""What a run keeps while it goes: the response cache (``cache``), the run guard that stops
a run going nowhere (``guard``) and the status tracker behind the progress bar and the
summary table (``status``)."""
