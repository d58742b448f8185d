"""The values everything else is built from: requests and responses (``request``), records
(``record``), keeping secrets out of text (``redaction``), and small shared helpers (argument
checks, durations, optional extras, console display).

Nothing here imports another part of the package but :mod:`pipeline.errors`.
"""
