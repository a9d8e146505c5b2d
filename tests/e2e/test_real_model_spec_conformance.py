"""What the real llama.cpp server answers, relayed by medai, validates against OpenAI's own spec
(CreateChatCompletionResponse, CreateChatCompletionStreamResponse): plain, with logprobs, with
tool calls, streamed or not."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import register_model
from tests.support.openai_spec import assert_valid

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MSG = [{"role": "user", "content": "Name one symptom of the flu."}]
TOOL = {
    "type": "function",
    "function": {
        "name": "record_symptom",
        "parameters": {"type": "object", "properties": {"symptom": {"type": "string"}}, "required": ["symptom"]},
    },
}
VARIANTS = {
    "plain": {},
    "logprobs": {"logprobs": True, "top_logprobs": 2},
    "tools": {"tools": [TOOL], "tool_choice": "required"},
}


@pytest.fixture
def ask(live_medai, llama_server, alice, token_for):
    register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct", agents=("Chat",))
    headers = {"Authorization": f"Bearer {token_for(alice)}"}

    def ask(extra: dict[str, Any], stream: bool) -> list[Any]:
        body = {"model": "smollm2-135m", "messages": MSG, "max_tokens": 48, "temperature": 0, **extra}
        if not stream:
            response = httpx.post(f"{live_medai}/v1/chat/completions", json=body, headers=headers, timeout=120)
            assert response.status_code == 200, response.text
            return [response.json()]
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream(
            "POST", f"{live_medai}/v1/chat/completions", json=body, headers=headers, timeout=120
        ) as response:
            assert response.status_code == 200, response.read()
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        return [json.loads(e) for e in events[:-1]]

    return ask


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_real_models_answers_match_the_spec(ask, variant):
    (answer,) = ask(VARIANTS[variant], stream=False)
    assert_valid("CreateChatCompletionResponse", answer)
    choice = answer["choices"][0]
    if variant == "logprobs":
        assert choice["logprobs"]["content"] and choice["logprobs"]["refusal"] is None
    else:
        assert choice["logprobs"] is None
    if variant == "tools":
        assert choice["message"]["tool_calls"] and choice["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_real_models_stream_chunks_match_the_spec(ask, variant):
    chunks = ask(VARIANTS[variant], stream=True)
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["usage"]["total_tokens"] > 0
    if variant == "tools":
        assert any(d.get("tool_calls") for c in chunks for d in (ch["delta"] for ch in c["choices"]))
