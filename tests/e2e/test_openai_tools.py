"""The official `openai` client calls a tool through medai on the real bundled model (SmolLM2 on
llama.cpp, started with --jinja): forced by name and by "required", streamed and not, and the
tool's result goes back in a second turn."""

from __future__ import annotations

import json

import openai
import pytest

from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUESTION = [{"role": "user", "content": "The patient's heart rate is 72. Record it."}]
RECORD_VITAL = {
    "type": "function",
    "function": {
        "name": "record_vital",
        "description": "Record a vital sign of the patient.",
        "parameters": {
            "type": "object",
            "properties": {"name": {"type": "string", "description": "e.g. heart_rate"}, "value": {"type": "number"}},
            "required": ["name", "value"],
        },
    },
}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup_patient",
        "description": "Find a patient by name.",
        "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    },
}


@pytest.fixture
def client(live_medai, llama_server, alice, api_key_for):
    register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct", agents=("Chat",))
    return openai.OpenAI(base_url=f"{live_medai}/v1", api_key=api_key_for(alice), max_retries=0, timeout=120)


def test_a_named_function_is_called_by_the_real_model(client):
    completion = client.chat.completions.create(
        model="smollm2-135m",
        messages=QUESTION,
        tools=[LOOKUP, RECORD_VITAL],
        max_tokens=48,
        temperature=0,
        tool_choice={"type": "function", "function": {"name": "record_vital"}},
    )
    message = completion.choices[0].message
    assert message.tool_calls, completion
    call = message.tool_calls[0]
    assert call.type == "function" and call.id and call.function.name == "record_vital"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments, dict) and {"name", "value"} <= set(arguments)
    records_written()
    task = InferenceTask.objects.get()
    assert (task.status, task.tools_offered, task.tool_calls) == ("completed", 2, len(message.tool_calls))


def test_a_required_tool_call_streams_as_deltas_and_its_result_goes_back(client):
    stream = client.chat.completions.create(
        model="smollm2-135m",
        messages=QUESTION,
        tools=[RECORD_VITAL],
        tool_choice="required",
        max_tokens=48,
        temperature=0,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert calls and finish == "tool_calls", calls
    assert sorted(calls) == list(range(len(calls)))  # each call its own index, from 0
    first = calls[0]
    assert first["id"] and first["name"] == "record_vital" and isinstance(json.loads(first["arguments"]), dict)
    records_written()  # a stream's record: by the background writer after [DONE]
    task = InferenceTask.objects.get()
    assert task.stream and (task.tools_offered, task.tool_calls) == (1, len(calls))

    # second turn: the assistant's tool call and the tool's result, as the official docs show
    follow_up = client.chat.completions.create(
        model="smollm2-135m",
        tools=[RECORD_VITAL],
        max_tokens=24,
        temperature=0,
        messages=[
            *QUESTION,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": first["id"],
                        "type": "function",
                        "function": {"name": first["name"], "arguments": first["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": first["id"], "content": json.dumps({"recorded": True})},
        ],
    )
    assert follow_up.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert follow_up.choices[0].message.content is not None or follow_up.choices[0].message.tool_calls


def test_the_returned_message_object_can_be_sent_back_as_is(client):
    completion = client.chat.completions.create(
        model="smollm2-135m",
        messages=QUESTION,
        tools=[RECORD_VITAL],
        tool_choice="required",
        max_tokens=48,
        temperature=0,
    )
    message = completion.choices[0].message  # a ChatCompletionMessage, refusal and all
    results = [{"role": "tool", "tool_call_id": c.id, "content": "recorded"} for c in message.tool_calls]
    follow_up = client.chat.completions.create(
        model="smollm2-135m",
        tools=[RECORD_VITAL],
        tool_choice="none",
        max_tokens=16,
        temperature=0,
        messages=[*QUESTION, message, *results],
    )
    assert follow_up.choices[0].message.content is not None and not follow_up.choices[0].message.tool_calls


def test_a_malformed_tool_is_a_typed_400_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="smollm2-135m", messages=QUESTION, tools=[{"type": "function", "function": {"name": "record vital"}}]
        )
    assert bad.value.body["param"] == "tools[0].function.name"
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.chat.completions.create(
            model="smollm2-135m",
            messages=QUESTION,
            modalities=["text", "audio"],
            audio={"voice": "alloy", "format": "mp3"},
        )
    assert unsupported.value.code == "unsupported_parameter" and unsupported.value.body["param"] in (
        "audio",
        "modalities",
    )
