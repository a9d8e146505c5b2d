"""The audit trail in admin: read-only (no add, change or delete, for anyone, superusers included),
filterable, exportable as CSV (the current filter, streamed; the export is itself audited)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse
from django.urls import URLPattern, path
from django.utils import timezone

from apps.audit import actions, display
from apps.audit.export import csv_rows
from apps.audit.models import AuditEvent
from apps.audit.services import record_event


class ActorFilter(admin.SimpleListFilter):
    title = "actor"
    parameter_name = "actor"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = AuditEvent.objects.exclude(actor="").order_by("actor").values_list("actor", flat=True).distinct()[:100]
        return [(n, n) for n in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        return queryset.filter(actor=self.value()) if self.value() else queryset


def _csv_response(request: HttpRequest, events: QuerySet[AuditEvent], scope: str) -> StreamingHttpResponse:
    record_event(
        actions.AUDIT_EXPORT,
        actor=request.user,
        details={"format": "csv", "scope": scope, "filters": dict(request.GET.items()), "events": events.count()},
    )
    name = f"audit-{timezone.now():%Y%m%dT%H%M%S}.csv"
    response = StreamingHttpResponse(csv_rows(events), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response


@admin.register(AuditEvent)
class AuditEventAdmin(display.ReadOnlyAdmin, admin.ModelAdmin):
    list_display = [
        "seq",
        "created_at",
        "action",
        "outcome",
        "actor",
        "api_key_id",
        "location",
        "ip",
        "purpose_of_use",
        "correlation",
    ]
    list_filter = [
        "action",
        "outcome",
        "location",
        ActorFilter,
        "purpose_of_use",
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["actor", "correlation_id", "object_id"]
    date_hierarchy = "created_at"
    actions = ["export_csv"]
    change_list_template = "admin/audit/auditevent/change_list.html"

    @admin.display(description="correlation id", ordering="correlation_id")
    def correlation(self, obj: AuditEvent) -> str:
        return display.short_id(obj.correlation_id)

    def get_urls(self) -> list[URLPattern]:
        export = path("export.csv", self.admin_site.admin_view(self.export_view), name="audit_auditevent_export")
        return [export, *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """The change list's current filter and search, as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        events = self.get_changelist_instance(request).get_queryset(request)
        return _csv_response(request, events, "filter")

    @admin.action(description="Export selected events as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> StreamingHttpResponse:
        return _csv_response(request, queryset, "selection")
