"""Request and response shapes of the inference API. The chat request itself (validation of
OpenAI's CreateChatCompletionRequest, the fast path) lives below the API layer, in
``apps/inference/validation/``: the services validate with it too."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.inference.validation.chat_request import ChatCompletionRequestSerializer

# --- embeddings and rerank (documentation and schema tests; apps/inference/validation/embeddings.py
# validates, by hand: the requests are flat) ---------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 2048},
            {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
            {
                "type": "array",
                "items": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
                "minItems": 1,
                "maxItems": 2048,
            },
        ]
    }
)
class EmbeddingInputField(serializers.JSONField):
    """A text, a list of texts, a token array or a list of token arrays (OpenAI's ``input``)."""


@extend_schema_field({"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]})
class EmbeddingVectorField(serializers.JSONField):
    """The vector: floats, or (``encoding_format: base64``) its little-endian float32 bytes in base64."""


class StrictCharField(serializers.CharField):
    """A string and only a string: DRF's CharField would take 3 or true as "3" and "True"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class EmbeddingRequestSerializer(serializers.Serializer):
    """OpenAI's CreateEmbeddingRequest."""

    model = serializers.CharField(max_length=200, help_text="A model that declares embeddings, or an agent type.")
    input = EmbeddingInputField(help_text="Up to 2048 texts or token arrays; each within the model's context.")
    encoding_format = serializers.ChoiceField(choices=["float", "base64"], required=False, default="float")
    dimensions = serializers.IntegerField(
        required=False, min_value=1, help_text="Only for models served by vLLM or another OpenAI server."
    )
    user = serializers.CharField(required=False, allow_blank=True, help_text="Kept on medai's record.")


class EmbeddingSerializer(serializers.Serializer):
    object = serializers.CharField(help_text="Always embedding.")
    index = serializers.IntegerField(help_text="The input's place.")
    embedding = EmbeddingVectorField()


class EmbeddingUsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class EmbeddingListSerializer(serializers.Serializer):
    """OpenAI's CreateEmbeddingResponse."""

    object = serializers.CharField(help_text="Always list.")
    # a "data" key, as ModelListSerializer's: this serializer only documents it (never .data is read)
    data = EmbeddingSerializer(many=True)  # type: ignore[assignment]
    model = serializers.CharField(help_text="The medai model that answered.")
    usage = EmbeddingUsageSerializer()


class RerankRequestSerializer(serializers.Serializer):
    """The rerank request of Cohere and Jina that llama.cpp and vLLM serve."""

    model = serializers.CharField(max_length=200, help_text="A model that declares rerank, or an agent type.")
    query = serializers.CharField()
    documents = serializers.ListField(child=serializers.CharField(), min_length=1, max_length=1000)
    top_n = serializers.IntegerField(required=False, min_value=1, help_text="How many to answer; all by default.")
    return_documents = serializers.BooleanField(required=False, default=False)
    user = serializers.CharField(required=False, allow_blank=True, help_text="Kept on medai's record.")


class RerankDocumentSerializer(serializers.Serializer):
    text = serializers.CharField()


class RerankResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="The document's place in the request.")
    relevance_score = serializers.FloatField(help_text="Higher is more relevant.")
    document = RerankDocumentSerializer(required=False, help_text="With return_documents.")


class RerankSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField(help_text="Always rerank.")
    model = serializers.CharField(help_text="The medai model that answered.")
    results = RerankResultSerializer(many=True, help_text="Best first, top_n of them.")
    usage = EmbeddingUsageSerializer()


# --- response shapes (documentation and schema tests) -----------------------------------------


class ModelSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    created = serializers.IntegerField()
    owned_by = serializers.CharField()
    medai = serializers.DictField(help_text="kind: model | agent_type, and what serves it.")


class ModelListSerializer(serializers.Serializer):
    object = serializers.CharField()
    # OpenAI's list shape has a "data" key; this serializer only documents it (never .data is read)
    data = ModelSerializer(many=True)  # type: ignore[assignment]


class ToolCallFunctionSerializer(serializers.Serializer):
    name = serializers.CharField()
    arguments = serializers.CharField(help_text="The arguments as JSON text (parse it; the model may err).")


class ToolCallSerializer(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.CharField()
    function = ToolCallFunctionSerializer()


class ChatMessageOutSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField(allow_null=True)
    refusal = serializers.CharField(allow_null=True)
    tool_calls = ToolCallSerializer(many=True, required=False)


class ChatChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    message = ChatMessageOutSerializer()
    logprobs = serializers.DictField(
        allow_null=True, help_text="content and refusal token log probabilities; null unless logprobs was asked for."
    )
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


class CompletionChoiceSerializer(serializers.Serializer):
    text = serializers.CharField(allow_blank=True)
    index = serializers.IntegerField(help_text="The place of its prompt in the request's list (0 for one prompt).")
    logprobs = serializers.DictField(allow_null=True, help_text="Always null: logprobs are refused at validation.")
    finish_reason = serializers.ChoiceField(choices=["stop", "length", "content_filter"])


class CompletionSerializer(serializers.Serializer):
    """OpenAI's CreateCompletionResponse (a streamed chunk has the same shape, with
    ``finish_reason`` null until the last)."""

    id = serializers.CharField()
    object = serializers.CharField(help_text="Always text_completion.")
    created = serializers.IntegerField()
    model = serializers.CharField(help_text="The medai model that answered.")
    system_fingerprint = serializers.CharField(required=False)
    choices = CompletionChoiceSerializer(many=True)
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

    stream = None  # type: ignore[assignment]  # DRF drops a declared field set to None: async tasks are polled
    deadline_s = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=7 * 86400,
        help_text="Seconds the task may wait queued before it expires.",
    )


class AsyncSubmitBatchRequestSerializer(serializers.Serializer):
    requests = AsyncSubmitRequestSerializer(
        many=True, allow_empty=False, help_text="Up to MEDAI_BATCH_MAX requests, queued all or none."
    )


class TaskErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class AsyncBatchSubmittedSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField()
    task_ids = serializers.ListField(
        child=serializers.UUIDField(), help_text="One per request, in order; a duplicate reuses the live task's id."
    )
    status = serializers.CharField()


class BatchProgressSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField()
    total = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    expired = serializers.IntegerField(help_text="Still queued at their deadline (a purged result stays completed).")
    processing = serializers.IntegerField()
    queued = serializers.IntegerField()
    progress_percent = serializers.FloatField(
        help_text="Tasks with an outcome (completed, failed, cancelled, expired) per 100 of the total."
    )


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
    queue_max = serializers.IntegerField(
        help_text="MEDAI_QUEUE_MAX: up to this many queued tasks, every priority "
        "is accepted; from it on (emergency mode) only high and critical, up "
        "to twice it."
    )
    emergency_mode = serializers.BooleanField(
        help_text="queued >= queue_max: a low or normal submission answers "
        "429 queue_full; high and critical are still accepted."
    )


def list_page(objects: list[Any], has_more: bool) -> dict[str, Any]:
    """A page of a cursor-paged list as OpenAI answers one (files, batches, workflow runs)."""
    return {
        "object": "list",
        "data": objects,
        "first_id": objects[0]["id"] if objects else None,
        "last_id": objects[-1]["id"] if objects else None,
        "has_more": has_more,
    }
