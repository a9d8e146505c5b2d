from __future__ import annotations

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
