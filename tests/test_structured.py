"""OutputSchema: what is sent (strict response_format), what is refused, how answers decode,
and the flat typed columns an answer becomes (also for empty and all-failed frames). That a
JSON Schema dict's answers get jsonschema's verdict is in test_schema_validate.py."""

from __future__ import annotations

import datetime
import decimal
import enum
import pickle
import subprocess
import sys
from typing import Any, Literal

import msgspec
import pytest

from pipeline.errors import APIError, ConfigError, MalformedResponseError, SchemaValidationError
from pipeline.schema import ColumnType, OutputSchema, output_schema


class Place(msgspec.Struct):
    city: str
    zip: str | None = None


class Mood(enum.Enum):
    GOOD = "good"
    BAD = "bad"


class Review(msgspec.Struct):
    sentiment: Literal["positive", "negative", "neutral"]
    score: int
    topics: list[str]
    place: Place | None = None
    mood: Mood = Mood.GOOD
    seen: datetime.date | None = None
    price: decimal.Decimal = decimal.Decimal(0)
    tags: frozenset[str] = frozenset()


GOOD = (b'{"sentiment": "positive", "score": 4, "topics": ["food"], '
        b'"place": {"city": "Oslo", "zip": null}, "mood": "bad", "seen": "2024-05-01", '
        b'"price": "9.50", "tags": ["a", "b"]}')


