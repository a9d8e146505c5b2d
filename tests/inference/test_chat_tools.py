"""Tools: ``tools``, ``tool_choice`` and ``parallel_tool_calls`` are validated (a 400 naming the bad
field) and forwarded as every backend understands them; multi-turn tool conversations are
forwarded as sent; streamed tool-call deltas keep (or get) their own index. The real model's tool
calls end to end: tests/e2e/test_openai_tools.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apps.inference import conformance, validation
from apps.inference.errors import ApiError
from apps.inference.pipeline import gate
from apps.inference.pipeline.plan import ChatPlan, plan_chat_sync
from tests.conftest import register_model

MSG = [{"role": "user", "content": "Record a heart rate of 72."}]
VITAL = {
    "type": "function",
    "function": {
        "name": "record_vital",
        "description": "Record a vital sign.",
        "parameters": {"type": "object", "properties": {"heart_rate": {"type": "integer"}}, "required": ["heart_rate"]},
    },
}
LOOKUP = {"type": "function", "function": {"name": "lookup_patient"}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "record_vital", "arguments": '{"heart_rate": 72}'}}
TURNS = [
    *MSG,
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "recorded"},
]


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "Chat", "messages": MSG, **fields}


def refusal(data: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        validation.validate_chat(data)
    assert caught.value.status_code == 400
    return caught.value


def tool(name: Any = "f", **function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, **function}}


@pytest.mark.parametrize(
    ("data", "param", "fragment"),
    [
        (body(tools="record_vital"), "tools", "list"),
        (
            body(tools=[{"type": "function", "function": {"description": "no name"}}]),
            "tools[0].function.name",
            "required",
        ),
        (body(tools=[tool("record vital!")]), "tools[0].function.name", "^[a-zA-Z0-9_-]{1,64}$"),
        (body(tools=[tool("x" * 65)]), "tools[0].function.name", "1 to 64"),
        (body(tools=[tool("f\n")]), "tools[0].function.name", "^[a-zA-Z0-9_-]{1,64}$"),
        (body(tools=[VITAL, tool("record_vital")]), "tools[1].function.name", "twice"),
        (body(tools=[tool(parameters="an object")]), "tools[0].function.parameters", "JSON Schema object"),
        (body(tools=[tool(parameters=[])]), "tools[0].function.parameters", "JSON Schema object"),
        (body(tools=[tool(parameters={"type": "string"})]), "tools[0].function.parameters", "type 'object'"),
        (
            body(tools=[tool(parameters={"type": "object", "properties": 5})]),
            "tools[0].function.parameters",
            "not a valid JSON Schema",
        ),
        (body(tools=[tool(description=5)]), "tools[0].function.description", "string"),
        (body(tools=[tool(strict="yes")]), "tools[0].function.strict", "boolean"),
        (body(tools=[tool(code="print(1)")]), "tools[0].function.code", "unrecognized"),
        (body(tools=[{"type": "retrieval"}]), "tools[0].type", "'function'"),
        (body(tools=[{"type": "function"}]), "tools[0].function", "name"),
        (body(tools=[VITAL], tool_choice="sometimes"), "tool_choice", "'none', 'auto', 'required'"),
        (body(tools=[VITAL], tool_choice=7), "tool_choice", "'none', 'auto', 'required'"),
        (
            body(tools=[VITAL], tool_choice={"type": "function", "function": {"name": "lookup_patient"}}),
            "tool_choice.function.name",
            "not among the tools",
        ),
        (body(tools=[VITAL], tool_choice={"type": "function"}), "tool_choice.function", "name"),
        (
            body(tools=[VITAL], tool_choice={"type": "function", "function": {}}),
            "tool_choice.function.name",
            "required",
        ),
        (
            body(
                tools=[VITAL], tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "always", "tools": []}}
            ),
            "tool_choice.allowed_tools.mode",
            "'auto' or 'required'",
        ),
        (
            body(
                tools=[VITAL],
                tool_choice={
                    "type": "allowed_tools",
                    "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "nope"}}]},
                },
            ),
            "tool_choice.allowed_tools.tools",
            "not among",
        ),
        (body(tool_choice="required"), "tool_choice", "needs tools"),
        (body(tools=[], tool_choice={"type": "function", "function": {"name": "f"}}), "tool_choice", "needs tools"),
        (body(tools=[VITAL], parallel_tool_calls="maybe"), "parallel_tool_calls", "boolean"),
        (
            body(
                messages=[
                    *MSG,
                    {
                        "role": "assistant",
                        "tool_calls": [{**CALL, "function": {"name": "record_vital", "arguments": {"heart_rate": 72}}}],
                    },
                ]
            ),
            "messages[1].tool_calls[0].function.arguments",
            "string",
        ),
        (
            body(
                messages=[
                    *MSG,
                    {"role": "assistant", "tool_calls": [{"type": "function", "function": CALL["function"]}]},
                ]
            ),
            "messages[1].tool_calls[0].id",
            "id",
        ),
        (body(messages=[*MSG, {"role": "assistant", "tool_calls": "record"}]), "messages[1].tool_calls", "list"),
        (
            body(messages=[{"role": "user", "content": "hi", "tool_calls": [CALL]}]),
            "messages[0].tool_calls",
            "only assistant",
        ),
        (body(messages=[*TURNS[:2], {"role": "tool", "content": "recorded"}]), "messages[2].tool_call_id", "required"),
        (
            body(messages=[*TURNS[:2], {"role": "tool", "tool_call_id": "call_9", "content": "x"}]),
            "messages[2].tool_call_id",
            "answers no tool call",
        ),
        (
            body(messages=[*MSG, {"role": "tool", "tool_call_id": "call_1", "content": "x"}]),
            "messages[1].tool_call_id",
            "answers no tool call",
        ),
        (
            body(messages=[{"role": "user", "content": "hi", "tool_call_id": "call_1"}]),
            "messages[0].tool_call_id",
            "only tool messages",
        ),
    ],
)
def test_a_malformed_tool_request_is_400_naming_the_field(data, param, fragment):
    error = refusal(data)
    assert error.param == param, error.message
    assert fragment in error.message and error.message.startswith(param + ":")


def test_a_custom_tool_is_refused_as_unsupported():
    error = refusal(body(tools=[{"type": "custom", "custom": {"name": "grammar_tool"}}]))
    assert (error.param, error.code) == ("tools[0].type", "unsupported_parameter")


@pytest.mark.parametrize(
    "data",
    [
        body(tools=[VITAL]),
        body(tools=[VITAL, LOOKUP], tool_choice="auto", parallel_tool_calls=False),
        body(tools=[VITAL], tool_choice="required", parallel_tool_calls=None),
        body(tools=[VITAL], tool_choice="none"),
        body(
            tools=[
                tool("f", parameters={"type": "object", "properties": {}, "additionalProperties": False}, strict=True)
            ]
        ),
        body(tools=[VITAL, LOOKUP], tool_choice={"type": "function", "function": {"name": "lookup_patient"}}),
        body(
            tools=[VITAL, LOOKUP],
            tool_choice={
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "record_vital"}}],
                },
            },
        ),
        body(tool_choice="none"),
        body(tool_choice="auto"),
        body(tools=None, tool_choice=None),
        body(messages=TURNS, tools=[VITAL]),
        body(messages=[*TURNS, {"role": "assistant", "content": "Recorded 72.", "refusal": None}]),
        body(
            messages=[
                *MSG,
                {"role": "assistant", "content": "", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
                {"role": "tool", "tool_call_id": "call_2", "content": "ok"},
                {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "ok"}]},
            ]
        ),
    ],
)
def test_well_formed_tool_requests_pass_validation(data):
    validation.validate_chat(data)


# --- what is forwarded ---------------------------------------------------------------------------


@pytest.fixture
def plan_for(alice, token_for):
    register_model("offline-model", "http://127.0.0.1:9/v1", agents=("Chat",))
    token = token_for(alice)

    def plan(data: dict[str, Any]) -> ChatPlan:
        # the sync plan (no thread: the test's transaction holds the connection);
        # the model itself, so that no agent route's system prompt is added
        data = {**data, "model": "offline-model"}
        return plan_chat_sync(gate.authenticate_sync(f"Bearer {token}"), json.dumps(data).encode())

    return plan


@pytest.mark.django_db
def test_tools_are_forwarded_to_the_backend(plan_for):
    plan = plan_for(body(tools=[VITAL, LOOKUP], tool_choice="auto", parallel_tool_calls=True))
    assert plan.payload["tools"] == [
        VITAL,
        {
            "type": "function",
            "function": {"name": "lookup_patient", "parameters": {"type": "object", "properties": {}}},
        },
    ]  # no arguments: an empty object
    assert (plan.payload["tool_choice"], plan.payload["parallel_tool_calls"]) == ("auto", True)
    assert plan.tools_offered == 2
    assert "tools" not in plan_for(body()).payload and plan_for(body()).tools_offered == 0


@pytest.mark.django_db
def test_a_named_function_is_forwarded_as_required_with_only_that_tool(plan_for):
    # llama.cpp knows only none/auto/required (it would read a named function as auto)
    plan = plan_for(body(tools=[VITAL, LOOKUP], tool_choice={"type": "function", "function": {"name": "record_vital"}}))
    assert (plan.payload["tools"], plan.payload["tool_choice"]) == ([VITAL], "required")


@pytest.mark.django_db
def test_allowed_tools_narrow_the_tools_and_keep_the_mode(plan_for):
    plan = plan_for(
        body(
            tools=[VITAL, LOOKUP],
            tool_choice={
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "lookup_patient"}}],
                },
            },
        )
    )
    assert [t["function"]["name"] for t in plan.payload["tools"]] == ["lookup_patient"]
    assert plan.payload["tool_choice"] == "auto"


@pytest.mark.django_db
def test_none_or_auto_without_tools_forwards_nothing(plan_for):
    for choice in ("none", "auto"):
        payload = plan_for(body(tool_choice=choice, parallel_tool_calls=False)).payload
        assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(payload)


@pytest.mark.django_db
def test_a_multi_turn_tool_conversation_is_forwarded_as_sent(plan_for):
    plan = plan_for(body(messages=[*TURNS, {"role": "assistant", "content": None}], tools=[VITAL]))
    assert plan.payload["messages"] == [
        *MSG,
        {"role": "assistant", "tool_calls": [CALL]},  # no content: the turn only calls a tool
        {"role": "tool", "tool_call_id": "call_1", "content": "recorded"},
        {"role": "assistant", "content": ""},  # servers want content or tool_calls in a turn
    ]


# --- relayed tool calls ----------------------------------------------------------------------------


def test_streamed_tool_calls_keep_their_own_index():
    normalise = conformance.ChunkNormaliser("m")
    deltas = [
        [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}],
        [{"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": '{"x"'}}],
        [{"index": 0, "function": {"arguments": '{"y": 1}'}}],
        [{"index": 1, "function": {"arguments": ": 2}"}}],
    ]
    started = [normalise({"choices": [{"index": 0, "delta": {"tool_calls": d}}]}) for d in deltas]
    assert started == [1, 1, 0, 0]
    assert [d[0]["index"] for d in deltas] == [0, 1, 0, 1]


def test_a_backend_that_omits_the_index_gets_one_per_call():
    normalise = conformance.ChunkNormaliser("m")
    deltas = [
        [{"id": "a", "function": {"name": "f", "arguments": '{"x":'}}],
        [{"function": {"arguments": " 1}"}}],  # continues the call in progress
        [{"id": "b", "function": {"name": "g", "arguments": {"y": 2}}}],  # a new call, arguments as an object
        [{"id": "a", "function": {"arguments": ""}}],  # named by its id again
    ]
    started = sum(normalise({"choices": [{"delta": {"tool_calls": d}}]}) for d in deltas)
    assert started == 2
    assert [d[0]["index"] for d in deltas] == [0, 0, 1, 0]
    assert deltas[2][0]["function"]["arguments"] == '{"y": 2}' and deltas[0][0]["type"] == "function"


def test_a_completions_tool_calls_are_counted_and_made_well_formed():
    data = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}, CALL],
                },
            }
        ]
    }
    assert conformance.completion(data, "m") == 2
    first = data["choices"][0]["message"]["tool_calls"][0]
    assert first["type"] == "function" and first["id"].startswith("call_")
    assert json.loads(first["function"]["arguments"]) == {"x": 1}
    assert data["choices"][0]["message"]["content"] is None


# --- a forced call on llama.cpp, through a JSON schema (apps/inference/forced_tools.py) -------------


def test_a_forced_call_on_llama_cpp_asks_for_the_call_as_json_of_the_allowed_tools():
    from apps.inference import forced_tools

    payload = {"messages": MSG, "tools": [VITAL, LOOKUP], "tool_choice": "required"}
    assert forced_tools.applies(payload, "llamacpp") and not forced_tools.applies(payload, "vllm")
    assert not forced_tools.applies({**payload, "tool_choice": "auto"}, "llamacpp")
    forced = forced_tools.request(payload)
    assert forced["tools"] == payload["tools"] and "tool_choice" not in forced  # still in the prompt
    schema = forced["response_format"]["json_schema"]["schema"]
    assert [c["properties"]["name"] for c in schema["anyOf"]] == [
        {"const": "record_vital"},
        {"const": "lookup_patient"},
    ]
    assert schema["anyOf"][0]["properties"]["arguments"] == VITAL["function"]["parameters"]
    parallel = forced_tools.request({**payload, "parallel_tool_calls": True})["response_format"]["json_schema"]
    assert parallel["schema"]["properties"]["tool_calls"]["minItems"] == 1


def test_the_json_answer_comes_back_as_tool_calls():
    from apps.inference import forced_tools

    data = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": '{\n "name": "record_vital", "arguments": {"heart_rate": 72}}',
                },
            }
        ]
    }
    forced_tools.completion(data)
    conformance.completion(data, "m")
    choice = data["choices"][0]
    (call,) = choice["message"]["tool_calls"]
    assert (choice["finish_reason"], choice["message"]["content"], call["function"]["name"]) == (
        "tool_calls",
        None,
        "record_vital",
    )
    assert json.loads(call["function"]["arguments"]) == {"heart_rate": 72} and call["id"].startswith("call_")


def test_a_streamed_json_answer_comes_back_as_tool_call_deltas():
    from apps.inference import forced_tools

    convert = forced_tools.StreamConverter()
    pieces = [
        '{"tool_calls": [{"name": "record_vital", ',
        '"arguments": {"heart_rate": 72}}, ',
        '{"name": "lookup_patient", "arguments": {}}]}',
    ]
    events = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        *({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}},
    ]
    out = [chunk for event in events for chunk in convert(event)]
    deltas = [c["choices"][0]["delta"] for c in out if c["choices"]]
    assert deltas[0] == {"role": "assistant"} and not any("content" in d for d in deltas)
    calls = deltas[1]["tool_calls"]
    assert [(c["index"], c["function"]["name"]) for c in calls] == [(0, "record_vital"), (1, "lookup_patient")]
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls" and out[-1]["usage"]["total_tokens"] == 14


def test_a_forced_call_cut_off_by_max_tokens_is_relayed_as_the_text_it_got():
    from apps.inference import forced_tools

    convert = forced_tools.StreamConverter()
    out = convert({"choices": [{"index": 0, "delta": {"content": '{"name": "rec'}, "finish_reason": None}]})
    out += convert({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    assert [c["choices"][0] for c in out] == [
        {"index": 0, "delta": {"content": '{"name": "rec'}, "finish_reason": None},
        {"index": 0, "delta": {}, "finish_reason": "length"},
    ]
