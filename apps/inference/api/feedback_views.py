"""``POST /v1/feedback``: rate an answer of one's own history (thin over apps/inference/feedback.py);
``GET /v1/feedback/export``: the organization's feedback for a training pipeline, without PHI
unless asked with a purpose of use (thin over apps/inference/feedback_export.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from django.http import HttpResponse
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.authentication import principal_of
from apps.accounts.permissions import CanExportFeedback, CanRate
from apps.audit.context import get_origin
from apps.inference import feedback, feedback_export
from apps.inference.api.batch_views import AnyAccept
from apps.inference.api.history_views import NoStoreView, _positive_int
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


EXPORT_PARAMS = ("format", "since", "until", "model", "agent_type", "rating", "after", "limit", "include_content")


def _moment(name: str, raw: str | None, *, end: bool = False) -> datetime | None:
    """An ISO 8601 date-time or date (a date's start; with ``end``, its last instant)."""
    if not raw:
        return None
    try:
        value = parse_datetime(raw)
        if value is None and (day := parse_date(raw)) is not None:
            value = datetime.combine(day, time.max if end else time.min)
    except ValueError:
        value = None
    if value is None:
        raise ApiError(400, "invalid_value", f"{name} must be an ISO 8601 date or date-time.", name)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _flag(name: str, raw: str | None) -> bool:
    if raw in (None, "", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise ApiError(400, "invalid_value", f"{name} must be true or false.", name)


def _choice(name: str, raw: str | None, choices: tuple[str, ...], default: str = "") -> str:
    if not raw:
        return default
    if raw not in choices:
        raise ApiError(400, "invalid_value", f"{name} must be one of {', '.join(choices)}.", name)
    return raw


class FeedbackExportView(NoStoreView):
    """``GET /v1/feedback/export``: one page of the organization's feedback, oldest first, as JSON
    lines (``format=jsonl``, the default) or CSV; ``X-Medai-Next-After`` names the ``after`` of the
    next page when there is one. Without PHI unless ``include_content=true`` with an
    ``X-Purpose-Of-Use`` header (400 without one). Auditors and admins only; audited."""

    permission_classes = [CanExportFeedback]
    content_negotiation_class = AnyAccept  # a download: the rows whatever Accept says, errors as JSON

    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=list(feedback_export.FORMATS), description="jsonl (default) or csv"),
            OpenApiParameter("since", str, description="ISO 8601 date or date-time the rating was given at or after"),
            OpenApiParameter("until", str, description="ISO 8601 date or date-time, inclusive"),
            OpenApiParameter("model", str),
            OpenApiParameter("agent_type", str),
            OpenApiParameter("rating", str, enum=Feedback.Rating.values),
            OpenApiParameter("after", int, description="The X-Medai-Next-After of the previous page"),
            OpenApiParameter("limit", int, description=f"1 to {feedback_export.LIMIT_MAX}; 1000 by default"),
            OpenApiParameter(
                "include_content",
                bool,
                description="Add the comment, question and answer (PHI): needs the X-Purpose-Of-Use header.",
            ),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(str, description="One JSON object per line."),
            (200, "text/csv"): OpenApiResponse(str, description="A header row, then one row per rating."),
        }
        | {code: ErrorSerializer for code in (400, 401, 403)},
        operation_id="feedback_export",
    )
    def get(self, request: Request) -> HttpResponse:
        q = request.query_params
        unknown = sorted(set(q) - set(EXPORT_PARAMS))
        if unknown:
            raise ApiError(
                400, "unknown_parameter", f"{unknown[0]}: unrecognized ({', '.join(EXPORT_PARAMS)}).", unknown[0]
            )
        fmt = _choice("format", q.get("format"), tuple(feedback_export.FORMATS), "jsonl")
        after = q.get("after")
        filters = feedback_export.Filters(
            since=_moment("since", q.get("since")),
            until=_moment("until", q.get("until"), end=True),
            model=q.get("model", "")[:100],
            agent_type=q.get("agent_type", "")[:64],
            rating=_choice("rating", q.get("rating"), tuple(Feedback.Rating.values)),
            after=_positive_int(request, "after", 1, 2**62) if after not in (None, "", "0") else 0,
            limit=_positive_int(request, "limit", feedback_export.LIMIT_DEFAULT, feedback_export.LIMIT_MAX),
        )
        result = feedback_export.export(
            principal_of(request),
            filters,
            include_content=_flag("include_content", q.get("include_content")),
            purpose=get_origin().purpose_of_use,
        )
        response = HttpResponse(result.render(fmt), content_type=feedback_export.FORMATS[fmt] + "; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="feedback.{fmt}"'
        if result.next_after is not None:
            response["X-Medai-Next-After"] = str(result.next_after)
        return response
