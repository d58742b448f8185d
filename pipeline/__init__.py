"""Async stream stages for calling rate-limited HTTP APIs at scale.

See README.md for the two-minute tour.
"""

from __future__ import annotations

from pipeline import errors
from pipeline.errors import PipelineError

__all__ = ["PipelineError", "errors"]

__version__ = "0.1.0"
