"""Checking a JSON Schema dict's answers: the hand-written validator against ``jsonschema``.

    python benchmarks/schema_validation.py           # about 20 s
    python benchmarks/schema_validation.py --quick   # fewer repeats

An :class:`~pipeline.schema.OutputSchema` made from a JSON Schema dict decodes each answer as
plain JSON and checks it against the strict schema that was sent (``pipeline.schema._validate``).
This prints what that costs per answer beside the same check done by ``jsonschema``
(``Draft202012Validator``, built once per schema, as an adopter would), for two schemas:

- ``flat``: a typical classification answer of 5 fields (an enum, a bounded number, a string, a
  list of strings, a boolean);
- ``nested``: an object in an object, a nullable object, a list of objects through ``$defs``,
  a union (``anyOf``) and a pattern.

Each is timed on a valid answer and on an invalid one (the error with its JSON path: what a
record's ``error`` needs). Columns, per answer, best of several repeats:

- ``parse``: ``msgspec.json.decode`` alone, the floor both share;
- ``ours``: ``OutputSchema.decode`` (parse + check + the error value when invalid);
- ``jsonschema``: parse + ``best_match(validator.iter_errors(value))`` (``None`` when valid;
  a ``ValidationError`` with ``json_path`` when not).

Then the import time of each in a fresh interpreter (the best of 5 runs), and the packages
``import jsonschema`` loads that ``import pipeline`` does not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import timeit
from typing import Any

import msgspec

from pipeline.errors import SchemaValidationError
from pipeline.schema import OutputSchema

FLAT: dict[str, Any] = {
    "type": "object", "title": "label", "properties": {
        "label": {"enum": ["spam", "ham", "unsure"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "flag": {"type": "boolean"}}}
FLAT_OK = ('{"label": "spam", "confidence": 0.93, "reason": "offers a prize for a fee", '
           '"tags": ["prize", "fee"], "flag": true}')
FLAT_BAD = ('{"label": "spam", "confidence": 1.3, "reason": "offers a prize for a fee", '
            '"tags": ["prize", "fee"], "flag": true}')

NESTED: dict[str, Any] = {
    "type": "object", "title": "review", "$defs": {
        "Item": {"type": "object", "properties": {
            "name": {"type": "string"}, "price": {"type": "number", "minimum": 0},
            "qty": {"type": "integer"}}}},
    "properties": {
        "review": {"type": "object", "properties": {
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
            "sentiment": {"enum": ["positive", "negative", "neutral"]},
            "summary": {"type": "string"}}},
        "place": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {
            "city": {"type": "string"}, "zip": {"type": ["string", "null"],
                                                "pattern": "^[0-9]{4,5}$"}}}]},
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
        "when": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]}}}
NESTED_OK = ('{"review": {"score": 4, "sentiment": "positive", "summary": "good soup"}, '
             '"place": {"city": "Oslo", "zip": "0150"}, "items": [{"name": "soup", '
             '"price": 9.5, "qty": 2}, {"name": "bread", "price": 3.0, "qty": 1}], '
             '"when": "2024-05-01"}')
NESTED_BAD = NESTED_OK.replace('"qty": 1', '"qty": "one"')


def per_answer(call: Any, repeat: int, number: int) -> float:
    """Microseconds per call, the best of ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(call, repeat=repeat, number=number)) / number * 1e6


def time_cases(repeat: int, number: int) -> list[tuple[str, float, float, float]]:
    import jsonschema
    from jsonschema.exceptions import best_match

    rows = []
    for name, source, ok, bad in (("flat", FLAT, FLAT_OK, FLAT_BAD),
                                  ("nested", NESTED, NESTED_OK, NESTED_BAD)):
        ours = OutputSchema.of(source)
        # The same schema both check against: the strict one that is sent.
        theirs = jsonschema.Draft202012Validator(ours.schema)
        for label, text in (("valid", ok), ("invalid", bad)):
            valid = theirs.is_valid(msgspec.json.decode(text))
            assert valid == (label == "valid"), (name, label)

            def ours_decode(text: str = text, ours: OutputSchema[Any] = ours) -> Any:
                try:
                    return ours.decode(text)
                except SchemaValidationError as exc:
                    return exc

            def theirs_decode(text: str = text, theirs: Any = theirs) -> Any:
                value = msgspec.json.decode(text)
                return best_match(theirs.iter_errors(value)) or value

            found = theirs_decode()
            if label == "invalid":
                assert isinstance(ours_decode(), SchemaValidationError)
                assert isinstance(found, jsonschema.ValidationError), found
            rows.append((f"{name} {label}",
                         per_answer(lambda text=text: msgspec.json.decode(text), repeat, number),
                         per_answer(ours_decode, repeat, number),
                         per_answer(theirs_decode, repeat, number)))
    return rows


_IMPORT = """
import sys, time
{setup}
before = set(sys.modules)
t = time.perf_counter()
import {name}
print(time.perf_counter() - t)
print(" ".join(sorted({{m.split(".")[0] for m in set(sys.modules) - before}})))
"""


def import_cost(name: str, setup: str = "", runs: int = 5) -> tuple[float, set[str]]:
    """Milliseconds to import ``name`` in a fresh interpreter after ``setup`` (best of
    ``runs``), and the top-level packages it loaded."""
    best, loaded = float("inf"), set()
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _IMPORT.format(name=name, setup=setup)],
                             capture_output=True, text=True, check=True).stdout.split("\n")
        best = min(best, float(out[0]) * 1e3)
        loaded = set(out[1].split())
    return best, loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeat, number = (3, 2000) if args.quick else (7, 5000)

    print("per answer, µs (best of", repeat, "x", number, "answers)")
    print(f"{'case':<16} {'parse':>7} {'ours':>7} {'jsonschema':>11} {'ratio':>6}")
    for case, parse, ours, theirs in time_cases(repeat, number):
        print(f"{case:<16} {parse:>7.1f} {ours:>7.1f} {theirs:>11.1f} {theirs / ours:>5.1f}x")

    ours_ms, pipeline_pkgs = import_cost("pipeline")
    theirs_ms, jsonschema_pkgs = import_cost("jsonschema")
    after_ms, _ = import_cost("jsonschema", setup="import pipeline")
    print()
    print("import, ms (fresh interpreter, best of 5)")
    print(f"  import pipeline (the validator included)  {ours_ms:7.1f}")
    print(f"  import jsonschema                         {theirs_ms:7.1f}")
    print(f"  import jsonschema after import pipeline   {after_ms:7.1f}")
    extra = sorted(jsonschema_pkgs - pipeline_pkgs - set(sys.stdlib_module_names))
    stdlib = sorted((jsonschema_pkgs - pipeline_pkgs) & set(sys.stdlib_module_names))
    print(f"  jsonschema loads, beyond pipeline's: {', '.join(extra)}")
    print(f"    and from the standard library: {', '.join(s for s in stdlib if s[0] != '_')}")


if __name__ == "__main__":
    main()
