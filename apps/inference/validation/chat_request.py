"""The chat-completions request: OpenAI's ``CreateChatCompletionRequest`` plus medai's
``agent_type`` and ``priority``, validated into what medai forwards to a model server.

Nothing a client sends vanishes. Each OpenAI field is one of:

- forwarded, validated (messages with tool calls and tool results, sampling parameters, ``stop``,
  ``response_format``, ``logprobs``, ``logit_bias``, ``tools``, ``tool_choice``,
  ``parallel_tool_calls``, ``stream_options``);
- kept for medai's own record: ``user`` and ``safety_identifier`` (the caller's end user);
- ``store: true`` keeps the exchange (prompt and answer, encrypted, until the end of retention) in
  the caller's history, in the conversation ``conversation_id`` (medai's own field) names, or a new
  one (apps/inference/conversations.py); absent or false, nothing of the content is kept;
- accepted only at the value that asks for nothing (``metadata: {}``, ``modalities: ["text"]``,
  ``service_tier: "auto"``, ``audio: null``...), and refused otherwise with a 400
  ``unsupported_parameter`` naming it and saying why (``UNSUPPORTED``).

A field OpenAI does not define is a 400 ``unknown_parameter`` (OpenAI's own answer is
"Unrecognized request argument supplied"). Input the JSON parser accepts but that cannot be
forwarded (a lone surrogate, NaN, Infinity) is a 400 naming where it is (``find_unforwardable``).

``fast_chat_request`` (``fast.py``) validates the common plain request without building a
serializer (DRF deep-copies every declared field per instance, most of the cost of validating a
chat body); anything unusual falls back to the serializer, which decides and words the error.
The fields DRF has no field for, and the refusal rules, are in ``fields.py``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from rest_framework import serializers

from apps.inference.validation.fields import (
    MESSAGE_UNSUPPORTED,
    PART_TYPES,
    ROLES,
    UNSUPPORTED,
    LogitBiasField,
    PriorityField,
    ResponseFormatField,
    ServiceTierField,
    StopField,
    StreamOptionsField,
    ToolCallsField,
    ToolChoiceField,
    ToolsField,
    _error,
    _refuse_undeclared,
    is_blank,
    tool_choice_names,
)

# --- messages ----------------------------------------------------------------------------------------


def _empty(content: Any) -> bool:
    return content in (None, "", [])


def _blank(content: Any) -> bool:
    if isinstance(content, str):
        return is_blank(content)
    return all(p["type"] == "text" and is_blank(p["text"]) for p in content)


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = serializers.JSONField(required=False, allow_null=True)
    name = serializers.CharField(required=False, max_length=64)
    tool_call_id = serializers.CharField(required=False, max_length=128)
    tool_calls = ToolCallsField(required=False, allow_null=True)

    def to_internal_value(self, data: Any) -> Any:
        _refuse_undeclared(data, self.fields, MESSAGE_UNSUPPORTED, "message")
        return super().to_internal_value(data)

    def validate_content(self, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list):
            for i, part in enumerate(value):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise serializers.ValidationError(f"part [{i}] must be an object with a 'type'.")
                if part["type"] == "text" and not isinstance(part.get("text"), str):
                    raise serializers.ValidationError(f"part [{i}] of type 'text' needs a string 'text'.")
            return value
        raise serializers.ValidationError("must be a string or a list of content parts.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        role, content = attrs["role"], attrs.get("content")
        if attrs.get("tool_calls") and role != "assistant":
            raise _error(("tool_calls",), "only assistant messages carry tool calls.")
        if role == "tool" and not attrs.get("tool_call_id"):
            raise _error(("tool_call_id",), "this field is required in a tool message (the id of the call it answers).")
        if role != "tool" and "tool_call_id" in attrs:
            raise _error(("tool_call_id",), "only tool messages carry a tool_call_id.")
        if role != "assistant":  # an assistant turn may be empty, and is when it only calls tools
            if _empty(content):
                raise _error(("content",), "must not be empty.")
        if isinstance(content, list):
            for i, part in enumerate(content):
                if part["type"] not in PART_TYPES[role]:
                    raise _error(
                        ("content",),
                        f"part [{i}] of type '{part['type']}' is not allowed in a {role} "
                        f"message (allowed: {', '.join(PART_TYPES[role])}).",
                    )
        if role in ("user", "system", "developer") and _blank(content):
            raise _error(("content",), "must not be blank (it holds only spaces).")
        return attrs


# --- the request ---------------------------------------------------------------------------------------


class ChatCompletionRequestSerializer(serializers.Serializer):
    """The OpenAI chat-completions request, plus medai's ``agent_type`` and ``priority``."""

    model = serializers.CharField(required=False, allow_blank=True, max_length=100)
    agent_type = serializers.CharField(required=False, allow_blank=True, max_length=64)
    priority = PriorityField(required=False)
    messages = MessageSerializer(many=True, allow_empty=False)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=2.0)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=1.0)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=1)
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = StreamOptionsField(required=False, allow_null=True)
    stop = StopField(required=False, allow_null=True)
    presence_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2.0, max_value=2.0)
    frequency_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2.0, max_value=2.0)
    seed = serializers.IntegerField(required=False, allow_null=True)
    user = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=256,
        help_text="Your end user's id: kept on medai's record of the request.",
    )
    safety_identifier = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=64,
        help_text="Your end user's id: kept on medai's record of the request.",
    )
    service_tier = ServiceTierField(required=False, allow_null=True)
    response_format = ResponseFormatField(required=False, allow_null=True)
    logprobs = serializers.BooleanField(required=False, allow_null=True)
    top_logprobs = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=20)
    logit_bias = LogitBiasField(required=False, allow_null=True)
    tools = ToolsField(required=False, allow_null=True)
    tool_choice = ToolChoiceField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    store = serializers.BooleanField(
        required=False,
        allow_null=True,
        help_text="true: keep this exchange in your history (encrypted, until the end of retention).",
    )
    conversation_id = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text=(
            "medai's own: with store true, the conversation this exchange continues (the "
            "X-Medai-Conversation-Id of an earlier answer); without it a new conversation starts."
        ),
    )

    def to_internal_value(self, data: Any) -> Any:
        _refuse_undeclared(data, self.fields, UNSUPPORTED, "request")
        return super().to_internal_value(data)

    def validate_messages(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if len(value) > settings.MEDAI_MAX_MESSAGES:
            raise serializers.ValidationError(f"at most {settings.MEDAI_MAX_MESSAGES} messages are allowed.")
        pending: set[str] = set()  # ids of the tool calls the messages that follow may answer
        for i, message in enumerate(value):
            if message["role"] == "tool":
                if message["tool_call_id"] not in pending:
                    raise _error(
                        (i, "tool_call_id"),
                        "answers no tool call of the assistant message before it "
                        "(a tool message follows the assistant message whose tool_calls it answers).",
                    )
            else:
                pending = {c["id"] for c in message.get("tool_calls") or ()}
        return value

    def _check_tokens(self, value: int | None) -> int | None:
        if value is not None and value > settings.MEDAI_MAX_TOKENS_LIMIT:
            raise serializers.ValidationError(f"must be at most {settings.MEDAI_MAX_TOKENS_LIMIT}.")
        return value

    def validate_max_tokens(self, value: int | None) -> int | None:
        return self._check_tokens(value)

    def validate_max_completion_tokens(self, value: int | None) -> int | None:
        return self._check_tokens(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("conversation_id") and not attrs.get("store"):
            raise _error(("conversation_id",), "continues a stored conversation: send it with store: true.")
        tools: list[dict[str, Any]] = attrs.get("tools") or []
        choice: Any = attrs.get("tool_choice")  # names (tool_choice_names) only when it is an object
        if choice not in (None, "none", "auto") and not tools:
            raise _error(("tool_choice",), "needs tools: declare the functions the model may call in tools.")
        declared = {t["function"]["name"] for t in tools}
        for name in tool_choice_names(choice):
            if name not in declared:
                path = ("function", "name") if choice["type"] == "function" else ("allowed_tools", "tools")
                raise _error(
                    ("tool_choice", *path),
                    f"names '{name}', which is not among the tools ({', '.join(sorted(declared))}).",
                )
        return attrs


# --- what cannot be forwarded ------------------------------------------------------------------------


def _key(key: Any) -> str:
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


def find_unforwardable(data: Any) -> tuple[str | None, str] | None:
    """Where ``data`` holds something JSON-parsed that cannot be sent on as JSON text (a lone
    surrogate such as ``"\\ud800"``, NaN, Infinity), and why; None when all of it can."""
    try:
        json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
        return None  # the common case, checked at C speed
    except (ValueError, UnicodeEncodeError):
        pass
    except RecursionError:
        return None, "is nested too deeply"
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return path or None, "is not valid Unicode text (it holds a lone surrogate such as \\ud800)"
        elif isinstance(node, float):
            if not math.isfinite(node):
                return path or None, "must be a finite number (NaN and Infinity are not JSON)"
        elif isinstance(node, dict):
            for key, value in reversed(list(node.items())):
                child = f"{path}.{_key(key)}" if path else _key(key)
                try:
                    str(key).encode("utf-8")
                except UnicodeEncodeError:
                    return child, "is not a valid field name (it holds a lone surrogate)"
                stack.append((child, value))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", value) for i, value in reversed(list(enumerate(node))))
    return None, "cannot be forwarded as JSON"
