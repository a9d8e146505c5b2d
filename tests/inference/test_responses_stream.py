"""``POST /v1/responses`` with ``stream: true``: a chat stream relayed as the Responses API's
server-sent events (response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta …, response.completed), each valid
against OpenAI's own event schema, numbered from 0, named in its ``event:`` line; stored (when
``store``) before ``response.completed`` is sent; ``response.failed`` when the model server
fails mid-stream, an ``error`` event when the record cannot be written in time."""

from __future__ import annotations

import json
from functools import cache
from typing import Any
from unittest import mock

import httpx
import pytest
from django.db import OperationalError

from apps.inference import recorder
from apps.inference.models import InferenceTask
from apps.inference.pipeline import run
from tests.conftest import records_written, register_model
from tests.support.openai_spec import assert_valid, spec
from tests.support.servers import set_stub_mode

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "Max daily dose of paracetamol for an adult?"
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@cache
def event_schemas() -> dict[str, str]:
    """Each Responses event type → its schema in OpenAI's spec (the members of ResponseStreamEvent)."""
    schemas = spec()["components"]["schemas"]
    out = {}
    for member in schemas["ResponseStreamEvent"]["anyOf"]:
        name = member["$ref"].rsplit("/", 1)[1]
        for kind in schemas[name]["properties"]["type"].get("enum", []):
            out[kind] = name
    return out


def assert_event(event: dict[str, Any]) -> None:
    """Valid as the event its type names (ResponseStreamEvent is an anyOf: any member would do)."""
    assert event["type"] in event_schemas(), event["type"]
    assert_valid(event_schemas()[event["type"]], event)


def parse_sse(lines: list[str]) -> list[dict[str, Any]]:
    """The events of an SSE body, checking that each ``event:`` line names its data's type."""
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
            assert data["type"] == name, (name, data)
            events.append(data)
            name = None
    return events


@pytest.fixture
def stream(live_medai, alice, token_for, stub_backend):
    register_model("stub-a", stub_backend)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}

    def post(**fields: Any) -> list[dict[str, Any]]:
        body = {"model": "stub-a", "input": QUESTION, "stream": True, **fields}
        with httpx.stream("POST", f"{live_medai}/v1/responses", json=body, headers=headers, timeout=30) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["X-RateLimit-Limit"]
            lines = [line for line in response.iter_lines() if line]
        assert "data: [DONE]" not in lines  # not chat's terminator
        events = parse_sse(lines)
        for event in events:
            assert_event(event)
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        return events

    post.headers = headers
    return post


