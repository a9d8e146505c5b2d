"""The Responses API's shapes for the OpenAPI document (drf-spectacular). Validation itself is
``apps/inference/responses/request.py`` (below the API layer), which these describe."""

from __future__ import annotations

from rest_framework import serializers


class CreateResponseSerializer(serializers.Serializer):
    """OpenAI's CreateResponse as medai takes it (plus ``agent_type`` and ``priority``)."""

    model = serializers.CharField(required=False, help_text="A model or an agent type.")
    agent_type = serializers.CharField(required=False)
    priority = serializers.ChoiceField(choices=["low", "normal", "high", "critical"], required=False)
    input = serializers.JSONField(
        help_text="A string (a user message) or a list of items: messages (role user, assistant, system or "
        "developer; content a string or input_text parts), function_call and function_call_output."
    )
    instructions = serializers.CharField(required=False, allow_null=True, help_text="A system message, first.")
    previous_response_id = serializers.CharField(required=False, allow_null=True)
    store = serializers.BooleanField(required=False, default=True, help_text="Keep it for previous_response_id.")
    max_output_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=16)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    tools = serializers.ListField(child=serializers.DictField(), required=False, help_text="Function tools.")
    tool_choice = serializers.JSONField(required=False)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    text = serializers.DictField(required=False, help_text="format: text, json_object or json_schema.")
    metadata = serializers.DictField(child=serializers.CharField(max_length=512), required=False)
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = serializers.DictField(required=False, help_text="include_obfuscation: false only.")
    max_tool_calls = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    service_tier = serializers.ChoiceField(choices=["auto", "default"], required=False, allow_null=True)
    user = serializers.CharField(required=False)
    safety_identifier = serializers.CharField(required=False, allow_null=True)


class ResponseUsageSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    input_tokens_details = serializers.DictField()
    output_tokens = serializers.IntegerField()
    output_tokens_details = serializers.DictField()
    total_tokens = serializers.IntegerField()


class ResponseObjectSerializer(serializers.Serializer):
    """OpenAI's Response object."""

    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["response"])
    created_at = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["completed", "failed", "in_progress", "incomplete"])
    completed_at = serializers.IntegerField(allow_null=True)
    error = serializers.DictField(allow_null=True)
    incomplete_details = serializers.DictField(allow_null=True)
    instructions = serializers.CharField(allow_null=True)
    max_output_tokens = serializers.IntegerField(allow_null=True)
    max_tool_calls = serializers.IntegerField(allow_null=True)
    model = serializers.CharField(help_text="The model that answered.")
    output = serializers.ListField(
        child=serializers.DictField(), help_text="message and function_call items, in the order the model wrote them."
    )
    parallel_tool_calls = serializers.BooleanField()
    previous_response_id = serializers.CharField(allow_null=True)
    store = serializers.BooleanField()
    temperature = serializers.FloatField(allow_null=True)
    top_p = serializers.FloatField(allow_null=True)
    text = serializers.DictField()
    tool_choice = serializers.JSONField()
    tools = serializers.ListField(child=serializers.DictField())
    truncation = serializers.CharField()
    usage = ResponseUsageSerializer(required=False, help_text="Absent while in progress.")
    metadata = serializers.DictField(child=serializers.CharField())
    reasoning = serializers.DictField(allow_null=True)
    service_tier = serializers.CharField()
    background = serializers.BooleanField()


class DeletedResponseSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["response"])
    deleted = serializers.BooleanField()
