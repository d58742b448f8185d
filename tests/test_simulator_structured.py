"""The simulator's structured answers over loopback: schema-valid JSON for a ``json_schema``
response format (read back with the openai SDK and
:class:`~pipeline.schema.OutputSchema`), and ``invalid_json``: a seeded share of
JSON answers spoiled the ways real models spoil them."""

from __future__ import annotations

import argparse
from typing import Literal

import httpx
import msgspec
import openai
import pytest

from pipeline.cli import serve as sim_cli
from pipeline.errors import ConfigError, SchemaValidationError
from pipeline.schema import OutputSchema
from pipeline.simulator import Simulator, SimulatorConfig


class Place(msgspec.Struct):
    city: str
    population: int | None = None


class Review(msgspec.Struct):
    sentiment: Literal["positive", "negative", "neutral"]
    score: int
    summary: str
    topics: list[str]
    place: Place | None = None
    confident: bool = False


class Label(msgspec.Struct):
    """Every field required, none nullable: every spoiled answer fails to decode."""

    label: Literal["spam", "ham"]
    p: float
    reasons: list[str]


LABEL = {"type": "object", "title": "label", "properties": {
    "label": {"type": "string", "enum": ["spam", "ham"]},
    "p": {"type": "number", "minimum": 0, "maximum": 1},
    "reasons": {"type": "array", "items": {"type": "string"}}}}


def chat(text: str, response_format: dict | None = None) -> dict:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
            "max_tokens": 300}
    if response_format is not None:
        body["response_format"] = response_format
    return body


def answers(sim: Simulator, bodies: list[dict]) -> list[str]:
    with httpx.Client(base_url=sim.base_url, timeout=10) as http:
        out = []
        for body in bodies:
            response = http.post("/chat/completions", json=body)
            assert response.status_code == 200
            out.append(response.json()["choices"][0]["message"]["content"])
        return out


def outcomes(schema: OutputSchema, texts: list[str]) -> list[str]:
    """``"ok"`` or the SchemaValidationError's reason, per answer."""
    out = []
    for text in texts:
        try:
            schema.decode(text)
        except SchemaValidationError as exc:
            out.append(exc.reason)
        else:
            out.append("ok")
    return out


# -- valid answers, read with the openai SDK -------------------------------------------------
@pytest.mark.parametrize("source", [Review, LABEL, "pydantic"])
def test_sdk_answers_decode_with_the_schema(source):
    if source == "pydantic":
        pydantic = pytest.importorskip("pydantic")

        class Home(pydantic.BaseModel):
            city: str

        class Person(pydantic.BaseModel):
            name: str
            age: int = pydantic.Field(ge=0, le=120)
            home: Home | None = None

        source = Person
    schema = OutputSchema.of(source)
    with Simulator(latency=0) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0,
                               timeout=10)
        for i in range(10):
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"row {i}"}],
                response_format=schema.response_format(), max_tokens=400)
            value = schema.decode(reply.choices[0].message.content)
            assert value is not None
            assert set(schema.columns(value)) == set(schema.column_types())
        assert sim.stats().outcomes == {"ok": 10}


def test_a_decoded_answer_fills_every_column():
    schema = OutputSchema.of(Review)
    with Simulator() as sim:
        texts = answers(sim, [chat(f"review {i}", schema.response_format()) for i in range(5)])
    for text in texts:
        review = schema.decode(text)
        assert isinstance(review, Review) and isinstance(review.place, Place)
        cols = schema.columns(review)
        assert cols["place.city"] == review.place.city and cols["topics"] == review.topics


