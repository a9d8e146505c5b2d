"""``GET /v1/audit/events``: the audit trail for the auditor (scope audit), of the caller's own
organization only (``AuditEvent.objects.visible_to``), filtered and cursor-paginated by
apps/audit/search.py. Here rather than in apps/audit because the scope check is accounts'
(apps/audit imports no other app). Every search is itself audited (``audit.read``)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import principal_of
from apps.accounts.permissions import CanReadAudit
from apps.audit import actions
from apps.audit.api.serializers import AuditEventListSerializer, AuditEventSerializer
from apps.audit.models import AuditEvent
from apps.audit.search import FilterError, search
from apps.audit.services import record_event

PARAMETERS = [
    OpenApiParameter("user", str, description="Username(s), comma-separated."),
    OpenApiParameter("user_id", int),
    OpenApiParameter("api_key_id", int),
    OpenApiParameter("location", str, description="Location code(s), comma-separated."),
    OpenApiParameter("action", str, description="Action(s), comma-separated; 'auth.*' for a family."),
    OpenApiParameter("outcome", str, description="success, failure, denied or cancelled (comma-separated)."),
    OpenApiParameter("since", str, description="ISO 8601 date or date-time, inclusive."),
    OpenApiParameter("until", str, description="ISO 8601 date or date-time, inclusive."),
    OpenApiParameter("correlation_id", str),
    OpenApiParameter("object_type", str),
    OpenApiParameter("object_id", str),
    OpenApiParameter("purpose_of_use", str),
    OpenApiParameter("limit", int, description="1-500, default 100."),
    OpenApiParameter("after", int, description="The last_id of the previous page."),
    OpenApiParameter("order", str, description="desc (newest first, the default) or asc."),
]


class AuditEventListView(APIView):
    permission_classes = [CanReadAudit]

    @extend_schema(parameters=PARAMETERS, responses=AuditEventListSerializer, operation_id="list_audit_events")
    def get(self, request: Request) -> Response:
        principal = principal_of(request)
        try:
            page = search(AuditEvent.objects.visible_to(principal), request.query_params)
        except FilterError as exc:
            raise exceptions.ValidationError({exc.param: [exc.message]}) from None
        data = AuditEventSerializer(page.events, many=True).data
        record_event(
            actions.AUDIT_READ,
            actor=principal,
            details={"filters": dict(request.query_params.items()), "events": len(page.events)},
        )
        response = Response(
            {
                "object": "list",
                "data": data,
                "first_id": page.events[0].seq if page.events else None,
                "last_id": page.events[-1].seq if page.events else None,
                "has_more": page.has_more,
            }
        )
        response["Cache-Control"] = "no-store"
        return response
