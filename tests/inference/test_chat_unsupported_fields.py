"""No request field vanishes: every field of OpenAI's CreateChatCompletionRequest is forwarded, kept
on medai's record, or refused with a 400 ``unsupported_parameter`` naming it; a field OpenAI does
not define is a 400 ``unknown_parameter`` (medai's own agent_type and priority excepted)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from apps.inference import validation
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask
from apps.inference.pipeline import gate
from apps.inference.pipeline.plan import plan_chat_sync
from apps.inference.validation.chat_request import ChatCompletionRequestSerializer
from apps.inference.validation.fields import MESSAGE_UNSUPPORTED, UNSUPPORTED
from tests.conftest import records_written, register_model
from tests.support.openai_spec import request_properties

MSG = [{"role": "user", "content": "hello"}]
# A value of each refused field that asks for something medai cannot give.
ASKING = {
    "audio": {"voice": "alloy", "format": "mp3"},
    "modalities": ["text", "audio"],
    "prediction": {"type": "content", "content": "draft"},
    "web_search_options": {},
    "metadata": {"ward": "3"},
    "reasoning_effort": "high",
    "verbosity": "low",
    "moderation": {"model": "omni"},
    "prompt_cache_key": "k",
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {"ttl": "1h"},
    "functions": [{"name": "f", "parameters": {}}],
    "function_call": "auto",
}


def refusal(data: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        validation.validate_chat(data)
    assert caught.value.status_code == 400
    return caught.value


def test_every_openai_request_field_is_forwarded_kept_or_refused():
    declared = set(ChatCompletionRequestSerializer().fields)
    undecided = request_properties("CreateChatCompletionRequest") - declared - set(UNSUPPORTED)
    assert not undecided, f"OpenAI request fields medai neither validates nor refuses: {sorted(undecided)}"
    assert set(ASKING) == set(UNSUPPORTED)


@pytest.mark.parametrize("field", sorted(UNSUPPORTED))
def test_a_field_medai_cannot_forward_is_400_unsupported_parameter_naming_it(field):
    error = refusal({"model": "Chat", "messages": MSG, field: ASKING[field]})
    assert (error.param, error.code) == (field, "unsupported_parameter")
    assert error.message.startswith(f"{field}: not supported: ")


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, (values, _) in UNSUPPORTED.items() for v in values])
def test_the_value_that_asks_for_nothing_is_accepted(field, value):
    validation.validate_chat({"model": "Chat", "messages": MSG, field: value})


@pytest.mark.parametrize("field", ["top_k", "min_p", "foo", "Model", "deadline_s", "chat_template_kwargs"])
def test_a_field_openai_does_not_define_is_400_unknown_parameter(field):
    error = refusal({"model": "Chat", "messages": MSG, field: 1})
    assert (error.param, error.code) == (field, "unknown_parameter")
    assert "unrecognized request argument" in error.message


def test_medais_own_extras_are_accepted():
    req = validation.validate_chat({"model": "m", "agent_type": "Chat", "priority": "high", "messages": MSG})
    assert (req["agent_type"], req["priority"]) == ("Chat", 2)


@pytest.mark.parametrize(
    ("message", "param", "code"),
    [
        (
            {"role": "assistant", "content": "", "refusal": "I cannot help."},
            "messages[1].refusal",
            "unsupported_parameter",
        ),
        (
            {"role": "assistant", "content": "x", "audio": {"id": "audio_1"}},
            "messages[1].audio",
            "unsupported_parameter",
        ),
        (
            {"role": "assistant", "content": "x", "function_call": {"name": "f", "arguments": "{}"}},
            "messages[1].function_call",
            "unsupported_parameter",
        ),
        ({"role": "assistant", "content": "x", "annotations": []}, "messages[1].annotations", "unknown_parameter"),
        ({"role": "user", "content": "x", "mood": "curious"}, "messages[1].mood", "unknown_parameter"),
    ],
)
def test_a_message_field_medai_cannot_forward_is_refused_by_name(message, param, code):
    error = refusal({"model": "Chat", "messages": [*MSG, message]})
    assert (error.param, error.code) == (param, code)


def test_an_answer_sent_back_as_a_message_is_accepted():
    # what the official client sends for a returned ChatCompletionMessage put back into messages
    answer = {"role": "assistant", "content": "Hi.", "refusal": None, "audio": None, "function_call": None}
    assert set(MESSAGE_UNSUPPORTED) <= set(answer)
    validation.validate_chat({"model": "Chat", "messages": [*MSG, answer, *MSG]})


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"service_tier": "flex"}, "service_tier"),
        ({"logit_bias": {"abc": 1}}, "logit_bias.abc"),
        ({"logit_bias": {"42": 500}}, "logit_bias[42]"),
        ({"logit_bias": [1]}, "logit_bias"),
        ({"stream_options": {"include_usage": True, "chunk_size": 4}}, "stream_options.chunk_size"),
        ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "response_format.json_schema.name",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": 5}}}},
            "response_format.json_schema.schema",
        ),
        ({"safety_identifier": "x" * 65}, "safety_identifier"),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, *MSG]},
            "messages[0].content",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]}, "messages[0].content"),
    ],
)
def test_a_bad_value_of_a_forwarded_field_is_400_naming_it(data, param):
    assert refusal({"model": "Chat", "messages": MSG, **data}).param == param


@pytest.mark.django_db
def test_logit_bias_and_the_json_schema_format_are_forwarded(alice, token_for):
    import json

    register_model("offline-model", "http://127.0.0.1:9/v1", agents=())
    schema = {"type": "json_schema", "json_schema": {"name": "vitals", "schema": {"type": "object"}, "strict": True}}
    plan = plan_chat_sync(
        gate.authenticate_sync(f"Bearer {token_for(alice)}"),
        json.dumps(
            {
                "model": "offline-model",
                "messages": MSG,
                "logit_bias": {"42": -100, "7": 2.5},
                "response_format": schema,
                "service_tier": "auto",
                "store": False,
                "user": "u-1",
            }
        ).encode(),
    )
    assert plan.payload["logit_bias"] == {"42": -100, "7": 2.5} and plan.payload["response_format"] == schema
    assert not {"service_tier", "store", "user"} & set(plan.payload)  # nothing to forward: kept (user) or moot
    assert plan.end_user == "u-1"


@pytest.mark.django_db(transaction=True)
def test_the_end_user_is_kept_on_the_requests_record(live_medai, stub_backend, alice, token_for):
    register_model("stub-a", stub_backend)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    for extra in ({"user": "clin-7"}, {"user": "old", "safety_identifier": "clin-8"}):
        response = httpx.post(
            f"{live_medai}/v1/chat/completions",
            headers=headers,
            timeout=30,
            json={"model": "stub-a", "messages": MSG, **extra},
        )
        assert response.status_code == 200, response.text
    records_written()
    assert sorted(InferenceTask.objects.values_list("end_user", flat=True)) == ["clin-7", "clin-8"]