def objects(schema: Any):
    """Every object node of a schema (in $defs too)."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            yield schema
        for value in schema.values():
            yield from objects(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from objects(value)


def keywords(schema: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key != "properties" and key != "$defs":
                found.add(key)
            if key in ("properties", "$defs"):
                for sub in value.values():
                    found |= keywords(sub)
            else:
                found |= keywords(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= keywords(value)
    return found


# -- what is sent ----------------------------------------------------------------------------
def test_response_format_has_the_openai_shape():
    fmt = OutputSchema.of(Review).response_format()
    assert fmt["type"] == "json_schema"
    assert set(fmt["json_schema"]) == {"name", "schema", "strict"}
    assert fmt["json_schema"]["name"] == "Review"
    assert fmt["json_schema"]["strict"] is True


def test_every_object_is_closed_and_requires_every_property():
    schema = OutputSchema.of(Review).schema
    nodes = list(objects(schema))
    assert len(nodes) >= 2  # the root and Place (in $defs)
    for node in nodes:
        assert node["additionalProperties"] is False
        assert node["required"] == list(node["properties"])


def test_the_root_is_an_object_not_a_ref():
    schema = OutputSchema.of(Review).schema
    assert schema["type"] == "object" and "$ref" not in schema
    assert set(schema["$defs"]) == {"Place", "Mood"}  # only what is referenced


def test_annotations_strict_mode_rejects_are_dropped_and_decoder_hints_too():
    found = keywords(OutputSchema.of(Review).schema)
    assert not found & {"default", "uniqueItems", "contentEncoding", "prefixItems"}
    # Decimal's "decimal" format is not one strict mode knows; the decoder checks it instead
    assert "decimal" not in str(OutputSchema.of(Review).schema)


def test_an_enum_without_a_type_gets_one():
    schema = OutputSchema.of(Review).schema
    assert schema["properties"]["sentiment"]["type"] == "string"
    mixed = OutputSchema.of({"type": "object", "properties": {"x": {"enum": [1, "a", None]}}})
    assert mixed.schema["properties"]["x"]["type"] == ["integer", "string", "null"]


def test_the_strict_schema_is_valid_json_schema_and_accepts_a_full_answer():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the dev extra) is not "
                                     "installed: the schema sent cannot be checked with it")
    schema = OutputSchema.of(Review).schema
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(msgspec.json.decode(GOOD), schema)


def test_name_and_description():
    fmt = OutputSchema.of(Review, name="review-v2", description="One review").response_format()
    assert fmt["json_schema"]["name"] == "review-v2"
    assert fmt["json_schema"]["description"] == "One review"
    titled = OutputSchema.of({"title": "label", "type": "object",
                              "properties": {"x": {"type": "string"}}})
    assert titled.name == "label"
    untitled = OutputSchema.of({"title": "has spaces", "type": "object",
                                "properties": {"x": {"type": "string"}}})
    assert untitled.name == "answer"
    with pytest.raises(ConfigError, match="1-64 letters"):
        OutputSchema.of(Review, name="no spaces allowed")
    with pytest.raises(ConfigError, match="1-64 letters"):
        OutputSchema.of(Review, name="x" * 65)


def test_the_schema_property_is_a_copy():
    schema = OutputSchema.of(Review)
    schema.schema["properties"].clear()
    assert schema.schema["properties"]


def test_pydantic_refs_with_descriptions_are_inlined():
    pydantic = pytest.importorskip("pydantic")

    class Inner(pydantic.BaseModel):
        city: str

    class Outer(pydantic.BaseModel):
        """Where someone lives."""

        home: Inner = pydantic.Field(description="their home")
        age: int = pydantic.Field(0, ge=0)

    schema = OutputSchema.of(Outer)
    home = schema.schema["properties"]["home"]
    assert "$ref" not in home and home["description"] == "their home"
    assert home["additionalProperties"] is False and home["required"] == ["city"]
    assert schema.schema["required"] == ["home", "age"]
    assert "default" not in keywords(schema.schema)
    assert schema.response_format()["json_schema"]["description"] == "Where someone lives."


# -- what is refused -------------------------------------------------------------------------
class FreeForm(msgspec.Struct):
    counts: dict[str, int]


class Anything(msgspec.Struct):
    value: Any


class Pair(msgspec.Struct):
    point: tuple[int, int]


@pytest.mark.parametrize("source, match", [
    (FreeForm, r"\$\.counts: an object with free-form keys"),
    (Anything, r"\$\.value: any value"),
    (Pair, r"\$\.point: 'prefixItems' .*tuple"),
    ({"type": "array", "items": {"type": "string"}}, "root must be an object"),
    ({"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}},
                {"type": "object", "properties": {"b": {"type": "string"}}}]},
     "root is a union"),
    ({"type": "object", "properties": {"a": {"type": "string", "minLength": 2}}},
     r"\$\.a: 'minLength'"),
    ({"type": "object", "properties": {"a": {"allOf": [{"type": "string"},
                                                       {"pattern": "x"}]}}},
     r"\$\.a: 'allOf'"),
    ({"type": "object", "properties": {"a": {"type": "string", "format": "decimal"}}},
     "format 'decimal'"),
    ({"type": "object", "properties": {"a": {"type": "string", "frobnicate": 1}}},
     "unsupported keyword 'frobnicate'"),
    ({"type": "object", "properties": {"a": {"type": "text"}}}, "unknown type"),
    ({"type": "object", "properties": {}}, "without properties"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": True},
     "free-form keys"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Nope"}}}, "not in \\$defs"),
    ({"type": "object", "properties": {"a": {"$ref": "other.json#/x"}}}, "only local refs"),
    ({"type": "object", "properties": {"a": {"type": "array"}}}, "needs 'items'"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}},
     "not a valid regular expression"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
     "'required' names fields"),
    ("not a schema", "a schema is a msgspec Struct type"),
])
def test_what_strict_mode_cannot_express_is_refused_at_once(source, match):
    with pytest.raises(ConfigError, match=match):
        OutputSchema.of(source)


def test_struct_string_lengths_are_refused():
    from typing import Annotated

    short = msgspec.defstruct("Short", [("text", Annotated[str, msgspec.Meta(max_length=5)])])
    with pytest.raises(ConfigError, match=r"\$\.text: 'maxLength'.*description"):
        OutputSchema.of(short)


def test_strict_mode_limits_are_checked():
    many = {"type": "object", "properties": {
        "a": {"enum": [f"v{i}" for i in range(1001)]}}}
    with pytest.raises(ConfigError, match="1001 enum values"):
        OutputSchema.of(many)
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(11):
        deep = {"type": "object", "properties": {"x": deep}}
    with pytest.raises(ConfigError, match="11 levels deep"):
        OutputSchema.of(deep)
    ten = {"type": "string"}
    for _ in range(10):
        ten = {"type": "object", "properties": {"x": ten}}
    OutputSchema.of(ten)  # ten levels is allowed


class Node(msgspec.Struct):
    value: int
    children: list[Node]
    next: Node | None = None


def test_a_recursive_struct_is_accepted_and_not_flattened_forever():
    schema = OutputSchema.of(Node)
    assert "Node" in schema.schema["$defs"]
    assert schema.decode('{"value": 1, "children": [{"value": 2, "children": []}]}').value == 1
    assert list(schema.column_types()) == ["value", "children", "next.value", "next.children",
                                           "next.next"]
    assert schema.column_types()["next.next"].kind == "object"


# -- decoding --------------------------------------------------------------------------------
def test_a_struct_answer_decodes_into_the_struct():
    value = OutputSchema.of(Review).decode(GOOD)
    assert isinstance(value, Review)
    assert value.place == Place("Oslo") and value.mood is Mood.BAD
    assert value.seen == datetime.date(2024, 5, 1) and value.price == decimal.Decimal("9.50")


@pytest.mark.parametrize("text, field, reason", [
    (b'{"sentiment": "positive", "score": "4", "topics": []}', "$.score", "Expected `int`"),
    (b'{"sentiment": "happy", "score": 4, "topics": []}', "$.sentiment", "Invalid enum"),
    (b'{"sentiment": "positive", "topics": []}', "$", "missing required field `score`"),
    (b'{"sentiment": "positive", "score": 4, "topics": [1]}', "$.topics[0]", "Expected `str`"),
    (b'{"sentiment": "positive", "score": 4, "topics": [], "place": {"zip": "1"}}',
     "$.place", "missing required field `city`"),
])
def test_a_struct_failure_names_the_field(text, field, reason):
    with pytest.raises(SchemaValidationError) as info:
        OutputSchema.of(Review).decode(text)
    err = info.value
    assert err.field == field and err.reason == "invalid"
    assert reason in str(err) and f"at `{field}`" in str(err)
    assert err.excerpt.startswith("'{\"sentiment\"")


@pytest.mark.parametrize("text, reason", [
    ("Sure! Here is the JSON: {\"score\": 4}", "not_json"),
    ('{"sentiment": "positive", "sco', "not_json"),
    ("", "empty"),
    ("   \n", "empty"),
])
def test_an_answer_that_is_not_json(text, reason):
    for source in (Review, {"type": "object", "properties": {"score": {"type": "integer"}}}):
        with pytest.raises(SchemaValidationError) as info:
            OutputSchema.of(source).decode(text)
        assert info.value.reason == reason
        assert info.value.field is None


def test_the_excerpt_is_short():
    text = '{"sentiment": ' + '"x' * 500
    with pytest.raises(SchemaValidationError) as info:
        OutputSchema.of(Review).decode(text)
    assert len(info.value.excerpt) < 100 and info.value.excerpt.endswith("...'")
    assert len(str(info.value)) < 250


def test_the_error_fits_the_error_tree_and_pickles():
    with pytest.raises(SchemaValidationError) as info:
        OutputSchema.of(Review).decode(b'{"sentiment": "positive", "score": "4", "topics": []}')
    err = info.value
    assert isinstance(err, MalformedResponseError) and isinstance(err, APIError)
    assert err.retryable and err.code == "schema_validation"
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is SchemaValidationError
    assert (str(back), back.field, back.excerpt, back.reason) == (
        str(err), err.field, err.excerpt, err.reason)


def test_decode_response_reports_refusals_and_cut_answers():
    schema = OutputSchema.of(Review)
    ok = {"choices": [{"message": {"content": GOOD.decode()}, "finish_reason": "stop"}]}
    assert schema.decode_response(ok).score == 4
    refused = {"choices": [{"message": {"content": None, "refusal": "I can't help with that."},
                            "finish_reason": "stop"}]}
    with pytest.raises(SchemaValidationError, match="the model refused") as info:
        schema.decode_response(refused)
    assert info.value.reason == "refusal"
    cut = {"choices": [{"message": {"content": GOOD.decode()[:30]},
                        "finish_reason": "length"}]}
    with pytest.raises(SchemaValidationError, match="raise max_tokens") as info:
        schema.decode_response(cut)
    assert info.value.reason == "truncated"
    with pytest.raises(SchemaValidationError, match="no message"):
        schema.decode_response({"choices": []})


DICT_SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["spam", "ham"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer", "multipleOf": 2},
        "code": {"type": "string", "pattern": "^[A-Z]{2}$"},
        "where": {"anyOf": [{"$ref": "#/$defs/Place"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "flag": {"type": "boolean"},
    },
    "required": ["label", "confidence"],
    "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": False}},
}
DICT_OK = {"label": "spam", "confidence": 0.5, "count": 4, "code": "NO",
           "where": {"city": "Oslo"}, "tags": ["a"], "flag": False}


def test_a_dict_schema_answer_is_validated_json():
    schema = OutputSchema.of(DICT_SCHEMA)
    assert schema.decode(msgspec.json.encode(DICT_OK)) == DICT_OK
    # Strict mode asks for every property, so an answer that leaves one out does not fit
    # (it would otherwise become a silent null column), whatever the file's "required" says.
    with pytest.raises(SchemaValidationError, match="missing required field `count`"):
        schema.decode('{"label": "ham", "confidence": 1}')
    assert schema.schema["required"] == list(DICT_SCHEMA["properties"])


@pytest.mark.parametrize("change, field, reason", [
    ({"label": "eggs"}, "$.label", "is not one of"),
    ({"confidence": 1.5}, "$.confidence", "<= 1"),
    ({"confidence": True}, "$.confidence", "Expected number, got boolean"),
    ({"count": 3}, "$.count", "multiple of 2"),
    ({"count": 2.0}, "$.count", "Expected integer, got float"),
    ({"code": "nor"}, "$.code", "does not match pattern"),
    ({"where": {"town": "Oslo"}}, "$.where", "missing required field `city`"),
    ({"where": {"city": "Oslo", "zip": 1}}, "$.where", "unknown field `zip`"),
    ({"where": {"city": 7}}, "$.where.city", "Expected string"),
    ({"where": 5}, "$.where", "matches none of 2 alternatives"),
    ({"tags": ["a", 2]}, "$.tags[1]", "Expected string, got integer"),
    ({"tags": ["a", "b", "c"]}, "$.tags", "at most 2 items"),
    ({"flag": None}, "$.flag", "Expected boolean, got null"),
])
def test_a_dict_schema_failure_names_the_field(change, field, reason):
    with pytest.raises(SchemaValidationError) as info:
        OutputSchema.of(DICT_SCHEMA).decode(msgspec.json.encode({**DICT_OK, **change}))
    assert info.value.field == field
    assert reason in str(info.value)


def test_a_missing_required_field_in_a_dict_schema():
    with pytest.raises(SchemaValidationError, match="missing required field `confidence`"):
        OutputSchema.of(DICT_SCHEMA).decode('{"label": "ham"}')
    with pytest.raises(SchemaValidationError, match="Expected object, got array"):
        OutputSchema.of(DICT_SCHEMA).decode("[]")


def test_a_pydantic_answer_decodes_and_fails_with_its_field():
    pydantic = pytest.importorskip("pydantic")

    class Inner(pydantic.BaseModel):
        city: str

    class Person(pydantic.BaseModel):
        age: int = pydantic.Field(ge=0)
        home: Inner | None = None

    schema = OutputSchema.of(Person)
    assert schema.kind == "pydantic"
    person = schema.decode('{"age": 3, "home": {"city": "Oslo"}}')
    assert isinstance(person, Person) and person.home == Inner(city="Oslo")
    with pytest.raises(SchemaValidationError) as info:
        schema.decode('{"age": -1, "home": {"city": 4}}')
    assert info.value.field == "$.age" and "(and 1 more)" in str(info.value)
    with pytest.raises(SchemaValidationError) as info:
        schema.decode('{"age": 3, "home": {"city": 4}}')
    assert info.value.field == "$.home.city"
    with pytest.raises(SchemaValidationError) as info:
        schema.decode("{not json")
    assert info.value.reason == "not_json"


def test_pydantic_is_not_imported_by_the_module():
    code = ("import sys, pipeline.schema as s, msgspec\n"
            "class A(msgspec.Struct):\n    x: int\n"
            "s.output_schema(A).decode('{\"x\": 1}')\n"
            "s.output_schema({'type': 'object', 'properties': {'x': {'type': 'string'}}})\n"
            "print('pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_output_schema_accepts_every_form_and_passes_a_schema_through():
    schema = output_schema(Review)
    assert output_schema(schema) is schema
    assert OutputSchema.of(schema, name="other").name == "other"
    assert output_schema(DICT_SCHEMA).kind == "json_schema"
    assert repr(schema).startswith("OutputSchema('Review', struct, columns=[sentiment, score")


# -- columns ---------------------------------------------------------------------------------
def test_columns_flatten_nested_objects_and_keep_lists():
    schema = OutputSchema.of(Review)
    value = schema.decode(GOOD)
    cols = schema.columns(value)
    assert sorted(cols.pop("tags")) == ["a", "b"]  # a frozenset: any order
    assert cols == {"sentiment": "positive", "score": 4, "topics": ["food"],
                    "place.city": "Oslo", "place.zip": None, "mood": "bad",
                    "seen": "2024-05-01", "price": "9.50"}
    assert list(schema.columns(value)) == list(schema.column_types())


def test_a_missing_optional_object_and_a_failed_row_give_nulls():
    schema = OutputSchema.of(Review)
    no_place = schema.decode(b'{"sentiment": "neutral", "score": 1, "topics": []}')
    assert schema.columns(no_place)["place.city"] is None
    assert set(schema.columns(None).values()) == {None}


def test_column_types():
    types = OutputSchema.of(Review).column_types()
    assert {k: t.kind for k, t in types.items()} == {
        "sentiment": "string", "score": "integer", "topics": "list", "place.city": "string",
        "place.zip": "string", "mood": "string", "seen": "string", "price": "string",
        "tags": "list"}
    assert types["topics"] == ColumnType("list", ColumnType("string"))
    assert types["score"].python is int and types["score"].pandas == "Int64"


def test_unions_numbers_and_nested_lists_get_types():
    schema = OutputSchema.of({"type": "object", "properties": {
        "n": {"type": ["integer", "number"]},
        "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "rows": {"type": "array", "items": {"type": "object", "properties": {
            "a": {"type": "integer"}}}}}})
    types = schema.column_types()
    assert types["n"].kind == "number"
    assert types["either"].kind == "any" and types["either"].pandas == "object"
    assert types["rows"] == ColumnType("list", ColumnType("object", None,
                                                          {"a": ColumnType("integer")}))


def test_a_separator_and_a_clash():
    schema = OutputSchema.of(Review, separator="__")
    assert "place__city" in schema.column_types()
    with pytest.raises(ConfigError, match=r"flatten to the column 'a\.b'"):
        OutputSchema.of({"type": "object", "properties": {
            "a.b": {"type": "string"},
            "a": {"type": "object", "properties": {"b": {"type": "string"}}}}})


def test_pandas_columns_are_typed_even_when_every_row_failed():
    pd = pytest.importorskip("pandas")
    schema = OutputSchema.of(Review)
    expected = {"sentiment": "string", "score": "Int64", "topics": "object",
                "place.city": "string", "mood": "string", "tags": "object"}
    for values in ([], [None, None], [schema.decode(GOOD), None]):
        frame = schema.to_pandas(values)
        assert len(frame) == len(values)
        for name, dtype in expected.items():
            assert str(frame[name].dtype) == dtype, (name, values)
    frame = schema.to_pandas([schema.decode(GOOD), None])
    assert frame["score"].tolist()[0] == 4 and frame["score"].isna().tolist() == [False, True]
    assert frame["topics"][0] == ["food"] and frame["topics"][1] is None
    assert pd.isna(frame["place.city"][1])


def test_polars_columns_are_typed_even_when_every_row_failed():
    pl = pytest.importorskip("polars")
    schema = OutputSchema.of({"type": "object", "properties": {
        "score": {"type": "integer"}, "p": {"type": "number"}, "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {"type": "object", "properties": {
            "a": {"type": "integer"}}}}}})
    expected = {"score": pl.Int64, "p": pl.Float64, "ok": pl.Boolean,
                "tags": pl.List(pl.String), "rows": pl.List(pl.Struct({"a": pl.Int64}))}
    for values in ([], [None], [{"score": 1, "p": 0.5, "ok": True, "tags": ["x"],
                                 "rows": [{"a": 1}]}, None]):
        frame = schema.to_polars(values)
        assert dict(frame.schema) == expected
        assert frame.height == len(values)
    frame = schema.to_polars([{"score": 1, "p": 1, "ok": True, "tags": [], "rows": []}, None])
    assert frame["score"].to_list() == [1, None] and frame["p"].to_list() == [1.0, None]
