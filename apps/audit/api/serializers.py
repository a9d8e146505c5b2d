"""The audit trail's API shapes (the view lives in apps/accounts/api/audit_views.py, beside the
scope check it needs)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    id = serializers.IntegerField(source="seq", help_text="The event's place in the chain (the cursor).")
    object = serializers.SerializerMethodField(method_name="object_name")
    actor = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "object",
            "created_at",
            "action",
            "outcome",
            "actor",
            "location",
            "object_type",
            "object_id",
            "ip",
            "user_agent",
            "purpose_of_use",
            "correlation_id",
            "details",
            "hash",
        ]

    def object_name(self, event: AuditEvent) -> str:
        return "audit.event"

    def get_actor(self, event: AuditEvent) -> dict[str, Any]:
        return {"user_id": event.actor_id, "username": event.actor, "api_key_id": event.api_key_id}


class AuditEventListSerializer(serializers.Serializer):
    object = serializers.CharField(default="list")
    data = AuditEventSerializer(many=True)  # type: ignore[assignment]  # a field named data, as OpenAI's lists have
    first_id = serializers.IntegerField(allow_null=True)
    last_id = serializers.IntegerField(allow_null=True)
    has_more = serializers.BooleanField()
