"""Function calling and conversations in the Responses API: function tools and ``tool_choice``
mapped onto the backend's chat tools, the model's tool calls answered as ``function_call`` items
(streamed as function_call_arguments events), ``function_call_output`` items sent back as tool
messages, and ``previous_response_id`` continuing a stored conversation (the instructions never
carried over). A chat rule broken by the input is a 400 naming the Responses field."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from apps.inference import router
from apps.inference.models import InferenceTask, ModelEndpoint
from tests.conftest import records_written, register_model
from tests.inference.test_responses_stream import assert_event, parse_sse
from tests.support.openai_spec import assert_valid
from tests.support.servers import set_stub_mode

pytestmark = pytest.mark.django_db(transaction=True)

VITAL = {
    "type": "function",
    "name": "record_vital",
    "description": "Record a vital sign.",
    "parameters": {"type": "object", "properties": {"heart_rate": {"type": "integer"}}, "required": ["heart_rate"]},
    "strict": True,
}
LOOKUP = {"type": "function", "name": "lookup_patient", "parameters": {"type": "object", "properties": {}}}
CHAT_VITAL = {
    "type": "function",
    "function": {k: v for k, v in VITAL.items() if k != "type"},
}
CALL = {"id": "call_7", "type": "function", "function": {"name": "record_vital", "arguments": '{"heart_rate": 72}'}}
ASK = "Record a heart rate of 72."


@pytest.fixture
def api(live_medai, alice, token_for, stub_backend):
    # "other OpenAI-compatible": tool_choice is forwarded as it is (a forced call on llama.cpp is
    # asked for as constrained JSON instead: apps/inference/forced_tools.py, tests/e2e)
    endpoint = register_model("stub-a", stub_backend)
    ModelEndpoint.objects.filter(pk=endpoint.pk).update(kind=ModelEndpoint.Kind.OPENAI)
    router.invalidate()
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    set_stub_mode(stub_backend, "ok", bodies=[])

    def post(**fields: Any) -> httpx.Response:
        response = httpx.post(
            f"{live_medai}/v1/responses", json={"model": "stub-a", **fields}, headers=headers, timeout=30
        )
        records_written()
        return response

    def create(**fields: Any) -> dict[str, Any]:
        response = post(**fields)
        assert response.status_code == 200, response.text
        assert_valid("Response", response.json())
        return response.json()

    def stream(**fields: Any) -> list[dict[str, Any]]:
        body = {"model": "stub-a", "stream": True, **fields}
        with httpx.stream("POST", f"{live_medai}/v1/responses", json=body, headers=headers, timeout=30) as response:
            assert response.status_code == 200, response.read()
            events = parse_sse([line for line in response.iter_lines() if line])
        for event in events:
            assert_event(event)
        return events

    def sent() -> list[dict[str, Any]]:
        return httpx.get(stub_backend.removesuffix("/v1") + "/_stats").json()["bodies"]

    post.create, post.stream, post.sent = create, stream, sent
    return post


def reply(stub_backend: str, **message: Any) -> None:
    set_stub_mode(stub_backend, "ok", reply={"message": message})


def test_function_tools_are_sent_as_chat_tools_and_echoed(api):
    body = api.create(input=ASK, tools=[VITAL, LOOKUP], tool_choice="auto", parallel_tool_calls=False)
    [sent] = api.sent()
    assert sent["tools"] == [
        CHAT_VITAL,
        {"type": "function", "function": {"name": "lookup_patient", "parameters": LOOKUP["parameters"]}},
    ]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("auto", False)
    assert body["tools"][0] == VITAL and body["tools"][1]["name"] == "lookup_patient"
    assert (body["tool_choice"], body["parallel_tool_calls"]) == ("auto", False)
    assert InferenceTask.objects.get().tools_offered == 2


@pytest.mark.parametrize(
    ("choice", "tools", "chat_choice"),
    [
        ("required", ["record_vital", "lookup_patient"], "required"),
        ("none", ["record_vital", "lookup_patient"], "none"),
        ({"type": "function", "name": "lookup_patient"}, ["lookup_patient"], "required"),
        (
            {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "record_vital"}]},
            ["record_vital"],
            "auto",
        ),
    ],
)
def test_tool_choice_is_mapped_onto_the_chat_tool_choice(api, choice, tools, chat_choice):
    body = api.create(input=ASK, tools=[VITAL, LOOKUP], tool_choice=choice)
    [sent] = api.sent()
    assert [t["function"]["name"] for t in sent["tools"]] == tools
    assert sent["tool_choice"] == chat_choice
    assert body["tool_choice"] == choice  # echoed as asked


def test_a_tool_call_is_a_function_call_item(api, stub_backend):
    reply(stub_backend, content=None, tool_calls=[CALL])
    body = api.create(input=ASK, tools=[VITAL])
    [item] = body["output"]
    assert item["type"] == "function_call" and item["id"].startswith("fc_")
    assert (item["call_id"], item["name"], item["arguments"], item["status"]) == (
        "call_7",
        "record_vital",
        '{"heart_rate": 72}',
        "completed",
    )
    assert body["status"] == "completed"
    assert InferenceTask.objects.get().tool_calls == 1


def test_text_and_tool_calls_are_items_in_order(api, stub_backend):
    second = {**CALL, "id": "call_8", "function": {"name": "lookup_patient", "arguments": "{}"}}
    reply(stub_backend, content="Recording it.", tool_calls=[CALL, second])
    body = api.create(input=ASK, tools=[VITAL, LOOKUP])
    assert [i["type"] for i in body["output"]] == ["message", "function_call", "function_call"]
    assert body["output"][0]["content"][0]["text"] == "Recording it."
    assert [i["call_id"] for i in body["output"][1:]] == ["call_7", "call_8"]


def test_function_call_output_items_are_sent_back_as_tool_messages(api):
    api.create(
        input=[
            {"role": "user", "content": ASK},
            {"type": "function_call", "call_id": "call_7", "name": "record_vital", "arguments": '{"heart_rate": 72}'},
            {"type": "function_call_output", "call_id": "call_7", "output": "recorded"},
        ],
        tools=[VITAL],
    )
    [sent] = api.sent()
    assert sent["messages"] == [
        {"role": "user", "content": ASK},
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_7", "content": "recorded"},
    ]


def test_an_assistant_message_and_its_calls_are_one_turn(api):
    api.create(
        input=[
            {"role": "user", "content": ASK},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "On it."}]},
            {"type": "function_call", "call_id": "a", "name": "record_vital", "arguments": "{}", "id": "fc_1"},
            {
                "type": "function_call",
                "call_id": "b",
                "name": "lookup_patient",
                "arguments": "{}",
                "status": "completed",
            },
            {"type": "function_call_output", "call_id": "a", "output": [{"type": "input_text", "text": "ok"}]},
            {"type": "function_call_output", "call_id": "b", "output": "Mr. X"},
        ],
        tools=[VITAL, LOOKUP],
    )
    [sent] = api.sent()
    assistant = sent["messages"][1]
    assert assistant["content"] == "On it." and [c["id"] for c in assistant["tool_calls"]] == ["a", "b"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "tool"]
    assert sent["messages"][2]["content"] == "ok"


def test_previous_response_id_continues_the_stored_conversation(api, stub_backend):
    first = api.create(input="Patient: 71, chest pain.", instructions="You are a triage nurse.")
    second = api.create(input="What first?", previous_response_id=first["id"], instructions="Be brief.")
    assert second["previous_response_id"] == first["id"]
    third = api.create(input="And then?", previous_response_id=second["id"])
    one, two, three = api.sent()
    assert one["messages"][0] == {"role": "system", "content": "You are a triage nurse."}
    assert two["messages"] == [  # the first instructions are not carried over
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Patient: 71, chest pain."},
        {"role": "assistant", "content": "OK"},
        {"role": "user", "content": "What first?"},
    ]
    assert three["messages"] == [*two["messages"][1:], {"role": "assistant", "content": "OK"}, three["messages"][-1]]
    assert three["messages"][-1] == {"role": "user", "content": "And then?"}
    stored = InferenceTask.objects.get(id=third["id"].removeprefix("resp_"))
    assert len(stored.request["messages"]) == 5  # the whole conversation, kept encrypted


def test_a_tool_call_round_trip_over_previous_response_id(api, stub_backend):
    reply(stub_backend, content=None, tool_calls=[CALL])
    first = api.create(input=ASK, tools=[VITAL])
    call = first["output"][0]
    set_stub_mode(stub_backend, "ok", reply=None)
    second = api.create(
        input=[{"type": "function_call_output", "call_id": call["call_id"], "output": '{"ok": true}'}],
        previous_response_id=first["id"],
        tools=[VITAL],
    )
    assert second["output"][0]["content"][0]["text"] == "OK"
    _, sent = api.sent()
    assert sent["messages"] == [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_7", "content": '{"ok": true}'},
    ]


def test_a_streamed_tool_call_is_the_function_call_event_sequence(api, stub_backend):
    reply(stub_backend, content="Recording.", tool_calls=[CALL])
    events = api.stream(input=ASK, tools=[VITAL])
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",  # the message ends before the call starts
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[9]
    assert added["output_index"] == 1 and added["item"]["type"] == "function_call"
    assert (added["item"]["call_id"], added["item"]["name"], added["item"]["arguments"]) == (
        "call_7",
        "record_vital",
        "",
    )
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert deltas == '{"heart_rate": 72}'
    done = events[12]
    assert (done["name"], done["arguments"], done["item_id"]) == ("record_vital", deltas, added["item"]["id"])
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert final["output"][1] == events[13]["item"] and final["output"][1]["status"] == "completed"
    task = InferenceTask.objects.get()
    assert task.tool_calls == 1 and task.result == final
    # the streamed call continues like any other
    set_stub_mode(stub_backend, "ok", reply=None)
    api.create(
        input=[{"type": "function_call_output", "call_id": "call_7", "output": "done"}],
        previous_response_id=final["id"],
        tools=[VITAL],
    )
    assert api.sent()[-1]["messages"][1] == {"role": "assistant", "content": "Recording.", "tool_calls": [CALL]}


BAD = [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_parameter"),
    ({"tools": [{"type": "file_search", "vector_store_ids": []}]}, "tools[0].type", "unsupported_parameter"),
    ({"tools": "record_vital"}, "tools", "invalid_value"),
    ({"tools": [5]}, "tools[0]", "invalid_value"),
    ({"tools": [{"type": "function"}]}, "tools[0].name", "invalid_request"),
    ({"tools": [{**VITAL, "name": "record vital!"}]}, "tools[0].name", "invalid_request"),
    ({"tools": [{**VITAL, "parameters": "an object"}]}, "tools[0].parameters", "invalid_request"),
    ({"tools": [{**VITAL, "code": "print(1)"}]}, "tools[0].code", "unknown_parameter"),
    ({"tools": [VITAL, VITAL]}, "tools[1].name", "invalid_request"),
    ({"tools": [VITAL], "tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
    ({"tools": [VITAL], "tool_choice": {"type": "function"}}, "tool_choice.name", "invalid_value"),
    ({"tools": [VITAL], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name", "invalid_request"),
    ({"tools": [VITAL], "tool_choice": {"type": "web_search_preview"}}, "tool_choice.type", "unsupported_parameter"),
    (
        {"tools": [VITAL], "tool_choice": {"type": "allowed_tools", "mode": "auto"}},
        "tool_choice.tools",
        "invalid_value",
    ),
    ({"tools": [VITAL], "parallel_tool_calls": "yes"}, "parallel_tool_calls", "invalid_value"),
    (
        {"input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]},
        "input[0].call_id",
        "invalid_request",
    ),
    (
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "extra": 1}]},
        "input[0].extra",
        "unknown_parameter",
    ),
    (
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {"a": 1}}]},
        "input[0].arguments",
        "invalid_value",
    ),
    (
        {"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]},
        "input[0].output",
        "invalid_value",
    ),
    ({"input": "x", "previous_response_id": ""}, "previous_response_id", "invalid_value"),
    ({"input": "x", "previous_response_id": "resp_zz"}, "previous_response_id", "response_not_found"),
]


def test_bad_tool_input_is_a_400_naming_the_responses_field(api):
    for fields, param, code in BAD:
        response = api(**{"input": ASK, **fields})
        assert response.status_code == (404 if code == "response_not_found" else 400), (fields, response.text)
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (param, code), (fields, error)
    assert not InferenceTask.objects.exists()


def test_an_error_in_a_previous_conversation_names_previous_response_id(api, stub_backend):
    """A stored conversation cannot break a chat rule (it was valid when stored); the new input
    that does is named, never a message of the stored one."""
    reply(stub_backend, content=None, tool_calls=[CALL])
    first = api.create(input=ASK, tools=[VITAL])
    response = api(
        input=[{"type": "function_call_output", "call_id": "not_call_7", "output": "x"}],
        previous_response_id=first["id"],
    )
    assert response.status_code == 400
    assert json.loads(response.text)["error"]["param"] == "input[0].call_id"