# -- invalid_json ----------------------------------------------------------------------------
def test_invalid_json_spoils_a_seeded_share_and_logs_it():
    schema = OutputSchema.of(Review)
    bodies = [chat(f"review {i}", schema.response_format()) for i in range(80)]
    with Simulator(invalid_json=0.3, seed=7) as sim:
        results = outcomes(schema, answers(sim, bodies))
        stats = sim.stats()
        log = [entry.outcome for entry in sim.log()]
    bad = [i for i, r in enumerate(results) if r != "ok"]
    spoiled = [i for i, o in enumerate(log) if o == "invalid_json"]
    assert 0.15 * 80 <= len(spoiled) <= 0.45 * 80
    assert stats.outcomes["invalid_json"] == len(spoiled) and stats.faults == len(spoiled)
    assert stats.ok == 80 - len(spoiled)
    # every answer that fails was spoiled; a spoiled one may still decode when the field left
    # out has a default in the Struct (strict mode asks for every field; msgspec does not)
    assert set(bad) <= set(spoiled) and len(bad) >= 0.6 * len(spoiled)
    # both kinds of failure a real model makes: not JSON at all, and JSON that breaks the schema
    assert {"not_json", "invalid"} <= set(results)


def test_invalid_json_is_deterministic_for_a_seed():
    schema = OutputSchema.of(LABEL)
    bodies = [chat(f"mail {i}", schema.response_format()) for i in range(30)]
    runs = []
    for _ in range(2):
        with Simulator(invalid_json=0.5, seed=3) as sim:
            runs.append(answers(sim, bodies))
    assert runs[0] == runs[1]
    with Simulator(invalid_json=0.5, seed=4) as sim:
        assert answers(sim, bodies) != runs[0]


def test_the_same_request_asked_again_can_succeed():
    schema = OutputSchema.of(Review)
    body = chat("one row", schema.response_format())
    with Simulator(invalid_json=0.5, seed=1) as sim:
        results = outcomes(schema, answers(sim, [body] * 12))
    assert "ok" in results and set(results) != {"ok"}


def test_every_json_answer_spoiled_but_plain_text_untouched():
    with Simulator(invalid_json=1.0) as sim:
        spoiled = answers(sim, [chat(f"r{i}", OutputSchema.of(Label).response_format())
                                for i in range(10)])
        obj = answers(sim, [chat(f"j{i}", {"type": "json_object"}) for i in range(10)])
        text = answers(sim, [chat("plain"), chat("plain", {"type": "text"})])
        log = [entry.outcome for entry in sim.log()]
    assert set(outcomes(OutputSchema.of(Label), spoiled)) == {"not_json", "invalid"}
    for answer in obj:  # json_object: any object is valid, so it is prose or cut short
        with pytest.raises(msgspec.DecodeError):
            msgspec.json.decode(answer)
    assert all(t and not t.startswith("{") for t in text)
    assert log == ["invalid_json"] * 20 + ["ok", "ok"]


def test_invalid_json_is_off_by_default():
    assert SimulatorConfig().invalid_json == 0.0
    schema = OutputSchema.of(LABEL)
    with Simulator() as sim:
        texts = answers(sim, [chat(f"m{i}", schema.response_format()) for i in range(20)])
    assert outcomes(schema, texts) == ["ok"] * 20


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, float("nan")])
def test_invalid_json_must_be_a_probability(bad):
    with pytest.raises(ConfigError, match="invalid_json"):
        Simulator(invalid_json=bad)


def test_serve_takes_invalid_json_and_describes_it():
    parser = argparse.ArgumentParser()
    sim_cli.configure(parser)
    config = sim_cli._config(parser.parse_args(["--invalid-json", "0.25"]))
    assert config.invalid_json == 0.25
    assert config.describe()["invalid_json"] == 0.25
    assert sim_cli._config(parser.parse_args([])).describe()["invalid_json"] is None
    assert "--invalid-json" in parser.format_help()


def test_process_mode_carries_invalid_json():
    schema = OutputSchema.of(Label)
    with Simulator(invalid_json=1.0, process=True) as sim:
        texts = answers(sim, [chat(f"m{i}", schema.response_format()) for i in range(5)])
        assert sim.stats().outcomes == {"invalid_json": 5}
    assert "ok" not in outcomes(schema, texts)
