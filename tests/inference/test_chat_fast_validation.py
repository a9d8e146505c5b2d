"""The chat body's fast validation accepts only what ChatCompletionRequestSerializer accepts, and
returns the same values; everything else goes to the serializer (which words the errors)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from apps.inference.validation.chat_request import ChatCompletionRequestSerializer, find_unforwardable
from apps.inference.validation.fast import fast_chat_request

MSG = [{"role": "user", "content": "hello"}]

VALID = [
    {"model": "Chat", "messages": MSG},
    {"model": "Chat", "messages": MSG, "max_tokens": 1, "stream": False},
    {"agent_type": "MedicalQA", "priority": "high", "messages": MSG, "temperature": 0, "top_p": 1},
    {
        "model": "m",
        "priority": 3,
        "messages": [
            {"role": "system", "content": "be brief"},
            *MSG,
            {"role": "assistant", "content": "hi", "name": "bot"},
        ],
    },
    {
        "model": "m",
        "messages": MSG,
        "stream": True,
        "stream_options": {"include_usage": True},
        "stop": ["\n", "END"],
        "seed": 7,
        "user": "",
        "presence_penalty": -1.5,
        "frequency_penalty": 2,
        "logprobs": None,
        "top_logprobs": 0,
        "response_format": {"type": "json_object"},
        "n": 1,
        "max_completion_tokens": 5,
        "max_tokens": None,
    },
    {
        "model": "m",
        "messages": MSG,
        "response_format": {"type": "text"},
        "stream_options": {"include_obfuscation": False},
    },
]


def serializer_result(body: dict[str, Any]) -> dict[str, Any] | None:
    serializer = ChatCompletionRequestSerializer(data=body)
    return dict(serializer.validated_data) if serializer.is_valid() else None


def same(fast: dict[str, Any], slow: dict[str, Any]) -> bool:
    slow = {**slow, "messages": [dict(m) for m in slow["messages"]]}
    # The messages' key order too: they are relayed to the backend as validated.
    return fast == slow and json.dumps(fast["messages"]) == json.dumps(slow["messages"])


@pytest.mark.parametrize("body", VALID)
def test_plainly_valid_body_takes_the_fast_path_with_the_serializers_values(body):
    fast = fast_chat_request(body)
    assert fast is not None
    slow = serializer_result(body)
    assert slow is not None and same(fast, slow)


@pytest.mark.parametrize(
    "body",
    [
        {"model": " Chat ", "messages": MSG},  # the serializer strips it
        {"model": "Chat", "messages": MSG, "max_tokens": 5.0},  # the serializer makes it 5
        {"model": "Chat", "messages": MSG, "stream": "true"},
        {"model": "Chat", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        {"model": "Chat", "messages": [{"role": "assistant", "content": None, "tool_calls": [{}]}]},
        {"model": "Chat", "messages": MSG, "max_tokens": 0},
        {"model": "Chat", "messages": []},
        {"model": None, "messages": MSG},
        {"model": "Chat", "messages": [{"role": "user", "content": "   "}]},  # blank: the serializer words the 400
        {"model": "Chat", "messages": [{"role": "user", "content": "\u200b"}]},
        {"model": "Chat", "messages": [{"role": "tool", "content": "42", "tool_call_id": "c"}]},
        {"model": "Chat", "messages": MSG, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {"model": "Chat", "messages": MSG, "unknown": 1},  # refused by the serializer
        {"model": "Chat", "messages": [{"role": "user", "content": "x", "extra": "refused"}]},
        {"model": "Chat", "messages": MSG, "response_format": {"type": "json_schema"}},
        {"model": "Chat", "messages": MSG, "stream_options": {"include_usage": True, "x": 1}},
    ],
)
def test_anything_unusual_or_invalid_is_left_to_the_serializer(body):
    assert fast_chat_request(body) is None


def test_fast_path_never_accepts_what_the_serializer_rejects_or_changes():
    rng = random.Random(4321)
    values = [
        None,
        True,
        False,
        0,
        1,
        -1,
        3,
        1.5,
        2.5,
        float("inf"),
        "",
        " x",
        "x",
        "high",
        "HIGH",
        "\x00",
        [],
        {},
        ["a"],
        ["a"] * 5,
        [1],
        {"a": 1},
        10**30,
        "y" * 300,
        {"type": "text"},
        {"type": "json_object", "a": 1},
        {"include_usage": True},
        {"include_usage": 1},
        "auto",
        ["text"],
        "\ud800",
        ["a\udfff"],
        float("nan"),
    ]
    fields = [
        "model",
        "agent_type",
        "priority",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stream",
        "stream_options",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "user",
        "response_format",
        "logprobs",
        "top_logprobs",
        "service_tier",
        "modalities",
        "store",
        "unknown",
    ]
    roles = ["user", "system", "assistant", "tool", "developer", "wizard", None, 1]
    fast_taken = 0
    for _ in range(40_000):
        body: dict[str, Any] = {f: rng.choice(values) for f in rng.sample(fields, rng.randint(0, 3))}
        body["messages"] = [
            {
                k: v
                for k, v in {
                    "role": rng.choice(roles),
                    "content": rng.choice(["hi", "", None, 5, "x", "  ", "\u200b", "é\ud800"]),
                    "name": rng.choice([None, "n", " n", "", "z" * 70]),
                    "tool_call_id": "c",
                    "refusal": None,
                }.items()
                if rng.random() < (0.8 if k in ("role", "content", "name") else 0.05)
            }
            for _ in range(rng.randint(0, 3))
        ]
        fast = fast_chat_request(body)
        if fast is not None:
            fast_taken += 1
            assert find_unforwardable(body) is None, body
            slow = serializer_result(body)
            assert slow is not None and same(fast, slow), body
    assert fast_taken > 50  # the comparison did happen


def test_the_serializer_refuses_what_the_fast_path_leaves_to_it_for_being_unknown():
    serializer = ChatCompletionRequestSerializer(data={"model": "Chat", "messages": MSG, "unknown": 1})
    assert not serializer.is_valid()
    assert serializer.errors["unknown"][0].code == "unknown_parameter"
