"""The sweep's results for people: a text table and a plot."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.bench._sweep import SETTING_COLUMNS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["format_table", "plot"]

_FORMATS: dict[str, str] = {
    "fraction": "{:g}", "burst_s": "{:g}", "backoff_s": "{:g}", "run_s": "{:.1f}",
    "wall_s": "{:.1f}", "req_per_s": "{:.2f}", "tok_per_s": "{:,.0f}", "util_req": "{:.2f}",
    "util_tok": "{:.2f}", "p50_s": "{:.2f}", "p95_s": "{:.2f}", "p99_s": "{:.2f}",
    "cpu_s": "{:.2f}",
}


def format_table(df: Any) -> str:
    """The sweep's table as text (pandas or Polars input), with readable number formats.

    An empty ``burst_s`` means each limiter's default (half a second of its rate; the
    interval limiter: a one-minute window).
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        df = df.to_pandas()
    shown = df.copy()
    for column, fmt in _FORMATS.items():
        if column in shown:
            shown[column] = [("-" if isinstance(v, float) and math.isnan(v) else fmt.format(v))
                             for v in shown[column]]
    head = []
    if "provider" in df.attrs:
        head.append(f"provider: {df.attrs['provider']}; {df.attrs.get('requests', '?')} "
                    f"requests per setting; time compressed x{df.attrs.get('time_scale', 1):g}")
    return "\n".join([*head, shown.to_string(index=False)])


def _label(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    parts = []
    for column in columns:
        value = row[column]
        if isinstance(value, float) and math.isnan(value):
            value = "default"
        parts.append(f"{column}={value:g}" if isinstance(value, float) else f"{column}={value}")
    return ", ".join(parts) or "all"


def plot(df: Any, path: str | os.PathLike[str], *, x: str | None = None) -> Figure:
    """Save a PNG of throughput (utilisation of the provider's rpm) and 429s against ``x``.

    ``x`` defaults to the first setting column that varies (``fraction`` first); one line per
    combination of the other varying settings. Returns the matplotlib Figure.

    For example, inside a coroutine (or a notebook cell)::

        plot(df, "bench.png")   # x = "fraction"; lines per concurrency, limiter...
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.ticker import MaxNLocator

    if not isinstance(df, pd.DataFrame):
        df = df.to_pandas()
    varying = [c for c in SETTING_COLUMNS if c in df and df[c].nunique(dropna=False) > 1]
    if x is None:
        x = "fraction" if "fraction" in varying else (varying[0] if varying else "fraction")
    others = [c for c in varying if c != x]
    fig, (top, mid, bottom) = plt.subplots(3, 1, figsize=(7.5, 9), sharex=True)
    groups = df.groupby(others, dropna=False, sort=True) if others else [((), df)]
    for _, part in groups:
        part = part.sort_values(x)
        label = _label(part.iloc[0], others)
        xs = part[x].fillna(0) if x == "burst_s" else part[x]
        top.plot(xs, part["req_per_s"], marker="o", label=label)
        mid.plot(xs, part["util_req"], marker="o", label=label)
        bottom.plot(xs, part["n_429"], marker="o", label=label)
    top.set_ylabel("answered requests/s\n(provider time)")
    mid.set_ylabel("utilisation of\nprovider rpm")
    mid.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    bottom.set_ylabel("429s received\n(simulator log)")
    # A count: from 0, whole numbers, and a visible range when there were none (matplotlib
    # would centre an all-zero line in -0.04..0.04).
    most = float(df["n_429"].max()) if len(df) else 0.0
    bottom.set_ylim(0, max(1.0, most * 1.1))
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel(x + (" (0 = limiter default)" if x == "burst_s" else ""))
    top.legend(fontsize="small")
    title = "Client limiter settings"
    if "provider" in df.attrs:
        title += "\n" + textwrap.fill(f"provider: {df.attrs['provider']}", 90)
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig
