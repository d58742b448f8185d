"""How tables look in a notebook: one helper for the status tracker and the estimate."""

from __future__ import annotations

import html

__all__ = ["html_table"]


def html_table(caption: str, rows: list[tuple[str, str]]) -> str:
    """Label/value rows as a small HTML table (what notebooks show for a tracker or estimate).

    >>> html_table("T", [("a", "<1>")])
    "<table><caption>T</caption><tr><th style='text-align:left'>a</th><td style='text-align:left'>&lt;1&gt;</td></tr></table>"
    """  # noqa: E501
    cells = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in rows)
    return f"<table><caption>{html.escape(caption)}</caption>{cells}</table>"
