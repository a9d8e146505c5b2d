"""The official `openai` client's ``client.responses`` (create, stream, retrieve, delete), unchanged,
against medai in front of the real llama.cpp server on the bundled model: text and message-list
input, instructions, max_output_tokens and temperature, a streamed answer through the client's
own event types, a forced function call and its output sent back over ``previous_response_id``,
and the errors it types. Answers are checked against OpenAI's own ``Response`` schema."""

from __future__ import annotations

import json

import openai
import pytest

from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model
from tests.support.openai_spec import assert_valid

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUESTION = "The three most common symptoms of the flu are"
RECORD_VITAL = {
    "type": "function",
    "name": "record_vital",
    "description": "Record a vital sign of the patient.",
    "parameters": {
        "type": "object",
        "properties": {"name": {"type": "string", "description": "e.g. heart_rate"}, "value": {"type": "number"}},
        "required": ["name", "value"],
    },
}


@pytest.fixture
def client(live_medai, llama_server, alice, api_key_for):
    register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct", agents=("Chat", "MedicalQA"))
    return openai.OpenAI(base_url=f"{live_medai}/v1", api_key=api_key_for(alice), max_retries=0, timeout=120)


def valid(response: openai.types.responses.Response) -> dict:
    body = response.model_dump(exclude_unset=True, mode="json")
    assert_valid("Response", body)
    return body


def test_openai_client_gets_a_response_from_the_real_model(client):
    response = client.responses.create(
        model="MedicalQA",
        input=QUESTION,
        instructions="Answer in one short sentence.",
        max_output_tokens=16,
        temperature=0,
    )
    valid(response)
    assert response.object == "response" and response.model == "smollm2-135m"
    assert response.status in ("completed", "incomplete") and response.output_text.strip()
    assert 0 < response.usage.output_tokens <= 16 and response.usage.input_tokens > 0
    records_written()
    task = InferenceTask.objects.get()
    assert (task.kind, task.status, task.agent_type) == ("response", "completed", "MedicalQA")
    assert response.id == f"resp_{task.id.hex}"
    assert (task.prompt_tokens, task.completion_tokens) == (response.usage.input_tokens, response.usage.output_tokens)


def test_a_message_list_and_a_stream_say_what_the_plain_answer_says(client):
    items = [
        {"role": "developer", "content": "You are a nurse."},
        {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
    ]
    plain = client.responses.create(model="smollm2-135m", input=items, max_output_tokens=16, temperature=0)
    stream = client.responses.create(
        model="smollm2-135m", input=items, max_output_tokens=16, temperature=0, stream=True
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    valid(final)
    assert text == final.output_text == plain.output_text  # greedy: the stream says what the plain answer says
    assert final.usage.output_tokens == plain.usage.output_tokens
    records_written()
    assert InferenceTask.objects.filter(kind="response", stream=True, status="completed").count() == 1


def test_the_clients_stream_helper_accumulates_the_final_response(client):
    # a short answer that ends by itself: the helper's final response is response.completed's
    with client.responses.stream(
        model="smollm2-135m",
        input="Say hello.",
        instructions="Reply with one word.",
        max_output_tokens=64,
        temperature=0,
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text and final.output_text.strip()
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_a_stored_response_is_continued_retrieved_and_deleted(client):
    first = client.responses.create(
        model="smollm2-135m", input="My patient is called Anna.", max_output_tokens=16, temperature=0
    )
    second = client.responses.create(
        model="smollm2-135m",
        input="What is my patient called?",
        previous_response_id=first.id,
        max_output_tokens=16,
        temperature=0,
    )
    valid(second)
    assert second.previous_response_id == first.id and second.output_text.strip()
    got = client.responses.retrieve(first.id)
    assert valid(got) == valid(first)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.create(model="smollm2-135m", input="And?", previous_response_id=first.id)
    assert gone.value.body["param"] == "previous_response_id"
    assert client.responses.retrieve(second.id).id == second.id  # the rest of the chain stays


def test_a_forced_function_call_and_its_output_over_previous_response_id(client):
    first = client.responses.create(
        model="smollm2-135m",
        input="The patient's heart rate is 72. Record it.",
        tools=[RECORD_VITAL],
        tool_choice="required",
        max_output_tokens=48,
        temperature=0,
    )
    valid(first)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls, first.output
    call = calls[0]
    assert call.name == "record_vital" and call.call_id
    assert {"name", "value"} <= set(json.loads(call.arguments))
    second = client.responses.create(
        model="smollm2-135m",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"recorded": true}'}],
        tools=[RECORD_VITAL],
        max_output_tokens=24,
        temperature=0,
    )
    valid(second)
    assert second.status in ("completed", "incomplete")
    records_written()
    tasks = InferenceTask.objects.order_by("created_at")
    assert [(t.kind, t.tools_offered) for t in tasks] == [("response", 1), ("response", 1)]
    assert tasks[0].tool_calls == len(calls)


def test_a_forced_function_call_streams_as_function_call_events(client):
    stream = client.responses.create(
        model="smollm2-135m",
        input="The patient's heart rate is 72. Record it.",
        tools=[RECORD_VITAL],
        tool_choice={"type": "function", "name": "record_vital"},
        max_output_tokens=48,
        temperature=0,
        stream=True,
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.done" in kinds, kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert done.name == "record_vital" and done.arguments == arguments
    assert {"name", "value"} <= set(json.loads(arguments))
    final = events[-1].response
    valid(final)
    assert [i.type for i in final.output if i.type == "function_call"] == ["function_call"]


def test_openai_client_sees_typed_errors_naming_the_field(client):
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="no-such-model", input=QUESTION)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="smollm2-135m", input=QUESTION, tools=[{"type": "web_search"}])
    assert bad.value.code == "unsupported_parameter" and bad.value.body["param"] == "tools[0].type"
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="smollm2-135m", input=QUESTION, max_output_tokens=4)
    assert bad.value.body["param"] == "max_output_tokens"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_" + "0" * 32)
