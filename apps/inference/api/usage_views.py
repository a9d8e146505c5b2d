"""``GET /v1/usage``: requests and tokens per organization, location, user and model (thin over
apps/inference/usage.py), scoped to what the caller may see."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import principal_of
from apps.accounts.permissions import CanRead
from apps.inference import usage
from apps.inference.api.serializers import ErrorSerializer


class UsageReportRowSerializer(serializers.Serializer):
    organization = serializers.CharField(required=False)
    location = serializers.CharField(required=False)
    user = serializers.CharField(required=False, allow_null=True)
    model = serializers.CharField(required=False)
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class UsageReportTotalsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class QuotaUseSerializer(serializers.Serializer):
    scope = serializers.CharField()
    period = serializers.ChoiceField(choices=usage.PERIODS)
    max_requests = serializers.IntegerField(allow_null=True)
    max_tokens = serializers.IntegerField(allow_null=True)
    used_requests = serializers.IntegerField(allow_null=True, help_text="null: the counter store is unavailable")
    used_tokens = serializers.IntegerField(allow_null=True)


class UsageReportSerializer(serializers.Serializer):
    object = serializers.CharField()
    scope = serializers.ChoiceField(choices=["own", "organization"])
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    group_by = serializers.ListField(child=serializers.CharField())
    data = UsageReportRowSerializer(many=True)  # type: ignore[assignment]  # the answer field "data", not Serializer.data
    totals = UsageReportTotalsSerializer()
    quotas = QuotaUseSerializer(many=True)


class UsageView(APIView):
    """A clinician or integrator sees their own usage; an admin or auditor their organization's."""

    permission_classes = [CanRead]

    @extend_schema(
        parameters=[
            OpenApiParameter("period", str, enum=list(usage.PERIODS), description="the current day or month (default)"),
            OpenApiParameter("start", str, description="first day (YYYY-MM-DD), instead of period"),
            OpenApiParameter("end", str, description="day after the last (YYYY-MM-DD, exclusive)"),
            OpenApiParameter("group_by", str, description="comma-separated: organization, location, user, model"),
        ],
        responses={200: UsageReportSerializer, 400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer},
        operation_id="usage",
    )
    def get(self, request: Request) -> Response:
        q = request.query_params
        return Response(
            usage.usage_of(
                principal_of(request),
                period=q.get("period"),
                start=q.get("start"),
                end=q.get("end"),
                group_by=q.get("group_by"),
            )
        )
