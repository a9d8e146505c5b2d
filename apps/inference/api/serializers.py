from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.inference.models import Priority

ROLES = ("system", "developer", "user", "assistant", "tool")


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = serializers.JSONField(required=False, allow_null=True)
    name = serializers.CharField(required=False, max_length=64)
    tool_call_id = serializers.CharField(required=False, max_length=128)
    tool_calls = serializers.ListField(child=serializers.DictField(), required=False)

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
        if attrs.get("content") in (None, "", []) and attrs["role"] != "assistant":
            raise serializers.ValidationError({"content": "must not be empty."})
        return attrs


@extend_schema_field({"type": "string", "enum": ["low", "normal", "high", "critical"], "default": "normal"})
class PriorityField(serializers.Field):
    """Accepts ``"high"``/``"HIGH"`` or 0–3; stores the integer level."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and data.upper() in Priority.names:
            return int(Priority[data.upper()])
        if isinstance(data, int) and not isinstance(data, bool) and data in Priority.values:
            return data
        raise serializers.ValidationError(f"must be one of {', '.join(n.lower() for n in Priority.names)}.")

    def to_representation(self, value: int) -> str:
        return Priority(value).name.lower()


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]})
class StopField(serializers.Field):
    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            return data
        if isinstance(data, list) and len(data) <= 4 and all(isinstance(s, str) for s in data):
            return data
        raise serializers.ValidationError("must be a string or a list of up to 4 strings.")

    def to_representation(self, value: Any) -> Any:
        return value


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
    stream_options = serializers.DictField(required=False, allow_null=True)
    stop = StopField(required=False, allow_null=True)
    presence_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2.0, max_value=2.0)
    frequency_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2.0, max_value=2.0)
    seed = serializers.IntegerField(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_blank=True, max_length=256)
    response_format = serializers.DictField(required=False, allow_null=True)
    logprobs = serializers.BooleanField(required=False, allow_null=True)
    top_logprobs = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=20)

    def validate_messages(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if len(value) > settings.MEDAI_MAX_MESSAGES:
            raise serializers.ValidationError(f"at most {settings.MEDAI_MAX_MESSAGES} messages are allowed.")
        return value

    def _check_tokens(self, value: int | None) -> int | None:
        if value is not None and value > settings.MEDAI_MAX_TOKENS_LIMIT:
            raise serializers.ValidationError(f"must be at most {settings.MEDAI_MAX_TOKENS_LIMIT}.")
        return value

    def validate_max_tokens(self, value: int | None) -> int | None:
        return self._check_tokens(value)

    def validate_max_completion_tokens(self, value: int | None) -> int | None:
        return self._check_tokens(value)


class EmbeddingRequestSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=100)
    input = serializers.JSONField()
    encoding_format = serializers.ChoiceField(choices=["float", "base64"], required=False)
    user = serializers.CharField(required=False, allow_blank=True, max_length=256)

    def validate_input(self, value: Any) -> Any:
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value and len(value) <= 256 and all(isinstance(v, str) and v for v in value):
            return value
        raise serializers.ValidationError("must be a non-empty string or a list of 1–256 non-empty strings.")


# --- response shapes (documentation and schema tests) -----------------------------------------


class ModelSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    created = serializers.IntegerField()
    owned_by = serializers.CharField()
    medai = serializers.DictField(help_text="kind: model | agent_type, and what serves it.")


class ModelListSerializer(serializers.Serializer):
    object = serializers.CharField()
    data = ModelSerializer(many=True)


class ChatMessageOutSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField(allow_null=True)


class ChatChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    message = ChatMessageOutSerializer()
    finish_reason = serializers.CharField(allow_null=True)


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class ChatCompletionSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    created = serializers.IntegerField()
    model = serializers.CharField(help_text="The medai model that answered.")
    choices = ChatChoiceSerializer(many=True)
    usage = UsageSerializer(required=False)


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    code = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


# --- the async task API (documentation and schema tests; apps.inference.queue validates) -----


class AsyncSubmitRequestSerializer(ChatCompletionRequestSerializer):
    """One queued chat request: the chat-completions body (without ``stream``) plus a deadline."""

    stream = None  # async tasks are polled, not streamed
    deadline_s = serializers.FloatField(required=False, allow_null=True, min_value=1, max_value=7 * 86400,
                                        help_text="Seconds the task may wait queued before it expires.")


class AsyncSubmitBatchRequestSerializer(serializers.Serializer):
    requests = AsyncSubmitRequestSerializer(many=True, allow_empty=False,
                                            help_text="Up to MEDAI_BATCH_MAX requests, queued all or none.")


class TaskErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class AsyncBatchSubmittedSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField()
    task_ids = serializers.ListField(child=serializers.UUIDField(),
                                     help_text="One per request, in order; a duplicate reuses the live task's id.")
    status = serializers.CharField()


class BatchProgressSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField()
    total = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    processing = serializers.IntegerField()
    queued = serializers.IntegerField()
    progress_percent = serializers.FloatField()


class TaskTimingsSerializer(serializers.Serializer):
    task_id = serializers.UUIDField()
    queue_wait_ms = serializers.IntegerField(allow_null=True)
    inference_ms = serializers.IntegerField(allow_null=True)
    attempts = serializers.IntegerField()


class AsyncResultSerializer(ChatCompletionSerializer):
    medai = TaskTimingsSerializer()


class QueueDepthSerializer(serializers.Serializer):
    critical = serializers.IntegerField()
    high = serializers.IntegerField()
    normal = serializers.IntegerField()
    low = serializers.IntegerField()


class QueueHealthSerializer(serializers.Serializer):
    depth = QueueDepthSerializer()
    queued = serializers.IntegerField()
    processing = serializers.IntegerField()
    oldest_wait_s = serializers.FloatField()
    clusters_alive = serializers.IntegerField()
    workers_alive = serializers.IntegerField()
    queue_max = serializers.IntegerField()
    emergency_mode = serializers.BooleanField(help_text="Only HIGH and CRITICAL are accepted while true.")


# --- the chat request without building a serializer (the hot path) ----------------------------

_SKIP = object()  # "not sure": let ChatCompletionRequestSerializer decide (and word the error)
_MESSAGE_KEYS = ("role", "content", "name")  # in MessageSerializer's field order
_PRIORITY_NAMES = {name: int(Priority[name]) for name in Priority.names}


def _plain_str(value: Any, max_length: int, allow_blank: bool) -> Any:
    # What CharField returns unchanged: a str it would neither strip nor reject.
    if (type(value) is not str or len(value) > max_length or not value.isascii() or "\x00" in value
            or value != value.strip() or (not value and not allow_blank)):
        return _SKIP
    return value


def _int(value: Any, lo: int | None, hi: int | None) -> Any:
    if value is None:
        return None
    if type(value) is not int or (lo is not None and value < lo) or (hi is not None and value > hi):
        return _SKIP
    return value


def _float(value: Any, lo: float, hi: float) -> Any:
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
        return _SKIP
    return float(value)


def _bool(value: Any, allow_null: bool) -> Any:
    if type(value) is bool or (value is None and allow_null):
        return value
    return _SKIP


def _dict(value: Any) -> Any:
    if value is None:
        return None
    return dict(value) if type(value) is dict else _SKIP


def _stop(value: Any) -> Any:
    if value is None or type(value) is str:
        return value
    if type(value) is list and len(value) <= 4 and all(type(s) is str for s in value):
        return value
    return _SKIP


def _priority(value: Any) -> Any:
    if type(value) is str and value.upper() in _PRIORITY_NAMES:
        return _PRIORITY_NAMES[value.upper()]
    if type(value) is int and value in Priority.values:
        return value
    return _SKIP


def _message(value: Any) -> Any:
    if type(value) is not dict:
        return _SKIP
    role, content = value.get("role"), value.get("content")
    if type(role) is not str or role not in ROLES or type(content) is not str or not content:
        return _SKIP  # list content, empty assistant turns, tool calls: the serializer's rules
    message = {"role": role, "content": content}
    for key in value:
        if key == "name":
            name = _plain_str(value["name"], 64, allow_blank=False)
            if name is _SKIP:
                return _SKIP
            message["name"] = name
        elif key in ("tool_call_id", "tool_calls"):
            return _SKIP
    return message


@functools.lru_cache(maxsize=4)
def _fields(limit: int) -> dict[str, Callable[[Any], Any]]:
    return {
        "model": lambda v: _plain_str(v, 100, allow_blank=True),
        "agent_type": lambda v: _plain_str(v, 64, allow_blank=True),
        "priority": _priority,
        "max_tokens": lambda v: _int(v, 1, limit),
        "max_completion_tokens": lambda v: _int(v, 1, limit),
        "temperature": lambda v: _float(v, 0.0, 2.0),
        "top_p": lambda v: _float(v, 0.0, 1.0),
        "n": lambda v: _int(v, 1, 1),
        "stream": lambda v: _bool(v, allow_null=False),
        "stream_options": _dict,
        "stop": _stop,
        "presence_penalty": lambda v: _float(v, -2.0, 2.0),
        "frequency_penalty": lambda v: _float(v, -2.0, 2.0),
        "seed": lambda v: _int(v, None, None),
        "user": lambda v: _plain_str(v, 256, allow_blank=True),
        "response_format": _dict,
        "logprobs": lambda v: _bool(v, allow_null=True),
        "top_logprobs": lambda v: _int(v, 0, 20),
    }


def fast_chat_request(data: dict[str, Any]) -> dict[str, Any] | None:
    """``ChatCompletionRequestSerializer(data=data).validated_data`` for the common, plainly valid
    request, without building a serializer (DRF deep-copies every declared field per instance,
    most of the cost of validating a chat body). None when anything is unusual or invalid: the
    caller then runs the serializer, which decides and words any error exactly as before. It
    accepts a subset of what the serializer accepts and returns the same values for it
    (tests/inference/test_chat_fast_validation.py holds the two together)."""
    messages = data.get("messages")
    if type(messages) is not list or not messages or len(messages) > settings.MEDAI_MAX_MESSAGES:
        return None
    fields = _fields(settings.MEDAI_MAX_TOKENS_LIMIT)
    req: dict[str, Any] = {}
    for key, value in data.items():
        if key == "messages":
            continue
        check = fields.get(key)
        if check is None:
            continue  # unknown fields are ignored, as the serializer ignores them
        value = check(value)
        if value is _SKIP:
            return None
        req[key] = value
    cleaned = []
    for message in messages:
        message = _message(message)
        if message is _SKIP:
            return None
        cleaned.append(message)
    req["messages"] = cleaned
    req.setdefault("stream", False)
    return req