def test_a_text_stream_is_the_responses_event_sequence(stream):
    events = stream(instructions="Be brief.", max_output_tokens=32)
    assert [e["type"] for e in events] == TEXT_EVENTS
    created, in_progress = events[0]["response"], events[1]["response"]
    assert created["status"] == in_progress["status"] == "in_progress"
    assert created["output"] == [] and "usage" not in created and created["instructions"] == "Be brief."
    added = events[2]
    assert added["output_index"] == 0 and added["item"]["type"] == "message"
    assert added["item"]["status"] == "in_progress" and added["item"]["content"] == []
    item_id = added["item"]["id"]
    assert events[3]["part"] == {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert {e["item_id"] for e in deltas} == {item_id} and {e["content_index"] for e in deltas} == {0}
    assert "".join(e["delta"] for e in deltas) == "OK"
    assert events[6]["text"] == "OK" and events[7]["part"]["text"] == "OK"
    assert events[8]["item"]["status"] == "completed" and events[8]["item"]["content"][0]["text"] == "OK"
    final = events[-1]["response"]
    assert_valid("Response", final)
    assert final["status"] == "completed" and final["id"] == created["id"]
    assert final["output"] == [events[8]["item"]]
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["output_tokens"] == 2
    task = InferenceTask.objects.get()  # committed before response.completed was sent
    assert (task.kind, task.stream, task.status, task.completion_tokens) == ("response", True, "completed", 2)
    assert final["id"] == f"resp_{task.id.hex}"
    assert task.result == final and task.request == {"messages": [{"role": "user", "content": QUESTION}]}


def test_a_streamed_response_is_read_back_as_it_completed(stream, live_medai):
    final = stream()[-1]["response"]
    got = httpx.get(f"{live_medai}/v1/responses/{final['id']}", headers=stream.headers)
    assert got.status_code == 200 and got.json() == final


def test_a_streamed_response_with_store_false_keeps_nothing(stream, live_medai):
    final = stream(store=False)[-1]["response"]
    assert final["store"] is False
    records_written()
    task = InferenceTask.objects.get()
    assert (task.status, task.request, task.result) == ("completed", None, None)
    assert httpx.get(f"{live_medai}/v1/responses/{final['id']}", headers=stream.headers).status_code == 404


def test_a_stop_at_max_output_tokens_ends_with_response_incomplete(stream, stub_backend):
    set_stub_mode(stub_backend, "ok", reply={"message": {"content": "Four grams"}, "finish_reason": "length"})
    events = stream(max_output_tokens=16)
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete" and final["output"][0]["content"][0]["text"] == "Four grams"


def test_a_model_server_failing_mid_stream_ends_with_response_failed(stream, stub_backend):
    set_stub_mode(stub_backend, "ok", reply={"message": {"content": "Four grams"}, "stream_error": "out of memory"})
    events = stream()
    assert [e["type"] for e in events][-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.failed",
    ]
    final = events[-1]["response"]
    assert final["status"] == "failed" and final["error"]["code"] == "server_error"
    assert "out of memory" in final["error"]["message"]
    assert final["output"][0]["status"] == "incomplete"  # what was said before the failure
    task = InferenceTask.objects.get()
    assert (task.status, task.error_code, task.result) == ("failed", "backend_error", None)


def test_a_stream_whose_record_cannot_be_written_ends_with_an_error_event(stream):
    real = recorder._insert_tasks
    down = [True]

    def database(tasks):
        if down[0]:
            raise OperationalError("database is locked")
        return real(tasks)

    with (
        mock.patch.object(run, "RECORD_WAIT_SECONDS", 0.3),
        mock.patch.object(recorder, "_insert_tasks", side_effect=database),
    ):
        events = stream()
        assert [e["type"] for e in events] == [*TEXT_EVENTS[:6], "error"]  # never response.completed
        assert events[-1]["code"] == "recording_unavailable" and events[-1]["sequence_number"] == 6
        down[0] = False
        records_written()
    assert InferenceTask.objects.get().status == "completed"


def test_a_refusal_before_the_stream_opens_is_a_plain_json_error(stream, live_medai, stub_backend):
    set_stub_mode(stub_backend, "error503")
    body = {"model": "stub-a", "input": QUESTION, "stream": True}
    response = httpx.post(f"{live_medai}/v1/responses", json=body, headers=stream.headers, timeout=30)
    assert response.status_code == 503 and response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "backend_unavailable"
    bad = httpx.post(f"{live_medai}/v1/responses", json={**body, "input": 7}, headers=stream.headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    records_written()
    assert InferenceTask.objects.get().status == "failed"  # the 503 is recorded, the 400 is not


def test_stream_options_are_checked(stream, live_medai):
    body = {"model": "stub-a", "input": QUESTION, "stream": True, "stream_options": {"include_obfuscation": True}}
    response = httpx.post(f"{live_medai}/v1/responses", json=body, headers=stream.headers)
    assert response.status_code == 400 and response.json()["error"]["param"] == "stream_options.include_obfuscation"
    assert [e["type"] for e in stream(stream_options={"include_obfuscation": False})] == TEXT_EVENTS


def test_get_with_stream_is_a_400_naming_it(stream, live_medai):
    final = stream()[-1]["response"]
    for query in ("stream=true", "starting_after=3"):
        got = httpx.get(f"{live_medai}/v1/responses/{final['id']}?{query}", headers=stream.headers)
        assert got.status_code == 400 and got.json()["error"]["param"] == query.split("=")[0], got.text
    assert httpx.get(f"{live_medai}/v1/responses/{final['id']}?stream=false", headers=stream.headers).status_code == 200
