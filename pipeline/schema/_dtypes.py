"""The type of an answer column, and the pandas and Polars frames typed by it.

Every answer column is nullable: a failed row gets nulls, and the row's ``error`` says why. So a
frame built here has the schema's dtypes even when it has no rows or every row failed: nullable
pandas extension dtypes (``Int64``, ``boolean``: a null is ``<NA>``, never a float ``NaN`` in
an int column) and plain Polars dtypes. pandas and polars are imported only when a frame or a
Polars dtype is asked for.

>>> types = {"n": ColumnType("integer"), "tags": ColumnType("list", ColumnType("string"))}
>>> frame = pandas_frame(types, [{"n": 1, "tags": ["a"]}, {"n": None, "tags": None}])
>>> frame.dtypes.astype(str).to_dict()
{'n': 'Int64', 'tags': 'object'}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import msgspec


class ColumnType(msgspec.Struct, frozen=True):
    """The type of one answer column.

    ``kind`` is the JSON type: ``"string"``, ``"integer"``, ``"number"``, ``"boolean"``,
    ``"list"`` (``items`` is the element type), ``"object"`` (a nested value kept whole:
    ``fields`` when known), or ``"any"`` (a union of several types). Every column is
    nullable: a failed row gets nulls, and the row's ``error`` says why.

    >>> ColumnType("integer").pandas, ColumnType("list", ColumnType("number")).python
    ('Int64', <class 'list'>)
    """

    kind: str
    items: ColumnType | None = None
    fields: dict[str, ColumnType] | None = None

    _PYTHON: ClassVar[dict[str, type]] = {"string": str, "integer": int, "number": float,
                                          "boolean": bool, "list": list, "object": dict,
                                          "any": object}
    # Nullable extension dtypes, so a null is <NA> in an int column, never a float NaN.
    _PANDAS: ClassVar[dict[str, str]] = {"string": "string", "integer": "Int64",
                                         "number": "Float64", "boolean": "boolean"}

    @property
    def python(self) -> type:
        """The Python type of a cell (``str``, ``int``, ``float``, ``bool``, ``list``,
        ``dict``, or ``object`` for a union)."""
        return self._PYTHON[self.kind]

    @property
    def pandas(self) -> str:
        """The pandas dtype name (``"Int64"``, ``"Float64"``, ``"boolean"``, ``"string"``,
        ``"object"`` for lists, nested values and unions)."""
        return self._PANDAS.get(self.kind, "object")

    def polars(self) -> Any:
        """The Polars dtype (imports polars): ``pl.Int64``, ``pl.List(pl.Float64)``,
        ``pl.Struct(...)``; ``pl.Object`` for a union."""
        import polars as pl

        scalar = {"string": pl.String, "integer": pl.Int64, "number": pl.Float64,
                  "boolean": pl.Boolean}
        if self.kind in scalar:
            return scalar[self.kind]
        if self.kind == "list" and self.items is not None:
            inner = self.items.polars()
            return pl.Object if inner == pl.Object else pl.List(inner)
        if self.kind == "object" and self.fields:
            fields = {name: t.polars() for name, t in self.fields.items()}
            if pl.Object not in fields.values():
                return pl.Struct(fields)
        return pl.Object


def pandas_frame(types: Mapping[str, ColumnType], rows: Sequence[Mapping[str, Any]]) -> Any:
    """A pandas DataFrame with one column per entry of ``types``, typed by it, one row per
    mapping in ``rows`` (column name -> cell)."""
    import pandas as pd

    frame = {}
    for name, kind in types.items():
        cells = [row[name] for row in rows]
        if kind.pandas == "object":
            frame[name] = pd.Series(cells, dtype="object")
        else:
            frame[name] = pd.Series(pd.array(cells, dtype=kind.pandas))
    return pd.DataFrame(frame, index=pd.RangeIndex(len(rows)))


def polars_frame(types: Mapping[str, ColumnType], rows: Sequence[Mapping[str, Any]]) -> Any:
    """A Polars DataFrame with one column per entry of ``types``, typed by it."""
    import polars as pl

    return pl.DataFrame([pl.Series(name, [row[name] for row in rows], dtype=kind.polars())
                         for name, kind in types.items()])
