"""The answer's schema for structured outputs: what to ask for, how to read it, which columns.

An :class:`OutputSchema` is built from a msgspec Struct type, a JSON Schema dict, or a pydantic
model class (pydantic is only looked at when the caller has already imported it). It gives

- :meth:`~OutputSchema.response_format`: the OpenAI ``response_format`` body value, with the
  schema rewritten the way strict mode requires (every object ``additionalProperties: false``
  and every property ``required``; ``oneOf`` as ``anyOf``; annotations strict mode rejects,
  such as ``default``, dropped). What strict mode cannot express (free-form mappings, tuples,
  ``Any``, ``allOf``, ``minLength``...) is a :class:`~pipeline.errors.ConfigError` when the
  schema is built, never a 400 for every row of a run;
- :meth:`~OutputSchema.decode`: the answer text as a typed value, or a
  :class:`~pipeline.errors.SchemaValidationError` naming the field that failed;
- :meth:`~OutputSchema.columns` and :meth:`~OutputSchema.column_types`: the value as flat
  columns (``review.score``) with their types, so a frame whose rows all failed still has
  typed, null-filled answer columns.

Inside, one module per concern, private to this package (import from ``pipeline.schema``):
``_sources`` (Struct, JSON Schema dict, pydantic model), ``_strict`` (normalizing and strict
mode), ``_validate`` (checking a JSON Schema dict's answers), ``_columns`` (the flat layout),
``_dtypes`` (column types, pandas and Polars frames), ``_tree`` (reading a schema node) and
``_output`` (the OutputSchema that joins them).

>>> import msgspec
>>> class Review(msgspec.Struct):
...     sentiment: str
...     score: int
>>> schema = OutputSchema.of(Review)
>>> schema.response_format()["json_schema"]["schema"]["required"]
['sentiment', 'score']
>>> schema.decode('{"sentiment": "positive", "score": 4}')
Review(sentiment='positive', score=4)
>>> schema.decode('{"sentiment": "positive", "score": "four"}')
Traceback (most recent call last):
...
pipeline.errors.SchemaValidationError: answer does not fit 'Review' at `$.score`: \
Expected `int`, got `str`; answer: '{"sentiment": "positive", "score": "four"}'
"""

from __future__ import annotations

from pipeline.schema._dtypes import ColumnType
from pipeline.schema._output import OutputSchema, output_schema

__all__ = ["ColumnType", "OutputSchema", "output_schema"]
