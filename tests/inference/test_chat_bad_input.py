"""Bad input to /v1/chat/completions gets a 4xx in the OpenAI error shape naming the field."""

from __future__ import annotations

import json
import random

import pytest
from django.test import Client

from tests.conftest import register_model
from tests.support.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def chat(alice, token_for):
    # A model whose server is not running: validation must fail before any backend call.
    register_model("offline-model", f"http://127.0.0.1:{free_port()}/v1", agents=("Chat", "MedicalQA"))
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token_for(alice)}"}

    def post(body, raw: bool = False, **extra):
        data = body if raw else json.dumps(body)
        return client.post("/v1/chat/completions", data=data, content_type="application/json", **{**headers, **extra})

    return post


def error_of(response):
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


MSG = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "Chat"}, "messages", "required"),
        ({"model": "Chat", "messages": []}, "messages", "empty"),
        ({"model": "Chat", "messages": "hello"}, "messages", ""),
        ({"model": "Chat", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "valid choice"),
        ({"model": "Chat", "messages": [{"role": "user"}]}, "messages[0].content", "empty"),
        ({"model": "Chat", "messages": [{"role": "user", "content": "   "}]}, "messages[0].content", "blank"),
        (
            {"model": "Chat", "messages": [{"role": "user", "content": " \n\t\u3000\u200b"}]},
            "messages[0].content",
            "blank",
        ),
        ({"model": "Chat", "messages": [{"role": "system", "content": "  "}, *MSG]}, "messages[0].content", "blank"),
        (
            {
                "model": "Chat",
                "messages": [*MSG, {"role": "assistant", "content": "ok"}, {"role": "user", "content": " "}],
            },
            "messages[2].content",
            "blank",
        ),
        (
            {"model": "Chat", "messages": [{"role": "user", "content": [{"type": "text", "text": "  "}]}]},
            "messages[0].content",
            "blank",
        ),
        ({"model": "Chat", "messages": [{"role": "user", "content": 42}]}, "messages[0].content", "string"),
        ({"model": "Chat", "messages": MSG, "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"model": "Chat", "messages": MSG, "max_tokens": 10**9}, "max_tokens", "at most"),
        ({"model": "Chat", "messages": MSG, "max_tokens": "many"}, "max_tokens", "integer"),
        ({"model": "Chat", "messages": MSG, "temperature": 7}, "temperature", "less than or equal to 2"),
        ({"model": "Chat", "messages": MSG, "stream": "perhaps"}, "stream", "boolean"),
        ({"model": "Chat", "messages": MSG, "priority": "urgent"}, "priority", "low, normal, high, critical"),
        ({"model": "Chat", "messages": MSG, "stop": [1, 2]}, "stop", "string"),
        ({"messages": MSG}, "model", "required"),
        ({"agent_type": "Astrology", "messages": MSG}, "agent_type", "unknown agent type"),
    ],
)
def test_invalid_field_is_400_naming_the_field(chat, body, param, fragment):
    response = chat(body)
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert fragment.lower() in error["message"].lower()


def test_unknown_model_is_404_model_not_found(chat):
    response = chat({"model": "no-such-model", "messages": MSG})
    assert response.status_code == 404, response.content
    error = error_of(response)
    assert (error["code"], error["param"], error["type"]) == ("model_not_found", "model", "not_found_error")
    assert "no-such-model" in error["message"]
    # the same answer as the model lookup gives
    models = Client().get(
        "/v1/models/no-such-model", HTTP_AUTHORIZATION=response.wsgi_request.META["HTTP_AUTHORIZATION"]
    )
    assert models.status_code == 404 and error_of(models)["code"] == "model_not_found"


def test_an_assistant_turn_with_tool_calls_and_no_content_is_valid(chat):
    # only the offline model's 503 is left: the request itself passed validation
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    response = chat(
        {
            "model": "offline-model",
            "messages": [
                *MSG,
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            ],
        }
    )
    assert response.status_code == 503, response.content


@pytest.mark.parametrize("raw", ["{bad json", "", "[1, 2]", "null", "\xff\xfe"])
def test_malformed_body_is_400_invalid_json(chat, raw):
    response = chat(raw, raw=True)
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_body_over_the_size_limit_is_413(chat, settings):
    big = {"model": "Chat", "messages": [{"role": "user", "content": "x" * (settings.MEDAI_MAX_BODY_BYTES + 10)}]}
    response = chat(big)
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


def test_get_is_405_in_openai_shape(alice, token_for):
    response = Client().get("/v1/chat/completions", HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_backend_unreachable_is_503_with_a_clear_message(chat):
    response = chat({"model": "offline-model", "messages": MSG, "max_tokens": 4})
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "backend_unavailable"
    assert "offline-model" in error["message"] and "unreachable" in error["message"]
    assert response["Retry-After"]


def test_disabled_model_is_503(chat):
    register_model("sleeping", "http://127.0.0.1:1/v1", agents=(), enabled=False)
    response = chat({"model": "sleeping", "messages": MSG})
    assert response.status_code == 503
    assert error_of(response)["code"] == "model_disabled"


def test_random_garbage_never_causes_a_500(chat):
    rng = random.Random(1234)
    values = [
        None,
        True,
        0,
        -1,
        1.5,
        "",
        "x",
        [],
        {},
        [None],
        [{}],
        {"a": 1},
        "\u0000",
        10**30,
        [[]],
        "\ud800",
        float("nan"),
        float("inf"),
        " ",
        {"type": "text", "x": float("nan")},
    ]
    fields = [
        "model",
        "agent_type",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "stream",
        "stop",
        "priority",
        "seed",
        "response_format",
        "stream_options",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "logit_bias",
        "audio",
        "unknown",
    ]
    for _ in range(150):
        body = {f: rng.choice(values) for f in rng.sample(fields, rng.randint(0, len(fields)))}
        if rng.random() < 0.5:
            body["messages"] = [{"role": rng.choice(["user", "system", "x", None]), "content": rng.choice(values)}]
        response = chat(body)
        assert response.status_code < 500 or error_of(response)["code"] == "backend_unavailable", body


Q = '"messages": [{"role": "user", "content": "hi"}]'
UNFORWARDABLE = [
    ('{"model": "Chat", "messages": [{"role": "user", "content": "a\\ud800b"}]}', "messages[0].content", "surrogate"),
    (
        '{"model": "Chat", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
        "messages[0].content[0].text",
        "surrogate",
    ),
    ('{"model": "Chat", ' + Q + ', "response_format": {"type": "text", "x": NaN}}', "response_format.x", "finite"),
    ('{"model": "Chat", ' + Q + ', "temperature": Infinity}', "temperature", "finite"),
    ('{"model": "Chat", ' + Q + ', "temperature": 1e999999}', "temperature", "finite"),
    (
        '{"model": "Chat", ' + Q + ', "tools": [{"type": "function", "function": {"name": "f", "parameters": '
        '{"type": "object", "default": -Infinity}}}]}',
        "tools[0].function.parameters.default",
        "finite",
    ),
    ('{"model": "Chat", ' + Q + ', "user": "\\ud83d"}', "user", "surrogate"),
]


@pytest.mark.parametrize(("raw", "param", "fragment"), UNFORWARDABLE)
def test_input_the_json_parser_accepts_but_medai_cannot_forward_is_400_naming_the_field(chat, raw, param, fragment):
    response = chat(raw, raw=True)
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert (error["param"], error["code"]) == (param, "invalid_value")
    assert fragment in error["message"] and error["message"].startswith(param + ":")


# (DRF's parser, on the async API, already refuses NaN and Infinity as JSON: 400 invalid_json)
@pytest.mark.parametrize(("raw", "param", "fragment"), [UNFORWARDABLE[0], UNFORWARDABLE[1], UNFORWARDABLE[-1]])
def test_the_async_submit_path_refuses_the_same_input_and_queues_nothing(client_for, alice, raw, param, fragment):
    from apps.inference.models import InferenceTask

    register_model("offline-model", f"http://127.0.0.1:{free_port()}/v1", agents=("Chat",))
    response = client_for(alice).post("/v1/async/submit", data=raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert (error_of(response)["param"], error_of(response)["code"]) == (param, "invalid_value")
    assert not InferenceTask.objects.exists()
