"""``POST /v1/feedback``: rate an answer of one's own history (thin over apps/inference/feedback.py)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.authentication import principal_of
from apps.accounts.permissions import CanRate
from apps.inference import feedback
from apps.inference.api.history_views import NoStoreView
from apps.inference.api.serializers import ErrorSerializer, StrictCharField
from apps.inference.errors import ApiError
from apps.inference.models import Feedback

FIELDS = ("exchange_id", "rating", "comment", "reasons")


class FeedbackRequestSerializer(serializers.Serializer):
    exchange_id = serializers.UUIDField(help_text="The X-Medai-Exchange-Id of the answer (or an async task's id).")
    rating = serializers.ChoiceField(choices=Feedback.Rating.values)
    comment = StrictCharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=feedback.COMMENT_MAX,
        help_text="Optional words for the reviewers (stored encrypted; never in the audit).",
    )
    reasons = serializers.ListField(
        child=serializers.ChoiceField(choices=Feedback.Reason.values),
        required=False,
        allow_null=True,
        max_length=len(Feedback.Reason.values),
        help_text="Reason codes: " + ", ".join(Feedback.Reason.values) + ".",
    )

    def validate_reasons(self, value: list[str] | None) -> list[str]:
        value = value or []
        if len(set(value)) != len(value):
            raise serializers.ValidationError("each reason at most once.")
        return value


class FeedbackSerializer(serializers.Serializer):
    feedback_id = serializers.IntegerField(source="id")
    exchange_id = serializers.UUIDField(source="task_id")
    rating = serializers.ChoiceField(choices=Feedback.Rating.values)
    reasons = serializers.ListField(child=serializers.CharField())
    comment = serializers.CharField(allow_blank=True)
    model = serializers.CharField(source="model_name", help_text="The model that answered.")
    agent_type = serializers.CharField(help_text="The route asked (empty when a model was named).")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class FeedbackView(NoStoreView):
    """``POST /v1/feedback {exchange_id, rating: "up"|"down", comment?, reasons?[]}``: 201 for a new
    rating, 200 when it changes the caller's earlier rating of that exchange; 404 for an exchange
    that is not the caller's, 409 for one not answered yet."""

    permission_classes = [CanRate]

    @extend_schema(
        request=FeedbackRequestSerializer,
        responses={201: FeedbackSerializer, 200: FeedbackSerializer, 409: ErrorSerializer}
        | {code: ErrorSerializer for code in (400, 401, 403, 404)},
        operation_id="feedback_create",
    )
    def post(self, request: Request) -> Response:
        data: Any = request.data
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_json", "Request body must be a JSON object.")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise ApiError(
                400, "unknown_parameter", f"{unknown[0]}: unrecognized field ({', '.join(FIELDS)}).", unknown[0]
            )
        body = FeedbackRequestSerializer(data=data)
        body.is_valid(raise_exception=True)
        valid = body.validated_data
        rated = feedback.rate(
            principal_of(request),
            valid["exchange_id"],
            valid["rating"],
            comment=(valid.get("comment") or "").strip(),
            reasons=valid.get("reasons") or [],
        )
        return Response(FeedbackSerializer(rated.feedback).data, status=201 if rated.created else 200)
