"""Adds the async inference views, chat completions, (legacy) completions, embeddings and rerank
(not DRF views, so invisible to drf-spectacular's URL walk), to the OpenAPI document, with schemas
generated from the same serializers that validate them (embeddings and rerank: from serializers
that document what ``apps/inference/validation/embeddings.py`` checks by hand)."""

from __future__ import annotations

from typing import Any, Literal

from drf_spectacular.openapi import AutoSchema
from rest_framework.views import APIView

from apps.inference.api.serializers import (
    ChatCompletionRequestSerializer,
    ChatCompletionSerializer,
    CompletionSerializer,
    EmbeddingListSerializer,
    EmbeddingRequestSerializer,
    ErrorSerializer,
    RerankRequestSerializer,
    RerankSerializer,
)
from apps.inference.validation.completion_request import CompletionRequestSerializer


def _component(generator: Any, serializer: type, direction: Literal["request", "response"]) -> dict[str, Any]:
    auto = AutoSchema()
    auto.registry = generator.registry
    auto.method = "POST"
    auto.path = "/v1/chat/completions"
    view = APIView()  # AutoSchema needs a view instance for serializer context; none is routed
    view.request = None  # type: ignore[assignment]  # not dispatched: no request
    view.format_kwarg = None
    auto.view = view
    component = auto.resolve_serializer(serializer, direction)
    return component.ref


def add_chat_completions(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    request_ref = _component(generator, ChatCompletionRequestSerializer, "request")
    response_ref = _component(generator, ChatCompletionSerializer, "response")
    error_ref = _component(generator, ErrorSerializer, "response")
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, component in generator.registry._components.items():
        if name[1] == "schemas" and name[0] not in schemas:
            schemas[name[0]] = component.schema
    errors = {
        str(code): {"description": text, "content": {"application/json": {"schema": error_ref}}}
        for code, text in [
            (400, "Bad input; error.param names the field."),
            (401, "No valid credentials."),
            (403, "Not allowed."),
            (404, "Unknown model (error.code model_not_found)."),
            (413, "Body too large."),
            (429, "Rate limited, over quota, or every slot of the model busy."),
            (503, "No model server could answer."),
        ]
    }
    paths = result.setdefault("paths", {})
    paths["/v1/chat/completions"] = _operation(
        "create_chat_completion",
        "OpenAI-compatible chat completion",
        "`model` names a model or an agent type; `agent_type` and `priority` are medai extras. "
        "`stream: true` answers Server-Sent Events ending in `data: [DONE]`.",
        request_ref,
        response_ref,
        errors,
    )
    paths["/v1/completions"] = _operation(
        "create_completion",
        "OpenAI-compatible (legacy) completion: a prompt → text",
        "`prompt` is a string or a list of strings (one choice each, `index` its place); `model` names a "
        "model or an agent type; `agent_type` and `priority` are medai extras. `n`, `best_of`, `echo`, "
        "`logprobs` and `suffix` are refused (400 `unsupported_parameter`) at any value but the one that "
        "asks for nothing. `stream: true` (one prompt) answers Server-Sent Events of `text_completion` "
        "chunks ending in `data: [DONE]`.",
        _component(generator, CompletionRequestSerializer, "request"),
        _component(generator, CompletionSerializer, "response"),
        errors,
    )
    paths["/v1/embeddings"] = _operation(
        "create_embedding",
        "OpenAI-compatible embeddings",
        "`model` names a model that declares embeddings (or an agent type with one); a chat-only model is a "
        "400 naming `model`. `input` is a text, a list of texts, or token arrays; `encoding_format: base64` "
        "answers each vector as the base64 of its little-endian float32 bytes. `dimensions` only where the "
        "server honours it (vLLM, OpenAI-compatible; llama.cpp: 400). A text longer than the model embeds at "
        "once is a 400 `context_length_exceeded` naming `input`.",
        _component(generator, EmbeddingRequestSerializer, "request"),
        _component(generator, EmbeddingListSerializer, "response"),
        errors,
        stream=False,
    )
    paths["/v1/rerank"] = _operation(
        "create_rerank",
        "Rerank documents by relevance to a query (the Cohere/Jina shape llama.cpp and vLLM serve)",
        "`model` names a model that declares rerank: its server's own `/rerank` (a reranker model), or by "
        "the cosine similarity of its embeddings (the embedded default). `results` are the documents' "
        "indexes and scores, best first, `top_n` of them.",
        _component(generator, RerankRequestSerializer, "request"),
        _component(generator, RerankSerializer, "response"),
        errors,
        stream=False,
    )
    for name, component in generator.registry._components.items():
        if name[1] == "schemas" and name[0] not in schemas:
            schemas[name[0]] = component.schema
    return result


def _operation(
    operation_id: str,
    summary: str,
    description: str,
    request_ref: Any,
    response_ref: Any,
    errors: dict[str, Any],
    *,
    stream: bool = True,
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": response_ref}}
    if stream:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "description": description,
            "tags": ["v1"],
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": request_ref}}},
            "responses": {
                "200": {
                    "description": "The completion (or an SSE stream when stream is true)."
                    if stream
                    else "The answer.",
                    "content": content,
                },
                **errors,
            },
        }
    }
