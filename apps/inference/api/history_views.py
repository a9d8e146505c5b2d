"""The caller's history: their own stored exchanges (``store: true`` chat completions) and async chat
tasks, decrypted for their owner only, gone when retention purges them. Thin views over
apps/inference/conversations.py.

- ``GET /v1/history?page=&page_size=``: newest first, paged;
- ``POST /v1/history/search {"q": ..., "limit": ...}``: the exchanges holding ``q``. A POST, not
  ``GET /v1/history?q=``: the words searched for may name a patient, and a URL's query string ends
  up in access logs, proxies and browser history;
- ``GET /v1/conversations/{id}``: one conversation's exchanges, oldest first (404 for anyone else's:
  not even the location admin reads a clinician's history).

Every answer is ``Cache-Control: no-store`` (PHI), and every read is audited
(``inference.read_history``, counts only).
"""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import principal_of
from apps.accounts.permissions import CanRead
from apps.inference import auditing, conversations
from apps.inference.api.serializers import ErrorSerializer, StrictCharField, TaskErrorSerializer
from apps.inference.errors import ApiError


class MessageSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.JSONField(help_text="The message's content as it was sent (text, or a list of parts).")


class OwnFeedbackSerializer(serializers.Serializer):
    rating = serializers.ChoiceField(choices=["up", "down"])
    reasons = serializers.ListField(child=serializers.CharField())
    comment = serializers.CharField(allow_blank=True)


class ExchangeSerializer(serializers.Serializer):
    """One question and its answer (a stored exchange, or an async chat task)."""

    exchange_id = serializers.UUIDField(source="id", help_text="X-Medai-Exchange-Id (an async task: its task id).")
    conversation_id = serializers.UUIDField(help_text="X-Medai-Conversation-Id (an async task: its own id).")
    mode = serializers.ChoiceField(choices=["sync", "async"])
    status = serializers.CharField(help_text="completed, failed, cancelled (stopped), or an async task's state.")
    agent_type = serializers.CharField(help_text="The agent type asked (empty when a model was named).")
    model = serializers.CharField(help_text="The model that answered.")
    question = serializers.CharField(help_text="The last user message's text.")
    answer = serializers.CharField(
        allow_null=True, help_text="The assistant's text (what was streamed until Stop); null if none."
    )
    finish_reason = serializers.CharField(allow_null=True)
    error = TaskErrorSerializer(allow_null=True)
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    result_expires_at = serializers.DateTimeField(
        allow_null=True, help_text="When it is purged (the end of retention); a legal hold may keep it longer."
    )
    feedback = OwnFeedbackSerializer(allow_null=True, help_text="Your own rating of it (POST /v1/feedback), if any.")


class ConversationExchangeSerializer(ExchangeSerializer):
    messages = MessageSerializer(
        many=True,
        help_text=(
            "The conversation up to this question, as sent (the route's own system prompt left out): "
            "a follow-up sends the last exchange's messages, its answer, then the new question."
        ),
    )


class HistoryPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    page = serializers.IntegerField()
    page_size = serializers.IntegerField()
    results = ExchangeSerializer(many=True)


class HistorySearchRequestSerializer(serializers.Serializer):
    q = StrictCharField(
        max_length=500, trim_whitespace=True, help_text="Words to find in the questions and answers (any case)."
    )
    limit = serializers.IntegerField(required=False, min_value=1, max_value=conversations.SEARCH_LIMIT_MAX, default=20)


class HistorySearchSerializer(serializers.Serializer):
    results = ExchangeSerializer(many=True, help_text="Newest first.")


class ConversationSerializer(serializers.Serializer):
    conversation_id = serializers.UUIDField()
    exchanges = ConversationExchangeSerializer(many=True, help_text="Oldest first.")


def _errors(*codes: int) -> dict[int, Any]:
    return {code: ErrorSerializer for code in (400, 401, 403, *codes)}


class NoStoreView(APIView):
    """PHI decrypted for its owner: never kept by a browser or a proxy cache."""

    permission_classes = [CanRead]

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        response["Pragma"] = "no-cache"
        return response


def _positive_int(request: Request, name: str, default: int, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1 or (maximum is not None and value > maximum):
        top = f" and at most {maximum}" if maximum is not None else ""
        raise ApiError(400, "invalid_value", f"{name} must be a whole number of at least 1{top}.", name)
    return value


class HistoryView(NoStoreView):
    """``GET /v1/history?page=&page_size=``: the caller's own exchanges, newest first."""

    @extend_schema(
        parameters=[
            OpenApiParameter("page", int, description="1-based"),
            OpenApiParameter("page_size", int, description=f"1 to {conversations.PAGE_SIZE_MAX}; 20 by default"),
        ],
        responses={200: HistoryPageSerializer, **_errors(404)},
        operation_id="history_list",
    )
    def get(self, request: Request) -> Response:
        page = _positive_int(request, "page", 1)
        size = _positive_int(request, "page_size", 20, conversations.PAGE_SIZE_MAX)
        principal = principal_of(request)
        count, exchanges = conversations.history(principal, page=page, page_size=size)
        if not exchanges and page > 1:
            raise ApiError(404, "page_not_found", f"Page {page} does not exist.", "page")
        auditing.record_history_read(principal, "page", count=len(exchanges))
        results = ExchangeSerializer(exchanges, many=True).data
        return Response({"count": count, "page": page, "page_size": size, "results": results})


class HistorySearchView(NoStoreView):
    """``POST /v1/history/search {"q", "limit"}``: the caller's exchanges whose messages or answer
    hold ``q`` (any case), newest first. A POST so that the words never sit in a URL."""

    @extend_schema(
        request=HistorySearchRequestSerializer,
        responses={200: HistorySearchSerializer, **_errors()},
        operation_id="history_search",
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ApiError(400, "invalid_json", "Request body must be a JSON object.")
        unknown = sorted(set(request.data) - {"q", "limit"})
        if unknown:
            raise ApiError(400, "unknown_parameter", f"{unknown[0]}: unrecognized field (q, limit).", unknown[0])
        body = HistorySearchRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        principal = principal_of(request)
        found = conversations.search(principal, body.validated_data["q"], limit=body.validated_data["limit"])
        auditing.record_history_read(principal, "search", count=len(found))
        return Response({"results": ExchangeSerializer(found, many=True).data})


class ConversationView(NoStoreView):
    """``GET /v1/conversations/{id}``: one of the caller's conversations, its exchanges oldest
    first; 404 for anyone else's, a purged one, or one that never was."""

    @extend_schema(responses={200: ConversationSerializer, **_errors(404)}, operation_id="conversation_retrieve")
    def get(self, request: Request, conversation_id: uuid.UUID) -> Response:
        principal = principal_of(request)
        exchanges = conversations.conversation(principal, conversation_id)
        auditing.record_history_read(principal, "conversation", count=len(exchanges), conversation_id=conversation_id)
        return Response(
            {
                "conversation_id": str(conversation_id),
                "exchanges": ConversationExchangeSerializer(exchanges, many=True).data,
            }
        )
