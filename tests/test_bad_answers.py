"""A 2xx without an answer is a failure (issue 19, item 2), and a 2xx that echoes the key
never puts it in an error, an output file or a journal (issue 19, item 7).

The rule itself (:func:`pipeline.http.classify.check_answer`) is pinned on bodies written by
hand; the rest runs the default pipeline against the simulator over loopback, each bad body
scripted as a simulator fault, and counts what was sent from the simulator's log.
"""

from __future__ import annotations

import collections
import json

import httpx
import pytest

import pipeline
from pipeline import ResponseCache
from pipeline.core.request import APIRequest
from pipeline.errors import (
    ContentFilterError,
    ErrorBodyError,
    MalformedResponseError,
    NoAnswerError,
)
from pipeline.http.classify import check_answer
from pipeline.simulator import Simulator
from pipeline.simulator._config import BAD_ANSWER_FAULTS, Faults
from pipeline.testing import set_testing

KEY = "proxy-echo-key-0123456789abcdef"  # no "sk-" prefix: only the literal mask can catch it
ROWS = [{"text": f"review {i}: a fine product"} for i in range(24)]


@pytest.fixture(autouse=True)
def _instant_backoff():
    previous = set_testing(True)
    yield
    set_testing(previous)


def _chat(content="hi", **message):
    return {"choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content, **message}}]}


# -- the rule, on bodies written by hand -------------------------------------------------------
@pytest.mark.parametrize(("shape", "body", "expected", "code"), [
    ("chat", None, NoAnswerError, "empty_body"),
    ("chat", [], NoAnswerError, "not_an_object"),
    ("chat", "text", NoAnswerError, "not_an_object"),
    ("chat", {}, NoAnswerError, "no_choices"),
    ("chat", {"choices": []}, NoAnswerError, "no_choices"),
    ("chat", {"choices": None}, NoAnswerError, "no_choices"),
    ("chat", {"choices": [None]}, NoAnswerError, "null_content"),
    ("chat", {"choices": [{"finish_reason": "stop"}]}, NoAnswerError, "no_message"),
    ("chat", _chat(None), NoAnswerError, "null_content"),
    ("chat", _chat(None, tool_calls=[]), NoAnswerError, "null_content"),
    ("chat", {"error": {"message": "upstream failed", "code": "bad_gateway"}}, ErrorBodyError,
     "bad_gateway"),
    ("chat", {"error": "upstream failed"}, ErrorBodyError, "error_body"),
    ("chat", {"choices": [{"finish_reason": "content_filter",
                           "message": {"content": None}}]}, ContentFilterError,
     "content_filter"),
    ("chat", {"choices": [{"finish_reason": "content_filter",
                           "message": {"content": "partial"}}]}, ContentFilterError,
     "content_filter"),
    ("completion", {"choices": [{"text": None}]}, NoAnswerError, "null_content"),
    ("completion", {"choices": [{"text": "", "finish_reason": "content_filter"}]},
     ContentFilterError, "content_filter"),
    ("embedding", {"data": []}, NoAnswerError, "no_data"),
    ("embedding", {"data": [{"embedding": None}]}, NoAnswerError, "null_embedding"),
    ("embedding", {"object": "list", "data": [{"embedding": [0.1]}, {"index": 1}]},
     NoAnswerError, "null_embedding"),
    ("embedding", {"error": {"message": "x"}}, ErrorBodyError, "error_body"),
])
def test_a_2xx_without_an_answer_is_a_classified_error(shape, body, expected, code):
    error = check_answer(shape, body, status=200, method="POST", url="http://h/v1/x")
    assert type(error) is expected and error.code == code and error.status == 200
    assert error.retryable is (expected is not ContentFilterError)
    assert str(error).startswith("POST http://h/v1/x -> 200")


@pytest.mark.parametrize(("shape", "body"), [
    ("chat", _chat("hi")),
    ("chat", _chat("")),  # an empty string is what the model said
    ("chat", _chat(None, tool_calls=[{"id": "c", "type": "function"}])),
    ("chat", _chat(None, function_call={"name": "f", "arguments": "{}"})),
    ("chat", _chat(None, refusal="I can't help with that.")),
    ("completion", {"choices": [{"text": "hi", "finish_reason": "length"}]}),
    ("embedding", {"data": [{"embedding": [0.1, 0.2]}, {"embedding": "AAAA"}]}),
    (None, None), (None, []), (None, {"error": "a JSON API may say this"}),
])
def test_an_answer_of_each_shape_passes(shape, body):
    assert check_answer(shape, body) is None


class _Watched(dict):
    """A JSON object that records which of its members were read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __iter__(self):
        self.read.add("*")
        return super().__iter__()

    def items(self):
        self.read.add("*")
        return super().items()


def test_the_check_reads_only_the_members_it_needs():
    # What keeps the check at about a microsecond a chat answer: it never converts or walks
    # the whole body, only the answer's path (a structural check, not a timed one).
    message = _Watched(role="assistant", content="x" * 500)
    choice = _Watched(index=0, finish_reason="stop", message=message, logprobs=None)
    body = _Watched(id="c", model="m", choices=[choice],
                    usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
    assert check_answer("chat", body) is None
    assert body.read == {"choices"}
    assert choice.read == {"finish_reason", "message"}
    assert message.read == {"content"}


def test_a_refusal_is_a_success_whose_text_is_the_refusal():
    record = pipeline.Record(index=0, response=pipeline.Response(
        status=200, body=_chat(None, refusal="I can't help with that.")))
    assert record.ok and record.text == "I can't help with that."


async def test_a_json_service_accepts_any_json_but_openai_paths_are_checked():
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"choices": []}))
    request = APIRequest(path="chat/completions", body={"model": "m", "messages": []})
    async with pipeline.JSONService("http://127.0.0.1:9/v1", transport=transport) as service:
        assert (await service.call("chat/completions", request)).body == {"choices": []}
    async with pipeline.OpenAIService("k" * 20, "http://127.0.0.1:9/v1",
                                      transport=transport) as service:
        with pytest.raises(NoAnswerError, match="no choices"):
            await service.call("chat/completions", request)
        # Files and fine-tuning answers are objects of their own: not checked.
        files = APIRequest(path="files/file-1", method="GET")
        assert (await service.call("files/file-1", files)).body == {"choices": []}


# -- against the simulator -------------------------------------------------------------------
_EXPECTED = {
    "empty_body": (NoAnswerError, "empty_body"), "null_body": (NoAnswerError, "empty_body"),
    "empty_object": (NoAnswerError, "no_choices"), "list_body": (NoAnswerError, "not_an_object"),
    "empty_choices": (NoAnswerError, "no_choices"),
    "null_content": (NoAnswerError, "null_content"),
    "error_200": (ErrorBodyError, "upstream_error"),
    "content_filter": (ContentFilterError, "content_filter"),
    "malformed": (MalformedResponseError, "not_json"),
    "echo_headers": (MalformedResponseError, "not_json"),
}


def test_every_bad_answer_fault_has_an_expected_error():
    assert set(_EXPECTED) == set(BAD_ANSWER_FAULTS)
    assert Faults.parse(["not_json=0.1", "error_in_200=0.2"]) == Faults(malformed=0.1,
                                                                         error_200=0.2)


def _service(sim: Simulator) -> pipeline.OpenAIService:
    # Fixed rates: the adaptive limiter slows down on failures, which is not what is tested.
    return pipeline.OpenAIService(api_key=KEY, base_url=sim.base_url, adaptive=False)


@pytest.mark.parametrize("kind", sorted(_EXPECTED))
async def test_a_fault_on_every_request_fails_every_row_with_its_error(kind, tmp_path):
    expected, code = _EXPECTED[kind]
    attempts = 3
    cache = ResponseCache(tmp_path / "cache")
    with Simulator(faults={kind: 1.0}, seed=1) as sim:
        async with _service(sim) as service:
            job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=20)
            results = await pipeline.run(ROWS, job, cache=cache, attempts=attempts,
                                         concurrency=8)
        log = sim.log()
    assert all(type(r.error) is expected and r.error.code == code for r in results), \
        collections.Counter(repr(r.error) for r in results)
    assert all(r.status == "failed" and r.response is None for r in results)
    assert results.status.succeeded == 0 and results.status.failed == len(ROWS)
    # A retryable kind is asked `attempts` times per row, a content filter once.
    sent = len(ROWS) * (1 if kind == "content_filter" else attempts)
    assert len(log) == sent and {e.outcome for e in log} == {f"fault:{kind}"
                                                             if kind != "malformed"
                                                             else "malformed"}
    assert len(cache) == 0 and not any(r.cache_key in cache for r in results)
    for record in results:  # the key never leaks, whatever the body echoed
        assert KEY not in str(record.error) and KEY not in repr(record.error)
        assert KEY not in repr(record) and KEY not in json.dumps(
            record.error.body, default=str) and KEY not in str(record.error.headers)


@pytest.mark.parametrize("kind", ["empty_body", "null_body", "empty_object", "list_body",
                                  "empty_choices", "null_content", "error_200", "malformed"])
async def test_a_passing_bad_answer_is_answered_on_retry_and_only_good_answers_are_cached(
        kind, tmp_path):
    rows = [{"text": f"review {i}"} for i in range(60)]
    cache_dir = tmp_path / "cache"
    with Simulator(faults={kind: 0.3}, seed=5) as sim:
        async with _service(sim) as service:
            job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=20)
            results = await pipeline.run(rows, job, cache=cache_dir, attempts=8)
            log = sim.log()
            assert all(r.ok and isinstance(r.text, str) and r.text for r in results)
            assert results.status.succeeded == len(rows) and results.status.failed == 0
            bad = sum(1 for e in log if e.outcome != "ok")
            assert bad > 5 and results.status.retries >= bad
            assert len(log) == len(rows) + bad  # each bad answer cost exactly one retry
            # A second run is free: only good answers were kept.
            again = await pipeline.run(rows, job, cache=cache_dir)
        assert len(sim.log()) == len(log)
    assert all(r.cached and r.text == first.text for r, first in zip(again, results,
                                                                      strict=True))


async def test_a_second_run_resends_exactly_the_rows_that_got_no_answer(tmp_path):
    rows = [{"text": f"review {i}"} for i in range(80)]
    cache_dir = tmp_path / "cache"
    faults = {"empty_choices": 0.1, "null_content": 0.1, "error_200": 0.05,
              "content_filter": 0.1, "empty_body": 0.05}
    with Simulator(faults=faults, seed=11) as sim:
        async with _service(sim) as service:
            job = service.chat(model="gpt-4o-mini", prompt="Classify: {text}", max_tokens=20)
            first = await pipeline.run(rows, job, cache=cache_dir, attempts=1)
            failed = [r.index for r in first if not r.ok]
            sent_first = len(sim.log())
            second = await pipeline.run(rows, job, cache=cache_dir, attempts=1)
        resent = sim.log()[sent_first:]
    kinds = collections.Counter(r.error_type for r in first if r.error is not None)
    assert {"NoAnswerError", "ErrorBodyError", "ContentFilterError"} <= set(kinds), kinds
    assert first.status.failed == len(failed) and first.status.succeeded == 80 - len(failed)
    assert len(resent) == len(failed)  # the failed rows, and no other, are sent again
    assert [r.index for r in second if not r.cached] == failed


async def test_content_filter_answers_are_counted_as_paid():
    with Simulator(faults={"content_filter": 1.0}) as sim:
        async with _service(sim) as service:
            job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)
            results = await pipeline.run(ROWS[:3], job)
        billed = sum(e.prompt_tokens for e in sim.log())
    assert billed > 0
    assert sum(r.paid_tokens()[0] for r in results) == billed


@pytest.mark.parametrize(("endpoint", "kind", "code"), [
    ("completions", "null_content", "null_content"),
    ("completions", "empty_choices", "no_choices"),
    ("completions", "content_filter", "content_filter"),
    ("embeddings", "null_content", "null_embedding"),
    ("embeddings", "empty_choices", "no_data"),
    ("embeddings", "error_200", "upstream_error"),
])
async def test_each_endpoint_shape_is_checked(endpoint, kind, code):
    with Simulator(faults={kind: 1.0}) as sim:
        async with _service(sim) as service:
            if endpoint == "completions":
                job = service.completions(model="gpt-3.5-turbo-instruct", prompt="{text}",
                                          max_tokens=5)
            else:
                job = service.embeddings(model="text-embedding-3-small", input="{text}",
                                         batch_size=1)
            results = await pipeline.run(ROWS[:4], job, attempts=2)
    assert all(r.error is not None and r.error.code == code for r in results), \
        [repr(r.error) for r in results]


# -- an echoing proxy (item 7) ---------------------------------------------------------------
async def test_an_echoed_key_is_in_no_error_output_or_journal(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:6]))
    output = tmp_path / "out.jsonl"
    with Simulator(faults={"echo_headers": 1.0}) as sim:
        async with _service(sim) as service:
            job = service.chat(model="gpt-4o-mini", prompt="{text}", max_tokens=5)
            summary = await pipeline.io.run_file(source, output, job, attempts=2,
                                                 cache=tmp_path / "cache")
            # The page did carry the key: the simulator echoed it, in two forms.
            async with httpx.AsyncClient() as client:
                page = await client.post(f"{sim.base_url}/chat/completions", headers={
                    "authorization": f"Bearer {KEY}"}, json={"model": "m", "messages": [
                        {"role": "user", "content": "x"}]})
    assert KEY in page.text and page.status_code == 200
    assert summary.failed == 6
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert all(line["status"] == "failed" for line in lines)
    assert all("MalformedResponseError" in json.dumps(line) for line in lines)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != source]
    assert any(p.name.endswith(".journal") for p in written) or output.exists()
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path
        assert KEY[:12].encode() not in path.read_bytes(), path  # not even its start


@pytest.mark.parametrize("status", [200, 400, 500])
@pytest.mark.parametrize("start", [0, 150, 190, 197])  # the key inside, across, at the cut
async def test_a_bare_echoed_key_is_masked_in_an_excerpt_of_any_status(status, start):
    """A hand-written proxy answering text with the bare key (no "Bearer", no "sk-"): only
    the service's own secrets can mask it, and a key cut by the excerpt's 200 characters must
    not leak its first half."""
    from pipeline.simulator._http import HTTPServer

    page = ("x" * start + f" {KEY} " + "y" * 300).encode()
    server = HTTPServer(lambda req, conn: conn.respond(status, page, content_type="text/plain"))
    port = await server.start("127.0.0.1", 0)
    try:
        async with pipeline.OpenAIService(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1",
                                          adaptive=False) as service:
            job = service.chat(model="gpt-4o-mini", prompt="{text}")
            (record,) = await pipeline.run([{"text": "hi"}], job, attempts=1)
    finally:
        await server.stop()
    assert record.status == "failed" and record.error.status == status
    shown = f"{record.error} {record.error!r} {record!r} {record.error.body!r}"
    assert KEY[:8] not in shown, shown
    if start < 150:
        assert "***" in shown
