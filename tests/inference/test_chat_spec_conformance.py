"""Answers, stream chunks and error bodies validate against OpenAI's own spec
(shared/specs/openai-openapi.yaml): medai fills in what a backend omits. Against medai's stub here;
against the real llama.cpp server in tests/e2e/test_chat_spec_conformance.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from apps.inference import conformance
from tests.conftest import register_model
from tests.support.openai_spec import assert_valid, errors_of, nullable_to_jsonschema

MSG = [{"role": "user", "content": "Normal adult heart rate?"}]


def test_the_spec_helper_reads_nullable_both_ways():
    # OpenAPI 3.0's nullable, beside a type, an enum or a $ref, means "or null"
    assert nullable_to_jsonschema({"type": "string", "nullable": True}) == {"type": ["string", "null"]}
    assert nullable_to_jsonschema({"type": "string", "enum": ["a"], "nullable": True})["enum"] == ["a", None]
    assert nullable_to_jsonschema({"$ref": "#/x", "nullable": True}) == {"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}
    # and the validator is strict where the spec is: a completion without logprobs is not one
    bare = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    }
    assert {
        "choices/0: 'logprobs' is a required property",
        "choices/0/message: 'refusal' is a required property",
    } <= set(errors_of("CreateChatCompletionResponse", bare))


@pytest.mark.parametrize(
    "backend_answer",
    [
        {"choices": [{"message": {"content": "hi"}}]},  # about everything omitted
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "served",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        },
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "hi"},
                    "logprobs": {
                        "content": [
                            {"token": "hi", "logprob": -0.1, "top_logprobs": [{"token": "hi", "logprob": -0.1}]}
                        ]
                    },
                }
            ]
        },  # llama.cpp-style entries, no refusal
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": None,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}],
                    },
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "x", "tool_calls": None},
                }
            ]
        },
    ],
)
def test_a_completion_missing_what_the_spec_requires_is_completed(backend_answer):
    conformance.completion(backend_answer, "medai-model")
    assert_valid("CreateChatCompletionResponse", backend_answer)
    choice = backend_answer["choices"][0]
    assert backend_answer["model"] == "medai-model" and "refusal" in choice["message"] and "logprobs" in choice
    if isinstance(choice["logprobs"], dict):
        assert choice["logprobs"]["refusal"] is None


@pytest.mark.parametrize(
    "chunks",
    [
        [
            {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
            {"choices": [{"delta": {"content": "hi"}}]},
            {"choices": [{"delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
        ],
        [
            {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"id": "a", "function": {"name": "f"}}]}}]},
            {"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "{}"}}]}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        ],
        [
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": "a"},
                        "logprobs": {"content": [{"token": "a", "logprob": -1.0, "bytes": [97], "top_logprobs": []}]},
                    }
                ]
            }
        ],
    ],
)
def test_chunks_missing_what_the_spec_requires_are_completed(chunks):
    normalise = conformance.ChunkNormaliser("medai-model")
    for chunk in chunks:
        normalise(chunk)
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert len({c["id"] for c in chunks}) == 1  # one id for the whole stream


@pytest.fixture
def post(live_medai, alice, token_for):
    headers = {"Authorization": f"Bearer {token_for(alice)}"}

    def post(body: Any, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{live_medai}/v1/chat/completions", json=body, headers=headers, timeout=30, **kwargs)

    return post


@pytest.mark.django_db(transaction=True)
def test_relayed_answers_and_chunks_match_the_spec(post, live_medai, stub_backend, alice, token_for):
    register_model("stub-a", stub_backend)  # medai's stub answers without logprobs or refusal
    answer = post({"model": "stub-a", "messages": MSG})
    assert answer.status_code == 200
    assert_valid("CreateChatCompletionResponse", answer.json())
    with httpx.stream(
        "POST",
        f"{live_medai}/v1/chat/completions",
        timeout=30,
        json={"model": "stub-a", "messages": MSG, "stream": True, "stream_options": {"include_usage": True}},
        headers={"Authorization": f"Bearer {token_for(alice)}"},
    ) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", json.loads(event))


@pytest.mark.django_db(transaction=True)
def test_error_bodies_match_the_spec(post, live_medai, alice, client_for, token_for, settings):
    register_model("offline", "http://127.0.0.1:9/v1")
    answers = {
        400: post({"model": "offline", "messages": []}),
        401: httpx.post(f"{live_medai}/v1/chat/completions", json={"model": "offline", "messages": MSG}),
        404: post({"model": "no-such-model", "messages": MSG}),
        503: post({"model": "offline", "messages": MSG}),
    }
    settings.MEDAI_QUEUE_MAX = 0  # the async queue is full: 429
    answers[429] = client_for(alice).post("/v1/async/submit", {"model": "offline", "messages": MSG}, format="json")
    for status, response in answers.items():
        assert response.status_code == status, (status, response.content)
        assert_valid("ErrorResponse", response.json())
    lookup = httpx.get(f"{live_medai}/v1/models/no-such-model", headers={"Authorization": f"Bearer {token_for(alice)}"})
    assert lookup.status_code == 404 and lookup.json()["error"]["code"] == "model_not_found"
    assert_valid("ErrorResponse", lookup.json())
