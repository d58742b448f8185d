"""Embedding batches: packing under the limits in order, one body per batch of alike rows,
and splitting the answer back to rows (usage shared, a lying server failing the batch)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError, MalformedResponseError, PayloadError
from pipeline.payloads.embedding_batches import (
    MAX_INPUTS,
    MAX_TOKENS,
    Batch,
    EmbeddingRow,
    Packer,
    pack,
    split,
)
from pipeline.simulator import Simulator, count_input_tokens


def row(key: int, text="x", tokens: int = 1, **fields) -> EmbeddingRow:
    return EmbeddingRow(key, {"model": "text-embedding-3-small", "input": text, **fields},
                        tokens=tokens)


def answer(batch: Batch, *, usage: int | None = None, order=None) -> dict:
    indices = list(range(batch.inputs)) if order is None else order
    body = {"object": "list", "model": batch.body["model"],
            "data": [{"object": "embedding", "index": i, "embedding": [float(i), 0.5]}
                     for i in indices]}
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage, "total_tokens": usage}
    return body


def test_the_documented_openai_limits_are_the_defaults():
    assert (MAX_INPUTS, MAX_TOKENS) == (2048, 300_000)
    packer = Packer()
    assert (packer.max_inputs, packer.max_tokens, packer.batch_size) == (2048, 300_000, None)


def test_inputs_per_request_are_capped():
    batches = pack([row(i) for i in range(5000)])
    assert [b.inputs for b in batches] == [2048, 2048, 904]
    assert [k for b in batches for k in b.rows] == list(range(5000))


def test_tokens_per_request_are_capped():
    batches = pack([row(i, tokens=100_000) for i in range(7)])
    assert [b.rows for b in batches] == [(0, 1, 2), (3, 4, 5), (6,)]
    assert all(b.token_estimate <= MAX_TOKENS for b in batches)
    assert [len(b.rows) for b in pack([row(i, tokens=10) for i in range(10)],
                                      max_tokens=25)] == [2, 2, 2, 2, 2]


def test_a_user_cap_on_rows_per_request():
    assert [b.rows for b in pack([row(i) for i in range(5)], batch_size=2)] == [
        (0, 1), (2, 3), (4,)]


def test_a_row_over_a_limit_by_itself_goes_alone():
    rows = [row(0), row(1, tokens=500), row(2), row(3)]
    assert [b.rows for b in pack(rows, max_tokens=100)] == [(0,), (1,), (2, 3)]
    many = EmbeddingRow(0, {"model": "m", "input": ["a"] * 5})
    assert [b.rows for b in pack([many, row(1)], max_inputs=3)] == [(0,), (1,)]


def test_a_row_with_several_inputs_counts_each():
    rows = [EmbeddingRow(0, {"model": "m", "input": ["a", "b", "c"]}),
            EmbeddingRow(1, {"model": "m", "input": "d"}),
            EmbeddingRow(2, {"model": "m", "input": [1, 2, 3]}),  # one input of token ids
            EmbeddingRow(3, {"model": "m", "input": [[1], [2]]})]
    assert [r.count for r in rows] == [3, 1, 1, 2]
    text, tokens = pack(rows)
    assert text.rows == (0, 1) and text.counts == (3, 1)
    assert text.body["input"] == ["a", "b", "c", "d"]
    # text and token ids never share a request: the API takes one kind at a time
    assert tokens.rows == (2, 3) and tokens.body["input"] == [[1, 2, 3], [1], [2]]


def test_only_alike_bodies_share_a_request():
    rows = [row(0), row(1, dimensions=256), row(2), row(3, encoding_format="base64"),
            row(4, dimensions=256), EmbeddingRow(5, {"model": "other", "input": "x"}),
            row(6, user="u1")]
    batches = pack(rows)
    assert [b.rows for b in batches] == [(0, 2), (1, 4), (3,), (5,), (6,)]
    assert batches[1].body == {"model": "text-embedding-3-small", "dimensions": 256,
                               "input": ["x", "x"]}
    assert batches[2].body["encoding_format"] == "base64"


def test_field_order_does_not_split_alike_rows():
    a = EmbeddingRow(0, {"model": "m", "dimensions": 8, "input": "a"})
    b = EmbeddingRow(1, {"dimensions": 8, "input": "b", "model": "m"})
    assert len(pack([a, b])) == 1


def test_the_packer_closes_a_batch_when_the_next_row_would_overflow_it():
    packer = Packer(max_inputs=3)
    closed = [b for i in range(7) for b in packer.add(row(i))]
    assert [b.rows for b in closed] == [(0, 1, 2), (3, 4, 5)]
    assert packer.pending == 1 and "pending=1" in repr(packer)
    assert [b.rows for b in packer.flush()] == [(6,)]
    assert packer.pending == 0 and packer.flush() == []


@pytest.mark.parametrize("option", ["max_inputs", "max_tokens", "batch_size"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_limits_must_be_positive_ints(option, bad):
    with pytest.raises(ConfigError, match=option):
        Packer(**{option: bad})


@pytest.mark.parametrize("value", [None, "", [], [1, "a"], [[1], "a"], [[]], {"a": 1}])
def test_a_row_without_a_usable_input_is_a_payload_error(value):
    with pytest.raises(PayloadError, match="row 3: an embeddings input") as info:
        pack([EmbeddingRow(3, {"model": "m", "input": value})] if value != "" else [
            EmbeddingRow(3, {"model": "m"})])
    assert info.value.field == "input"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 50), st.sampled_from(["a", "b"])),
                max_size=60),
       st.integers(1, 8), st.integers(1, 120), st.none() | st.integers(1, 5))
def test_packing_keeps_every_row_once_in_order_and_under_the_limits(spec, max_inputs,
                                                                    max_tokens, size):
    rows = [EmbeddingRow(i, {"model": model, "input": ["t"] * n}, tokens=t)
            for i, (n, t, model) in enumerate(spec)]
    batches = pack(rows, max_inputs=max_inputs, max_tokens=max_tokens, batch_size=size)
    keys = [k for b in batches for k in b.rows]
    assert sorted(keys) == list(range(len(rows)))
    assert [b.rows[0] for b in batches] == sorted(b.rows[0] for b in batches)
    for b in batches:
        assert list(b.rows) == sorted(b.rows)
        assert len({rows[k].body["model"] for k in b.rows}) == 1
        assert len(b.body["input"]) == b.inputs == sum(rows[k].count for k in b.rows)
        if len(b.rows) > 1:  # a batch over a limit holds one row that is over it alone
            assert b.inputs <= max_inputs and b.token_estimate <= max_tokens
            assert size is None or len(b.rows) <= size


# -- split ---------------------------------------------------------------------------------
def test_split_gives_each_row_the_answer_it_would_have_got_alone():
    rows = [EmbeddingRow(0, {"model": "m", "input": ["a", "b"]}, tokens=2),
            EmbeddingRow(1, {"model": "m", "input": "c"}, tokens=1)]
    (batch,) = pack(rows)
    first, second = split(batch, answer(batch, usage=3))
    assert first == {"object": "list", "model": "m",
                     "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 0.5]},
                              {"object": "embedding", "index": 1, "embedding": [1.0, 0.5]}],
                     "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    assert second["data"] == [{"object": "embedding", "index": 0, "embedding": [2.0, 0.5]}]
    assert second["usage"] == {"prompt_tokens": 1, "total_tokens": 1}


def test_split_follows_index_not_position():
    (batch,) = pack([row(i) for i in range(4)])
    bodies = split(batch, answer(batch, order=[3, 1, 0, 2]))
    assert [b["data"][0]["embedding"][0] for b in bodies] == [0.0, 1.0, 2.0, 3.0]
    assert all("usage" not in b for b in bodies)  # none given, none made up


def test_usage_is_shared_by_tokens_and_adds_up():
    (batch,) = pack([row(0, tokens=10), row(1, tokens=30), row(2, tokens=1)])
    shares = [b["usage"]["prompt_tokens"] for b in split(batch, answer(batch, usage=101))]
    assert sum(shares) == 101 and shares[1] > shares[0] > shares[2]
    (batch,) = pack([row(0, tokens=0), row(1, tokens=0)])
    assert [b["usage"]["total_tokens"] for b in split(batch, answer(batch, usage=5))] == [3, 2]


@pytest.mark.parametrize("lie", [
    lambda body: body["data"].pop(),                                      # a vector short
    lambda body: body["data"].append({"index": 4, "embedding": [0.0]}),  # one too many
    lambda body: body["data"][1].update(index=0),                        # an index twice
    lambda body: body["data"][1].update(index=-1),                       # out of range
    lambda body: body["data"][1].update(index="1"),                      # not an int
    lambda body: body["data"][1].pop("embedding"),                       # no vector
    lambda body: body.pop("data"),                                       # no data at all
    lambda body: body.update(data="nope"),
])
def test_a_server_that_lies_fails_the_whole_batch(lie):
    (batch,) = pack([row(i) for i in range(4)])
    body = answer(batch)
    lie(body)
    with pytest.raises(MalformedResponseError, match="batch of 4") as info:
        split(batch, body)
    assert info.value.retryable


def test_split_refuses_a_body_that_is_not_an_object():
    (batch,) = pack([row(0)])
    with pytest.raises(MalformedResponseError, match="no 'data' list"):
        split(batch, ["not", "a", "body"])


def test_batch_repr():
    (batch,) = pack([row(i, tokens=2) for i in range(3)])
    assert repr(batch) == "Batch(rows 0..2 (3), inputs=3, tokens=6)"


# -- against the simulator over loopback ------------------------------------------------------
def test_batches_round_trip_through_the_simulator():
    texts = [f"review number {i} " * (1 + i % 5) for i in range(50)]
    rows = [row(i, text, tokens=count_input_tokens(text), dimensions=8)
            for i, text in enumerate(texts)]
    batches = pack(rows, max_inputs=16)
    assert len(batches) == 4
    alone = {}
    with Simulator(embedding_dimensions=8) as sim, \
            httpx.Client(base_url=sim.base_url, timeout=10) as http:
        bodies = {}
        for batch in batches:
            response = http.post("/embeddings", json=batch.body)
            assert response.status_code == 200
            for key, body in zip(batch.rows, split(batch, response.json()), strict=True):
                bodies[key] = body
        batched_usage = sim.stats().prompt_tokens
        for key in (0, 17, 49):  # the same rows sent alone get the same vectors and usage
            alone[key] = http.post("/embeddings", json=rows[key].body).json()
    assert sorted(bodies) == list(range(50))
    assert sum(b["usage"]["prompt_tokens"] for b in bodies.values()) == batched_usage
    for key, body in alone.items():
        assert bodies[key]["data"] == body["data"]
        assert bodies[key]["usage"] == body["usage"]
