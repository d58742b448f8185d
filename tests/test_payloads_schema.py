"""ChatBuilder(schema=...): the strict response_format in the body, counted in the estimate,
refused beside response_format, part of the builder's identity and of the cache key."""

from __future__ import annotations

import msgspec
import pytest

import pipeline
from pipeline.errors import ConfigError
from pipeline.payloads import chat
from pipeline.state.cache import cache_key


class Verdict(msgspec.Struct):
    label: str
    score: int


def test_the_body_gets_the_strict_response_format_and_the_estimate_counts_it():
    plain = chat(model="gpt-4o-mini", prompt="Rate: {text}")
    typed = chat(model="gpt-4o-mini", prompt="Rate: {text}", schema=Verdict)
    request = typed.build({"text": "fine"})
    assert request.body["response_format"] == pipeline.output_schema(Verdict).response_format()
    assert request.body["response_format"]["json_schema"]["strict"] is True
    assert request.token_estimate > plain.build({"text": "fine"}).token_estimate
    # the full path (a per-call override) gives the same body and estimate
    slow = typed.build({"text": "fine"}, temperature=0)
    assert slow.body["response_format"] == request.body["response_format"]
    assert slow.token_estimate == request.token_estimate


@pytest.mark.parametrize("source", [Verdict, {"type": "object", "properties": {
    "label": {"type": "string"}, "score": {"type": "integer"}}}])
def test_schema_takes_a_struct_or_a_json_schema_and_refuses_response_format_beside_it(source):
    builder = chat(model="m", prompt="{text}", schema=source)
    assert builder.schema == pipeline.output_schema(source)
    assert chat(model="m", prompt="{text}").schema is None
    with pytest.raises(ConfigError, match="not both"):
        chat(model="m", prompt="{text}", schema=source,
             response_format={"type": "json_object"})
    with pytest.raises(ConfigError):
        chat(model="m", prompt="{text}", schema={"type": "array", "items": {"type": "string"}})


def test_the_schema_is_part_of_the_builders_identity_and_of_the_cache_key():
    class Other(msgspec.Struct):
        label: str

    one = chat(model="m", prompt="{text}", schema=Verdict)
    assert one == chat(model="m", prompt="{text}", schema=Verdict)
    assert one.replace(temperature=0).schema == one.schema
    other = chat(model="m", prompt="{text}", schema=Other)
    assert one != other and repr(one) != repr(other)
    assert "schema=Verdict#" in repr(one)
    keys = {cache_key(b.build({"text": "x"})) for b in (one, other, chat(model="m",
                                                                           prompt="{text}"))}
    assert len(keys) == 3


def test_a_job_exposes_its_schema():
    service = pipeline.OpenAIService(api_key="sk-test", base_url="http://127.0.0.1:9")
    assert service.chat(model="m", prompt="{t}", schema=Verdict).schema == \
        pipeline.output_schema(Verdict)
    assert service.chat(model="m", prompt="{t}").schema is None
    assert service.embeddings(model="e", input="{t}").schema is None
